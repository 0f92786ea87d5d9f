//! Service dependencies: per edge (caller → callee) the calls, the failed calls and the
//! callee spans' latency, over a time range. `GET
//! /monitoring/tracing/services/{service}/dependencies` answers one service's upstream and
//! downstream edges; the Jaeger API's `api/dependencies` answers every edge.
//!
//! Two sources, one answer:
//!
//! * **stream** (the default when the workers aggregate): the edges the workers pair in
//!   the stream and keep as roll-ups (`traces_service_graph_*`, see the pipeline's
//!   `span_metrics`): counts summed and latency sketches merged over the windows of one
//!   resolution (the coarsest that leaves at least 24 windows in the range), so a week
//!   reads a few thousand rows instead of every span. Windows still open (the last
//!   allowed lateness) are not in it yet.
//! * **spans** (`source=spans`, and when aggregation is off): joined from the spans at
//!   query time — a child span whose parent span belongs to another service is one call of
//!   that edge. Exact over any range, but it reads every span of the range.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use axum::Json;
use axum::extract::State;
use callscope_schemas::rollup::{ROLLUP_TABLE, decode_sketch, merge_sketch, resolution_label};
use datafusion::common::JoinType;
use datafusion::functions_aggregate::expr_fn::{approx_percentile_cont, count, sum};
use datafusion::logical_expr::case;
use datafusion::prelude::{cast, col, lit};
use serde::Serialize;
use serde_json::{Value, json};
use sketches_ddsketch::DDSketch;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::json_rows::column_values;
use crate::series_query::date_of;
use crate::time_params::parse_time;
use crate::trace_search::spans_starting_in;

/// The roll-ups of the workers' service graph (named as Tempo's metrics generator names them).
const EDGE_REQUESTS: &str = "traces_service_graph_request_total";
const EDGE_FAILED: &str = "traces_service_graph_request_failed_total";
const EDGE_SERVER_SECONDS: &str = "traces_service_graph_request_server_seconds";

/// Where edges come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeSource {
    /// The stream's roll-ups (spans joined instead when the workers do not aggregate).
    Stream,
    /// Spans joined at query time.
    Spans,
}

impl EdgeSource {
    pub fn parse(text: &str) -> ApiResult<EdgeSource> {
        match text {
            "stream" => Ok(EdgeSource::Stream),
            "spans" => Ok(EdgeSource::Spans),
            other => Err(ApiError::bad_field("source", format!("{other:?} is neither \"stream\" nor \"spans\""))),
        }
    }
}

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

/// Every edge of calls starting in `[from_us, to_us)`, optionally only those touching
/// `service`, from the stream's roll-ups (or the spans, see the module's documentation).
pub async fn edges(state: &AppState, from_us: i64, to_us: i64, service: Option<&str>) -> ApiResult<Vec<Edge>> {
    edges_from(state, EdgeSource::Stream, from_us, to_us, service).await
}

/// [`edges`] from the given source.
pub async fn edges_from(
    state: &AppState,
    source: EdgeSource,
    from_us: i64,
    to_us: i64,
    service: Option<&str>,
) -> ApiResult<Vec<Edge>> {
    let mut edges = match (source, edge_resolution(&state.resolutions_ms, (to_us - from_us) / 1000)) {
        (EdgeSource::Stream, Some(r)) => {
            edges_from_rollups(state, r, from_us.div_euclid(1000), to_us.div_euclid(1000)).await?
        }
        _ => return edges_from_spans(state, from_us, to_us, service).await,
    };
    if let Some(service) = service {
        edges.retain(|e| e.parent == service || e.child == service);
    }
    Ok(edges)
}

/// The coarsest roll-up resolution that leaves at least 24 windows in a range of `span_ms`
/// (the finest when none does); `None` when the workers write no roll-ups.
fn edge_resolution(resolutions_ms: &[i64], span_ms: i64) -> Option<i64> {
    let finest = resolutions_ms.iter().copied().filter(|r| *r > 0).min()?;
    Some(resolutions_ms.iter().copied().filter(|r| *r > 0 && r.saturating_mul(24) <= span_ms).max().unwrap_or(finest))
}

