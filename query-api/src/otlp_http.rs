//! OTLP/HTTP receivers: `POST /v1/traces` and `POST /v1/metrics`, so an OpenTelemetry SDK
//! exports straight to callscope (`OTEL_EXPORTER_OTLP_ENDPOINT=http://callscope:8080`).
//!
//! As the OTLP specification says: the body is an `ExportTraceServiceRequest` /
//! `ExportMetricsServiceRequest` in protobuf (`application/x-protobuf`) or OTLP JSON
//! (`application/json`), optionally gzip-compressed (`Content-Encoding: gzip`); the answer
//! is the matching `Export…ServiceResponse` in the request's encoding, 200 even when some
//! items were rejected (`partialSuccess` says how many and why). A body that is not a
//! request is a 400 with a `google.rpc.Status`; an unsupported media type a 415; Kafka
//! not acknowledging a 503 (the SDK retries).
//!
//! Spans are also refused when their time is more than the default skew (7 days) from
//! now, as the workers would dead-letter them. Accepted items are produced to the OTLP topics the workers read, as the collector's
//! Kafka exporter writes them: spans one request per trace keyed by trace id (a trace
//! stays in one partition), metrics as one request. The reply comes after the broker
//! acknowledged every message.

use std::io::Read;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use callscope_schemas::otlp::{self, Decoded, OtlpEncoding};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use rdkafka::producer::FutureRecord;

use crate::AppState;

/// The receivers' own metrics (in the process's `/metrics`): requests by signal and
/// status, items (spans, data points) by signal and outcome.
struct OtlpMetrics {
    requests: prometheus::IntCounterVec,
    items: prometheus::IntCounterVec,
}

fn metrics() -> &'static OtlpMetrics {
    static METRICS: std::sync::OnceLock<OtlpMetrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| {
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "callscope_otlp_http_requests_total",
                "OTLP/HTTP export requests by signal and status",
            ),
            &["signal", "status"],
        )
        .expect("valid metric");
        let items = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "callscope_otlp_http_items_total",
                "Spans or metric data points received over OTLP/HTTP, by signal and outcome (accepted, rejected)",
            ),
            &["signal", "outcome"],
        )
        .expect("valid metric");
        // Registration fails only if the names are taken: then they are not exported.
        let _ = prometheus::default_registry().register(Box::new(requests.clone()));
        let _ = prometheus::default_registry().register(Box::new(items.clone()));
        OtlpMetrics { requests, items }
    })
}

fn count(signal: &str, response: Response, accepted: usize, rejected: u64) -> Response {
    let m = metrics();
    m.requests.with_label_values(&[signal, response.status().as_str()]).inc();
    m.items.with_label_values(&[signal, "accepted"]).inc_by(accepted as u64);
    m.items.with_label_values(&[signal, "rejected"]).inc_by(rejected);
    response
}

/// Largest request body after decompression.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Largest Kafka message produced (the collector's default `producer.max_message_bytes`).
const MAX_MESSAGE_BYTES: usize = 1_000_000;

/// A refusal in OTLP's shape: a `google.rpc.Status` (code, message) in the request's
/// encoding.
struct Refusal {
    status: StatusCode,
    message: String,
    encoding: OtlpEncoding,
}

/// `google.rpc.Status` (only the fields OTLP uses).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        // gRPC codes: 3 invalid argument, 14 unavailable, 8 resource exhausted.
        let code = match self.status {
            StatusCode::SERVICE_UNAVAILABLE => 14,
            StatusCode::PAYLOAD_TOO_LARGE => 8,
            _ => 3,
        };
        let status = RpcStatus { code, message: self.message };
        let mut response = match self.encoding {
            OtlpEncoding::Proto => (self.status, status.encode_to_vec()).into_response(),
            OtlpEncoding::Json => {
                let body = serde_json::json!({"code": status.code, "message": status.message});
                (self.status, body.to_string()).into_response()
            }
        };
        response.headers_mut().insert(CONTENT_TYPE, content_type(self.encoding));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert("retry-after", HeaderValue::from_static("5"));
        }
        response
    }
}

fn content_type(encoding: OtlpEncoding) -> HeaderValue {
    HeaderValue::from_static(match encoding {
        OtlpEncoding::Proto => "application/x-protobuf",
        OtlpEncoding::Json => "application/json",
    })
}

