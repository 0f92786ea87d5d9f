//! Custom metrics on read: a source-based definition is its source metric, filtered and
//! grouped by the kept labels; an expression is evaluated per bucket and group over the
//! merged values of the metrics it names. Both read roll-ups where windows are closed and
//! raw samples after them, exactly like plain series (see [`crate::series_query`]), so a
//! new definition also answers for data stored before it existed.

use std::collections::{BTreeMap, BTreeSet};

use callscope_schemas::custom_metrics::{Aggregate, CustomMetric, Expr as MetricExpr};
use datafusion::functions::core::expr_fn::{coalesce, get_field};
use datafusion::prelude::{Expr, col, lit};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
pub use crate::series_query::Grouped;
use crate::series_query::{Agg, Series, SeriesQuery, grouped_by, plan};

pub fn agg_of(a: Aggregate) -> Agg {
    match a {
        Aggregate::Sum => Agg::Sum,
        Aggregate::Count => Agg::Count,
        Aggregate::Avg => Agg::Avg,
        Aggregate::Min => Agg::Min,
        Aggregate::Max => Agg::Max,
        Aggregate::Last => Agg::Last,
        Aggregate::Rate => Agg::Rate,
        quantile => Agg::Quantile(quantile.quantile().unwrap_or(0.5)),
    }
}

fn group_exprs(labels: &[String]) -> Vec<Expr> {
    labels
        .iter()
        .map(|l| {
            if l == "service" { col("service") } else { coalesce(vec![get_field(col("labels"), l.as_str()), lit("")]) }
        })
        .collect()
}

/// The query of `metric` with `filter` applied (`service` filters the service column).
fn source_query(q: &SeriesQuery, metric: &str, filter: &BTreeMap<String, String>, agg: Agg) -> SeriesQuery {
    let mut sq = q.clone();
    sq.name = metric.to_string();
    sq.service = filter.get("service").cloned();
    sq.labels = filter.iter().filter(|(k, _)| *k != "service").map(|(k, v)| (k.clone(), v.clone())).collect();
    sq.agg = agg;
    sq
}

/// `metric` filtered, grouped by `labels` and aggregated per bucket.
pub async fn grouped(state: &AppState, sq: &SeriesQuery, labels: &[String]) -> ApiResult<Grouped> {
    let plan = plan(state, sq).await?;
    grouped_by(state, sq, &plan, group_exprs(labels)).await
}

/// Values of one definition per (group, bucket). `agg` overrides the definition's own
/// aggregate (source-based definitions only).
pub async fn evaluate(
    state: &AppState,
    definitions: &[CustomMetric],
    def: &CustomMetric,
    q: &SeriesQuery,
    agg: Option<Agg>,
    depth: usize,
) -> ApiResult<Grouped> {
    if depth > 8 {
        return Err(ApiError::bad_request(format!("{}: custom metrics nest too deeply", def.name)));
    }
    if let Some(source) = &def.rule.source {
        let sq = source_query(q, source, &def.rule.filter, agg.unwrap_or(agg_of(def.rule.aggregate)));
        return grouped(state, &sq, &def.labels).await;
    }
    let text = def.rule.expr.as_deref().unwrap_or_default();
    let expr = MetricExpr::parse(text).map_err(|e| ApiError::internal(format!("{}: {e}", def.name)))?;
    let mut values: BTreeMap<String, Grouped> = BTreeMap::new();
    for var in expr.variables() {
        let grouped_values = match definitions.iter().find(|d| d.name == var) {
            Some(other) => {
                // Group the referenced metric by this definition's labels.
                let mut other = other.clone();
                other.labels = def.labels.clone();
                Box::pin(evaluate(state, definitions, &other, q, None, depth + 1)).await?
            }
            None => grouped(state, &source_query(q, &var, &BTreeMap::new(), Agg::Sum), &def.labels).await?,
        };
        values.insert(var, grouped_values);
    }
    let mut keys: BTreeMap<&Vec<String>, BTreeSet<i64>> = BTreeMap::new();
    for (group, points) in values.values().flatten() {
        keys.entry(group).or_default().extend(points.keys());
    }
    let mut out = Grouped::new();
    for (group, buckets) in keys {
        for t in buckets {
            // A metric without samples in a bucket contributed nothing: zero.
            let value = |m: &str| {
                Some(values.get(m).and_then(|g| g.get(group)).and_then(|p| p.get(&t)).copied().unwrap_or(0.0))
            };
            if let Some(v) = expr.eval(&value) {
                out.entry(group.clone()).or_default().insert(t, v);
            }
        }
    }
    Ok(out)
}

/// Grouped values as series labelled by the definition's labels.
pub fn to_series(def: &CustomMetric, grouped: Grouped) -> Vec<Series> {
    grouped
        .into_iter()
        .map(|(group, points)| Series {
            name: def.name.clone(),
            labels: def.labels.iter().cloned().zip(group).collect(),
            points: points.into_iter().collect(),
        })
        .collect()
}

/// `/monitoring/metrics` for a custom metric.
pub async fn answer(
    state: &AppState,
    definitions: &[CustomMetric],
    def: &CustomMetric,
    q: &SeriesQuery,
) -> ApiResult<(Vec<Series>, String)> {
    let agg = q.agg_given.then_some(q.agg);
    if def.rule.expr.is_some() && agg.is_some() {
        return Err(ApiError::bad_field("agg", format!("{} is an expression; it has no agg", def.name)));
    }
    let grouped = evaluate(state, definitions, def, q, agg, 0).await?;
    Ok((to_series(def, grouped), format!("custom:{}", if def.rule.expr.is_some() { "expr" } else { "source" })))
}
