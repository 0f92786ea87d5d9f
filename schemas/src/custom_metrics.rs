//! Custom (derived) metrics: business metrics that operators define without a redeploy.
//!
//! A definition either **aggregates a source metric** (`rule.source`, optional label
//! `filter`, the `labels` to keep, and the `aggregate` that turns a window into a value),
//! which the stream workers materialize as a series of its own in the roll-ups, or
//! **derives** a value from other metrics with an arithmetic expression (`rule.expr`, such
//! as `calls_answered_total / calls_total`), which is evaluated on read over merged
//! windows, grouped by `labels`. In an expression, a custom metric stands for its own
//! aggregate and any other metric for the sum of its samples in the window.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::events::{Labels, Metric, MetricKind};

/// How a window of samples becomes one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    Sum,
    Count,
    Avg,
    Min,
    Max,
    Last,
    /// Sum per second.
    Rate,
    P50,
    P90,
    P95,
    P99,
}

impl Aggregate {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Sum => "sum",
            Aggregate::Count => "count",
            Aggregate::Avg => "avg",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Last => "last",
            Aggregate::Rate => "rate",
            Aggregate::P50 => "p50",
            Aggregate::P90 => "p90",
            Aggregate::P95 => "p95",
            Aggregate::P99 => "p99",
        }
    }

    pub fn quantile(self) -> Option<f64> {
        match self {
            Aggregate::P50 => Some(0.5),
            Aggregate::P90 => Some(0.9),
            Aggregate::P95 => Some(0.95),
            Aggregate::P99 => Some(0.99),
            _ => None,
        }
    }
}

fn default_aggregate() -> Aggregate {
    Aggregate::Sum
}

/// The aggregation rule of a definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Source metric whose samples this metric aggregates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Label matchers on source samples (`service` matches the emitting service).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filter: BTreeMap<String, String>,
    /// How a window becomes a value (default `sum`).
    #[serde(default = "default_aggregate")]
    pub aggregate: Aggregate,
    /// Arithmetic over other metrics (`+ - * /`, parentheses, numbers, metric names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
}

/// One custom metric definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomMetric {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: MetricKind,
    #[serde(default)]
    pub help: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Labels to keep (`service` for the emitting service); all others are aggregated away.
    #[serde(default)]
    pub labels: Vec<String>,
    pub rule: Rule,
    /// Shipped with callscope (set by callscope; ignored on input).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub builtin: bool,
}

/// A validation failure: the offending field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> Invalid {
    Invalid { field: field.to_string(), message: message.into() }
}

fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && text.len() <= 200
}

const RESERVED_SUFFIXES: [&str; 4] = ["_total", "_sum", "_count", "_bucket"];

impl CustomMetric {
    /// Checks a definition on its own; [`validate_set`] checks references between them.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !is_name(&self.name) {
            return Err(invalid("name", "a metric name is letters, digits and '_', not starting with a digit"));
        }
        if self.name.starts_with("callscope_") {
            return Err(invalid("name", "names starting with callscope_ are reserved for callscope's own metrics"));
        }
        if let Some(suffix) = RESERVED_SUFFIXES.iter().find(|s| self.name.ends_with(**s)) {
            return Err(invalid(
                "name",
                format!("a derived metric is exported as a gauge or summary, so its name must not end in {suffix}"),
            ));
        }
        if self.help.len() > 1000 {
            return Err(invalid("help", "help text is at most 1000 characters"));
        }
        if self.unit.as_ref().is_some_and(|u| u.len() > 50) {
            return Err(invalid("unit", "unit is at most 50 characters"));
        }
        if self.labels.len() > 10 {
            return Err(invalid("labels", "at most 10 labels"));
        }
        let mut seen = BTreeSet::new();
        for label in &self.labels {
            if !is_name(label) {
                return Err(invalid("labels", format!("{label:?} is not a label name")));
            }
            if !seen.insert(label) {
                return Err(invalid("labels", format!("{label:?} is listed twice")));
            }
        }
        if let Some(key) = self.rule.filter.keys().find(|k| !is_name(k)) {
            return Err(invalid("rule.filter", format!("{key:?} is not a label name")));
        }
        let quantile = self.rule.aggregate.quantile().is_some();
        if quantile && !matches!(self.kind, MetricKind::Histogram | MetricKind::Summary) {
            return Err(invalid("rule.aggregate", "quantiles need a metric of type histogram or summary"));
        }
        match (&self.rule.source, &self.rule.expr) {
            (Some(source), None) => {
                if !is_name(source) {
                    return Err(invalid("rule.source", format!("{source:?} is not a metric name")));
                }
                if source == &self.name {
                    return Err(invalid("rule.source", "a metric cannot aggregate itself"));
                }
            }
            (None, Some(expr)) => {
                if expr.len() > 500 {
                    return Err(invalid("rule.expr", "an expression is at most 500 characters"));
                }
                let parsed = Expr::parse(expr).map_err(|e| invalid("rule.expr", e.to_string()))?;
                if parsed.variables().contains(&self.name) {
                    return Err(invalid("rule.expr", "a metric cannot refer to itself"));
                }
                if quantile {
                    return Err(invalid("rule.aggregate", "a derived expression has no quantiles"));
                }
                if !self.rule.filter.is_empty() {
                    return Err(invalid("rule.filter", "filters apply to a source metric, not to an expression"));
                }
            }
            (Some(_), Some(_)) => return Err(invalid("rule", "give either rule.source or rule.expr, not both")),
            (None, None) => return Err(invalid("rule", "give rule.source (a metric to aggregate) or rule.expr")),
        }
        Ok(())
    }

    /// The sample this definition derives from a source sample, if it matches.
    pub fn derive(&self, m: &Metric) -> Option<Metric> {
        if self.rule.source.as_deref() != Some(m.name.as_str()) {
            return None;
        }
        let value_of =
            |key: &str| if key == "service" { Some(m.service.as_str()) } else { m.labels.get(key).map(String::as_str) };
        if !self.rule.filter.iter().all(|(k, v)| value_of(k) == Some(v.as_str())) {
            return None;
        }
        let labels: Labels = self
            .labels
            .iter()
            .filter(|l| *l != "service")
            .map(|l| (l.clone(), value_of(l).unwrap_or_default().to_string()))
            .collect();
        Some(Metric {
            name: self.name.clone(),
            kind: self.kind,
            value: m.value,
            timestamp_ms: m.timestamp_ms,
            service: if self.labels.iter().any(|l| l == "service") { m.service.clone() } else { String::new() },
            labels,
            unit: self.unit.clone(),
        })
    }
}

