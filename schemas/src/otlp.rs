//! OpenTelemetry (OTLP) export requests as callscope events: what the OpenTelemetry
//! Collector's Kafka exporter writes to `otlp_spans` / `otlp_metrics` (one
//! `ExportTraceServiceRequest` / `ExportMetricsServiceRequest` per message, protobuf or
//! OTLP JSON) and what an SDK posts to `/v1/traces` and `/v1/metrics`.
//!
//! * [`traces`]: resource spans → span events (resource `service.name` → service, kind,
//!   status and its message, span and resource attributes, events).
//! * [`metrics`]: gauges, sums, histograms, exponential histograms and summaries → metric
//!   events, named as Prometheus' OTLP translation names them.
//!
//! A request decodes item by item: an item that breaks a rule (a trace id of the wrong
//! length, an empty name, an end before its start) is **rejected** with its reason, and the
//! rest of the request is kept. The rejected items come back as a request of their own
//! (same resource and scope), for the dead-letter topic, and as counts for OTLP's partial
//! success.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

use crate::events::{Event, Labels};

pub mod metrics;
pub mod traces;

/// The topics OTLP export requests are read from (the collector's defaults); an empty
/// name turns that input off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpTopics {
    pub spans: String,
    pub metrics: String,
}

impl OtlpTopics {
    pub const DEFAULT_SPANS: &str = "otlp_spans";
    pub const DEFAULT_METRICS: &str = "otlp_metrics";

    /// The topic names that are on.
    pub fn names(&self) -> Vec<String> {
        [&self.spans, &self.metrics].into_iter().filter(|t| !t.is_empty()).cloned().collect()
    }
}

impl Default for OtlpTopics {
    fn default() -> Self {
        OtlpTopics { spans: Self::DEFAULT_SPANS.into(), metrics: Self::DEFAULT_METRICS.into() }
    }
}

/// How an OTLP request is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpEncoding {
    /// Protobuf (`otlp_proto`, `application/x-protobuf`).
    Proto,
    /// OTLP JSON (`otlp_json`, `application/json`): camelCase, ids in hex, 64-bit integers
    /// as strings, enums as numbers.
    Json,
}

impl OtlpEncoding {
    /// Recognises a message: OTLP JSON is an object, a protobuf request never starts with
    /// `{` (its first byte is the tag of field 1, `0x0a`).
    pub fn detect(bytes: &[u8]) -> OtlpEncoding {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => OtlpEncoding::Json,
            _ => OtlpEncoding::Proto,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OtlpEncoding::Proto => "otlp_proto",
            OtlpEncoding::Json => "otlp_json",
        }
    }
}

/// Why a whole OTLP request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("empty OTLP message")]
    Empty,
    #[error("not an OTLP protobuf request: {0}")]
    Proto(#[from] prost::DecodeError),
    #[error("not an OTLP JSON request: {0}")]
    Json(#[from] serde_json::Error),
}

/// The events of one request, and what was rejected.
#[derive(Debug, Default)]
pub struct Decoded<R> {
    pub events: Vec<Event>,
    /// Items (spans, or metric data points) accepted.
    pub accepted: u64,
    /// Items (spans, or metric data points) rejected.
    pub rejected: u64,
    /// The first reasons for rejection (at most [`MAX_REASONS`]).
    pub reasons: Vec<String>,
    /// The rejected items as a request of their own (`None` when nothing was rejected).
    pub rejected_request: Option<R>,
}

/// Reasons kept per request (the count says how many there were).
pub const MAX_REASONS: usize = 5;

impl<R> Decoded<R> {
    /// Counts one more rejected item and keeps its reason (among the first few).
    pub fn reject(&mut self, reason: String) {
        self.rejected += 1;
        if self.reasons.len() < MAX_REASONS {
            self.reasons.push(reason);
        }
    }

    /// One line for a partial-success answer or a dead-letter reason.
    pub fn summary(&self) -> String {
        let more = self.rejected.saturating_sub(self.reasons.len() as u64);
        let mut text = self.reasons.join("; ");
        if more > 0 {
            text.push_str(&format!("; and {more} more"));
        }
        text
    }
}

pub(crate) fn decode_request<R: Message + Default + serde::de::DeserializeOwned>(
    bytes: &[u8],
    encoding: OtlpEncoding,
) -> Result<R, OtlpError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(OtlpError::Empty);
    }
    Ok(match encoding {
        OtlpEncoding::Proto => R::decode(bytes)?,
        OtlpEncoding::Json => serde_json::from_slice(bytes)?,
    })
}

/// An attribute value as text: strings as they are, numbers and booleans as JSON writes
/// them, bytes in lowercase hex, arrays and key-value lists as JSON.
pub fn value_text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(other) => value_json(other).to_string().trim_matches('"').to_string(),
        None => String::new(),
    }
}

fn value_json(value: &any_value::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        any_value::Value::StringValue(s) => J::String(s.clone()),
        any_value::Value::BoolValue(b) => J::Bool(*b),
        any_value::Value::IntValue(i) => J::from(*i),
        any_value::Value::DoubleValue(d) => serde_json::Number::from_f64(*d).map_or(J::Null, J::Number),
        any_value::Value::BytesValue(b) => J::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        any_value::Value::ArrayValue(a) => {
            J::Array(a.values.iter().map(|v| v.value.as_ref().map_or(J::Null, value_json)).collect())
        }
        any_value::Value::KvlistValue(kv) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (kv.key.clone(), kv.value.as_ref().and_then(|v| v.value.as_ref()).map_or(J::Null, value_json))
                })
                .collect(),
        ),
    }
}

/// Key-value attributes as labels (later keys win, as OTLP says keys are unique).
pub fn attributes(kvs: &[KeyValue]) -> Labels {
    kvs.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map(value_text).unwrap_or_default())).collect()
}

/// The resource's `service.name`, or OpenTelemetry's default for a service without one.
pub fn service_name(resource: &Labels) -> String {
    resource.get("service.name").filter(|s| !s.trim().is_empty()).cloned().unwrap_or_else(|| "unknown_service".into())
}

/// Lowercase hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
