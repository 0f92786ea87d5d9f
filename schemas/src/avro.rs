//! Avro schemas, their registry ids and subjects, and the two framings callscope reads:
//! the Confluent wire format (`0x00`, 4-byte big-endian schema id, datum) and Avro
//! single-object encoding (`C3 01`, 8-byte little-endian CRC-64-AVRO fingerprint, datum).

use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::rabin::Rabin;
use apache_avro::types::Value;
use apache_avro::{Schema, from_avro_datum, to_avro_datum};

use crate::avro_reader::ReadError;

use crate::events::{
    Alert, AlertStatus, Dataset, Event, Labels, Metric, MetricKind, Severity, Span, SpanEvent, SpanKind, SpanStatus,
};

pub const METRIC_AVSC: &str = include_str!("../avro/metric.avsc");
pub const SPAN_AVSC: &str = include_str!("../avro/span.avsc");
/// Spans, version 2: status message, resource attributes and events.
pub const SPAN_V2_AVSC: &str = include_str!("../avro/span_v2.avsc");
pub const ALERT_AVSC: &str = include_str!("../avro/alert.avsc");

/// Confluent wire-format magic byte.
pub const CONFLUENT_MAGIC: u8 = 0;
/// Avro single-object encoding marker.
pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];

/// Errors of Avro encoding and decoding.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    #[error("message too short for the {0} framing")]
    Truncated(&'static str),
    #[error("unknown schema id {0}; known ids are served at /subjects")]
    UnknownSchemaId(i32),
    #[error("unknown schema fingerprint {0:#018x}")]
    UnknownFingerprint(u64),
    #[error("avro datum does not match schema {subject}: {source}")]
    Datum {
        subject: &'static str,
        #[source]
        source: Box<apache_avro::Error>,
    },
    #[error("{0} bytes left over after the avro datum")]
    TrailingBytes(usize),
    #[error("field `{field}`: {message}")]
    Field { field: &'static str, message: String },
}

pub type Result<T, E = AvroError> = std::result::Result<T, E>;

/// One built-in schema as the registry serves it.
#[derive(Debug)]
pub struct RegisteredSchema {
    pub id: i32,
    pub dataset: Dataset,
    pub subject: &'static str,
    /// Version under the subject (1, 2, …).
    pub version: i32,
    pub text: &'static str,
    pub schema: Schema,
    pub fingerprint: u64,
}

/// The registry of built-in schemas. Ids are stable: 1 metric, 2 span (version 1), 3 alert,
/// 4 span (version 2). Producers encode with the newest version of each subject; every
/// version is still read.
#[derive(Debug)]
pub struct SchemaRegistry {
    schemas: Vec<RegisteredSchema>,
    by_fingerprint: HashMap<u64, usize>,
}

impl SchemaRegistry {
    /// The process-wide registry of built-in schemas.
    pub fn builtin() -> &'static SchemaRegistry {
        static REGISTRY: OnceLock<SchemaRegistry> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            let entries = [
                (1, Dataset::Metrics, "callscope.metrics-value", 1, METRIC_AVSC),
                (2, Dataset::Spans, "callscope.spans-value", 1, SPAN_AVSC),
                (3, Dataset::Alerts, "callscope.alerts-value", 1, ALERT_AVSC),
                (4, Dataset::Spans, "callscope.spans-value", 2, SPAN_V2_AVSC),
            ];
            let schemas: Vec<RegisteredSchema> = entries
                .into_iter()
                .map(|(id, dataset, subject, version, text)| {
                    // The .avsc files are compiled in and covered by tests; a parse failure
                    // here is a build defect, not bad input.
                    #[allow(clippy::expect_used)]
                    let schema = Schema::parse_str(text).expect("built-in avro schema parses");
                    let fingerprint = fingerprint_u64(&schema);
                    RegisteredSchema { id, dataset, subject, version, text, schema, fingerprint }
                })
                .collect();
            let by_fingerprint = schemas.iter().enumerate().map(|(i, s)| (s.fingerprint, i)).collect();
            SchemaRegistry { schemas, by_fingerprint }
        })
    }

    pub fn all(&self) -> &[RegisteredSchema] {
        &self.schemas
    }

    pub fn by_id(&self, id: i32) -> Option<&RegisteredSchema> {
        self.schemas.iter().find(|s| s.id == id)
    }

    /// The newest version under `subject`.
    pub fn by_subject(&self, subject: &str) -> Option<&RegisteredSchema> {
        self.schemas.iter().filter(|s| s.subject == subject).max_by_key(|s| s.version)
    }

    /// Every version under `subject`, oldest first.
    pub fn versions(&self, subject: &str) -> Vec<&RegisteredSchema> {
        let mut versions: Vec<&RegisteredSchema> = self.schemas.iter().filter(|s| s.subject == subject).collect();
        versions.sort_by_key(|s| s.version);
        versions
    }

    /// The newest schema of a dataset (what producers encode with).
    pub fn by_dataset(&self, dataset: Dataset) -> &RegisteredSchema {
        let newest = self.schemas.iter().filter(|s| s.dataset == dataset).max_by_key(|s| s.version);
        // Every dataset has an entry (see `builtin`); the first schema is a safe fallback.
        newest.unwrap_or(&self.schemas[0])
    }

    pub fn by_fingerprint(&self, fingerprint: u64) -> Option<&RegisteredSchema> {
        self.by_fingerprint.get(&fingerprint).map(|i| &self.schemas[*i])
    }
}

