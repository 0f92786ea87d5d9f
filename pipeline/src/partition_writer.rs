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
use callscope_schemas::custom_metrics::CustomMetric;
use callscope_schemas::rollup::{RollupRow, resolution_label, rollups_to_record_batch};
use callscope_schemas::{DLQ_TOPIC, Dataset, Event, Metric};
use callscope_storage::{
    BatchRecord, CheckpointStore, CommitLog, DataFileKey, HourPartition, RollupFileKey, RollupSource, StorageError,
    Tier, parquet_file,
};
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;

use crate::aggregate::{AggregationConfig, Outcome, PartitionAggregator};
use crate::metrics::PipelineMetrics;
use crate::status::StatusHandle;
use crate::watermarks::WatermarkBoard;
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
    /// The partition was revoked: forget in-memory window state (the next owner restores
    /// the newest checkpoint) and write nothing until it is assigned again.
    Revoked,
    Batch(PendingBatch),
}

/// What the writers of one process share when they aggregate metrics in windows.
pub struct AggregationShared {
    pub config: Arc<AggregationConfig>,
    pub board: WatermarkBoard,
    pub checkpoints: CheckpointStore,
    /// Custom metrics the workers materialize (those with a source metric), kept current
    /// by [`crate::custom_metrics::watch`].
    pub definitions: std::sync::RwLock<Arc<Vec<CustomMetric>>>,
}

impl AggregationShared {
    pub fn new(config: AggregationConfig, tier: Tier) -> AggregationShared {
        AggregationShared {
            config: Arc::new(config),
            board: WatermarkBoard::default(),
            checkpoints: CheckpointStore::new(tier),
            definitions: std::sync::RwLock::new(Arc::new(Vec::new())),
        }
    }

    pub fn definitions(&self) -> Arc<Vec<CustomMetric>> {
        self.definitions.read().map(|d| d.clone()).unwrap_or_default()
    }
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
    /// Windowed aggregation of the metrics dataset; `None` turns it off.
    pub aggregation: Option<Arc<AggregationShared>>,
}

/// Handle to a running partition writer.
pub struct PartitionWriter {
    pub sender: mpsc::Sender<WriterJob>,
    /// Resolves to the last offset the group may commit for this partition (everything up
    /// to it is durable, and so is the window state that reflects it).
    pub task: tokio::task::JoinHandle<Option<i64>>,
}

