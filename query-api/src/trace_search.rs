//! `GET /monitoring/tracing/traces`: trace search.
//!
//! Parameters: `service`, `operation`, `kind` (`server|client|internal|producer|consumer`),
//! `attr=key=value` (any number; a span or its resource carries it), `errors=true` (only
//! spans with an error status), `min_duration` / `max_duration` (a span's duration: `1.2ms`,
//! `250us`, `2s`), `start` / `end` (see [`crate::time_params`]; default the last hour),
//! `limit` (1–1000, default 20) and `order` (`newest` (default), `oldest`, `longest`,
//! `shortest`, by trace start or trace duration).
//!
//! A trace matches when one of its spans meets every condition. The answer holds one
//! summary per trace: root service and operation (the span without a parent, else the
//! earliest), start, duration, span and error counts, and the services with their span and
//! error counts.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use datafusion::common::JoinType;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::logical_expr::{case, lit};
use datafusion::prelude::{Expr, col, in_list};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::json_rows::column_values;
use crate::series_query::date_of;
use crate::time_params::{parse_duration_us, parse_time};

/// Most traces one search answers.
pub const MAX_LIMIT: usize = 1000;
/// How far outside the searched range the other spans of a matching trace are looked for.
const TRACE_SLACK_US: i64 = 3600 * 1_000_000;

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Order {
    Newest,
    Oldest,
    Longest,
    Shortest,
}

/// A parsed search.
#[derive(Debug, Clone)]
pub struct TraceSearch {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub kind: Option<String>,
    pub attributes: Vec<(String, String)>,
    pub errors_only: bool,
    pub min_duration_us: Option<i64>,
    pub max_duration_us: Option<i64>,
    /// Unix microseconds, `[start, end)`.
    pub start_us: i64,
    pub end_us: i64,
    pub limit: usize,
    pub order: Order,
}

impl TraceSearch {
    pub fn parse(params: Vec<(String, String)>, now_ms: i64) -> ApiResult<TraceSearch> {
        let mut search = TraceSearch {
            service: None,
            operation: None,
            kind: None,
            attributes: Vec::new(),
            errors_only: false,
            min_duration_us: None,
            max_duration_us: None,
            start_us: 0,
            end_us: 0,
            limit: 20,
            order: Order::Newest,
        };
        let (mut start, mut end) = (None, None);
        for (k, v) in params {
            match k.as_str() {
                "service" => search.service = Some(v).filter(|s| !s.is_empty()),
                "operation" => search.operation = Some(v).filter(|s| !s.is_empty()),
                "kind" => {
                    if callscope_schemas::SpanKind::parse(&v).is_none() {
                        return Err(ApiError::bad_field(
                            "kind",
                            format!("unknown span kind {v:?}; use server, client, internal, producer or consumer"),
                        ));
                    }
                    search.kind = Some(v);
                }
                "attr" => {
                    let (key, value) = v
                        .split_once('=')
                        .filter(|(k, _)| !k.is_empty())
                        .ok_or_else(|| ApiError::bad_field("attr", format!("attr={v:?}: use attr=key=value")))?;
                    search.attributes.push((key.to_string(), value.to_string()));
                }
                "errors" => {
                    search.errors_only = match v.as_str() {
                        "true" | "1" => true,
                        "false" | "0" | "" => false,
                        _ => return Err(ApiError::bad_field("errors", "use errors=true or errors=false")),
                    }
                }
                "min_duration" => search.min_duration_us = Some(parse_duration_us("min_duration", &v)?),
                "max_duration" => search.max_duration_us = Some(parse_duration_us("max_duration", &v)?),
                "start" => start = Some(parse_time("start", &v, now_ms)?),
                "end" => end = Some(parse_time("end", &v, now_ms)?),
                "limit" => {
                    search.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| ApiError::bad_field("limit", format!("limit must be 1 to {MAX_LIMIT}")))?;
                }
                "order" => {
                    search.order = match v.as_str() {
                        "newest" | "" => Order::Newest,
                        "oldest" => Order::Oldest,
                        "longest" => Order::Longest,
                        "shortest" => Order::Shortest,
                        _ => {
                            return Err(ApiError::bad_field("order", "use newest, oldest, longest or shortest"));
                        }
                    }
                }
                other => return Err(ApiError::bad_field(other, format!("unknown parameter {other:?}"))),
            }
        }
        let end = end.unwrap_or(now_ms);
        let start = start.unwrap_or(end - 3_600_000);
        if start >= end {
            return Err(ApiError::bad_field("start", "start must be before end"));
        }
        if let (Some(lo), Some(hi)) = (search.min_duration_us, search.max_duration_us)
            && lo > hi
        {
            return Err(ApiError::bad_field("min_duration", "min_duration must not exceed max_duration"));
        }
        // Times are bounded to the years 1–9999 by the parser: in microseconds they fit.
        (search.start_us, search.end_us) = (start * 1000, end * 1000);
        Ok(search)
    }

    /// The conditions one span must meet.
    fn span_filter(&self) -> Expr {
        let mut f = spans_starting_in(self.start_us, self.end_us);
        if let Some(s) = &self.service {
            f = f.and(col("service").eq(lit(s.clone())));
        }
        if let Some(o) = &self.operation {
            f = f.and(col("operation").eq(lit(o.clone())));
        }
        if let Some(k) = &self.kind {
            f = f.and(col("kind").eq(lit(k.clone())));
        }
        for (k, v) in &self.attributes {
            f = f.and(
                get_field(col("attributes"), k.as_str()).eq(lit(v.clone())).or(get_field(
                    col("resource_attributes"),
                    k.as_str(),
                )
                .eq(lit(v.clone()))),
            );
        }
        if self.errors_only {
            f = f.and(col("status").eq(lit("error")));
        }
        if let Some(lo) = self.min_duration_us {
            f = f.and(col("duration_us").gt_eq(lit(lo)));
        }
        if let Some(hi) = self.max_duration_us {
            f = f.and(col("duration_us").lt_eq(lit(hi)));
        }
        f
    }
}

