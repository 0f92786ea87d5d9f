//! Service dependencies from parent/child spans across services: per edge (caller →
//! callee) the calls, the failed calls and the callee spans' latency, over a time range.
//! `GET /monitoring/tracing/services/{service}/dependencies` answers one service's upstream
//! and downstream edges; the Jaeger API's `api/dependencies` answers every edge.
//!
//! Edges are joined from the spans at query time: a child span whose parent span belongs
//! to another service is one call of that edge (its status and duration are the call's).

use axum::Json;
use axum::extract::State;
use datafusion::common::JoinType;
use datafusion::functions_aggregate::expr_fn::{approx_percentile_cont, count, sum};
use datafusion::logical_expr::case;
use datafusion::prelude::{col, lit};
use serde::Serialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::json_rows::column_values;
use crate::time_params::parse_time;
use crate::trace_search::spans_starting_in;

/// One caller → callee edge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    pub parent: String,
    pub child: String,
    pub calls: i64,
    pub errors: i64,
    pub p50_us: f64,
    pub p95_us: f64,
}

/// Every edge of spans starting in `[from_us, to_us)`, optionally only those touching
/// `service`.
pub async fn edges(state: &AppState, from_us: i64, to_us: i64, service: Option<&str>) -> ApiResult<Vec<Edge>> {
    let range = spans_starting_in(from_us, to_us);
    let session = state.engine.session();
    let spans = session.table("spans").await?.filter(range)?;
    let parents = spans.clone().select(vec![
        col("trace_id").alias("p_trace"),
        col("span_id").alias("p_span"),
        col("service").alias("parent"),
    ])?;
    let children = spans.select(vec![
        col("trace_id"),
        col("parent_span_id"),
        col("service").alias("child"),
        col("status"),
        col("duration_us"),
    ])?;
    let mut joined = children
        .join(parents, JoinType::Inner, &["trace_id", "parent_span_id"], &["p_trace", "p_span"], None)?
        .filter(col("parent").not_eq(col("child")))?;
    if let Some(service) = service {
        joined =
            joined.filter(col("parent").eq(lit(service.to_string())).or(col("child").eq(lit(service.to_string()))))?;
    }
    let failed = case(col("status")).when(lit("error"), lit(1i64)).otherwise(lit(0i64))?;
    let df = joined
        .aggregate(
            vec![col("parent"), col("child")],
            vec![
                count(lit(1)).alias("calls"),
                sum(failed).alias("errors"),
                approx_percentile_cont(col("duration_us").sort(true, false), lit(0.5), None).alias("p50"),
                approx_percentile_cont(col("duration_us").sort(true, false), lit(0.95), None).alias("p95"),
            ],
        )?
        .sort(vec![col("parent").sort(true, false), col("child").sort(true, false)])?;
    let mut out = Vec::new();
    for batch in df.collect().await? {
        let c: Vec<Vec<Value>> = batch.columns().iter().map(|c| column_values(c.as_ref())).collect();
        for row in 0..batch.num_rows() {
            let text = |i: usize| c[i][row].as_str().unwrap_or_default().to_string();
            out.push(Edge {
                parent: text(0),
                child: text(1),
                calls: c[2][row].as_i64().unwrap_or(0),
                errors: c[3][row].as_i64().unwrap_or(0),
                p50_us: c[4][row].as_f64().unwrap_or(0.0),
                p95_us: c[5][row].as_f64().unwrap_or(0.0),
            });
        }
    }
    Ok(out)
}

fn edge_json(e: &Edge, other: &str) -> Value {
    json!({
        "service": other,
        "calls": e.calls,
        "errors": e.errors,
        "error_rate": if e.calls > 0 { e.errors as f64 / e.calls as f64 } else { 0.0 },
        "latency_p50_us": e.p50_us,
        "latency_p95_us": e.p95_us,
    })
}

/// `GET /monitoring/tracing/services/{service}/dependencies?start=&end=` (default the last
/// hour): `upstream` (who calls the service) and `downstream` (whom it calls), each edge
/// with calls, errors, error rate and the callee spans' p50 and p95 latency.
pub async fn service_dependencies(
    State(state): State<AppState>,
    ApiPath(service): ApiPath<String>,
    ApiQuery(params): ApiQuery<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let now = callscope_runtime::now_ms();
    let (mut start, mut end) = (None, None);
    for (k, v) in &params {
        match k.as_str() {
            "start" => start = Some(parse_time("start", v, now)?),
            "end" => end = Some(parse_time("end", v, now)?),
            other => return Err(ApiError::bad_field(other, format!("unknown parameter {other:?}"))),
        }
    }
    let end = end.unwrap_or(now);
    let start = start.unwrap_or(end - 3_600_000);
    if start >= end {
        return Err(ApiError::bad_field("start", "start must be before end"));
    }
    let edges = edges(&state, start * 1000, end * 1000, Some(&service)).await?;
    let upstream: Vec<Value> = edges.iter().filter(|e| e.child == service).map(|e| edge_json(e, &e.parent)).collect();
    let downstream: Vec<Value> = edges.iter().filter(|e| e.parent == service).map(|e| edge_json(e, &e.child)).collect();
    Ok(Json(json!({
        "service": service,
        "start": start,
        "end": end,
        "upstream": upstream,
        "downstream": downstream,
    })))
}
