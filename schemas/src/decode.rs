//! Per-message decoding: tells Avro (Confluent or single-object framing) from JSON,
//! decodes, and validates. Never panics on arbitrary bytes.

use crate::avro::{self, AvroError, CONFLUENT_MAGIC, SINGLE_OBJECT_MARKER};
use crate::events::{Dataset, Event};
use crate::json;

/// The encoding a message was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    AvroConfluent,
    AvroSingleObject,
    Json,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::AvroConfluent => "avro-confluent",
            Encoding::AvroSingleObject => "avro-single-object",
            Encoding::Json => "json",
        }
    }
}

/// Why a message was rejected. `kind()` is a short, stable label for metrics and the
/// `callscope.error.kind` dead-letter header; `Display` is the human-readable reason.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error(
        "unrecognised encoding: expected Avro (0x00 + schema id, or C3 01 + fingerprint) or a JSON object, first byte is {0:#04x}"
    )]
    UnknownEncoding(u8),
    #[error("avro: {0}")]
    Avro(#[from] AvroError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("message holds a {found} event but topic carries {expected}")]
    WrongDataset { expected: Dataset, found: Dataset },
    #[error("field `{field}`: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("event time {event_ms} is {distance_s} s away from now, more than the allowed {max_s} s")]
    TimestampOutOfRange { event_ms: i64, distance_s: i64, max_s: i64 },
}

impl DecodeError {
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty | DecodeError::UnknownEncoding(_) => "encoding",
            DecodeError::Avro(AvroError::UnknownSchemaId(_) | AvroError::UnknownFingerprint(_)) => "unknown_schema",
            DecodeError::Avro(_) => "avro",
            DecodeError::Json(_) => "json",
            DecodeError::WrongDataset { .. } => "wrong_dataset",
            DecodeError::Invalid { .. } => "invalid_field",
            DecodeError::TimestampOutOfRange { .. } => "timestamp_out_of_range",
        }
    }
}

/// Validation settings that do not come from the schema.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Largest allowed distance between an event's time and now, in milliseconds.
    pub max_time_skew_ms: i64,
    /// "Now" in unix milliseconds (injected so that tests are deterministic).
    pub now_ms: i64,
}

impl DecodeOptions {
    pub const DEFAULT_MAX_SKEW_MS: i64 = 7 * 24 * 3600 * 1000;
}

/// Recognises the encoding of one message.
pub fn detect(bytes: &[u8]) -> Result<Encoding, DecodeError> {
    let first = *bytes.first().ok_or(DecodeError::Empty)?;
    if first == CONFLUENT_MAGIC {
        return Ok(Encoding::AvroConfluent);
    }
    if bytes.len() >= 2 && bytes[..2] == SINGLE_OBJECT_MARKER {
        return Ok(Encoding::AvroSingleObject);
    }
    let non_ws = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
    match non_ws {
        Some(b'{') => Ok(Encoding::Json),
        Some(b) => Err(DecodeError::UnknownEncoding(b)),
        None => Err(DecodeError::Empty),
    }
}

/// Decodes and validates one message from the topic that carries `dataset`.
pub fn decode_event(dataset: Dataset, bytes: &[u8], options: &DecodeOptions) -> Result<(Event, Encoding), DecodeError> {
    let encoding = detect(bytes)?;
    let event = match encoding {
        Encoding::AvroConfluent => avro::decode_confluent(bytes)?,
        Encoding::AvroSingleObject => avro::decode_single_object(bytes)?,
        Encoding::Json => json::decode(dataset, bytes)?,
    };
    if event.dataset() != dataset {
        return Err(DecodeError::WrongDataset { expected: dataset, found: event.dataset() });
    }
    check(&event, options)?;
    Ok((event, encoding))
}

/// Validates a decoded event (fields and time skew).
pub fn check(event: &Event, options: &DecodeOptions) -> Result<(), DecodeError> {
    event.validate().map_err(|(field, message)| DecodeError::Invalid { field, message })?;
    let event_ms = event.event_time_ms();
    let distance = event_ms.saturating_sub(options.now_ms).saturating_abs();
    if distance > options.max_time_skew_ms {
        return Err(DecodeError::TimestampOutOfRange {
            event_ms,
            distance_s: distance / 1000,
            max_s: options.max_time_skew_ms / 1000,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
