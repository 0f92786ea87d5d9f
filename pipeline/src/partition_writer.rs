//! One writer task per topic partition. It receives batches from the consume loop in
//! offset order and, for each: recovers the partition's durable state when the partition
//! was (re)assigned, drops offsets that are already stored, produces dead letters and waits
//! for their acknowledgement, encodes Parquet per `date/hour`, commits the batch through
//! the [`CommitLog`], and only then commits the Kafka offset. Transient failures are
//! retried with backoff; the consume loop is only slowed down by the bounded channel.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use callscope_schemas::arrow_schema::{SourcedEvent, to_record_batch};
use callscope_schemas::{DLQ_TOPIC, Dataset};
use callscope_storage::{BatchRecord, CommitLog, DataFileKey, HourPartition, StorageError, parquet_file};
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;

use crate::metrics::PipelineMetrics;
use crate::status::StatusHandle;
use crate::worker::WorkerConsumer;
use crate::{PipelineError, Result, RetryHint};

/// A message that could not be decoded, on its way to the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub reason: String,
    pub kind: &'static str,
}

/// Everything read from one partition between two flushes.
#[derive(Debug, Default)]
pub struct PendingBatch {
    pub first_offset: i64,
    pub last_offset: i64,
    pub events: Vec<SourcedEvent>,
    pub dead_letters: Vec<DeadLetter>,
}

impl PendingBatch {
    pub fn len(&self) -> usize {
        self.events.len() + self.dead_letters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    Batch(PendingBatch),
}

/// Shared context of all partition writers of a worker.
#[derive(Clone)]
pub struct WriterContext {
    pub consumer: Arc<WorkerConsumer>,
    pub producer: FutureProducer,
    pub log: CommitLog,
    pub worker_id: String,
    pub status: StatusHandle,
    pub committed: Arc<std::sync::Mutex<BTreeMap<(String, i32), i64>>>,
}

/// Handle to a running partition writer.
pub struct PartitionWriter {
    pub sender: mpsc::Sender<WriterJob>,
    pub task: tokio::task::JoinHandle<Option<i64>>,
}

impl PartitionWriter {
    pub fn spawn(ctx: WriterContext, topic: String, partition: i32, dataset: Dataset) -> PartitionWriter {
        let (sender, receiver) = mpsc::channel(4);
        let state = WriterState {
            ctx,
            topic,
            partition,
            dataset,
            needs_recovery: true,
            stopped: false,
            durable_last: None,
            ranges: VecDeque::new(),
        };
        let task = tokio::spawn(state.run(receiver));
        PartitionWriter { sender, task }
    }
}

struct WriterState {
    ctx: WriterContext,
    topic: String,
    partition: i32,
    dataset: Dataset,
    needs_recovery: bool,
    /// Set after a permanent failure: later batches are not written (see `run`).
    stopped: bool,
    durable_last: Option<i64>,
    /// Committed batch ranges whose records may still be needed by recovery.
    ranges: VecDeque<(i64, i64)>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Encodes a batch's events as one Parquet file per `date/hour` partition.
fn encode_files(
    dataset: Dataset,
    topic: &str,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
    events: &[SourcedEvent],
) -> Result<Vec<(String, Bytes)>> {
    let mut by_hour: BTreeMap<HourPartition, Vec<&SourcedEvent>> = BTreeMap::new();
    for e in events {
        by_hour.entry(HourPartition::of_unix_ms(e.event.event_time_ms())).or_default().push(e);
    }
    by_hour
        .into_iter()
        .map(|(hour, rows)| {
            let record_batch = to_record_batch(dataset, rows).map_err(StorageError::from)?;
            let bytes = parquet_file::encode(&[record_batch])?;
            let key = DataFileKey { dataset, hour, topic: topic.to_string(), partition, first_offset, last_offset };
            Ok((key.path(), bytes))
        })
        .collect()
}

impl WriterState {
    /// Runs until the channel closes; returns the highest durable offset.
    async fn run(mut self, mut jobs: mpsc::Receiver<WriterJob>) -> Option<i64> {
        while let Some(job) = jobs.recv().await {
            match job {
                WriterJob::Assigned => self.needs_recovery = true,
                WriterJob::Batch(_) if self.stopped => {}
                WriterJob::Batch(batch) => {
                    let mut backoff = Duration::from_millis(100);
                    let mut batch = batch;
                    loop {
                        match self.write(&mut batch).await {
                            Ok(()) => break,
                            Err(e) if e.retry_hint() == RetryHint::Retry => {
                                PipelineMetrics::global().write_retries.with_label_values(&[&self.topic]).inc();
                                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, ?backoff, "batch write failed; retrying");
                                self.ctx.status.update(|s| s.last_error = Some(e.to_string()));
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(MAX_BACKOFF);
                                // The failed attempt may have left a record: recover first.
                                self.needs_recovery = true;
                            }
                            Err(e) => {
                                // Writing later batches would leave a hole behind the durable
                                // high-water mark: stop this partition instead. Nothing after
                                // the last committed batch is committed, so a restart re-reads it.
                                tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "batch write failed permanently; this partition stops until the worker restarts");
                                self.ctx.status.update(|s| {
                                    s.last_error = Some(format!("{}/{} stopped: {e}", self.topic, self.partition))
                                });
                                self.stopped = true;
                                break;
                            }
                        }
                    }
                }
            }
        }
        self.durable_last
    }