impl PartitionWriter {
    pub fn spawn(ctx: WriterContext, topic: String, partition: i32, dataset: Dataset) -> PartitionWriter {
        let (sender, receiver) = mpsc::channel(4);
        let aggregation = if dataset == Dataset::Metrics { ctx.aggregation.clone() } else { None };
        let state = WriterState {
            ctx,
            topic,
            partition,
            dataset,
            needs_recovery: true,
            stopped: false,
            owned: true,
            durable_last: None,
            ranges: VecDeque::new(),
            aggregation,
            aggregator: None,
            checkpointed: None,
            last_checkpoint_at: Instant::now(),
            pending_idle: None,
            idle_close_unsaved: false,
            last_event_at: Instant::now(),
            max_event_ms: None,
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
    /// Set after a permanent failure: later batches are not written (see `handle_batch`).
    stopped: bool,
    /// Cleared between a revoke and the next assignment.
    owned: bool,
    durable_last: Option<i64>,
    /// Committed batch ranges whose records may still be needed by recovery.
    ranges: VecDeque<(i64, i64)>,
    /// Set when this partition's events are aggregated in windows.
    aggregation: Option<Arc<AggregationShared>>,
    aggregator: Option<Box<PartitionAggregator>>,
    /// Offset of the newest window-state checkpoint written or restored.
    checkpointed: Option<i64>,
    last_checkpoint_at: Instant,
    /// Windows closed because the partition went idle, with the offset the close followed
    /// and the watermark it reached (together they name the files); listed in every
    /// checkpoint until their files are written.
    pending_idle: Option<(RollupSource, Vec<RollupRow>)>,
    /// An idle close happened that no checkpoint holds yet.
    idle_close_unsaved: bool,
    last_event_at: Instant,
    /// Largest event time seen (lateness of datasets that are not aggregated).
    max_event_ms: Option<i64>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A writer that received nothing for this long looks after idle windows and checkpoints.
const QUIET_TICK: Duration = Duration::from_secs(1);
const META_PENDING_AFTER: &str = "callscope.pending_after_offset";
const META_PENDING_WATERMARK: &str = "callscope.pending_watermark_ms";

/// A batch encoded and ready to commit.
struct Prepared {
    first: i64,
    last: i64,
    raw_rows: u64,
    files: Vec<(String, Bytes)>,
    rollup_rows: Vec<RollupRow>,
    late: u64,
}

/// Encodes events as one Parquet file per `date/hour` partition.
fn encode_files<'a>(
    dataset: Dataset,
    topic: &str,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
    events: impl IntoIterator<Item = &'a SourcedEvent>,
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

/// Encodes roll-up rows as one Parquet file per resolution and `date/hour` of the window.
fn encode_rollups(
    topic: &str,
    partition: i32,
    source: RollupSource,
    rows: &[RollupRow],
) -> Result<Vec<(String, Bytes)>> {
    let mut groups: BTreeMap<(i64, HourPartition), Vec<&RollupRow>> = BTreeMap::new();
    for row in rows {
        groups.entry((row.resolution_ms, HourPartition::of_unix_ms(row.window_start_ms))).or_default().push(row);
    }
    groups
        .into_iter()
        .map(|((resolution_ms, hour), rows)| {
            let batch = rollups_to_record_batch(rows).map_err(StorageError::from)?;
            let bytes = parquet_file::encode(&[batch])?;
            let key = RollupFileKey { resolution_ms, hour, topic: topic.to_string(), partition, source };
            Ok((key.path(), bytes))
        })
        .collect()
}

/// What aggregating one batch produced.
#[derive(Default)]
struct AggregateOutput {
    rows: Vec<RollupRow>,
    late: u64,
    over_limit: Vec<(i64, Metric)>,
    closed: Vec<u64>,
}

/// Feeds a batch to the aggregator. Events at or below `durable` were stored by an earlier
/// batch (a replay after restoring an older checkpoint): they rebuild state, and what they
/// emit is dropped, because those batches already hold it.
fn aggregate_batch(
    agg: &mut PartitionAggregator,
    events: &[SourcedEvent],
    durable: Option<i64>,
    last_offset: i64,
    definitions: &[CustomMetric],
) -> AggregateOutput {
    let mut out = AggregateOutput::default();
    let mut replay_emissions_dropped = false;
    for e in events {
        let replay = durable.is_some_and(|d| e.offset <= d);
        if !replay && !replay_emissions_dropped {
            agg.take_emitted();
            replay_emissions_dropped = true;
        }
        let Event::Metric(m) = &e.event else { continue };
        match agg.process(e.offset, m) {
            Outcome::Replayed => continue,
            Outcome::Late if !replay => out.late += 1,
            Outcome::OverLimit if !replay => out.over_limit.push((e.offset, m.clone())),
            _ => {}
        }
        for derived in definitions.iter().filter_map(|d| d.derive(m)) {
            agg.process_derived(&derived);
        }
    }
    let emitted = agg.take_emitted();
    if replay_emissions_dropped {
        out.rows = emitted;
    }
    agg.advance_offset(last_offset);
    out.closed = agg.take_closed_counts();
    out
}

impl WriterState {
    /// Runs until the channel closes; returns the last offset the group may commit.
    async fn run(mut self, mut jobs: mpsc::Receiver<WriterJob>) -> Option<i64> {
        loop {
            let job = match tokio::time::timeout(QUIET_TICK, jobs.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) => break,
                Err(_) => {
                    self.on_quiet().await;
                    continue;
                }
            };
            match job {
                WriterJob::Assigned => {
                    self.needs_recovery = true;
                    self.owned = true;
                }
                WriterJob::Revoked => {
                    self.owned = false;
                    self.needs_recovery = true;
                    self.aggregator = None;
                    self.pending_idle = None;
                    self.idle_close_unsaved = false;
                    if let Some(shared) = &self.aggregation {
                        shared.board.remove(&self.topic, self.partition);
                    }
                }
                WriterJob::Batch(_) if self.stopped => {}
                WriterJob::Batch(batch) => self.handle_batch(batch).await,
            }
        }
        // Shutdown: leave a checkpoint of the newest state, so that a restart replays nothing.
        if self.owned && !self.stopped && !self.needs_recovery && self.aggregation.is_some() {
            if let Err(e) = self.checkpoint().await {
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "final window checkpoint failed; the next owner replays from the previous one");
            }
        }
        self.commit_target()
    }

    /// The last offset whose effects are all durable: with window state, the newest
    /// checkpoint (a restart replays from the one after it); without, the newest batch.
    fn commit_target(&self) -> Option<i64> {
        if self.aggregation.is_some() { self.checkpointed } else { self.durable_last }
    }

    /// Sleeps before a retry, or stops the partition when `e` is not transient. Returns
    /// whether to retry.
    async fn backoff_or_stop(&mut self, e: &PipelineError, backoff: &mut Duration) -> bool {
        if e.retry_hint() != RetryHint::Retry {
            self.stop(e);
            return false;
        }
        PipelineMetrics::global().write_retries.with_label_values(&[&self.topic]).inc();
        tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, backoff = ?*backoff, "batch write failed; retrying");
        self.ctx.status.update(|s| s.last_error = Some(e.to_string()));
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        true
    }

