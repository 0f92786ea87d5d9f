//! Avro binary decoding specialised to each built-in writer schema: the bytes of a datum go
//! straight into the event struct, field by field in the schema's order, with no generic
//! value tree in between (apache-avro's `from_avro_datum` builds a `Value` with a map entry
//! and a `String` per field per record; that was 70 % of the Avro path's time).
//!
//! An older version of a subject is read with its own (writer) schema, and the fields it
//! lacks take their defaults, as Avro's schema resolution gives them: a span of version 1
//! has no status message, resource attributes nor events. Every read is bounds-checked:
//! arbitrary bytes give an error, never a panic, and never an allocation larger than the
//! input. A property test compares this reader with apache-avro's on random records of
//! every schema version (`avro::tests`).

use crate::events::{
    Alert, AlertStatus, Dataset, Event, Labels, Metric, MetricKind, Severity, Span, SpanEvent, SpanKind, SpanStatus,
};

/// Why a datum does not read (the Avro decoding error carries these as its own variants).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("field `{field}`: {message}")]
    Field { field: &'static str, message: String },
    #[error("{0} bytes left over after the avro datum")]
    TrailingBytes(usize),
}

type Result<T> = std::result::Result<T, ReadError>;

/// A cursor over one datum.
struct Reader<'a> {
    bytes: &'a [u8],
    subject: &'static str,
}

impl<'a> Reader<'a> {
    fn error(&self, field: &'static str, message: impl Into<String>) -> ReadError {
        ReadError::Field { field, message: format!("{} (schema {})", message.into(), self.subject) }
    }

    /// A zig-zag varint (Avro `int` and `long`) of at most 10 bytes; bits beyond 64 in the
    /// tenth byte are dropped, as apache-avro drops them.
    fn long(&mut self, field: &'static str) -> Result<i64> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some((&byte, rest)) = self.bytes.split_first() else {
                return Err(self.error(field, "the datum ends inside a number"));
            };
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(self.error(field, "a number longer than 64 bits"))
    }

    fn double(&mut self, field: &'static str) -> Result<f64> {
        if self.bytes.len() < 8 {
            return Err(self.error(field, "the datum ends inside a double"));
        }
        let (head, rest) = self.bytes.split_at(8);
        self.bytes = rest;
        let mut b = [0u8; 8];
        b.copy_from_slice(head);
        Ok(f64::from_le_bytes(b))
    }

    fn string(&mut self, field: &'static str) -> Result<String> {
        let len = self.long(field)?;
        let len = usize::try_from(len).map_err(|_| self.error(field, format!("a string of negative length {len}")))?;
        if len > self.bytes.len() {
            return Err(self.error(field, format!("a string of {len} bytes with {} left", self.bytes.len())));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        String::from_utf8(head.to_vec()).map_err(|_| self.error(field, "a string that is not UTF-8"))
    }

    fn symbol<T>(&mut self, field: &'static str, symbols: &[&str], parse: fn(&str) -> Option<T>) -> Result<T> {
        let index = self.long(field)?;
        let symbol: &str = usize::try_from(index)
            .ok()
            .and_then(|i| symbols.get(i))
            .copied()
            .ok_or_else(|| self.error(field, format!("enum index {index} out of {} symbols", symbols.len())))?;
        parse(symbol).ok_or_else(|| self.error(field, format!("unknown symbol {symbol:?}")))
    }

    /// `["null", T]`: whether T follows. At the very end of the datum the union reads as
    /// null, as apache-avro reads it (a writer that left a trailing optional field out).
    fn present(&mut self, field: &'static str) -> Result<bool> {
        if self.bytes.is_empty() {
            return Ok(false);
        }
        match self.long(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.error(field, format!("union branch {other} of 2"))),
        }
    }

    /// The item count of the next block of an array or map (0 ends it); a negative count
    /// is followed by the block's size in bytes.
    fn block(&mut self, field: &'static str) -> Result<usize> {
        let count = self.long(field)?;
        if count < 0 {
            self.long(field)?;
        }
        let count = count.checked_abs().ok_or_else(|| self.error(field, "a block count out of range"))?;
        // Every item takes at least one byte: a count beyond the bytes left is corrupt.
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count > self.bytes.len() {
            return Err(self.error(field, format!("a block of {count} items with {} bytes left", self.bytes.len())));
        }
        Ok(count)
    }

    fn map(&mut self, field: &'static str) -> Result<Labels> {
        let mut out = Labels::new();
        loop {
            let n = self.block(field)?;
            if n == 0 {
                return Ok(out);
            }
            for _ in 0..n {
                let k = self.string(field)?;
                let v = self.string(field)?;
                out.insert(k, v);
            }
        }
    }

    fn events(&mut self, field: &'static str) -> Result<Vec<SpanEvent>> {
        let mut out = Vec::new();
        loop {
            let n = self.block(field)?;
            if n == 0 {
                return Ok(out);
            }
            for _ in 0..n {
                out.push(SpanEvent {
                    time_us: self.long(field)?,
                    name: self.string(field)?,
                    attributes: self.map(field)?,
                });
            }
        }
    }
}

