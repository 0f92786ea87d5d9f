//! The part of PromQL callscope evaluates over window partials (see [`super::eval`]); an
//! expression outside it is refused up front, naming the part.
//!
//! The subset: selectors with `=`, `!=`, `=~`, `!~` matchers; the range functions `rate`,
//! `increase`, `avg_over_time`, `min_over_time`, `max_over_time`, `sum_over_time`,
//! `count_over_time`, `quantile_over_time`, `absent_over_time`; `histogram_quantile(q, …)`
//! answered from the stored sketches; the aggregations `sum`, `avg`, `min`, `max`, `count`
//! with `by`/`without`; arithmetic (`+ - * /`) and comparisons (with or without `bool`)
//! between vectors and scalars, with `on`/`ignoring`; `and`, `or`, `unless`; unary minus;
//! parentheses. Not supported: `offset`, `@`, subqueries, `group_left`/`group_right`,
//! string literals, other functions and aggregations.

use promql_parser::parser::{Expr, VectorMatchCardinality};

pub const RANGE_FUNCTIONS: [&str; 9] = [
    "rate",
    "increase",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "absent_over_time",
];
pub const AGGREGATIONS: [&str; 5] = ["sum", "avg", "min", "max", "count"];
pub const BINARY: [&str; 13] = ["+", "-", "*", "/", "==", "!=", ">", "<", ">=", "<=", "and", "or", "unless"];

/// A part of an expression outside callscope's PromQL subset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not in callscope's PromQL subset (see the rules documentation)")]
pub struct Unsupported(String);

fn unsupported(what: impl std::fmt::Display) -> Unsupported {
    Unsupported(what.to_string())
}

/// Checks that `expr` only uses the supported subset; the error names the first part that
/// is not.
pub fn check_subset(expr: &Expr) -> Result<(), Unsupported> {
    match expr {
        Expr::NumberLiteral(_) => Ok(()),
        Expr::StringLiteral(s) => Err(unsupported(format!("the string literal {:?}", s.val))),
        Expr::VectorSelector(vs) => {
            if vs.offset.is_some() {
                return Err(unsupported("the offset modifier"));
            }
            if vs.at.is_some() {
                return Err(unsupported("the @ modifier"));
            }
            if !vs.matchers.or_matchers.is_empty() {
                return Err(unsupported("`or` inside a selector"));
            }
            Ok(())
        }
        Expr::MatrixSelector(_) => Err(unsupported("a range selector outside a range function")),
        Expr::Subquery(_) => Err(unsupported("a subquery")),
        Expr::Extension(_) => Err(unsupported("an extension expression")),
        Expr::Paren(p) => check_subset(&p.expr),
        Expr::Unary(u) => check_subset(&u.expr),
        Expr::Aggregate(a) => {
            let op = a.op.to_string();
            if !AGGREGATIONS.contains(&op.as_str()) {
                return Err(unsupported(format!("the aggregation `{op}`")));
            }
            check_subset(&a.expr)
        }
        Expr::Binary(b) => {
            let op = b.op.to_string();
            if !BINARY.contains(&op.as_str()) {
                return Err(unsupported(format!("the operator `{op}`")));
            }
            if let Some(m) = &b.modifier
                && matches!(m.card, VectorMatchCardinality::ManyToOne(_) | VectorMatchCardinality::OneToMany(_))
            {
                return Err(unsupported("group_left/group_right"));
            }
            check_subset(&b.lhs)?;
            check_subset(&b.rhs)
        }
        Expr::Call(call) => {
            let name = call.func.name;
            let args = &call.args.args;
            if RANGE_FUNCTIONS.contains(&name) {
                for arg in args {
                    match arg.as_ref() {
                        Expr::MatrixSelector(m) => check_subset(&Expr::VectorSelector(m.vs.clone()))?,
                        Expr::NumberLiteral(_) => {}
                        other => check_subset(other)?,
                    }
                }
                Ok(())
            } else if name == "histogram_quantile" {
                // The stored sketches answer the quantile of the series the inner expression
                // selects; bucket series (`_bucket`, `le`) are not needed.
                args.iter().try_for_each(|a| match a.as_ref() {
                    Expr::MatrixSelector(m) => check_subset(&Expr::VectorSelector(m.vs.clone())),
                    other => check_subset(other),
                })
            } else {
                Err(unsupported(format!("the function `{name}`")))
            }
        }
    }
}
