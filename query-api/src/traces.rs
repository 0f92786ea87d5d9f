//! `GET /monitoring/tracing/traces/{trace_id}`: the spans of one trace, in start order.

use crate::extract::ApiPath;
use axum::Json;
use axum::extract::State;
use datafusion::prelude::{col, lit};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::json_rows::column_values;

pub async fn get_trace(State(state): State<AppState>, ApiPath(trace_id): ApiPath<String>) -> ApiResult<Json<Value>> {
    let trace_id = trace_id.to_ascii_lowercase();
    if trace_id.len() != 32 || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_field("trace_id", "a trace id is 32 hex characters"));
    }
    let df = state
        .engine
        .session()
        .table("spans")
        .await?
        .filter(col("trace_id").eq(lit(trace_id.clone())))?
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
                "attributes",
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
                span.insert(field.name().clone(), columns[i][row].clone());
            }
            spans.push(Value::Object(span));
        }
    }
    if spans.is_empty() {
        return Err(ApiError::NotFound(format!("trace {trace_id} not found")));
    }
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