/// Spans starting in `[from_us, to_us)` (unix µs), with the `date` partitions of that range,
/// so that only those directories are listed.
pub(crate) fn spans_starting_in(from_us: i64, to_us: i64) -> Expr {
    col("start_time_us")
        .gt_eq(lit(from_us))
        .and(col("start_time_us").lt(lit(to_us)))
        .and(col("date").gt_eq(lit(date_of(from_us.div_euclid(1000)))))
        .and(col("date").lt_eq(lit(date_of(to_us.div_euclid(1000)))))
}

/// Runs a search; returns the trace summaries in the asked order.
pub async fn search(state: &AppState, q: &TraceSearch) -> ApiResult<Vec<Value>> {
    let session = state.engine.session();
    let spans = session.table("spans").await?;
    let matched =
        spans.clone().filter(q.span_filter())?.aggregate(vec![col("trace_id").alias("matched_trace")], vec![])?;
    let around = spans_starting_in(q.start_us.saturating_sub(TRACE_SLACK_US), q.end_us.saturating_add(TRACE_SLACK_US));
    let error = case(col("status")).when(lit("error"), lit(1i64)).otherwise(lit(0i64))?;
    let summaries = spans
        .filter(around.clone())?
        .join(matched, JoinType::LeftSemi, &["trace_id"], &["matched_trace"], None)?
        .aggregate(
            vec![col("trace_id")],
            vec![
                min(col("start_time_us")).alias("start"),
                max(col("start_time_us") + col("duration_us")).alias("end"),
                count(lit(1)).alias("spans"),
                sum(error).alias("errors"),
            ],
        )?;
    let duration = col("end") - col("start");
    let order = match q.order {
        Order::Newest => vec![col("start").sort(false, false)],
        Order::Oldest => vec![col("start").sort(true, false)],
        Order::Longest => vec![duration.sort(false, false)],
        Order::Shortest => vec![duration.sort(true, false)],
    };
    let mut order = order;
    order.push(col("trace_id").sort(true, false));
    let mut traces: Vec<(String, i64, i64, i64, i64)> = Vec::new();
    for batch in summaries.sort(order)?.limit(0, Some(q.limit))?.collect().await? {
        let c: Vec<Vec<Value>> = batch.columns().iter().map(|c| column_values(c.as_ref())).collect();
        for row in 0..batch.num_rows() {
            let int = |i: usize| c[i][row].as_i64().unwrap_or(0);
            traces.push((c[0][row].as_str().unwrap_or_default().to_string(), int(1), int(2), int(3), int(4)));
        }
    }
    if traces.is_empty() {
        return Ok(Vec::new());
    }
    // Roots and services of the chosen traces.
    let ids: Vec<Expr> = traces.iter().map(|t| lit(t.0.clone())).collect();
    let detail =
        state.engine.session().table("spans").await?.filter(around.and(in_list(col("trace_id"), ids, false)))?.select(
            ["trace_id", "parent_span_id", "service", "operation", "start_time_us", "status"]
                .into_iter()
                .map(col)
                .collect::<Vec<_>>(),
        )?;
    type Root = (bool, i64, String, String);
    let mut roots: BTreeMap<String, Root> = BTreeMap::new();
    let mut services: BTreeMap<String, BTreeMap<String, (i64, i64)>> = BTreeMap::new();
    for batch in detail.collect().await? {
        let c: Vec<Vec<Value>> = batch.columns().iter().map(|c| column_values(c.as_ref())).collect();
        for row in 0..batch.num_rows() {
            let text = |i: usize| c[i][row].as_str().unwrap_or_default().to_string();
            let trace = text(0);
            let is_root = c[1][row].is_null();
            let start = c[4][row].as_i64().unwrap_or(i64::MAX);
            let candidate: Root = (is_root, start, text(2), text(3));
            let better = |old: &Root| (candidate.0, -candidate.1) > (old.0, -old.1);
            if roots.get(&trace).is_none_or(better) {
                roots.insert(trace.clone(), candidate);
            }
            let entry = services.entry(trace).or_default().entry(text(2)).or_default();
            entry.0 += 1;
            entry.1 += i64::from(c[5][row] == "error");
        }
    }
    Ok(traces
        .into_iter()
        .map(|(trace_id, start, end, span_count, errors)| {
            let root = roots.get(&trace_id);
            let services: Vec<Value> = services
                .get(&trace_id)
                .map(|s| {
                    s.iter().map(|(name, (n, e))| json!({"name": name, "span_count": n, "error_count": e})).collect()
                })
                .unwrap_or_default();
            json!({
                "trace_id": trace_id,
                "root_service": root.map(|r| r.2.clone()),
                "root_operation": root.map(|r| r.3.clone()),
                "start_time_us": start,
                "duration_us": end - start,
                "span_count": span_count,
                "error_count": errors,
                "services": services,
            })
        })
        .collect())
}