/// Decodes one datum (its whole length) written with the schema of `dataset` at `version`
/// under `subject` (named in errors).
pub fn decode(dataset: Dataset, version: i32, subject: &'static str, datum: &[u8]) -> Result<Event> {
    let mut r = Reader { bytes: datum, subject };
    let event = match (dataset, version) {
        (Dataset::Metrics, _) => Event::Metric(Metric {
            name: r.string("name")?,
            kind: r.symbol("kind", MetricKind::SYMBOLS, MetricKind::parse)?,
            value: r.double("value")?,
            timestamp_ms: r.long("timestamp_ms")?,
            service: r.string("service")?,
            labels: r.map("labels")?,
            unit: if r.present("unit")? { Some(r.string("unit")?) } else { None },
        }),
        (Dataset::Spans, version) => {
            let mut span = Span {
                trace_id: r.string("trace_id")?,
                span_id: r.string("span_id")?,
                parent_span_id: if r.present("parent_span_id")? { Some(r.string("parent_span_id")?) } else { None },
                service: r.string("service")?,
                operation: r.string("operation")?,
                kind: r.symbol("kind", SpanKind::SYMBOLS, SpanKind::parse)?,
                start_time_us: r.long("start_time_us")?,
                duration_us: r.long("duration_us")?,
                status: r.symbol("status", SpanStatus::SYMBOLS, SpanStatus::parse)?,
                attributes: r.map("attributes")?,
                status_message: None,
                resource_attributes: Labels::new(),
                events: Vec::new(),
            };
            if version >= 2 {
                span.status_message =
                    if r.present("status_message")? { Some(r.string("status_message")?) } else { None };
                span.resource_attributes = r.map("resource_attributes")?;
                span.events = r.events("events")?;
            }
            Event::Span(span)
        }
        (Dataset::Alerts, _) => Event::Alert(Alert {
            alert_name: r.string("alert_name")?,
            severity: r.symbol("severity", Severity::SYMBOLS, Severity::parse)?,
            status: r.symbol("status", AlertStatus::SYMBOLS, AlertStatus::parse)?,
            service: r.string("service")?,
            labels: r.map("labels")?,
            annotations: r.map("annotations")?,
            starts_at_ms: r.long("starts_at_ms")?,
            ends_at_ms: if r.present("ends_at_ms")? { Some(r.long("ends_at_ms")?) } else { None },
            value: if r.present("value")? { Some(r.double("value")?) } else { None },
            source: r.string("source")?,
        }),
    };
    if !r.bytes.is_empty() {
        return Err(ReadError::TrailingBytes(r.bytes.len()));
    }
    Ok(event)
}

#[cfg(test)]
mod tests;
