//! The two seams between a partition writer and Kafka, in the spirit of Vector's end-to-end
//! acknowledgements: the writer never touches a consumer or a producer, it *reports*.
//!
//! * [`OffsetAck`]: "everything of this partition before `next_offset` is durable". The
//!   source turns that into an (asynchronous) offset commit; the writer calls it only after
//!   the batch record, its files and (for windowed data) the window checkpoint are stored.
//! * [`DeadLetterSink`]: where messages that cannot be stored go. The writer sends a batch's
//!   dead letters, and waits for their acknowledgement, before it commits the batch: a
//!   crash in between re-reads them and sends them again (at least once), but never loses
//!   them behind a committed offset.
//!
//! The Kafka implementations are [`crate::source::KafkaSource`] and
//! [`callscope_runtime::dead_letter::DeadLetterProducer`]; unit tests use [`fakes`].

use async_trait::async_trait;
use callscope_runtime::dead_letter::DeadLetterProducer;

use crate::batch::DeadLetter;
use crate::error::Result;

/// Receives the offsets up to which a partition is durable, and says what the group has
/// committed.
pub trait OffsetAck: Send + Sync {
    /// Every message of `topic`/`partition` before `next_offset` is durable: the group may
    /// commit `next_offset`. Must not block; a lost acknowledgement only means the range is
    /// re-read and skipped after a restart.
    fn ack(&self, topic: &str, partition: i32, next_offset: i64);

    /// The next offset the group will read for the partition, as last confirmed by the
    /// broker (`None` when nothing was confirmed yet). Batch records below it are pruned.
    fn committed(&self, topic: &str, partition: i32) -> Option<i64>;

    /// The writer of `topic`/`partition` stopped after a permanent failure: stop reading
    /// the partition (messages after the last acknowledgement stay in Kafka, unread) until
    /// it is assigned again.
    fn pause(&self, topic: &str, partition: i32);

    /// Reading the partition may go on (it was assigned again after a stop).
    fn resume(&self, topic: &str, partition: i32);
}

/// Sends dead letters and returns once every one is acknowledged.
#[async_trait]
pub trait DeadLetterSink: Send + Sync {
    /// Sends `dead` (read from `topic`/`partition`); returns once every one is
    /// acknowledged, or the first error.
    async fn send(&self, topic: &str, partition: i32, dead: &[DeadLetter]) -> Result<()>;
}

#[async_trait]
impl DeadLetterSink for DeadLetterProducer {
    async fn send(&self, topic: &str, partition: i32, dead: &[DeadLetter]) -> Result<()> {
        Ok(DeadLetterProducer::send(self, topic, partition, dead).await?)
    }
}

/// In-memory stand-ins for Kafka's side of both seams.
#[cfg(test)]
pub(crate) mod fakes {
    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Mutex;

    use super::*;
    use crate::error::PipelineError;

    /// What the fake was told, in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Told {
        /// Dead letters acknowledged, by source offset.
        DeadLetters { partition: i32, offsets: Vec<i64> },
        /// An offset acknowledgement.
        Ack { partition: i32, next_offset: i64 },
        /// Reading a stopped partition was paused.
        Paused { partition: i32 },
        /// Reading a partition was resumed.
        Resumed { partition: i32 },
    }

    type Hook = Box<dyn Fn(&Told) + Send + Sync>;

    /// One consumer's and one producer's view of Kafka: records what it is told, confirms
    /// every acknowledgement as committed (as the commit callback does) unless made
    /// [`unconfirmed`](Self::unconfirmed), and fails dead-letter sends on demand.
    #[derive(Default)]
    pub struct FakeKafka {
        told: Mutex<Vec<Told>>,
        committed: Mutex<BTreeMap<(String, i32), i64>>,
        /// Acknowledgements are never confirmed (the process dies before the broker answers).
        unconfirmed: bool,
        send_failures: Mutex<VecDeque<PipelineError>>,
        hook: Option<Hook>,
    }

    impl FakeKafka {
        /// A fake whose offset commits the broker never confirms: the writer keeps every
        /// batch record (a crash comes before the commit callback).
        pub fn unconfirmed() -> FakeKafka {
            FakeKafka { unconfirmed: true, ..Default::default() }
        }

        /// A fake that calls `hook` with everything it is told, before recording it (tests
        /// look at the storage at that moment).
        pub fn with_hook(hook: impl Fn(&Told) + Send + Sync + 'static) -> FakeKafka {
            FakeKafka { hook: Some(Box::new(hook)), ..Default::default() }
        }

        /// The next dead-letter send fails with `e` (queued: one send per error).
        pub fn fail_next_send(&self, e: PipelineError) {
            self.send_failures.lock().expect("lock").push_back(e);
        }

        pub fn told(&self) -> Vec<Told> {
            self.told.lock().expect("lock").clone()
        }

        /// The offsets acknowledged, in order.
        pub fn acks(&self) -> Vec<i64> {
            self.told()
                .into_iter()
                .filter_map(|t| match t {
                    Told::Ack { next_offset, .. } => Some(next_offset),
                    Told::DeadLetters { .. } | Told::Paused { .. } | Told::Resumed { .. } => None,
                })
                .collect()
        }

        fn tell(&self, told: Told) {
            if let Some(hook) = &self.hook {
                hook(&told);
            }
            self.told.lock().expect("lock").push(told);
        }
    }

    impl OffsetAck for FakeKafka {
        fn ack(&self, topic: &str, partition: i32, next_offset: i64) {
            self.tell(Told::Ack { partition, next_offset });
            if !self.unconfirmed {
                self.committed.lock().expect("lock").insert((topic.to_string(), partition), next_offset);
            }
        }

        fn committed(&self, topic: &str, partition: i32) -> Option<i64> {
            self.committed.lock().expect("lock").get(&(topic.to_string(), partition)).copied()
        }

        fn pause(&self, _topic: &str, partition: i32) {
            self.tell(Told::Paused { partition });
        }

        fn resume(&self, _topic: &str, partition: i32) {
            self.tell(Told::Resumed { partition });
        }
    }

    #[async_trait]
    impl DeadLetterSink for FakeKafka {
        async fn send(&self, _topic: &str, partition: i32, dead: &[DeadLetter]) -> Result<()> {
            if let Some(e) = self.send_failures.lock().expect("lock").pop_front() {
                return Err(e);
            }
            self.tell(Told::DeadLetters { partition, offsets: dead.iter().map(|d| d.offset).collect() });
            Ok(())
        }
    }
}
