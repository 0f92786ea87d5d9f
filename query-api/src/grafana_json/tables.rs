//! The JSON data source's tables of callscope's own state: the active alerts, every
//! service's health and the consumer group's lag per partition.

use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiResult;

/// The `alerts` (the evaluator's active alerts) and `services` (every service's health)
/// targets, as tables.
pub(super) async fn status_table(state: &AppState, which: &str, ref_id: Option<&str>) -> ApiResult<Value> {
    let col = |text: &str, kind: &str| json!({"text": text, "type": kind});
    if which == "alerts" {
        let (status, _) = crate::alerting::published_status(state).await?;
        let rows: Vec<Value> = status
            .alerts
            .iter()
            .map(|a| {
                let label = |k: &str| a.alert.labels.get(k).cloned().unwrap_or_default();
                json!([
                    a.alert.starts_at_ms,
                    label("alertname"),
                    label("severity"),
                    label("service"),
                    format!("{:?}", a.alert.status).to_lowercase(),
                    a.muted.is_some(),
                    a.acknowledged,
                    a.alert.annotations.get("summary").cloned().unwrap_or_default()
                ])
            })
            .collect();
        return Ok(json!({"type": "table", "refId": ref_id, "rows": rows, "columns": [
            col("Started", "time"), col("Alert", "string"), col("Severity", "string"), col("Service", "string"),
            col("Status", "string"), col("Silenced", "string"), col("Acknowledged", "string"), col("Summary", "string")]}));
    }
    if which == "pipeline" {
        let report = crate::health::component_report(state).await;
        let rows: Vec<Value> = report["kafka"]["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| json!([p["topic"], p["partition"], p["committed_offset"], p["high_watermark"], p["lag"]]))
            .collect();
        return Ok(json!({"type": "table", "refId": ref_id, "rows": rows, "columns": [
            col("Topic", "string"), col("Partition", "number"), col("Committed", "number"),
            col("High watermark", "number"), col("Lag", "number")]}));
    }
    let services = crate::service_health::report_all(state).await?;
    let rows: Vec<Value> = services
        .iter()
        .map(|s| {
            json!([
                s["service"],
                s["status"],
                s["request_rate_per_second"],
                s["error_ratio"],
                s["latency_p95_ms"],
                s["last_seen_ms"],
                s["reasons"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
            ])
        })
        .collect();
    Ok(json!({"type": "table", "refId": ref_id, "rows": rows, "columns": [
        col("Service", "string"), col("Status", "string"), col("Requests/s", "number"), col("Error ratio", "number"),
        col("p95 ms", "number"), col("Last seen", "time"), col("Reasons", "string")]}))
}