/// Checks references of expression definitions: no cycles, and custom metrics they use
/// keep every label the expression groups by.
pub fn validate_set(defs: &[CustomMetric]) -> Result<(), Invalid> {
    let by_name: BTreeMap<&str, &CustomMetric> = defs.iter().map(|d| (d.name.as_str(), d)).collect();
    for def in defs {
        let Some(expr) = &def.rule.expr else { continue };
        let Ok(parsed) = Expr::parse(expr) else { continue };
        for var in parsed.variables() {
            if let Some(other) = by_name.get(var.as_str())
                && let Some(missing) = def.labels.iter().find(|l| !other.labels.contains(l))
            {
                return Err(invalid(
                    "labels",
                    format!("{} groups by {missing:?}, which {var} does not keep", def.name),
                ));
            }
        }
        // Depth-first walk for cycles through other expressions.
        let mut stack: Vec<(String, Vec<String>)> = vec![(def.name.clone(), vec![def.name.clone()])];
        while let Some((name, path)) = stack.pop() {
            let Some(d) = by_name.get(name.as_str()) else { continue };
            let Some(Ok(e)) = d.rule.expr.as_deref().map(Expr::parse) else { continue };
            for var in e.variables() {
                if path.contains(&var) {
                    return Err(invalid("rule.expr", format!("cycle: {} -> {var}", path.join(" -> "))));
                }
                let mut next = path.clone();
                next.push(var.clone());
                stack.push((var, next));
            }
        }
    }
    Ok(())
}

/// An arithmetic expression over metric names.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    Metric(String),
    Neg(Box<Expr>),
    Binary(char, Box<Expr>, Box<Expr>),
}

/// Why an expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(String);

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.text[self.pos..].starts_with(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.text[self.pos..].chars().next()
    }

    fn sum(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.pos += 1;
            left = Expr::Binary(op, Box::new(left), Box::new(self.product()?));
        }
        Ok(left)
    }

    fn product(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        while let Some(op @ ('*' | '/')) = self.peek() {
            self.pos += 1;
            left = Expr::Binary(op, Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        match self.peek() {
            Some('-') => {
                self.pos += 1;
                Ok(Expr::Neg(Box::new(self.unary()?)))
            }
            Some('(') => {
                self.pos += 1;
                let inner = self.sum()?;
                if self.peek() != Some(')') {
                    return Err(ExprError(format!("expected ')' at position {}", self.pos)));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => {
                let start = self.pos;
                while self.text[self.pos..].starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == 'e') {
                    self.pos += 1;
                }
                let text = &self.text[start..self.pos];
                text.parse().map(Expr::Number).map_err(|_| ExprError(format!("{text:?} is not a number")))
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.pos;
                while self.text[self.pos..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                    self.pos += 1;
                }
                Ok(Expr::Metric(self.text[start..self.pos].to_string()))
            }
            Some(c) => Err(ExprError(format!("unexpected {c:?} at position {}", self.pos))),
            None => Err(ExprError("the expression ends too early".into())),
        }
    }
}

impl Expr {
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        let mut parser = Parser { text, pos: 0 };
        let expr = parser.sum()?;
        if let Some(c) = parser.peek() {
            return Err(ExprError(format!("unexpected {c:?} at position {}", parser.pos)));
        }
        if expr.variables().is_empty() {
            return Err(ExprError("the expression uses no metric".into()));
        }
        Ok(expr)
    }

    /// Metric names used, in order of first use.
    pub fn variables(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<String>) {
        match self {
            Expr::Number(_) => {}
            Expr::Metric(m) => {
                if !out.contains(m) {
                    out.push(m.clone());
                }
            }
            Expr::Neg(e) => e.collect(out),
            Expr::Binary(_, a, b) => {
                a.collect(out);
                b.collect(out);
            }
        }
    }

    /// Evaluates with metric values from `value`; `None` when a value is missing or the
    /// result is not finite (a division by zero).
    pub fn eval(&self, value: &dyn Fn(&str) -> Option<f64>) -> Option<f64> {
        let v = match self {
            Expr::Number(n) => *n,
            Expr::Metric(m) => value(m)?,
            Expr::Neg(e) => -e.eval(value)?,
            Expr::Binary(op, a, b) => {
                let (a, b) = (a.eval(value)?, b.eval(value)?);
                match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    _ => a / b,
                }
            }
        };
        v.is_finite().then_some(v)
    }
}