fn fingerprint_u64(schema: &Schema) -> u64 {
    let fp = schema.fingerprint::<Rabin>();
    let mut bytes = [0u8; 8];
    for (dst, src) in bytes.iter_mut().zip(fp.bytes.iter()) {
        *dst = *src;
    }
    u64::from_le_bytes(bytes)
}

/// Decodes a Confluent-framed message (`0x00`, id, datum).
pub fn decode_confluent(bytes: &[u8]) -> Result<Event> {
    if bytes.len() < 5 || bytes[0] != CONFLUENT_MAGIC {
        return Err(AvroError::Truncated("confluent"));
    }
    let id = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let registered = SchemaRegistry::builtin().by_id(id).ok_or(AvroError::UnknownSchemaId(id))?;
    decode_datum(registered, &bytes[5..])
}

/// Decodes an Avro single-object encoded message (`C3 01`, fingerprint, datum).
pub fn decode_single_object(bytes: &[u8]) -> Result<Event> {
    if bytes.len() < 10 || bytes[..2] != SINGLE_OBJECT_MARKER {
        return Err(AvroError::Truncated("single-object"));
    }
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&bytes[2..10]);
    let fingerprint = u64::from_le_bytes(fp);
    let registered =
        SchemaRegistry::builtin().by_fingerprint(fingerprint).ok_or(AvroError::UnknownFingerprint(fingerprint))?;
    decode_datum(registered, &bytes[10..])
}

fn decode_datum(registered: &RegisteredSchema, datum: &[u8]) -> Result<Event> {
    crate::avro_reader::decode(registered.dataset, registered.version, registered.subject, datum).map_err(|e| match e {
        ReadError::Field { field, message } => AvroError::Field { field, message },
        ReadError::TrailingBytes(n) => AvroError::TrailingBytes(n),
    })
}

/// Decodes a datum through apache-avro's generic `Value` tree: the reference the
/// specialised reader ([`crate::avro_reader`]) is tested against, and the baseline of
/// `callscope bench ingest`'s decoder comparison.
pub fn decode_datum_generic(registered: &RegisteredSchema, datum: &[u8]) -> Result<Event> {
    let mut reader = datum;
    let value = from_avro_datum(&registered.schema, &mut reader, None)
        .map_err(|e| AvroError::Datum { subject: registered.subject, source: Box::new(e) })?;
    if !reader.is_empty() {
        return Err(AvroError::TrailingBytes(reader.len()));
    }
    let mut record = Record::new(value)?;
    Ok(match registered.dataset {
        Dataset::Metrics => Event::Metric(Metric {
            name: record.string("name")?,
            kind: record.symbol("kind", MetricKind::parse)?,
            value: record.double("value")?,
            timestamp_ms: record.long("timestamp_ms")?,
            service: record.string("service")?,
            labels: record.map("labels")?,
            unit: record.optional_string("unit")?,
        }),
        Dataset::Spans => Event::Span(Span {
            trace_id: record.string("trace_id")?,
            span_id: record.string("span_id")?,
            parent_span_id: record.optional_string("parent_span_id")?,
            service: record.string("service")?,
            operation: record.string("operation")?,
            kind: record.symbol("kind", SpanKind::parse)?,
            start_time_us: record.long("start_time_us")?,
            duration_us: record.long("duration_us")?,
            status: record.symbol("status", SpanStatus::parse)?,
            attributes: record.map("attributes")?,
            // Version 2 fields; a version 1 datum has none of them.
            status_message: record.optional_string("status_message")?,
            resource_attributes: record.map("resource_attributes")?,
            events: record.events("events")?,
        }),
        Dataset::Alerts => Event::Alert(Alert {
            alert_name: record.string("alert_name")?,
            severity: record.symbol("severity", Severity::parse)?,
            status: record.symbol("status", AlertStatus::parse)?,
            service: record.string("service")?,
            labels: record.map("labels")?,
            annotations: record.map("annotations")?,
            starts_at_ms: record.long("starts_at_ms")?,
            ends_at_ms: record.optional_long("ends_at_ms")?,
            value: record.optional_double("value")?,
            source: record.string("source")?,
        }),
    })
}