/// The request's encoding (from `Content-Type`) and its body, decompressed.
fn body(headers: &HeaderMap, body: Bytes) -> Result<(OtlpEncoding, Vec<u8>), Refusal> {
    let media = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/x-protobuf");
    let media = media.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let encoding = match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => OtlpEncoding::Proto,
        "application/json" => OtlpEncoding::Json,
        other => {
            return Err(Refusal {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: format!("unsupported Content-Type {other:?}: use application/x-protobuf or application/json"),
                encoding: OtlpEncoding::Json,
            });
        }
    };
    let refuse = |status, message: String| Refusal { status, message, encoding };
    let coding = headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity").trim();
    let bytes = match coding.to_ascii_lowercase().as_str() {
        "" | "identity" => body.to_vec(),
        "gzip" => {
            let mut out = Vec::new();
            let mut reader = flate2::read::GzDecoder::new(&body[..]).take(MAX_BODY_BYTES as u64 + 1);
            reader
                .read_to_end(&mut out)
                .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("body is not valid gzip: {e}")))?;
            out
        }
        other => {
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding {other:?}: use gzip or none"),
            ));
        }
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("body is larger than {MAX_BODY_BYTES} bytes")));
    }
    Ok((encoding, bytes))
}

/// Produces `messages` (key, protobuf request) to `topic`; waits for every acknowledgement.
async fn produce(
    state: &AppState,
    topic: &str,
    messages: Vec<(Option<String>, Vec<u8>)>,
    encoding: OtlpEncoding,
) -> Result<(), Refusal> {
    let unavailable = |message: String| Refusal { status: StatusCode::SERVICE_UNAVAILABLE, message, encoding };
    let producer = state.producer.as_ref().ok_or_else(|| unavailable("no Kafka cluster is configured".into()))?;
    if topic.is_empty() {
        return Err(unavailable("this OTLP input is turned off (its topic is empty)".into()));
    }
    let sends = messages.iter().map(|(key, bytes)| {
        let mut record = FutureRecord::<String, Vec<u8>>::to(topic).payload(bytes);
        if let Some(key) = key {
            record = record.key(key);
        }
        producer.send(record, Duration::from_secs(10))
    });
    for result in futures::future::join_all(sends).await {
        result.map_err(|(e, _)| unavailable(format!("Kafka did not acknowledge the request: {e}")))?;
    }
    Ok(())
}

fn answer<M: Message + serde::Serialize>(encoding: OtlpEncoding, response: &M) -> Response {
    let body = match encoding {
        OtlpEncoding::Proto => response.encode_to_vec(),
        OtlpEncoding::Json => serde_json::to_vec(response).unwrap_or_else(|_| b"{}".to_vec()),
    };
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(CONTENT_TYPE, content_type(encoding));
    response
}

fn rejected_text<R>(decoded: &Decoded<R>) -> String {
    if decoded.rejected == 0 { String::new() } else { decoded.summary() }
}

/// The accepted spans of `request` (those `decoded` kept, none of `out_of_range`), as
/// protobuf requests of one trace each, keyed by trace id; traces larger than a Kafka
/// message are split.
fn span_messages(
    request: ExportTraceServiceRequest,
    decoded: &Decoded<ExportTraceServiceRequest>,
    out_of_range: &std::collections::HashSet<(String, String)>,
) -> Vec<(Option<String>, Vec<u8>)> {
    let rejected: std::collections::HashSet<(Vec<u8>, Vec<u8>)> = decoded
        .rejected_request
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| (s.trace_id.clone(), s.span_id.clone()))
        .collect();
    let mut accepted = request;
    for resource in &mut accepted.resource_spans {
        for scope in &mut resource.scope_spans {
            scope.spans.retain(|s| {
                !rejected.contains(&(s.trace_id.clone(), s.span_id.clone()))
                    && !out_of_range.contains(&(otlp::hex(&s.trace_id), otlp::hex(&s.span_id)))
            });
        }
    }
    let mut messages = Vec::new();
    for (trace_id, trace) in otlp::traces::split_by_trace(accepted) {
        let bytes = trace.encode_to_vec();
        if bytes.len() <= MAX_MESSAGE_BYTES {
            messages.push((Some(trace_id), bytes));
            continue;
        }
        // A trace over the message size: one message per span, same key.
        for resource in trace.resource_spans {
            for scope in &resource.scope_spans {
                for span in &scope.spans {
                    let one = ExportTraceServiceRequest {
                        resource_spans: vec![opentelemetry_proto::tonic::trace::v1::ResourceSpans {
                            resource: resource.resource.clone(),
                            scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                                scope: scope.scope.clone(),
                                spans: vec![span.clone()],
                                schema_url: scope.schema_url.clone(),
                            }],
                            schema_url: resource.schema_url.clone(),
                        }],
                    };
                    messages.push((Some(trace_id.clone()), one.encode_to_vec()));
                }
            }
        }
    }
    messages
}

/// `POST /v1/traces`.
pub async fn post_traces(State(state): State<AppState>, headers: HeaderMap, bytes: Bytes) -> Response {
    let (response, accepted, rejected) = traces(state, headers, bytes).await;
    count("traces", response, accepted, rejected)
}

/// `POST /v1/metrics`.
pub async fn post_metrics(State(state): State<AppState>, headers: HeaderMap, bytes: Bytes) -> Response {
    let (response, accepted, rejected) = metrics_request(state, headers, bytes).await;
    count("metrics", response, accepted, rejected)
}