fn source(
    name: &str,
    kind: MetricKind,
    help: &str,
    unit: Option<&str>,
    labels: &[&str],
    src: &str,
    agg: Aggregate,
) -> CustomMetric {
    CustomMetric {
        name: name.into(),
        kind,
        help: help.into(),
        unit: unit.map(Into::into),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        rule: Rule { source: Some(src.into()), filter: BTreeMap::new(), aggregate: agg, expr: None },
        builtin: true,
    }
}

fn derived(name: &str, help: &str, unit: Option<&str>, labels: &[&str], expr: &str) -> CustomMetric {
    CustomMetric {
        name: name.into(),
        kind: MetricKind::Gauge,
        help: help.into(),
        unit: unit.map(Into::into),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        rule: Rule { source: None, filter: BTreeMap::new(), aggregate: Aggregate::Sum, expr: Some(expr.into()) },
        builtin: true,
    }
}

/// The phone platform's business metrics, over the metrics its services emit.
pub fn builtin_definitions() -> Vec<CustomMetric> {
    use MetricKind::*;
    let mut whitelist_hits = source(
        "whitelist_hits",
        Counter,
        "Whitelist checks that found the caller",
        None,
        &[],
        "whitelist_checks_total",
        Aggregate::Sum,
    );
    whitelist_hits.rule.filter.insert("result".into(), "hit".into());
    vec![
        source(
            "call_volume",
            Counter,
            "Calls received per window",
            Some("calls"),
            &["region"],
            "calls_total",
            Aggregate::Sum,
        ),
        derived(
            "call_success_ratio",
            "Share of calls answered by the AI",
            Some("ratio"),
            &["region"],
            "calls_answered_total / calls_total",
        ),
        source(
            "ai_response_latency",
            Summary,
            "Time the AI dialogue engine takes to answer a turn",
            Some("milliseconds"),
            &["model"],
            "ai_response_time_ms",
            Aggregate::P95,
        ),
        source(
            "ai_confidence_avg",
            Gauge,
            "Mean confidence of the AI's answers",
            Some("ratio"),
            &["model"],
            "ai_confidence",
            Aggregate::Avg,
        ),
        derived(
            "ai_error_ratio",
            "AI turns that failed per answered call",
            Some("ratio"),
            &[],
            "ai_errors_total / calls_total",
        ),
        source(
            "whitelist_checks",
            Counter,
            "Whitelist checks per window",
            None,
            &["result"],
            "whitelist_checks_total",
            Aggregate::Sum,
        ),
        whitelist_hits,
        derived(
            "whitelist_hit_ratio",
            "Share of whitelist checks that found the caller",
            Some("ratio"),
            &[],
            "whitelist_hits / whitelist_checks_total",
        ),
        derived(
            "spam_block_ratio",
            "Share of calls detected as spam and blocked",
            Some("ratio"),
            &[],
            "spam_detections_total / calls_total",
        ),
        source(
            "user_satisfaction",
            Gauge,
            "Mean user satisfaction score (1-5)",
            Some("score"),
            &["model"],
            "user_satisfaction_score",
            Aggregate::Avg,
        ),
        derived(
            "conversion_ratio",
            "Answered calls that converted",
            Some("ratio"),
            &["region"],
            "conversions_total / calls_answered_total",
        ),
        derived(
            "cost_per_call",
            "Telephony and AI cost per call",
            Some("cny"),
            &["region"],
            "call_cost_cny_total / calls_total",
        ),
        derived(
            "revenue_per_call",
            "Billed revenue per call",
            Some("cny"),
            &["region"],
            "billing_revenue_cny_total / calls_total",
        ),
    ]
}

#[cfg(test)]
mod tests;
