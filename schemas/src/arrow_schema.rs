//! The Arrow schema of every dataset, and conversion of decoded events into record batches.
//!
//! Every table carries the event fields under their wire names, the event time again as an
//! Arrow timestamp (UTC), and its Kafka provenance (`kafka_partition`, `kafka_offset`), which
//! makes "stored exactly once" checkable with plain SQL.

use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, Float64Builder, Int32Builder, Int64Builder, MapBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::events::{Dataset, Event, Labels, labels_key};

/// A decoded event with the Kafka position it came from.
#[derive(Debug, Clone)]
pub struct SourcedEvent {
    pub partition: i32,
    pub offset: i64,
    pub event: Event,
}

fn string_map_type() -> DataType {
    let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    builder.finish().data_type().clone()
}

fn utc(unit: TimeUnit) -> DataType {
    DataType::Timestamp(unit, Some("UTC".into()))
}

fn build_schema(dataset: Dataset) -> SchemaRef {
    let map = string_map_type();
    let mut fields = match dataset {
        Dataset::Metrics => vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("value", DataType::Float64, false),
            Field::new("timestamp_ms", DataType::Int64, false),
            Field::new("event_time", utc(TimeUnit::Millisecond), false),
            Field::new("service", DataType::Utf8, false),
            Field::new("labels", map.clone(), false),
            Field::new("labels_key", DataType::Utf8, false),
            Field::new("unit", DataType::Utf8, true),
        ],
        Dataset::Spans => vec![
            Field::new("trace_id", DataType::Utf8, false),
            Field::new("span_id", DataType::Utf8, false),
            Field::new("parent_span_id", DataType::Utf8, true),
            Field::new("service", DataType::Utf8, false),
            Field::new("operation", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("start_time_us", DataType::Int64, false),
            Field::new("start_time", utc(TimeUnit::Microsecond), false),
            Field::new("duration_us", DataType::Int64, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("attributes", map.clone(), false),
            // Added after the first release: files written before lack them (read as null).
            Field::new("status_message", DataType::Utf8, true),
            Field::new("resource_attributes", map.clone(), true),
            // The span's events as a JSON array of {"time_us", "name", "attributes"}.
            Field::new("events", DataType::Utf8, true),
        ],
        Dataset::Alerts => vec![
            Field::new("alert_name", DataType::Utf8, false),
            Field::new("severity", DataType::Utf8, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("service", DataType::Utf8, false),
            Field::new("labels", map.clone(), false),
            Field::new("annotations", map.clone(), false),
            Field::new("starts_at_ms", DataType::Int64, false),
            Field::new("starts_at", utc(TimeUnit::Millisecond), false),
            Field::new("ends_at_ms", DataType::Int64, true),
            Field::new("value", DataType::Float64, true),
            Field::new("source", DataType::Utf8, false),
        ],
    };
    fields.push(Field::new("kafka_partition", DataType::Int32, false));
    fields.push(Field::new("kafka_offset", DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// The Arrow schema of a dataset's Parquet files and query table.
pub fn schema(dataset: Dataset) -> SchemaRef {
    static SCHEMAS: OnceLock<[SchemaRef; 3]> = OnceLock::new();
    let all = SCHEMAS
        .get_or_init(|| [build_schema(Dataset::Metrics), build_schema(Dataset::Spans), build_schema(Dataset::Alerts)]);
    match dataset {
        Dataset::Metrics => all[0].clone(),
        Dataset::Spans => all[1].clone(),
        Dataset::Alerts => all[2].clone(),
    }
}

fn new_map() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
}

fn append_map(builder: &mut MapBuilder<StringBuilder, StringBuilder>, labels: &Labels) -> Result<(), ArrowError> {
    for (k, v) in labels {
        builder.keys().append_value(k);
        builder.values().append_value(v);
    }
    builder.append(true)
}

/// Builds one record batch of `dataset` from events. Events of another dataset are an error.
pub fn to_record_batch<'a>(
    dataset: Dataset,
    events: impl IntoIterator<Item = &'a SourcedEvent>,
) -> Result<RecordBatch, ArrowError> {
    let mut partitions = Int32Builder::new();
    let mut offsets = Int64Builder::new();
    let columns: Vec<ArrayRef> = match dataset {
        Dataset::Metrics => {
            let (mut name, mut kind, mut service, mut key, mut unit) = (
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
            );
            let mut value = Float64Builder::new();
            let mut ts = Int64Builder::new();
            let mut time = TimestampMillisecondBuilder::new();
            let mut labels = new_map();
            for e in events {
                let Event::Metric(m) = &e.event else { return Err(mismatch(dataset, &e.event)) };
                name.append_value(&m.name);
                kind.append_value(m.kind.as_str());
                value.append_value(m.value);
                ts.append_value(m.timestamp_ms);
                time.append_value(m.timestamp_ms);
                service.append_value(&m.service);
                append_map(&mut labels, &m.labels)?;
                key.append_value(labels_key(&m.labels));
                unit.append_option(m.unit.as_deref());
                partitions.append_value(e.partition);
                offsets.append_value(e.offset);
            }
            vec![
                Arc::new(name.finish()),
                Arc::new(kind.finish()),
                Arc::new(value.finish()),
                Arc::new(ts.finish()),
                Arc::new(time.finish().with_timezone("UTC")),
                Arc::new(service.finish()),
                Arc::new(labels.finish()),
                Arc::new(key.finish()),
                Arc::new(unit.finish()),
            ]
        }
        Dataset::Spans => {
            let (mut trace, mut span, mut parent, mut service, mut op, mut kind, mut status) = (
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
            );
            let mut start = Int64Builder::new();
            let mut start_time = TimestampMicrosecondBuilder::new();
            let mut duration = Int64Builder::new();
            let mut attributes = new_map();
            let (mut status_message, mut span_events) = (StringBuilder::new(), StringBuilder::new());
            let mut resource = new_map();
            for e in events {
                let Event::Span(s) = &e.event else { return Err(mismatch(dataset, &e.event)) };
                status_message.append_option(s.status_message.as_deref());
                append_map(&mut resource, &s.resource_attributes)?;
                if s.events.is_empty() {
                    span_events.append_null();
                } else {
                    let text = serde_json::to_string(&s.events)
                        .map_err(|e| ArrowError::ComputeError(format!("span events: {e}")))?;
                    span_events.append_value(text);
                }
                trace.append_value(&s.trace_id);
                span.append_value(&s.span_id);
                parent.append_option(s.parent_span_id.as_deref());
                service.append_value(&s.service);
                op.append_value(&s.operation);
                kind.append_value(s.kind.as_str());
                start.append_value(s.start_time_us);
                start_time.append_value(s.start_time_us);
                duration.append_value(s.duration_us);
                status.append_value(s.status.as_str());
                append_map(&mut attributes, &s.attributes)?;
                partitions.append_value(e.partition);
                offsets.append_value(e.offset);
            }
            vec![
                Arc::new(trace.finish()),
                Arc::new(span.finish()),
                Arc::new(parent.finish()),
                Arc::new(service.finish()),
                Arc::new(op.finish()),
                Arc::new(kind.finish()),
                Arc::new(start.finish()),
                Arc::new(start_time.finish().with_timezone("UTC")),
                Arc::new(duration.finish()),
                Arc::new(status.finish()),
                Arc::new(attributes.finish()),
                Arc::new(status_message.finish()),
                Arc::new(resource.finish()),
                Arc::new(span_events.finish()),
            ]
        }
        Dataset::Alerts => {
            let (mut name, mut severity, mut status, mut service, mut source) = (
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
            );
            let (mut labels, mut annotations) = (new_map(), new_map());
            let mut starts = Int64Builder::new();
            let mut starts_at = TimestampMillisecondBuilder::new();
            let mut ends = Int64Builder::new();
            let mut value = Float64Builder::new();
            for e in events {
                let Event::Alert(a) = &e.event else { return Err(mismatch(dataset, &e.event)) };
                name.append_value(&a.alert_name);
                severity.append_value(a.severity.as_str());
                status.append_value(a.status.as_str());
                service.append_value(&a.service);
                append_map(&mut labels, &a.labels)?;
                append_map(&mut annotations, &a.annotations)?;
                starts.append_value(a.starts_at_ms);
                starts_at.append_value(a.starts_at_ms);
                ends.append_option(a.ends_at_ms);
                value.append_option(a.value);
                source.append_value(&a.source);
                partitions.append_value(e.partition);
                offsets.append_value(e.offset);
            }
            vec![
                Arc::new(name.finish()),
                Arc::new(severity.finish()),
                Arc::new(status.finish()),
                Arc::new(service.finish()),
                Arc::new(labels.finish()),
                Arc::new(annotations.finish()),
                Arc::new(starts.finish()),
                Arc::new(starts_at.finish().with_timezone("UTC")),
                Arc::new(ends.finish()),
                Arc::new(value.finish()),
                Arc::new(source.finish()),
            ]
        }
    };
    let mut columns = columns;
    columns.push(Arc::new(partitions.finish()));
    columns.push(Arc::new(offsets.finish()));
    RecordBatch::try_new(schema(dataset), columns)
}

fn mismatch(dataset: Dataset, event: &Event) -> ArrowError {
    ArrowError::InvalidArgumentError(format!("a {} event cannot go into the {dataset} dataset", event.dataset()))
}