async fn edges_from_rollups(state: &AppState, r: i64, from_ms: i64, to_ms: i64) -> ApiResult<Vec<Edge>> {
    let names = [EDGE_REQUESTS, EDGE_FAILED, EDGE_SERVER_SECONDS];
    let filter = col("name")
        .in_list(names.iter().map(|n| lit(*n)).collect(), false)
        .and(col("resolution").eq(lit(resolution_label(r))))
        .and(col("resolution_ms").eq(lit(r)))
        .and(col("window_start_ms").gt_eq(lit(from_ms.div_euclid(r) * r)))
        .and(col("window_start_ms").lt(lit(to_ms)))
        .and(col("date").gt_eq(lit(date_of(from_ms))))
        .and(col("date").lt_eq(lit(date_of(to_ms))));
    // One scan: a few rows per edge and window, summed (calls, failures) and merged (the
    // callee latency sketches) per edge here.
    let utf8 = |c: &str| cast(col(c), DataType::Utf8).alias(c);
    let df = state.engine.session().table(ROLLUP_TABLE).await?.filter(filter)?.select(vec![
        utf8("name"),
        utf8("labels_key"),
        col("sum"),
        col("sketch"),
    ])?;
    #[derive(Default)]
    struct Acc {
        calls: f64,
        errors: f64,
        sketch: Option<DDSketch>,
    }
    let mut by_key: BTreeMap<String, Acc> = BTreeMap::new();
    for batch in df.collect().await? {
        let (name, key) = (batch.column(0).as_string::<i32>(), batch.column(1).as_string::<i32>());
        let sums = batch.column(2).as_primitive::<Float64Type>();
        let sketches = batch.column(3).as_binary::<i32>();
        for i in 0..batch.num_rows() {
            let acc = by_key.entry(key.value(i).to_string()).or_default();
            match name.value(i) {
                EDGE_REQUESTS => acc.calls += sums.value(i),
                EDGE_FAILED => acc.errors += sums.value(i),
                _ if !sketches.is_null(i) => {
                    let sketch = decode_sketch(sketches.value(i)).map_err(|e| ApiError::internal(e.to_string()))?;
                    match &mut acc.sketch {
                        Some(into) => merge_sketch(into, &sketch).map_err(|e| ApiError::internal(e.to_string()))?,
                        None => acc.sketch = Some(sketch),
                    }
                }
                _ => {}
            }
        }
    }
    let mut by_edge: BTreeMap<(String, String), Edge> = BTreeMap::new();
    for (key, acc) in by_key.into_iter().filter(|(_, a)| a.calls > 0.0) {
        let labels: BTreeMap<String, String> = serde_json::from_str(&key).unwrap_or_default();
        let (Some(client), Some(server)) = (labels.get("client"), labels.get("server")) else { continue };
        let quantile = |q: f64| acc.sketch.as_ref().and_then(|s| s.quantile(q).ok().flatten()).unwrap_or(0.0) * 1e6;
        by_edge.insert(
            (client.clone(), server.clone()),
            Edge {
                parent: client.clone(),
                child: server.clone(),
                calls: acc.calls.round() as i64,
                errors: acc.errors.round() as i64,
                p50_us: quantile(0.5),
                p95_us: quantile(0.95),
            },
        );
    }
    Ok(by_edge.into_values().collect())
}

/// Every edge of spans starting in `[from_us, to_us)`, joined at query time, optionally
/// only those touching `service`.
pub async fn edges_from_spans(
    state: &AppState,
    from_us: i64,
    to_us: i64,
    service: Option<&str>,
) -> ApiResult<Vec<Edge>> {
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

/// `GET /monitoring/tracing/services/{service}/dependencies?start=&end=&source=` (default
/// the last hour, from the stream): `upstream` (who calls the service) and `downstream`
/// (whom it calls), each edge with calls, errors, error rate and the callee spans' p50 and
/// p95 latency.
pub async fn service_dependencies(
    State(state): State<AppState>,
    ApiPath(service): ApiPath<String>,
    ApiQuery(params): ApiQuery<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let now = callscope_runtime::now_ms();
    let (mut start, mut end, mut source) = (None, None, EdgeSource::Stream);
    for (k, v) in &params {
        match k.as_str() {
            "start" => start = Some(parse_time("start", v, now)?),
            "end" => end = Some(parse_time("end", v, now)?),
            "source" => source = EdgeSource::parse(v)?,
            other => return Err(ApiError::bad_field(other, format!("unknown parameter {other:?}"))),
        }
    }
    let end = end.unwrap_or(now);
    let start = start.unwrap_or(end - 3_600_000);
    if start >= end {
        return Err(ApiError::bad_field("start", "start must be before end"));
    }
    let edges =
        edges_from(&state, source, start.saturating_mul(1000), end.saturating_mul(1000), Some(&service)).await?;
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