/// Field access over a decoded Avro record with typed, named errors.
struct Record {
    fields: HashMap<String, Value>,
}

impl Record {
    fn new(value: Value) -> Result<Self> {
        match value {
            Value::Record(fields) => Ok(Record { fields: fields.into_iter().collect() }),
            _ => Err(AvroError::Field { field: "<root>", message: "not a record".into() }),
        }
    }

    fn take(&mut self, field: &'static str) -> Result<Value> {
        self.fields.remove(field).ok_or(AvroError::Field { field, message: "missing".into() })
    }

    fn unwrap_union(value: Value) -> Value {
        match value {
            Value::Union(_, inner) => *inner,
            other => other,
        }
    }

    fn string(&mut self, field: &'static str) -> Result<String> {
        match Self::unwrap_union(self.take(field)?) {
            Value::String(s) => Ok(s),
            other => Err(wrong_type(field, "string", &other)),
        }
    }

    fn optional_string(&mut self, field: &'static str) -> Result<Option<String>> {
        match self.fields.remove(field).map(Self::unwrap_union) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(field, "string or null", &other)),
        }
    }

    fn long(&mut self, field: &'static str) -> Result<i64> {
        match Self::unwrap_union(self.take(field)?) {
            Value::Long(v) => Ok(v),
            Value::Int(v) => Ok(i64::from(v)),
            other => Err(wrong_type(field, "long", &other)),
        }
    }

    fn optional_long(&mut self, field: &'static str) -> Result<Option<i64>> {
        match self.fields.remove(field).map(Self::unwrap_union) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Long(v)) => Ok(Some(v)),
            Some(Value::Int(v)) => Ok(Some(i64::from(v))),
            Some(other) => Err(wrong_type(field, "long or null", &other)),
        }
    }

    fn double(&mut self, field: &'static str) -> Result<f64> {
        match Self::unwrap_union(self.take(field)?) {
            Value::Double(v) => Ok(v),
            Value::Float(v) => Ok(f64::from(v)),
            other => Err(wrong_type(field, "double", &other)),
        }
    }

    fn optional_double(&mut self, field: &'static str) -> Result<Option<f64>> {
        match self.fields.remove(field).map(Self::unwrap_union) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Double(v)) => Ok(Some(v)),
            Some(Value::Float(v)) => Ok(Some(f64::from(v))),
            Some(other) => Err(wrong_type(field, "double or null", &other)),
        }
    }

    fn symbol<T>(&mut self, field: &'static str, parse: fn(&str) -> Option<T>) -> Result<T> {
        match Self::unwrap_union(self.take(field)?) {
            Value::Enum(_, symbol) | Value::String(symbol) => {
                parse(&symbol).ok_or_else(|| AvroError::Field { field, message: format!("unknown symbol {symbol:?}") })
            }
            other => Err(wrong_type(field, "enum", &other)),
        }
    }

    fn map(&mut self, field: &'static str) -> Result<Labels> {
        match self.fields.remove(field).map(Self::unwrap_union) {
            None | Some(Value::Null) => Ok(Labels::new()),
            Some(Value::Map(entries)) => entries
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    other => Err(wrong_type(field, "map of strings", &other)),
                })
                .collect(),
            Some(other) => Err(wrong_type(field, "map of strings", &other)),
        }
    }
}

impl Record {
    /// An array of span events (absent in older versions: none).
    fn events(&mut self, field: &'static str) -> Result<Vec<SpanEvent>> {
        let items = match self.fields.remove(field).map(Self::unwrap_union) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(wrong_type(field, "array of events", &other)),
        };
        items
            .into_iter()
            .map(|item| {
                let mut event = Record::new(item)?;
                Ok(SpanEvent {
                    time_us: event.long("time_us")?,
                    name: event.string("name")?,
                    attributes: event.map("attributes")?,
                })
            })
            .collect()
    }
}

fn wrong_type(field: &'static str, expected: &str, got: &Value) -> AvroError {
    let got = match got {
        Value::Null => "null",
        Value::Boolean(_) => "boolean",
        Value::Int(_) | Value::Long(_) => "integer",
        Value::Float(_) | Value::Double(_) => "number",
        Value::String(_) => "string",
        Value::Map(_) => "map",
        Value::Record(_) => "record",
        Value::Array(_) => "array",
        _ => "other",
    };
    AvroError::Field { field, message: format!("expected {expected}, got {got}") }
}

