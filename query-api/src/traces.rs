//! `GET /monitoring/tracing/traces/{trace_id}`: the spans of one trace, in start order,
//! each with its attributes, its resource's attributes, its status message and its events.

use crate::extract::ApiPath;
use axum::Json;
use axum::extract::State;
use datafusion::prelude::{col, lit};
use serde_json::{Map, Value, json};

use datafusion::functions_aggregate::expr_fn::{approx_percentile_cont, count};
use datafusion::prelude::in_list;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::json_rows::column_values;
use crate::trace_analysis::{TraceSpan, analyze};
use crate::trace_search::spans_starting_in;

/// The spans of trace `trace_id` (lowercase hex) as JSON objects, in start order; 404 when
/// there are none.
pub async fn load_spans(state: &AppState, trace_id: &str) -> ApiResult<Vec<Value>> {
    let mut df = state.engine.session().table("spans").await?.filter(col("trace_id").eq(lit(trace_id.to_string())))?;
    // The index names the span starts of every trace the workers stored: the scan then
    // lists only those hours. A trace it does not know (stored before the index existed,
    // or by a tool that bypassed the workers) is still found, by reading every hour.
    match state.trace_index.lookup(trace_id).await {
        Ok(Some(located)) => {
            df = df.filter(spans_starting_in(located.first_start_us, located.last_start_us.saturating_add(1)))?;
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(trace_id, error = %e, "the trace-id index cannot be read; scanning every hour"),
    }
    let df = df
        .select(
            [
                "trace_id",
                "span_id",
                "parent_span_id",
                "service",
                "operation",
                "kind",
                "start_time_us",
                "duration_us",
                "status",
                "status_message",
                "attributes",
                "resource_attributes",
                "events",
            ]
            .into_iter()
            .map(col)
            .collect::<Vec<_>>(),
        )?
        .sort(vec![col("start_time_us").sort(true, false), col("span_id").sort(true, false)])?;
    let batches = df.collect().await?;
    let mut spans = Vec::new();
    for batch in &batches {
        let schema = batch.schema();
        let columns: Vec<Vec<Value>> = batch.columns().iter().map(|c| column_values(c.as_ref())).collect();
        for row in 0..batch.num_rows() {
            let mut span = Map::new();
            for (i, field) in schema.fields().iter().enumerate() {
                let value = columns[i][row].clone();
                let value = match (field.name().as_str(), value) {
                    // Stored as a JSON array; spans written before events were kept have none.
                    ("events", Value::String(text)) => serde_json::from_str(&text).unwrap_or(Value::Null),
                    ("events", Value::Null) => json!([]),
                    ("resource_attributes", Value::Null) => json!({}),
                    (_, value) => value,
                };
                span.insert(field.name().clone(), value);
            }
            spans.push(Value::Object(span));
        }
    }
    if spans.is_empty() {
        return Err(ApiError::NotFound(format!("trace {trace_id} not found")));
    }
    Ok(spans)
}

pub(crate) fn trace_id_param(trace_id: &str) -> ApiResult<String> {
    let trace_id = trace_id.to_ascii_lowercase();
    if trace_id.len() != 32 || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_field("trace_id", "a trace id is 32 hex characters"));
    }
    Ok(trace_id)
}

/// `GET /monitoring/tracing/traces/{trace_id}`.
pub async fn get_trace(State(state): State<AppState>, ApiPath(trace_id): ApiPath<String>) -> ApiResult<Json<Value>> {
    let trace_id = trace_id_param(&trace_id)?;
    let spans = load_spans(&state, &trace_id).await?;
    let start = spans.iter().filter_map(|s| s["start_time_us"].as_i64()).min().unwrap_or(0);
    let end = spans
        .iter()
        .filter_map(|s| Some(s["start_time_us"].as_i64()? + s["duration_us"].as_i64()?))
        .max()
        .unwrap_or(start);
    let mut services: Vec<String> = spans.iter().filter_map(|s| s["service"].as_str().map(str::to_string)).collect();
    services.sort();
    services.dedup();
    let errors = spans.iter().filter(|s| s["status"] == "error").count();
    Ok(Json(json!({
        "trace_id": trace_id,
        "span_count": spans.len(),
        "error_count": errors,
        "start_time_us": start,
        "duration_us": end - start,
        "services": services,
        "spans": spans,
    })))
}

