//! HTTP producers: `POST /monitoring/metrics` (metric events) and
//! `POST /monitoring/tracing/traces` (spans). The body is one event or an array. Every
//! event is validated first; if any is invalid nothing is produced and the 400 names the
//! index and field. Valid events are produced to the dataset's topic in the Confluent Avro
//! format (spans keyed by trace id so a trace stays in one partition) and the reply comes
//! after the broker acknowledged them.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use callscope_schemas::avro::encode_confluent;
use callscope_schemas::decode::check;
use callscope_schemas::{Dataset, DecodeOptions, Event};
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Parses one JSON value as an event; errors name the field.
pub fn parse_event(dataset: Dataset, value: Value) -> Result<Event, (String, String)> {
    Ok(match dataset {
        Dataset::Metrics => Event::Metric(typed(value)?),
        Dataset::Spans => Event::Span(typed(value)?),
        Dataset::Alerts => Event::Alert(typed(value)?),
    })
}

/// Deserializes JSON into `T`; an error names the offending field (`[1].value`, `rule.expr`).
pub fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // "missing field `x`" errors sit at the parent; name the field itself.
            let field = match inner.split('`').nth(1) {
                Some(f) if inner.starts_with("missing field") => {
                    if path == "." {
                        f.to_string()
                    } else {
                        format!("{path}.{f}")
                    }
                }
                _ => path,
            };
            (field, inner)
        })
    }
}

/// Validates a body of one event or an array of events.
pub fn parse_body(dataset: Dataset, body: &[u8], max_skew_ms: i64) -> ApiResult<Vec<Event>> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    let (items, single) = match value {
        Value::Array(items) => (items, false),
        Value::Object(_) => (vec![value], true),
        _ => return Err(ApiError::bad_request("body must be a JSON object or an array of objects")),
    };
    if items.is_empty() {
        return Err(ApiError::bad_request("empty array: nothing to ingest"));
    }
    let options = DecodeOptions { max_time_skew_ms: max_skew_ms, now_ms: chrono::Utc::now().timestamp_millis() };
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let name = |field: &str| if single { field.to_string() } else { format!("[{index}].{field}") };
        let event =
            parse_event(dataset, item).map_err(|(field, message)| ApiError::bad_field(name(&field), message))?;
        check(&event, &options).map_err(|e| {
            let field = match &e {
                callscope_schemas::DecodeError::Invalid { field, .. } => (*field).to_string(),
                _ => match dataset {
                    Dataset::Metrics => "timestamp_ms".into(),
                    Dataset::Spans => "start_time_us".into(),
                    Dataset::Alerts => "starts_at_ms".into(),
                },
            };
            ApiError::bad_field(name(&field), e.to_string())
        })?;
        events.push(event);
    }
    Ok(events)
}

async fn produce(state: &AppState, dataset: Dataset, events: Vec<Event>) -> ApiResult<(StatusCode, Json<Value>)> {
    let producer = state
        .producer
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("no Kafka cluster is configured for ingestion".into()))?;
    let topic = state.topic(dataset);
    let mut payloads = Vec::with_capacity(events.len());
    for event in &events {
        let bytes = encode_confluent(event).map_err(|e| ApiError::Internal(e.to_string()))?;
        payloads.push((event.partition_key(), bytes));
    }
    let sends = payloads
        .iter()
        .map(|(key, bytes)| producer.send(FutureRecord::to(&topic).key(key).payload(bytes), Duration::from_secs(10)));
    let mut partitions = std::collections::BTreeSet::new();
    for result in futures::future::join_all(sends).await {
        match result {
            Ok(delivery) => {
                partitions.insert(delivery.partition);
            }
            Err((e, _)) => return Err(ApiError::Unavailable(format!("Kafka did not acknowledge the events: {e}"))),
        }
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": events.len(), "topic": topic, "partitions": partitions }))))
}

pub async fn post_metrics(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let events = parse_body(Dataset::Metrics, &body, DecodeOptions::DEFAULT_MAX_SKEW_MS)?;
    produce(&state, Dataset::Metrics, events).await
}

pub async fn post_spans(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let events = parse_body(Dataset::Spans, &body, DecodeOptions::DEFAULT_MAX_SKEW_MS)?;
    produce(&state, Dataset::Spans, events).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: ApiError) -> String {
        match err {
            ApiError::BadRequest { field: Some(f), .. } => f,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_bad_field() {
        let now = chrono::Utc::now().timestamp_millis();
        let ok = json!({"name": "calls_total", "kind": "counter", "value": 1, "timestamp_ms": now, "service": "gw"});
        assert_eq!(parse_body(Dataset::Metrics, ok.to_string().as_bytes(), i64::MAX).expect("valid").len(), 1);

        let missing = json!({"name": "calls_total", "kind": "counter", "timestamp_ms": now, "service": "gw"});
        let err = parse_body(Dataset::Metrics, missing.to_string().as_bytes(), i64::MAX).expect_err("missing value");
        assert_eq!(field_of(err), "value");

        let wrong = json!([ok, {"name": "x", "kind": "nope", "value": 1, "timestamp_ms": now, "service": "gw"}]);
        let err = parse_body(Dataset::Metrics, wrong.to_string().as_bytes(), i64::MAX).expect_err("bad kind");
        assert_eq!(field_of(err), "[1].kind");

        let span = json!({"trace_id": "abc", "span_id": "00f067aa0ba902b7", "service": "asr", "operation": "t",
            "kind": "server", "start_time_us": now * 1000, "duration_us": 5, "status": "ok"});
        let err = parse_body(Dataset::Spans, span.to_string().as_bytes(), i64::MAX).expect_err("bad trace id");
        assert_eq!(field_of(err), "trace_id");
    }
}