fn map_value(labels: &Labels) -> Value {
    Value::Map(labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

fn enum_value(symbols: &[&str], symbol: &str) -> Value {
    let index = symbols.iter().position(|s| *s == symbol).unwrap_or(0);
    Value::Enum(index as u32, symbol.to_string())
}

fn optional<T>(value: Option<T>, wrap: impl FnOnce(T) -> Value) -> Value {
    match value {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(wrap(v))),
    }
}

/// The apache-avro value of an event, in its schema's newest version.
pub(crate) fn to_value(event: &Event) -> Value {
    let fields: Vec<(String, Value)> = match event {
        Event::Metric(m) => vec![
            ("name".into(), Value::String(m.name.clone())),
            ("kind".into(), enum_value(MetricKind::SYMBOLS, m.kind.as_str())),
            ("value".into(), Value::Double(m.value)),
            ("timestamp_ms".into(), Value::Long(m.timestamp_ms)),
            ("service".into(), Value::String(m.service.clone())),
            ("labels".into(), map_value(&m.labels)),
            ("unit".into(), optional(m.unit.clone(), Value::String)),
        ],
        Event::Span(s) => vec![
            ("trace_id".into(), Value::String(s.trace_id.clone())),
            ("span_id".into(), Value::String(s.span_id.clone())),
            ("parent_span_id".into(), optional(s.parent_span_id.clone(), Value::String)),
            ("service".into(), Value::String(s.service.clone())),
            ("operation".into(), Value::String(s.operation.clone())),
            ("kind".into(), enum_value(SpanKind::SYMBOLS, s.kind.as_str())),
            ("start_time_us".into(), Value::Long(s.start_time_us)),
            ("duration_us".into(), Value::Long(s.duration_us)),
            ("status".into(), enum_value(SpanStatus::SYMBOLS, s.status.as_str())),
            ("attributes".into(), map_value(&s.attributes)),
            ("status_message".into(), optional(s.status_message.clone(), Value::String)),
            ("resource_attributes".into(), map_value(&s.resource_attributes)),
            (
                "events".into(),
                Value::Array(
                    s.events
                        .iter()
                        .map(|e| {
                            Value::Record(vec![
                                ("time_us".into(), Value::Long(e.time_us)),
                                ("name".into(), Value::String(e.name.clone())),
                                ("attributes".into(), map_value(&e.attributes)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ],
        Event::Alert(a) => vec![
            ("alert_name".into(), Value::String(a.alert_name.clone())),
            ("severity".into(), enum_value(Severity::SYMBOLS, a.severity.as_str())),
            ("status".into(), enum_value(AlertStatus::SYMBOLS, a.status.as_str())),
            ("service".into(), Value::String(a.service.clone())),
            ("labels".into(), map_value(&a.labels)),
            ("annotations".into(), map_value(&a.annotations)),
            ("starts_at_ms".into(), Value::Long(a.starts_at_ms)),
            ("ends_at_ms".into(), optional(a.ends_at_ms, Value::Long)),
            ("value".into(), optional(a.value, Value::Double)),
            ("source".into(), Value::String(a.source.clone())),
        ],
    };
    Value::Record(fields)
}

/// Encodes the Avro datum (no framing) of an event with its built-in schema.
pub fn encode_datum(event: &Event) -> Result<Vec<u8>> {
    let registered = SchemaRegistry::builtin().by_dataset(event.dataset());
    to_avro_datum(&registered.schema, to_value(event))
        .map_err(|e| AvroError::Datum { subject: registered.subject, source: Box::new(e) })
}

/// Encodes an event in the Confluent wire format with its built-in schema id.
pub fn encode_confluent(event: &Event) -> Result<Vec<u8>> {
    let registered = SchemaRegistry::builtin().by_dataset(event.dataset());
    let datum = encode_datum(event)?;
    let mut out = Vec::with_capacity(datum.len() + 5);
    out.push(CONFLUENT_MAGIC);
    out.extend_from_slice(&registered.id.to_be_bytes());
    out.extend_from_slice(&datum);
    Ok(out)
}

/// Encodes an event in Avro single-object encoding.
pub fn encode_single_object(event: &Event) -> Result<Vec<u8>> {
    let registered = SchemaRegistry::builtin().by_dataset(event.dataset());
    let datum = encode_datum(event)?;
    let mut out = Vec::with_capacity(datum.len() + 10);
    out.extend_from_slice(&SINGLE_OBJECT_MARKER);
    out.extend_from_slice(&registered.fingerprint.to_le_bytes());
    out.extend_from_slice(&datum);
    Ok(out)
}

impl SchemaRegistry {
    /// The built-in schema under `subject` if `schema_text` is the same schema
    /// (compared by Avro's parsing canonical form), as registry clients look schemas up.
    pub fn lookup(&self, subject: &str, schema_text: &str) -> Option<&RegisteredSchema> {
        let candidate = Schema::parse_str(schema_text).ok()?.canonical_form();
        self.versions(subject).into_iter().find(|registered| registered.schema.canonical_form() == candidate)
    }
}