/// How far back the usual duration of an operation is measured.
const USUAL_LOOKBACK_US: i64 = 7 * 24 * 3600 * 1_000_000;
/// Spans of an operation needed before its usual duration is trusted.
const USUAL_MIN_SPANS: i64 = 20;

/// `GET /monitoring/tracing/traces/{trace_id}/analyze`: the critical path, self times per
/// span, service and operation, the top bottlenecks, the error propagation chain (see
/// [`crate::trace_analysis`]), and the spans slower than their operation usually is (its
/// p95 over the 7 days before the trace, from at least 20 spans of other traces).
pub async fn analyze_trace(
    State(state): State<AppState>,
    ApiPath(trace_id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let trace_id = trace_id_param(&trace_id)?;
    let rows = load_spans(&state, &trace_id).await?;
    let spans: Vec<TraceSpan> = rows
        .iter()
        .map(|s| TraceSpan {
            span_id: s["span_id"].as_str().unwrap_or_default().to_string(),
            parent_span_id: s["parent_span_id"].as_str().map(str::to_string),
            service: s["service"].as_str().unwrap_or_default().to_string(),
            operation: s["operation"].as_str().unwrap_or_default().to_string(),
            kind: s["kind"].as_str().unwrap_or_default().to_string(),
            start_us: s["start_time_us"].as_i64().unwrap_or(0),
            duration_us: s["duration_us"].as_i64().unwrap_or(0),
            error: s["status"] == "error",
        })
        .collect();
    let analysis = analyze(&spans);
    let start = spans.iter().map(|s| s.start_us).min().unwrap_or(0);
    let usual = usual_durations(&state, &trace_id, &spans, start).await?;
    let mut anomalies = Vec::new();
    for s in &spans {
        if let Some((n, p50, p95)) = usual.get(&(s.service.clone(), s.operation.clone()))
            && *n >= USUAL_MIN_SPANS
            && (s.duration_us as f64) > p95.max(1.0)
        {
            anomalies.push(json!({
                "span_id": s.span_id,
                "service": s.service,
                "operation": s.operation,
                "duration_us": s.duration_us,
                "usual_p50_us": p50,
                "usual_p95_us": p95,
                "times_p50": if *p50 > 0.0 { s.duration_us as f64 / p50 } else { 0.0 },
                "sample_spans": n,
            }));
        }
    }
    anomalies.sort_by(|a, b| b["times_p50"].as_f64().unwrap_or(0.0).total_cmp(&a["times_p50"].as_f64().unwrap_or(0.0)));
    let mut out = serde_json::to_value(&analysis).map_err(|e| ApiError::internal(e.to_string()))?;
    out["trace_id"] = json!(trace_id);
    out["span_count"] = json!(spans.len());
    out["anomalies"] = Value::Array(anomalies);
    Ok(Json(out))
}

/// Count, p50 and p95 of the duration per (service, operation) of `spans`, over the week
/// before `start` (other traces only).
async fn usual_durations(
    state: &AppState,
    trace_id: &str,
    spans: &[TraceSpan],
    start: i64,
) -> ApiResult<std::collections::HashMap<(String, String), (i64, f64, f64)>> {
    let services: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    let from = start.saturating_sub(USUAL_LOOKBACK_US);
    let df = state
        .engine
        .session()
        .table("spans")
        .await?
        .filter(
            crate::trace_search::spans_starting_in(from, start)
                .and(col("trace_id").not_eq(lit(trace_id.to_string())))
                .and(in_list(col("service"), services.iter().map(|s| lit(s.to_string())).collect(), false)),
        )?
        .aggregate(
            vec![col("service"), col("operation")],
            vec![
                count(lit(1)).alias("n"),
                approx_percentile_cont(col("duration_us").sort(true, false), lit(0.5), None).alias("p50"),
                approx_percentile_cont(col("duration_us").sort(true, false), lit(0.95), None).alias("p95"),
            ],
        )?;
    let mut out = std::collections::HashMap::new();
    for batch in df.collect().await? {
        let columns: Vec<Vec<Value>> = batch.columns().iter().map(|c| column_values(c.as_ref())).collect();
        for row in 0..batch.num_rows() {
            let text = |i: usize| columns[i][row].as_str().unwrap_or_default().to_string();
            let number = |i: usize| columns[i][row].as_f64().unwrap_or(0.0);
            out.insert((text(0), text(1)), (columns[2][row].as_i64().unwrap_or(0), number(3), number(4)));
        }
    }
    Ok(out)
}