/// `GET /monitoring/tracing/traces`.
pub async fn get_traces(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let q = TraceSearch::parse(params, callscope_runtime::now_ms())?;
    let traces = search(&state, &q).await?;
    Ok(Json(json!({
        "start_time_us": q.start_us,
        "end_time_us": q.end_us,
        "count": traces.len(),
        "traces": traces,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn searches_parse_and_bad_parameters_are_named() {
        let q = TraceSearch::parse(
            params(&[("service", "asr"), ("attr", "region=north"), ("attr", "a=b=c"), ("min_duration", "1.5ms")]),
            1_700_000_000_000,
        )
        .expect("valid");
        assert_eq!(q.attributes, vec![("region".into(), "north".into()), ("a".into(), "b=c".into())]);
        assert_eq!(q.min_duration_us, Some(1500));
        assert_eq!((q.end_us - q.start_us), 3_600_000_000);
        let field = |p: &[(&str, &str)]| match TraceSearch::parse(params(p), 0) {
            Err(ApiError::BadRequest { field: Some(f), .. }) => f,
            other => panic!("expected a field error, got {other:?}"),
        };
        assert_eq!(field(&[("kind", "sideways")]), "kind");
        assert_eq!(field(&[("attr", "novalue")]), "attr");
        assert_eq!(field(&[("limit", "0")]), "limit");
        assert_eq!(field(&[("limit", "100000")]), "limit");
        assert_eq!(field(&[("min_duration", "2s"), ("max_duration", "1s")]), "min_duration");
        assert_eq!(field(&[("order", "random")]), "order");
        assert_eq!(field(&[("color", "red")]), "color");
    }
}