    /// Writing later batches would leave a hole behind the durable high-water mark: stop
    /// this partition instead. Nothing after the last checkpoint or batch is committed to
    /// Kafka, so a restart re-reads it.
    fn stop(&mut self, e: &dyn std::fmt::Display) {
        tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "batch write failed permanently; this partition stops until the worker restarts");
        self.ctx.status.update(|s| s.last_error = Some(format!("{}/{} stopped: {e}", self.topic, self.partition)));
        self.stopped = true;
    }

    async fn handle_batch(&mut self, mut batch: PendingBatch) {
        let mut backoff = Duration::from_millis(100);
        // Windows an idle close emitted must be in a checkpoint before later batches are
        // committed: otherwise a restart from an older checkpoint would replay those batches
        // without the close and drop what they emitted as already stored.
        while self.idle_close_unsaved {
            match self.checkpoint().await {
                Ok(()) => self.idle_close_unsaved = false,
                Err(e) => {
                    if !self.backoff_or_stop(&e, &mut backoff).await {
                        return;
                    }
                }
            }
        }
        let had_events = !batch.events.is_empty();
        // Recover (after an assignment) and prepare: aggregate and encode, once.
        let prepared = loop {
            let recovered = if self.needs_recovery { self.recover().await } else { Ok(()) };
            let result = match recovered {
                Ok(()) => self.prepare(&mut batch).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(prepared) => break prepared,
                Err(e) => {
                    if !self.backoff_or_stop(&e, &mut backoff).await {
                        return;
                    }
                }
            }
        };
        let Some(prepared) = prepared else {
            self.publish_progress(had_events);
            return;
        };
        // Commit, retrying the same files: the window state has already moved past them.
        loop {
            let e = match self.commit(&batch, &prepared).await {
                Ok(()) => break,
                Err(e) => e,
            };
            if !self.backoff_or_stop(&e, &mut backoff).await {
                return;
            }
            // The failed attempt may have left a record, or another writer may have
            // committed the range (a rebalance raced with us).
            if let Err(e) = self.recover_log().await {
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "recovery before retry failed");
                continue;
            }
            match self.durable_last {
                Some(d) if d >= prepared.last => return,
                Some(d) if d >= prepared.first => {
                    self.stop(&format!("offsets {}..={d} were committed by another writer", prepared.first));
                    return;
                }
                _ => {}
            }
        }
        self.after_commit(prepared, had_events).await;
    }

    /// Reads the partition's durable state: the commit log, then the window state.
    async fn recover(&mut self) -> Result<()> {
        self.recover_log().await?;
        if let Some(shared) = self.aggregation.clone() {
            let mut aggregator = PartitionAggregator::new(shared.config.clone(), self.partition);
            self.checkpointed = None;
            self.pending_idle = None;
            self.idle_close_unsaved = false;
            let stored = match self.durable_last {
                Some(durable) => shared.checkpoints.load_latest(&self.topic, self.partition, durable).await?,
                None => None,
            };
            if let Some((offset, bytes)) = stored {
                let config = shared.config.clone();
                let partition = self.partition;
                let restored = tokio::task::spawn_blocking(move || {
                    let (batches, metadata) = parquet_file::decode_with_metadata(bytes)?;
                    let restored = PartitionAggregator::restore(config, partition, &batches, &metadata)
                        .map_err(StorageError::from)?;
                    let meta =
                        |key: &str| metadata.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.parse::<i64>().ok());
                    let pending_source = meta(META_PENDING_AFTER)
                        .zip(meta(META_PENDING_WATERMARK))
                        .map(|(after_offset, watermark_ms)| RollupSource::Idle { after_offset, watermark_ms });
                    Ok::<_, StorageError>((restored, pending_source))
                })
                .await
                .map_err(|e| PipelineError::Other(format!("checkpoint decoder failed: {e}")))?;
                let (restored, pending_source) = restored?;
                aggregator = restored.aggregator;
                if let (Some(source), false) = (pending_source, restored.pending.is_empty()) {
                    self.pending_idle = Some((source, restored.pending));
                }
                self.checkpointed = Some(offset);
                self.last_checkpoint_at = Instant::now();
                tracing::info!(topic = %self.topic, partition = self.partition, checkpoint = offset, open_windows = aggregator.open_windows(), "restored window state; replaying from the checkpoint");
                self.commit_offset(offset + 1);
            }
            self.aggregator = Some(Box::new(aggregator));
        } else if let Some(last) = self.durable_last {
            self.commit_offset(last + 1);
        }
        self.needs_recovery = false;
        self.last_event_at = Instant::now();
        Ok(())
    }

    async fn recover_log(&mut self) -> Result<()> {
        let recovery = self.ctx.log.recover(&self.topic, self.partition, 0).await?;
        if recovery.rolled_back > 0 {
            PipelineMetrics::global().rollbacks.with_label_values(&[&self.topic]).inc_by(recovery.rolled_back as u64);
        }
        self.durable_last = recovery.durable_last;
        self.ranges = recovery.complete.into_iter().collect();
        if let Some(last) = self.durable_last {
            tracing::info!(topic = %self.topic, partition = self.partition, durable_last = last, "recovered partition; already stored offsets will be skipped");
        }
        Ok(())
    }

    /// Aggregates the batch and encodes its files. `None`: every offset of the batch was
    /// already stored.
    async fn prepare(&mut self, batch: &mut PendingBatch) -> Result<Option<Prepared>> {
        let durable = self.durable_last;
        let dataset = self.dataset;
        let topic = self.topic.clone();
        let partition = self.partition;
        let (batch_first, last) = (batch.first_offset, batch.last_offset);
        let first = durable.map_or(batch_first, |d| batch_first.max(d + 1));
        let events = std::mem::take(&mut batch.events);
        let aggregator = self.aggregator.take();
        let definitions = self.aggregation.as_ref().map(|s| s.definitions()).unwrap_or_default();
        // Aggregation and encoding run off the async threads; the events and the window
        // state travel there and back.
        let (events, aggregator, output, files) = tokio::task::spawn_blocking(move || {
            let mut aggregator = aggregator;
            let output = aggregator.as_mut().map(|agg| aggregate_batch(agg, &events, durable, last, &definitions));
            let files = if first > last {
                Ok(Vec::new())
            } else {
                let fresh = events.iter().filter(|e| durable.is_none_or(|d| e.offset > d));
                let mut files = encode_files(dataset, &topic, partition, first, last, fresh);
                if let (Ok(written), Some(out)) = (&mut files, &output) {
                    let source = RollupSource::Batch { first_offset: first, last_offset: last };
                    match encode_rollups(&topic, partition, source, &out.rows) {
                        Ok(more) => written.extend(more),
                        Err(e) => files = Err(e),
                    }
                }
                files
            };
            (events, aggregator, output, files)
        })
        .await
        .map_err(|e| PipelineError::Other(format!("encoder task failed: {e}")))?;
        self.aggregator = aggregator;
        batch.events = events;
        let skipped = durable.map_or(0, |d| batch.skip_through(d));
        if skipped > 0 {
            PipelineMetrics::global().replay_skipped.with_label_values(&[&self.topic]).inc_by(skipped as u64);
        }
        let metrics = PipelineMetrics::global();
        let mut late = 0;
        let mut rollup_rows = Vec::new();
        if let Some(output) = output {
            late = output.late;
            for (resolution, closed) in
                self.aggregation.iter().flat_map(|s| s.config.resolutions_ms.clone()).zip(output.closed)
            {
                if closed > 0 {
                    metrics.windows_closed.with_label_values(&[&resolution_label(resolution)]).inc_by(closed);
                }
            }
            if !output.over_limit.is_empty() {
                metrics.series_over_limit.with_label_values(&[&self.topic]).inc_by(output.over_limit.len() as u64);
            }
            let limit = self.aggregation.as_ref().map_or(0, |s| s.config.max_series_per_metric);
            for (offset, metric) in output.over_limit {
                batch.dead_letters.push(DeadLetter {
                    offset,
                    key: Some(format!("{}/{}", metric.service, metric.name).into_bytes()),
                    payload: serde_json::to_vec(&metric).unwrap_or_default(),
                    headers: vec![],
                    reason: format!(
                        "metric {:?} already has {limit} active series in this partition (the cardinality limit); the sample is stored raw but not aggregated",
                        metric.name
                    ),
                    kind: "cardinality_limit",
                });
            }
            batch.dead_letters.sort_by_key(|d| d.offset);
            rollup_rows = output.rows;
        } else if let Some(shared) = self.ctx.aggregation.clone() {
            // Datasets without windows still report late events against their watermark.
            let lateness = shared.config.allowed_lateness_ms;
            for e in &batch.events {
                let t = e.event.event_time_ms();
                if self.max_event_ms.is_some_and(|max| t < max - lateness) {
                    late += 1;
                }
                self.max_event_ms = Some(self.max_event_ms.map_or(t, |max| max.max(t)));
            }
        }
        if batch.is_spent() {
            return Ok(None);
        }
        Ok(Some(Prepared { first, last, raw_rows: batch.events.len() as u64, files: files?, rollup_rows, late }))
    }

    async fn commit(&self, batch: &PendingBatch, prepared: &Prepared) -> Result<()> {
        self.send_dead_letters(&batch.dead_letters).await?;
        let record = BatchRecord {
            topic: self.topic.clone(),
            partition: self.partition,
            first_offset: prepared.first,
            last_offset: prepared.last,
            files: prepared.files.iter().map(|(p, _)| p.clone()).collect(),
            rows: prepared.raw_rows,
            dead_letters: batch.dead_letters.len() as u64,
            writer: self.ctx.worker_id.clone(),
            created_at_ms: crate::now_ms(),
        };
        match self.ctx.log.commit_batch(&record, prepared.files.clone()).await {
            Ok(()) => Ok(()),
            Err(StorageError::Fenced { .. }) => {
                PipelineMetrics::global().fenced.with_label_values(&[&self.topic]).inc();
                tracing::warn!(topic = %self.topic, partition = self.partition, first = prepared.first, "batch range already committed by another writer");
                Err(PipelineError::Fenced)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn after_commit(&mut self, prepared: Prepared, had_events: bool) {
        let metrics = PipelineMetrics::global();
        let dataset = self.dataset.name();
        metrics.stored.with_label_values(&[dataset]).inc_by(prepared.raw_rows);
        metrics.batches.with_label_values(&[dataset]).inc();
        if prepared.late > 0 {
            metrics.late_events.with_label_values(&[dataset]).inc_by(prepared.late);
        }
        count_rollup_rows(&prepared.rollup_rows);
        let rows = prepared.raw_rows;
        self.ctx.status.update(|s| {
            s.stored += rows;
            s.last_commit_at_ms = Some(crate::now_ms());
        });
        self.durable_last = Some(prepared.last);
        self.ranges.push_back((prepared.first, prepared.last));
        self.publish_progress(had_events);
        if let Some(shared) = self.aggregation.clone() {
            let due =
                self.checkpointed.is_none() || self.last_checkpoint_at.elapsed() >= shared.config.checkpoint_interval;
            if due && let Err(e) = self.checkpoint().await {
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "window checkpoint failed; will retry");
            }
        } else {
            self.commit_offset(prepared.last + 1);
        }
        self.prune().await;
    }

    /// Publishes the partition's watermark and state gauges.
    fn publish_progress(&mut self, had_events: bool) {
        if had_events {
            self.last_event_at = Instant::now();
        }
        let (Some(shared), Some(agg)) = (&self.aggregation, &self.aggregator) else { return };
        shared.board.update(&self.topic, self.partition, agg.watermark_ms(), had_events);
        let metrics = PipelineMetrics::global();
        let labels = [self.topic.as_str(), &self.partition.to_string()];
        metrics.windows_open.with_label_values(&labels).set(agg.open_windows() as i64);
        metrics.active_series.with_label_values(&labels).set(agg.active_series() as i64);
        if let Some(w) = agg.watermark_ms() {
            metrics.watermark_delay_seconds.with_label_values(&labels).set((crate::now_ms() - w) / 1000);
        }
    }

    /// Writes a checkpoint of the window state at the offset it reflects, then lets the
    /// group commit up to it.
    async fn checkpoint(&mut self) -> Result<()> {
        let Some(shared) = self.aggregation.clone() else { return Ok(()) };
        let Some(agg) = self.aggregator.take() else { return Ok(()) };
        let offset = match (agg.offset(), self.durable_last) {
            // The state may only be saved when everything it reflects is durable.
            (Some(o), Some(d)) if o <= d => o,
            _ => {
                self.aggregator = Some(agg);
                return Ok(());
            }
        };
        if self.checkpointed == Some(offset) && self.pending_idle.is_none() {
            self.aggregator = Some(agg);
            return Ok(());
        }
        let started = Instant::now();
        let pending = self.pending_idle.clone();
        let (agg, encoded) = tokio::task::spawn_blocking(move || {
            let encoded = agg
                .checkpoint(pending.as_ref().map_or(&[][..], |(_, rows)| rows))
                .map_err(StorageError::from)
                .and_then(|(batch, mut metadata)| {
                    if let Some((RollupSource::Idle { after_offset, watermark_ms }, _)) = &pending {
                        metadata.push((META_PENDING_AFTER.to_string(), after_offset.to_string()));
                        metadata.push((META_PENDING_WATERMARK.to_string(), watermark_ms.to_string()));
                    }
                    parquet_file::encode_with_metadata(&[batch], metadata)
                });
            (agg, encoded)
        })
        .await
        .map_err(|e| PipelineError::Other(format!("checkpoint encoder failed: {e}")))?;
        let bytes = encoded?;
        let state_bytes = agg.state_bytes();
        self.aggregator = Some(agg);
        shared.checkpoints.save(&self.topic, self.partition, offset, bytes).await?;
        let metrics = PipelineMetrics::global();
        metrics.checkpoints.with_label_values(&[&self.topic]).inc();
        metrics.checkpoint_seconds.observe(started.elapsed().as_secs_f64());
        metrics
            .window_state_bytes
            .with_label_values(&[self.topic.as_str(), &self.partition.to_string()])
            .set(state_bytes as i64);
        self.checkpointed = Some(offset);
        self.last_checkpoint_at = Instant::now();
        self.commit_offset(offset + 1);
        if let Err(e) = shared.checkpoints.prune(&self.topic, self.partition, 2).await {
            tracing::debug!(error = %e, "could not prune window checkpoints");
        }
        Ok(())
    }

    /// Called when no job arrived for a while: closes the windows of an idle partition,
    /// checkpoints changed state, and writes the files of idle-closed windows.
    async fn on_quiet(&mut self) {
        let Some(shared) = self.aggregation.clone() else { return };
        if self.stopped || !self.owned {
            return;
        }
        if self.needs_recovery
            && let Err(e) = self.recover().await
        {
            tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "recovery failed; will retry");
            return;
        }
        let idle_timeout = shared.config.idle_timeout;
        // A partition still replaying stored batches is catching up, not idle.
        let replaying =
            self.aggregator.as_ref().and_then(|a| a.offset()).zip(self.durable_last).is_some_and(|(o, d)| o < d);
        let idle = !replaying && self.last_event_at.elapsed() >= idle_timeout;
        if let Some(agg) = self.aggregator.as_mut()
            && idle
            && agg.has_open_windows()
        {
            let combined = shared.board.combined_active(&self.topic, self.partition, idle_timeout);
            if agg.close_idle(combined) {
                let rows = agg.take_emitted();
                let closed = agg.take_closed_counts();
                let source = RollupSource::Idle {
                    after_offset: agg.offset().unwrap_or(-1),
                    watermark_ms: agg.watermark_ms().unwrap_or(i64::MIN),
                };
                for (resolution, n) in shared.config.resolutions_ms.iter().zip(closed) {
                    PipelineMetrics::global()
                        .windows_closed
                        .with_label_values(&[&resolution_label(*resolution)])
                        .inc_by(n);
                }
                tracing::debug!(topic = %self.topic, partition = self.partition, rows = rows.len(), ?combined, "idle partition closed its windows");
                match &mut self.pending_idle {
                    Some((_, pending)) => pending.extend(rows),
                    None => self.pending_idle = Some((source, rows)),
                }
                self.idle_close_unsaved = true;
            }
        }
        self.publish_progress(false);
        // The checkpoint lists the idle-closed rows first, so that a crash between it and
        // their files re-writes the same files rather than re-opening the windows.
        if let Err(e) = self.checkpoint().await {
            tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "window checkpoint failed; will retry");
            return;
        }
        self.idle_close_unsaved = false;
        if let Some((source, rows)) = &self.pending_idle {
            // Rows of a later idle close that joined unwritten ones go under the first name:
            // a file there holds a subset of them, which the rewrite replaces.
            let written = match encode_rollups(&self.topic, self.partition, *source, rows) {
                Ok(files) => {
                    let tier = self.ctx.log.tier().clone();
                    let writes = files.into_iter().map(|(path, bytes)| {
                        let tier = tier.clone();
                        async move { tier.put_durable(&path, bytes, false).await }
                    });
                    futures::future::try_join_all(writes).await.map(|_| ()).map_err(PipelineError::from)
                }
                Err(e) => Err(e),
            };
            match written {
                Ok(()) => {
                    count_rollup_rows(rows);
                    self.pending_idle = None;
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "writing idle-closed windows failed; will retry")
                }
            }
        }
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

fn count_rollup_rows(rows: &[RollupRow]) {
    let mut counts: BTreeMap<(i64, bool), u64> = BTreeMap::new();
    for row in rows {
        *counts.entry((row.resolution_ms, row.late)).or_default() += 1;
    }
    for ((resolution, late), n) in counts {
        PipelineMetrics::global()
            .rollup_rows
            .with_label_values(&[resolution_label(resolution).as_str(), if late { "true" } else { "false" }])
            .inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use callscope_schemas::MetricKind;

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