/// Handles a trace export; returns the answer and the spans accepted and rejected.
async fn traces(state: AppState, headers: HeaderMap, bytes: Bytes) -> (Response, usize, u64) {
    let (encoding, bytes) = match body(&headers, bytes) {
        Ok(b) => b,
        Err(refusal) => return (refusal.into_response(), 0, 0),
    };
    let request: ExportTraceServiceRequest = match decode(&bytes, encoding) {
        Ok(r) => r,
        Err(refusal) => return (refusal.into_response(), 0, 0),
    };
    let mut decoded = otlp::traces::convert(request.clone());
    // Spans whose time is too far from now would be dead-lettered by the workers: refuse
    // them here, where the client learns of it.
    let options = callscope_schemas::DecodeOptions {
        max_time_skew_ms: callscope_schemas::DecodeOptions::DEFAULT_MAX_SKEW_MS,
        now_ms: callscope_runtime::now_ms(),
    };
    let mut out_of_range = std::collections::HashSet::new();
    let mut kept = Vec::with_capacity(decoded.events.len());
    for event in std::mem::take(&mut decoded.events) {
        match (callscope_schemas::decode::check(&event, &options), &event) {
            (Err(e), callscope_schemas::Event::Span(s)) => {
                out_of_range.insert((s.trace_id.clone(), s.span_id.clone()));
                decoded.accepted = decoded.accepted.saturating_sub(1);
                decoded.reject(format!("span {:?} ({}): {e}", s.operation, s.span_id));
            }
            _ => kept.push(event),
        }
    }
    decoded.events = kept;
    let messages = span_messages(request, &decoded, &out_of_range);
    if !messages.is_empty()
        && let Err(refusal) = produce(&state, &state.otlp_topics.spans, messages, encoding).await
    {
        return (refusal.into_response(), 0, decoded.rejected);
    }
    let partial_success = (decoded.rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: decoded.rejected as i64,
        error_message: rejected_text(&decoded),
    });
    (answer(encoding, &ExportTraceServiceResponse { partial_success }), decoded.accepted as usize, decoded.rejected)
}

/// Handles a metrics export; returns the answer and the data points accepted and rejected.
async fn metrics_request(state: AppState, headers: HeaderMap, bytes: Bytes) -> (Response, usize, u64) {
    let (encoding, bytes) = match body(&headers, bytes) {
        Ok(b) => b,
        Err(refusal) => return (refusal.into_response(), 0, 0),
    };
    let request: ExportMetricsServiceRequest = match decode(&bytes, encoding) {
        Ok(r) => r,
        Err(refusal) => return (refusal.into_response(), 0, 0),
    };
    let decoded = otlp::metrics::convert(request.clone());
    // The workers decode the request again and dead-letter what is rejected here too; the
    // client learns of it now, from the partial success.
    let mut messages = Vec::new();
    if !decoded.events.is_empty() {
        let bytes = request.encode_to_vec();
        if bytes.len() <= MAX_MESSAGE_BYTES {
            messages.push((None, bytes));
        } else {
            for resource in request.resource_metrics {
                for scope in &resource.scope_metrics {
                    for metric in &scope.metrics {
                        let one = ExportMetricsServiceRequest {
                            resource_metrics: vec![opentelemetry_proto::tonic::metrics::v1::ResourceMetrics {
                                resource: resource.resource.clone(),
                                scope_metrics: vec![opentelemetry_proto::tonic::metrics::v1::ScopeMetrics {
                                    scope: scope.scope.clone(),
                                    metrics: vec![metric.clone()],
                                    schema_url: scope.schema_url.clone(),
                                }],
                                schema_url: resource.schema_url.clone(),
                            }],
                        };
                        messages.push((None, one.encode_to_vec()));
                    }
                }
            }
        }
    }
    if !messages.is_empty()
        && let Err(refusal) = produce(&state, &state.otlp_topics.metrics, messages, encoding).await
    {
        return (refusal.into_response(), 0, decoded.rejected);
    }
    let partial_success = (decoded.rejected > 0).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: decoded.rejected as i64,
        error_message: rejected_text(&decoded),
    });
    (answer(encoding, &ExportMetricsServiceResponse { partial_success }), decoded.accepted as usize, decoded.rejected)
}

fn decode<R: Message + Default + serde::de::DeserializeOwned>(
    bytes: &[u8],
    encoding: OtlpEncoding,
) -> Result<R, Refusal> {
    let refuse = |message: String| Refusal { status: StatusCode::BAD_REQUEST, message, encoding };
    match encoding {
        OtlpEncoding::Proto => R::decode(bytes).map_err(|e| refuse(format!("not an OTLP protobuf request: {e}"))),
        OtlpEncoding::Json => {
            serde_json::from_slice(bytes).map_err(|e| refuse(format!("not an OTLP JSON request: {e}")))
        }
    }
}