    async fn recover(&mut self, from_offset: i64) -> Result<()> {
        let recovery = self.ctx.log.recover(&self.topic, self.partition, from_offset).await?;
        if recovery.rolled_back > 0 {
            PipelineMetrics::global().rollbacks.with_label_values(&[&self.topic]).inc_by(recovery.rolled_back as u64);
        }
        self.durable_last = recovery.durable_last;
        self.ranges = recovery.complete.into_iter().collect();
        self.needs_recovery = false;
        if let Some(last) = self.durable_last {
            tracing::info!(topic = %self.topic, partition = self.partition, durable_last = last, "recovered partition; already stored offsets will be skipped");
            self.commit_offset(last + 1);
        }
        Ok(())
    }

    async fn write(&mut self, batch: &mut PendingBatch) -> Result<()> {
        if self.needs_recovery {
            self.recover(batch.first_offset).await?;
        }
        let skipped = self.durable_last.map_or(0, |durable| batch.skip_through(durable));
        if skipped > 0 {
            PipelineMetrics::global().replay_skipped.with_label_values(&[&self.topic]).inc_by(skipped as u64);
        }
        if batch.is_spent() {
            return Ok(());
        }
        let started = Instant::now();
        self.send_dead_letters(&batch.dead_letters).await?;

        // Group rows by the hour of their event time and encode one file per hour, off the
        // async threads. The events travel to the encoder and back, so that a retry after a
        // failure still has them.
        let rows = batch.events.len() as u64;
        let dataset = self.dataset;
        let topic = self.topic.clone();
        let (partition, first, last) = (self.partition, batch.first_offset, batch.last_offset);
        let events = std::mem::take(&mut batch.events);
        let (events, files) = tokio::task::spawn_blocking(move || {
            let files = encode_files(dataset, &topic, partition, first, last, &events);
            (events, files)
        })
        .await
        .map_err(|e| PipelineError::Other(format!("encoder task failed: {e}")))?;
        batch.events = events;
        let files = files?;

        let record = BatchRecord {
            topic: self.topic.clone(),
            partition,
            first_offset: first,
            last_offset: last,
            files: files.iter().map(|(p, _)| p.clone()).collect(),
            rows,
            dead_letters: batch.dead_letters.len() as u64,
            writer: self.ctx.worker_id.clone(),
            created_at_ms: crate::now_ms(),
        };
        match self.ctx.log.commit_batch(&record, files).await {
            Ok(()) => {}
            Err(StorageError::Fenced { .. }) => {
                // Another writer committed this range (a rebalance raced with us). Recover,
                // which reads its record, then write whatever part of ours is still missing.
                PipelineMetrics::global().fenced.with_label_values(&[&self.topic]).inc();
                tracing::warn!(topic = %self.topic, partition, first, "batch range already committed by another writer");
                self.needs_recovery = true;
                return Err(PipelineError::Fenced);
            }
            Err(e) => return Err(e.into()),
        }
        let metrics = PipelineMetrics::global();
        metrics.write_seconds.observe(started.elapsed().as_secs_f64());
        metrics.stored.with_label_values(&[dataset.name()]).inc_by(rows);
        metrics.batches.with_label_values(&[dataset.name()]).inc();
        self.ctx.status.update(|s| {
            s.stored += rows;
            s.last_commit_at_ms = Some(crate::now_ms());
        });
        self.durable_last = Some(last);
        self.ranges.push_back((first, last));
        self.commit_offset(last + 1);
        self.prune().await;
        Ok(())
    }

