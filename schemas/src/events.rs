//! Event types. Field names are the wire contract: JSON and Avro use the same ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The three datasets (and their input topics) that callscope ingests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    Metrics,
    Spans,
    Alerts,
}

impl Dataset {
    pub const ALL: [Dataset; 3] = [Dataset::Metrics, Dataset::Spans, Dataset::Alerts];

    /// Table name in the query API and first path segment in object storage.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Metrics => "metrics",
            Dataset::Spans => "spans",
            Dataset::Alerts => "alerts",
        }
    }

    /// Default Kafka topic that carries this dataset.
    pub fn default_topic(self) -> &'static str {
        match self {
            Dataset::Metrics => "callscope.metrics",
            Dataset::Spans => "callscope.spans",
            Dataset::Alerts => "callscope.alerts",
        }
    }

    pub fn from_name(name: &str) -> Option<Dataset> {
        Dataset::ALL.into_iter().find(|d| d.name() == name)
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Dead-letter topic for input that cannot be decoded or validated.
pub const DLQ_TOPIC: &str = "callscope.dlq";

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const SYMBOLS: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// How a metric sample's `value` is to be read.
    MetricKind { Counter => "counter", Gauge => "gauge", Histogram => "histogram", Summary => "summary" }
);
string_enum!(SpanKind { Server => "server", Client => "client", Internal => "internal", Producer => "producer", Consumer => "consumer" });
string_enum!(SpanStatus { Ok => "ok", Error => "error", Unset => "unset" });
string_enum!(Severity { Critical => "critical", Warning => "warning", Info => "info" });
string_enum!(AlertStatus { Firing => "firing", Resolved => "resolved" });

pub type Labels = BTreeMap<String, String>;

/// One metric sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    /// Counter increment, gauge value, or one histogram/summary observation.
    pub value: f64,
    /// Event time in unix milliseconds.
    pub timestamp_ms: i64,
    pub service: String,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// One span of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    #[serde(default)]
    pub parent_span_id: Option<String>,
    pub service: String,
    pub operation: String,
    pub kind: SpanKind,
    /// Event time in unix microseconds.
    pub start_time_us: i64,
    pub duration_us: i64,
    pub status: SpanStatus,
    #[serde(default)]
    pub attributes: Labels,
    /// The status description (OTLP `status.message`), usually set with an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// Attributes of the resource that produced the span (OTLP resource attributes:
    /// `host.name`, `service.version`, …); Jaeger shows them as the process's tags.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub resource_attributes: Labels,
    /// Timestamped events inside the span (OTLP span events, Jaeger logs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<SpanEvent>,
}

/// One event inside a span: an exception, a retry, a state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanEvent {
    /// Unix microseconds.
    pub time_us: i64,
    pub name: String,
    #[serde(default)]
    pub attributes: Labels,
}

/// One alert state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    pub alert_name: String,
    pub severity: Severity,
    pub status: AlertStatus,
    pub service: String,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    pub starts_at_ms: i64,
    #[serde(default)]
    pub ends_at_ms: Option<i64>,
    #[serde(default)]
    pub value: Option<f64>,
    pub source: String,
}

/// A decoded, validated event of any dataset.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Metric(Metric),
    Span(Span),
    Alert(Alert),
}

impl Event {
    pub fn dataset(&self) -> Dataset {
        match self {
            Event::Metric(_) => Dataset::Metrics,
            Event::Span(_) => Dataset::Spans,
            Event::Alert(_) => Dataset::Alerts,
        }
    }

    /// Event time in unix milliseconds (used for partitioning and skew checks).
    pub fn event_time_ms(&self) -> i64 {
        match self {
            Event::Metric(m) => m.timestamp_ms,
            Event::Span(s) => s.start_time_us.div_euclid(1000),
            Event::Alert(a) => a.starts_at_ms,
        }
    }

    /// The Kafka message key callscope's producers use: a metric's series (service and
    /// name) or a span's trace stays in one partition, in order.
    pub fn partition_key(&self) -> String {
        match self {
            Event::Metric(m) => format!("{}/{}", m.service, m.name),
            Event::Span(s) => s.trace_id.clone(),
            Event::Alert(a) => format!("{}/{}", a.service, a.alert_name),
        }
    }

    /// Checks the rules that the schema alone cannot express.
    /// Returns the name of the offending field and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match self {
            Event::Metric(m) => m.validate(),
            Event::Span(s) => s.validate(),
            Event::Alert(a) => a.validate(),
        }
    }
}

fn non_empty(field: &'static str, value: &str) -> Result<(), (&'static str, String)> {
    if value.trim().is_empty() { Err((field, "must not be empty".to_string())) } else { Ok(()) }
}

fn lower_hex(field: &'static str, value: &str, len: usize) -> Result<(), (&'static str, String)> {
    let ok = value.len() == len && value.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !ok {
        return Err((field, format!("must be {len} lowercase hex characters, got {value:?}")));
    }
    if value.bytes().all(|b| b == b'0') {
        return Err((field, "must not be all zeros".to_string()));
    }
    Ok(())
}

impl Metric {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        non_empty("name", &self.name)?;
        non_empty("service", &self.service)?;
        if !self.value.is_finite() {
            return Err(("value", format!("must be a finite number, got {}", self.value)));
        }
        if self.kind == MetricKind::Counter && self.value < 0.0 {
            return Err(("value", "a counter increment must not be negative".to_string()));
        }
        Ok(())
    }
}

impl Span {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        lower_hex("trace_id", &self.trace_id, 32)?;
        lower_hex("span_id", &self.span_id, 16)?;
        if let Some(parent) = &self.parent_span_id {
            lower_hex("parent_span_id", parent, 16)?;
        }
        non_empty("service", &self.service)?;
        non_empty("operation", &self.operation)?;
        if self.duration_us < 0 {
            return Err(("duration_us", "must not be negative".to_string()));
        }
        Ok(())
    }
}

impl Alert {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        non_empty("alert_name", &self.alert_name)?;
        non_empty("service", &self.service)?;
        non_empty("source", &self.source)?;
        if let Some(v) = self.value
            && !v.is_finite()
        {
            return Err(("value", format!("must be a finite number or null, got {v}")));
        }
        if let Some(end) = self.ends_at_ms
            && end < self.starts_at_ms
        {
            return Err(("ends_at_ms", "must not be before starts_at_ms".to_string()));
        }
        Ok(())
    }
}

/// Canonical text of a label set (sorted JSON object), used to group series.
pub fn labels_key(labels: &Labels) -> String {
    // BTreeMap serializes in key order, so this is canonical.
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_string())
}
