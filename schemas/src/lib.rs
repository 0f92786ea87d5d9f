//! The contract between the phone platform and callscope.
//!
//! * [`alerting_status`]: what the alert evaluator publishes and the query API reads.
//! * [`events`]: the Rust event types (metric, span, alert) and their validation rules.
//! * [`avro`]: the Avro schemas in `schemas/avro/*.avsc`, their registry ids, and the
//!   Confluent wire format / single-object encodings.
//! * [`json`]: JSON encoding with the same field names.
//! * [`decode`]: tells the encodings apart per message and validates the result.
//! * [`arrow_schema`]: the Arrow schema of every dataset and record-batch builders.
//! * [`custom_metrics`]: custom (derived) metric definitions and the built-in business metrics.
//! * [`text_formats`]: floats as Go prints them and RFC 3339 timestamps.
//! * [`otlp`]: OpenTelemetry export requests (protobuf and OTLP JSON) as events.
//! * [`rollup`]: mergeable per-window aggregates (`metric_rollups`) and their sketches.
//! * [`decimal`]: doubles that are exact decimals (exact sums, the cold tier's decimals).

pub mod alerting_status;
pub mod arrow_schema;
pub mod avro;
pub mod avro_reader;
pub mod custom_metrics;
pub mod dashboards;
pub mod decimal;
pub mod decode;
pub mod events;
pub mod json;
pub mod otlp;
pub mod promql;
pub mod rollup;
pub mod smart_rules;
pub mod text_formats;

pub use decode::{DecodeError, DecodeOptions, Encoding, decode_event};
pub use events::{
    Alert, AlertStatus, DLQ_TOPIC, Dataset, Event, Metric, MetricKind, Severity, Span, SpanEvent, SpanKind, SpanStatus,
};