    async fn send_dead_letters(&self, dead: &[DeadLetter]) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let partition = self.partition.to_string();
        let sends = dead.iter().map(|d| {
            let offset = d.offset.to_string();
            let mut headers = OwnedHeaders::new_with_capacity(d.headers.len() + 5);
            for (k, v) in &d.headers {
                headers = headers.insert(Header { key: k, value: v.as_deref() });
            }
            headers = headers
                .insert(Header { key: "callscope.error", value: Some(d.reason.as_bytes()) })
                .insert(Header { key: "callscope.error.kind", value: Some(d.kind.as_bytes()) })
                .insert(Header { key: "callscope.source.topic", value: Some(self.topic.as_bytes()) })
                .insert(Header { key: "callscope.source.partition", value: Some(partition.as_bytes()) })
                .insert(Header { key: "callscope.source.offset", value: Some(offset.as_bytes()) });
            let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(DLQ_TOPIC).payload(&d.payload).headers(headers);
            if let Some(key) = &d.key {
                record = record.key(key);
            }
            self.ctx.producer.send(record, Duration::from_secs(30))
        });
        for result in futures::future::join_all(sends).await {
            if let Err((e, _)) = result {
                return Err(PipelineError::Kafka(e));
            }
        }
        let metrics = PipelineMetrics::global();
        for d in dead {
            metrics.dead_lettered.with_label_values(&[&self.topic, d.kind]).inc();
        }
        let n = dead.len() as u64;
        self.ctx.status.update(|s| s.dead_lettered += n);
        Ok(())
    }

    fn commit_offset(&self, next_offset: i64) {
        let mut tpl = TopicPartitionList::new();
        if tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(next_offset)).is_err() {
            return;
        }
        // Asynchronous: the batch is already durable, so a lost commit only means the
        // range is re-read and skipped after a restart.
        if let Err(e) = self.ctx.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(topic = %self.topic, partition = self.partition, error = %e, "offset commit not sent");
        }
    }

    /// Deletes batch records that the group's committed offset has passed.
    async fn prune(&mut self) {
        let committed =
            self.ctx.committed.lock().ok().and_then(|m| m.get(&(self.topic.clone(), self.partition)).copied());
        let Some(committed) = committed else { return };
        // Keep the newest record: it carries the durable high-water mark.
        let keep_from = self.ranges.len().saturating_sub(1);
        let prunable: Vec<(i64, i64)> =
            self.ranges.iter().take(keep_from).filter(|(_, last)| *last < committed).copied().collect();
        if prunable.is_empty() {
            return;
        }
        match self.ctx.log.prune(&self.topic, self.partition, &prunable, committed).await {
            Ok(_) => self.ranges.retain(|r| !prunable.contains(r)),
            Err(e) => tracing::debug!(error = %e, "could not prune batch records"),
        }
    }
}

#[cfg(test)]
mod tests {
    use callscope_schemas::{Event, Metric, MetricKind};

    use super::*;

    fn batch(offsets: std::ops::RangeInclusive<i64>, bad: &[i64]) -> PendingBatch {
        let mut b = PendingBatch { first_offset: *offsets.start(), last_offset: *offsets.end(), ..Default::default() };
        for offset in offsets {
            if bad.contains(&offset) {
                b.dead_letters.push(DeadLetter {
                    offset,
                    key: None,
                    payload: vec![],
                    headers: vec![],
                    reason: "x".into(),
                    kind: "json",
                });
            } else {
                let event = Event::Metric(Metric {
                    name: "m".into(),
                    kind: MetricKind::Gauge,
                    value: 1.0,
                    timestamp_ms: 0,
                    service: "s".into(),
                    labels: Default::default(),
                    unit: None,
                });
                b.events.push(SourcedEvent { partition: 0, offset, event });
            }
        }
        b
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
