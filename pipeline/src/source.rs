//! The Kafka source of a worker: a consumer-group member (auto-commit off) whose context
//! forwards rebalances to the consume loop, records the offsets the broker confirmed as
//! committed, and publishes consumer lag. [`KafkaSource`] is also the [`OffsetAck`] the
//! partition writers report durable offsets through: it commits them asynchronously.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use callscope_runtime::KafkaConnection;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::acks::OffsetAck;
use crate::error::Result;
use crate::metrics::PipelineMetrics;
use crate::status::StatusHandle;

/// A change of the partitions assigned to this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

/// Consumer context: forwards rebalances to the loop, records committed offsets and lag.
pub struct SourceContext {
    rebalances: Mutex<Vec<RebalanceEvent>>,
    committed: Mutex<BTreeMap<(String, i32), i64>>,
    status: StatusHandle,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        let metrics = PipelineMetrics::global();
        let mut lag = BTreeMap::new();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                metrics.consumer_lag.with_label_values(&[topic, &partition.to_string()]).set(p.consumer_lag);
                lag.insert(format!("{topic}/{partition}"), p.consumer_lag);
            }
        }
        self.status.update(|s| s.lag = lag);
    }
}

impl ConsumerContext for SourceContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(tpl) => RebalanceEvent::Assigned(partitions(tpl)),
            Rebalance::Revoke(tpl) => RebalanceEvent::Revoked(partitions(tpl)),
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error");
                return;
            }
        };
        if let Ok(mut events) = self.rebalances.lock() {
            events.push(event);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if result.is_err() {
            return;
        }
        if let Ok(mut committed) = self.committed.lock() {
            for e in offsets.elements() {
                if let Offset::Offset(o) = e.offset() {
                    committed.insert((e.topic().to_string(), e.partition()), o);
                }
            }
        }
    }
}

/// The consumer of one worker.
pub struct KafkaSource {
    consumer: StreamConsumer<SourceContext>,
}

impl KafkaSource {
    /// Creates the consumer (a member of `group_id`, named `client_id`); it reads nothing
    /// until [`subscribe`](Self::subscribe).
    pub fn connect(kafka: &KafkaConnection, group_id: &str, client_id: &str, status: StatusHandle) -> Result<Self> {
        let context = SourceContext { rebalances: Mutex::new(Vec::new()), committed: Mutex::default(), status };
        let consumer = kafka
            .consumer_config(group_id)
            .set("client.id", client_id)
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "100")
            .set("statistics.interval.ms", "5000")
            .create_with_context(context)?;
        Ok(KafkaSource { consumer })
    }

    pub fn subscribe(&self, topics: &[&str]) -> Result<()> {
        Ok(self.consumer.subscribe(topics)?)
    }

    pub fn unsubscribe(&self) {
        self.consumer.unsubscribe();
    }

    /// Leaves and rejoins the consumer group, which forces a new generation and a fresh
    /// assignment computed by a live leader.
    pub fn rejoin(&self, topics: &[&str]) {
        self.consumer.unsubscribe();
        if let Err(e) = self.consumer.subscribe(topics) {
            tracing::error!(error = %e, "could not rejoin the consumer group");
        }
    }

    /// The next message (or consume error).
    pub async fn recv(&self) -> KafkaResult<BorrowedMessage<'_>> {
        self.consumer.recv().await
    }

    /// Rebalances that happened since the last call, oldest first.
    pub fn take_rebalances(&self) -> Vec<RebalanceEvent> {
        match self.consumer.context().rebalances.lock() {
            Ok(mut events) => std::mem::take(&mut *events),
            Err(_) => Vec::new(),
        }
    }

    /// Commits `(topic, partition, next offset)` synchronously (at shutdown, after every
    /// writer has finished).
    pub fn commit_final(&self, offsets: &[(String, i32, i64)]) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in offsets {
            // Only fails for an offset librdkafka cannot represent; that partition is re-read.
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        Ok(self.consumer.commit(&tpl, CommitMode::Sync)?)
    }

    /// `topic/partition` of every partition of `topics` in the cluster metadata (blocking).
    pub fn partitions_of(&self, topics: &[String], timeout: Duration) -> Result<Vec<String>> {
        let metadata = self.consumer.fetch_metadata(None, timeout)?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| topics.iter().any(|name| name == t.name()))
            .flat_map(|t| t.partitions().iter().map(|p| format!("{}/{}", t.name(), p.id())).collect::<Vec<_>>())
            .collect())
    }
}

impl OffsetAck for KafkaSource {
    fn ack(&self, topic: &str, partition: i32, next_offset: i64) {
        let mut tpl = TopicPartitionList::new();
        if tpl.add_partition_offset(topic, partition, Offset::Offset(next_offset)).is_err() {
            return;
        }
        // Asynchronous: the data is already durable, so a lost commit only means the range
        // is re-read and skipped after a restart.
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(topic, partition, error = %e, "offset commit not sent");
        }
    }

    fn committed(&self, topic: &str, partition: i32) -> Option<i64> {
        let committed = self.consumer.context().committed.lock().ok()?;
        committed.get(&(topic.to_string(), partition)).copied()
    }

    fn pause(&self, topic: &str, partition: i32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        // A new assignment resumes it (the writer asks when it is told; see `resume`).
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::error!(topic, partition, error = %e, "could not pause a stopped partition; its messages are read and not stored");
        }
    }

    fn resume(&self, topic: &str, partition: i32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        if let Err(e) = self.consumer.resume(&tpl) {
            tracing::warn!(topic, partition, error = %e, "could not resume a partition");
        }
    }
}
