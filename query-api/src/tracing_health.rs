//! `GET /monitoring/tracing/health`: whether tracing works end to end, for an on-call
//! engineer: spans stored per second over the last 5 minutes, the consumer lag of the span
//! topics (callscope's and OTLP's), the oldest and newest span per tier, and whether every
//! tier answers, and the trace-id index's state. `status` is `ok`, or `degraded` with the reasons.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use callscope_storage::{FileCatalog, usage};
use datafusion::functions_aggregate::expr_fn::{count, max};
use datafusion::prelude::{col, lit};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::json_rows::column_values;
use crate::series_query::date_of;

/// More unmerged trace-index segments than this make the index a problem.
const UNMERGED_SEGMENTS_WARNING: usize = 2_000;

/// The window the ingest rate is measured over.
const RATE_WINDOW_MS: i64 = 5 * 60 * 1000;

pub async fn tracing_health(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let mut problems: Vec<String> = Vec::new();
    // Ingest: spans that started in the last 5 minutes, and the newest start.
    let now = callscope_runtime::now_ms();
    let from = now - RATE_WINDOW_MS;
    let recent = state
        .engine
        .session()
        .table("spans")
        .await?
        .filter(
            col("start_time_us")
                .gt_eq(lit(from * 1000))
                .and(col("date").gt_eq(lit(date_of(from))))
                .and(col("date").lt_eq(lit(date_of(now)))),
        )?
        .aggregate(vec![], vec![count(lit(1)).alias("n"), max(col("start_time_us")).alias("newest")])?
        .collect()
        .await?;
    let (spans, newest_us) = recent
        .first()
        .map(|b| {
            (
                column_values(b.column(0).as_ref())[0].as_i64().unwrap_or(0),
                column_values(b.column(1).as_ref())[0].as_i64(),
            )
        })
        .unwrap_or((0, None));
    if spans == 0 {
        problems.push("no span stored in the last 5 minutes".into());
    }
    // Lag of the span topics.
    let span_topics = [state.topic(callscope_schemas::Dataset::Spans), state.otlp_topics.spans.clone()];
    let lag = match state.kafka_probe.clone() {
        Some(probe) => {
            let all = tokio::task::spawn_blocking(move || probe.probe(Duration::from_secs(2)))
                .await
                .map_err(|e| ApiError::internal(format!("Kafka probe: {e}")))?;
            if all["connected"] != json!(true) {
                problems.push("Kafka is not reachable".into());
            }
            let partitions: Vec<Value> = all["partitions"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["topic"].as_str().is_some_and(|t| span_topics.iter().any(|s| s == t)))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let total: i64 = partitions.iter().filter_map(|p| p["lag"].as_i64()).sum();
            json!({"connected": all["connected"], "total": total, "partitions": partitions})
        }
        None => json!({"connected": false, "configured": false}),
    };
    // What each tier holds of the spans, and whether it answers.
    let tables = usage::collect(&FileCatalog::new(state.tiers.clone()))
        .await
        .map_err(|e| ApiError::Unavailable(format!("storage: {e}")))?;
    let mut tiers = Vec::new();
    for (name, tier) in state.tiers.iter() {
        let started = Instant::now();
        let reachable = tier.probe().await;
        if let Err(e) = &reachable {
            problems.push(format!("{name} tier does not answer: {e}"));
        }
        let held = tables.iter().find(|u| u.tier == name.as_str() && u.table == "spans");
        tiers.push(json!({
            "tier": name,
            "reachable": reachable.is_ok(),
            "latency_ms": started.elapsed().as_millis() as u64,
            "spans": held.map_or(0, |u| u.rows),
            "files": held.map_or(0, |u| u.files),
            "bytes": held.map_or(0, |u| u.bytes),
            "oldest_ms": held.and_then(|u| u.oldest_ms),
            "newest_ms": held.and_then(|u| u.newest_ms),
        }));
    }
    // The trace-id index: how far its merge is behind (each unmerged segment costs every
    // lookup a read).
    let index = match state.trace_index.health().await {
        Ok(h) => {
            if h.unmerged_segments > UNMERGED_SEGMENTS_WARNING {
                problems.push(format!(
                    "{} trace-index segments wait to be merged (is a lifecycle schedule running?); lookups by id slow down",
                    h.unmerged_segments
                ));
            }
            json!({"readable": true, "generation": h.generation, "last_compaction_ms": h.last_compaction_ms,
                   "runs": h.runs, "entries": h.entries, "unmerged_segments": h.unmerged_segments})
        }
        Err(e) => {
            problems.push(format!("the trace-id index cannot be read: {e}"));
            json!({"readable": false, "error": e.to_string()})
        }
    };
    let oldest = tiers.iter().filter_map(|t| t["oldest_ms"].as_i64()).min();
    let newest = tiers.iter().filter_map(|t| t["newest_ms"].as_i64()).max();
    Ok(Json(json!({
        "status": if problems.is_empty() { "ok" } else { "degraded" },
        "problems": problems,
        "ingest": {
            "window_s": RATE_WINDOW_MS / 1000,
            "spans": spans,
            "spans_per_second": spans as f64 / (RATE_WINDOW_MS / 1000) as f64,
            "newest_start_us": newest_us,
        },
        "lag": lag,
        "oldest_span_ms": oldest,
        "newest_span_ms": newest,
        "tiers": tiers,
        "index": index,
    })))
}
