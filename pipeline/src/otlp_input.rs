//! Messages of OTLP topics (the OpenTelemetry Collector's Kafka exporter: one export
//! request per message, protobuf or OTLP JSON) into a partition's pending batch: every
//! span or metric data point becomes an event at the message's offset.
//!
//! What cannot be stored goes to the dead-letter topic and never takes the good items of
//! its message with it: a message that is not an OTLP request at all goes there whole; the
//! items of a request that break a rule go there as a request of their own (protobuf, with
//! their resource and scope; `callscope.error.kind` = `otlp_rejected`); events whose time is
//! too far from now go there one by one as callscope JSON events.

use callscope_schemas::arrow_schema::SourcedEvent;
use callscope_schemas::decode::check;
use callscope_schemas::otlp::{self, Decoded, OtlpEncoding};
use callscope_schemas::{Dataset, DecodeOptions};

use crate::batch::{DeadLetter, PendingBatch};

/// A message of an OTLP topic, as read.
pub struct OtlpMessage<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl OtlpMessage<'_> {
    fn dead_letter(&self, payload: Vec<u8>, reason: String, kind: &'static str) -> DeadLetter {
        DeadLetter {
            offset: self.offset,
            key: self.key.map(<[u8]>::to_vec),
            payload,
            headers: self.headers.clone(),
            reason,
            kind,
        }
    }
}

fn keep<R: prost::Message>(
    batch: &mut PendingBatch,
    m: &OtlpMessage<'_>,
    decoded: Decoded<R>,
    options: &DecodeOptions,
) -> usize {
    let before = batch.len();
    if let Some(rejected) = &decoded.rejected_request {
        let reason = format!("{} OTLP item(s) rejected: {}", decoded.rejected, decoded.summary());
        batch.dead_letters.push(m.dead_letter(rejected.encode_to_vec(), reason, "otlp_rejected"));
    }
    for event in decoded.events {
        match check(&event, options) {
            Ok(()) => batch.events.push(SourcedEvent { partition: m.partition, offset: m.offset, event }),
            Err(e) => {
                let payload = callscope_schemas::json::encode(&event);
                batch.dead_letters.push(m.dead_letter(payload, e.to_string(), e.kind()));
            }
        }
    }
    batch.len() - before
}

/// Appends the events of one OTLP message of a `dataset` topic (spans or metrics) to
/// `batch`; returns how many events and dead letters were appended.
pub fn append(batch: &mut PendingBatch, dataset: Dataset, m: &OtlpMessage<'_>, options: &DecodeOptions) -> usize {
    let encoding = OtlpEncoding::detect(m.payload);
    let result = match dataset {
        Dataset::Spans => otlp::traces::decode(m.payload, encoding).map(|d| keep(batch, m, d, options)),
        Dataset::Metrics => otlp::metrics::decode(m.payload, encoding).map(|d| keep(batch, m, d, options)),
        Dataset::Alerts => {
            let reason = "OTLP carries spans and metrics; alerts have no OTLP form".to_string();
            batch.dead_letters.push(m.dead_letter(m.payload.to_vec(), reason, "otlp"));
            return 1;
        }
    };
    match result {
        Ok(n) => n,
        Err(e) => {
            let reason = format!("{} ({}): {e}", dataset, encoding.as_str());
            batch.dead_letters.push(m.dead_letter(m.payload.to_vec(), reason, "otlp"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &[u8]) -> OtlpMessage<'_> {
        OtlpMessage { partition: 0, offset: 7, key: None, payload, headers: Vec::new() }
    }

    #[test]
    fn a_message_that_is_not_otlp_is_dead_lettered_whole() {
        let mut batch = PendingBatch::default();
        let options = DecodeOptions { max_time_skew_ms: i64::MAX, now_ms: 0 };
        assert_eq!(append(&mut batch, Dataset::Spans, &message(b"{\"resourceSpans\": 1}"), &options), 1);
        assert_eq!(batch.dead_letters[0].kind, "otlp");
        assert_eq!(batch.dead_letters[0].payload, b"{\"resourceSpans\": 1}");
        assert!(batch.dead_letters[0].reason.contains("otlp_json"), "{}", batch.dead_letters[0].reason);
    }
}
