//! JSON encoding: one UTF-8 JSON object per message, same field names as the Avro schemas.

use crate::events::{Dataset, Event};

/// Parses a JSON object as an event of `dataset`. Errors name the offending field.
pub fn decode(dataset: Dataset, bytes: &[u8]) -> Result<Event, serde_json::Error> {
    Ok(match dataset {
        Dataset::Metrics => Event::Metric(serde_json::from_slice(bytes)?),
        Dataset::Spans => Event::Span(serde_json::from_slice(bytes)?),
        Dataset::Alerts => Event::Alert(serde_json::from_slice(bytes)?),
    })
}

/// Parses an already-parsed JSON value as an event of `dataset`.
pub fn from_value(dataset: Dataset, value: serde_json::Value) -> Result<Event, serde_json::Error> {
    Ok(match dataset {
        Dataset::Metrics => Event::Metric(serde_json::from_value(value)?),
        Dataset::Spans => Event::Span(serde_json::from_value(value)?),
        Dataset::Alerts => Event::Alert(serde_json::from_value(value)?),
    })
}

pub fn to_value(event: &Event) -> serde_json::Value {
    let value = match event {
        Event::Metric(m) => serde_json::to_value(m),
        Event::Span(s) => serde_json::to_value(s),
        Event::Alert(a) => serde_json::to_value(a),
    };
    // The event types contain only strings, numbers and string maps; serialization
    // cannot fail (non-finite floats serialize as null).
    value.unwrap_or(serde_json::Value::Null)
}

pub fn encode(event: &Event) -> Vec<u8> {
    serde_json::to_vec(&to_value(event)).unwrap_or_default()
}
