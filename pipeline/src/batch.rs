//! What the consume loop hands to a partition writer: the messages read from one
//! partition between two flushes ([`PendingBatch`]), and the writer's jobs ([`WriterJob`]).

use callscope_schemas::arrow_schema::SourcedEvent;

pub use callscope_runtime::dead_letter::DeadLetter;

/// Everything read from one partition between two flushes.
#[derive(Debug, Default)]
pub struct PendingBatch {
    pub first_offset: i64,
    pub last_offset: i64,
    pub events: Vec<SourcedEvent>,
    pub dead_letters: Vec<DeadLetter>,
    /// Messages read into the batch (a message may add no event: an OTLP export request
    /// with no items), so that such offsets are still committed.
    pub messages: usize,
}

impl PendingBatch {
    pub fn len(&self) -> usize {
        self.events.len() + self.dead_letters.len()
    }

    /// Whether no message was read into the batch.
    pub fn is_empty(&self) -> bool {
        self.messages == 0 && self.len() == 0
    }

    /// Drops every message at or below `durable` (already stored by an earlier batch);
    /// returns how many were dropped. The batch's range then starts after `durable`.
    pub fn skip_through(&mut self, durable: i64) -> usize {
        let before = self.len();
        self.events.retain(|e| e.offset > durable);
        self.dead_letters.retain(|d| d.offset > durable);
        self.first_offset = self.first_offset.max(durable + 1);
        before - self.len()
    }

    /// Whether nothing of the batch's range is left to write.
    pub fn is_spent(&self) -> bool {
        self.first_offset > self.last_offset
    }
}

/// Work for a partition writer.
#[derive(Debug)]
pub enum WriterJob {
    /// The partition was (re)assigned: recover before writing the next batch.
    Assigned,
    /// The partition was revoked: forget in-memory window state (the next owner restores
    /// the newest checkpoint) and write nothing until it is assigned again.
    Revoked,
    Batch(PendingBatch),
}

#[cfg(test)]
impl PendingBatch {
    /// What the consume loop would hand over for `offsets`: `event(offset)` for each, except
    /// the `bad` offsets, which were undecodable.
    pub(crate) fn for_test(
        offsets: std::ops::RangeInclusive<i64>,
        bad: &[i64],
        event: impl Fn(i64) -> SourcedEvent,
    ) -> PendingBatch {
        let mut b = PendingBatch {
            first_offset: *offsets.start(),
            last_offset: *offsets.end(),
            messages: offsets.clone().count(),
            ..Default::default()
        };
        for offset in offsets {
            if bad.contains(&offset) {
                b.dead_letters.push(DeadLetter {
                    offset,
                    key: None,
                    payload: b"{not json".to_vec(),
                    headers: vec![],
                    reason: "bad json".into(),
                    kind: "json",
                });
            } else {
                b.events.push(event(offset));
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use callscope_schemas::{Event, Metric, MetricKind};

    use super::*;

    fn batch(offsets: std::ops::RangeInclusive<i64>, bad: &[i64]) -> PendingBatch {
        PendingBatch::for_test(offsets, bad, |offset| {
            let event = Event::Metric(Metric {
                name: "m".into(),
                kind: MetricKind::Gauge,
                value: 1.0,
                timestamp_ms: 0,
                service: "s".into(),
                labels: Default::default(),
                unit: None,
            });
            SourcedEvent { partition: 0, offset, event }
        })
    }

    #[test]
    fn replayed_offsets_are_skipped() {
        let mut b = batch(10..=19, &[12, 17]);
        assert_eq!(b.skip_through(14), 5);
        assert_eq!(b.first_offset, 15);
        assert_eq!(b.events.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![15, 16, 18, 19]);
        assert_eq!(b.dead_letters.len(), 1);
        assert!(!b.is_spent());
        assert_eq!(b.skip_through(19), 5);
        assert!(b.is_spent());
    }

    #[test]
    fn nothing_is_skipped_below_the_batch() {
        let mut b = batch(10..=12, &[]);
        assert_eq!(b.skip_through(3), 0);
        assert_eq!(b.first_offset, 10);
    }
}
