//! The consume loop of one stream worker.
//!
//! It reads the input topics as a member of a consumer group (auto-commit off), decodes
//! every message, and appends it (or its dead letter) to the buffer of its topic partition.
//! A buffer is handed to that partition's [`PartitionWriter`] when it holds `flush_rows`
//! messages or its oldest message is `flush_interval` old. Offsets are committed by the
//! writers, after the data is durable.
//!
//! Rebalances: on revoke, unflushed buffers are dropped (whoever owns the partition next
//! re-reads them from the committed offset); on assign, the writer recovers the
//! partition's durable state from the commit log before it writes again, so replayed
//! offsets that are already stored are skipped.
//!
//! Metric topics are also aggregated in event-time windows by the writers (see
//! [`crate::windows`]); their offsets are committed up to the newest window checkpoint.
//!
//! Alongside the loop run the heartbeat publisher ([`crate::status`]), the orphan watchdog
//! ([`crate::watchdog`]) and the watch of custom metric definitions
//! ([`crate::windows::definitions`]).
//!
//! Shutdown: stop consuming, flush every buffer, let the writers finish (they checkpoint
//! their windows), commit offsets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use callscope_runtime::KafkaConnection;
use callscope_runtime::dead_letter::DeadLetterProducer;
use callscope_schemas::arrow_schema::SourcedEvent;
use callscope_schemas::{Dataset, DecodeOptions, decode_event};
use callscope_storage::workers::{WorkerState, WorkerStatus};
use callscope_storage::{CommitLog, CustomMetricStore, Tier};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use tokio_util::sync::CancellationToken;

use crate::batch::{DeadLetter, PendingBatch, WriterJob};
use crate::error::{PipelineError, Result};
use crate::metrics::PipelineMetrics;
use crate::otlp_input::{self, OtlpMessage};
use crate::source::{KafkaSource, RebalanceEvent};
use crate::status::{StatusHandle, publish_heartbeats};
use crate::watchdog::OrphanWatchdog;
use crate::windows::aggregate::AggregationConfig;
use crate::windows::definitions::{self, AggregationShared};
use crate::writer::{PartitionWriter, WriterContext};

/// How long a shutting-down worker lets its writers retry a failing storage before it
/// gives up on what is not stored yet (it stays unacknowledged in Kafka).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Settings of one worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub kafka: KafkaConnection,
    pub group_id: String,
    /// Input topic → dataset it carries.
    pub topics: BTreeMap<String, Dataset>,
    /// Those of `topics` whose messages are OTLP export requests (spans or metrics).
    pub otlp_topics: BTreeSet<String>,
    /// Flush a partition's batch when it holds this many messages…
    pub flush_rows: usize,
    /// …or when its oldest message has waited this long.
    pub flush_interval: Duration,
    /// Largest allowed distance of an event time from now.
    pub max_time_skew: Duration,
    pub worker_id: String,
    pub heartbeat_interval: Duration,
    /// Windowed aggregation of metric topics; `None` stores raw events only.
    pub aggregation: Option<AggregationConfig>,
}

impl WorkerConfig {
    // The defaults, stated once (the CLI's flags show and use these).
    pub const DEFAULT_GROUP_ID: &str = "callscope-pipeline";
    pub const DEFAULT_FLUSH_ROWS: usize = 50_000;
    pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_MAX_TIME_SKEW: Duration = Duration::from_secs(7 * 24 * 3600);

    pub fn new(kafka: KafkaConnection, group_id: impl Into<String>) -> Self {
        WorkerConfig {
            kafka,
            group_id: group_id.into(),
            topics: Dataset::ALL.into_iter().map(|d| (d.default_topic().to_string(), d)).collect(),
            otlp_topics: BTreeSet::new(),
            flush_rows: Self::DEFAULT_FLUSH_ROWS,
            flush_interval: Self::DEFAULT_FLUSH_INTERVAL,
            max_time_skew: Self::DEFAULT_MAX_TIME_SKEW,
            worker_id: format!("worker-{}", uuid::Uuid::new_v4().simple()),
            heartbeat_interval: Duration::from_secs(2),
            aggregation: Some(AggregationConfig::default()),
        }
    }

    /// Also reads OTLP export requests of spans and metrics from these topics.
    pub fn with_otlp_topics(mut self, topics: &callscope_schemas::otlp::OtlpTopics) -> Self {
        for (topic, dataset) in [(&topics.spans, Dataset::Spans), (&topics.metrics, Dataset::Metrics)] {
            if !topic.is_empty() {
                self.topics.insert(topic.clone(), dataset);
                self.otlp_topics.insert(topic.clone());
            }
        }
        self
    }

    fn topic_names(&self) -> Vec<&str> {
        self.topics.keys().map(String::as_str).collect()
    }
}

struct Buffer {
    batch: PendingBatch,
    opened: Option<Instant>,
}

/// A stream worker: construct with [`Worker::new`], run with [`Worker::run`].
pub struct Worker {
    config: WorkerConfig,
    source: Arc<KafkaSource>,
    writer_ctx: WriterContext,
    status: StatusHandle,
    tier: Tier,
}

impl Worker {
    pub fn new(config: WorkerConfig, hot: Tier) -> Result<Worker> {
        if config.topics.is_empty() {
            return Err(PipelineError::Config("no input topics".into()));
        }
        let status = StatusHandle::new(WorkerStatus {
            worker_id: config.worker_id.clone(),
            group_id: config.group_id.clone(),
            host: std::env::var("HOSTNAME").unwrap_or_default(),
            pid: std::process::id(),
            state: WorkerState::Starting,
            started_at_ms: callscope_runtime::now_ms(),
            last_rebalance_at_ms: Some(callscope_runtime::now_ms()),
            ..Default::default()
        });
        let source =
            Arc::new(KafkaSource::connect(&config.kafka, &config.group_id, &config.worker_id, status.clone())?);
        source.subscribe(&config.topic_names())?;
        let writer_ctx = WriterContext {
            acks: source.clone(),
            dead_letters: Arc::new(DeadLetterProducer::new(&config.kafka)?),
            log: CommitLog::new(hot.clone()),
            worker_id: config.worker_id.clone(),
            status: status.clone(),
            aggregation: config.aggregation.clone().map(|c| Arc::new(AggregationShared::new(c, hot.clone()))),
            give_up: CancellationToken::new(),
        };
        Ok(Worker { config, source, writer_ctx, status, tier: hot })
    }

    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Consumes until `shutdown` is cancelled, then flushes and commits.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let heartbeat_cancel = CancellationToken::new();
        let heartbeat = tokio::spawn(publish_heartbeats(
            self.status.clone(),
            self.tier.clone(),
            self.config.heartbeat_interval,
            heartbeat_cancel.clone(),
        ));
        let rejoin = Arc::new(AtomicBool::new(false));
        let watchdog = OrphanWatchdog {
            source: self.source.clone(),
            tier: self.tier.clone(),
            group_id: self.config.group_id.clone(),
            topics: self.config.topics.keys().cloned().collect(),
            status: self.status.clone(),
            rejoin: rejoin.clone(),
        };
        let watchdog = tokio::spawn(watchdog.run(heartbeat_cancel.clone()));
        let definitions_watch = self.writer_ctx.aggregation.clone().map(|shared| {
            tokio::spawn(definitions::watch(
                shared,
                CustomMetricStore::new(self.tier.clone()),
                heartbeat_cancel.clone(),
            ))
        });
        self.status.update(|s| s.state = WorkerState::Running);
        tracing::info!(worker = %self.config.worker_id, group = %self.config.group_id, topics = ?self.config.topics.keys().collect::<Vec<_>>(), "worker started");

        let mut buffers: HashMap<(String, i32), Buffer> = HashMap::new();
        let mut writers: HashMap<(String, i32), PartitionWriter> = HashMap::new();
        let mut ticker = tokio::time::interval(Duration::from_millis(50));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let metrics = PipelineMetrics::global();
        let mut buffered: i64 = 0;
        let mut consumed: HashMap<String, prometheus::IntCounter> = HashMap::new();
        let mut result = Ok(());

        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    if rejoin.swap(false, Ordering::Relaxed) {
                        self.source.rejoin(&self.config.topic_names());
                    }
                    self.apply_rebalances(&mut buffers, &mut writers, &mut buffered).await;
                    let due: Vec<(String, i32)> = buffers
                        .iter()
                        .filter(|(_, b)| b.opened.is_some_and(|t| t.elapsed() >= self.config.flush_interval))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in due {
                        self.flush(&key, &mut buffers, &mut writers, &mut buffered).await;
                    }
                    metrics.buffered_events.set(buffered);
                }
                message = self.source.recv() => {
                    self.apply_rebalances(&mut buffers, &mut writers, &mut buffered).await;
                    match message {
                        Ok(m) => {
                            let key = (m.topic().to_string(), m.partition());
                            let Some(dataset) = self.config.topics.get(m.topic()).copied() else { continue };
                            let buffer = buffers.entry(key.clone()).or_insert_with(|| Buffer { batch: PendingBatch::default(), opened: None });
                            buffered += append(&mut buffer.batch, dataset, &m, &self.config) as i64;
                            buffer.opened.get_or_insert_with(Instant::now);
                            match consumed.get(m.topic()) {
                                Some(counter) => counter.inc(),
                                None => {
                                    let counter = metrics.consumed.with_label_values(&[m.topic()]);
                                    counter.inc();
                                    consumed.insert(m.topic().to_string(), counter);
                                }
                            }
                            if buffer.batch.len() >= self.config.flush_rows {
                                self.flush(&key, &mut buffers, &mut writers, &mut buffered).await;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "kafka consume error");
                            self.status.update(|s| s.last_error = Some(e.to_string()));
                            if matches!(e, rdkafka::error::KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                    }
                }
            }
        }

        // Ordered shutdown: flush every buffer, let writers drain, commit final offsets.
        // During a storage outage the writers stop retrying after a grace period, so that
        // shutdown ends; what they could not store is re-read after the restart.
        self.status.update(|s| s.state = WorkerState::Stopping);
        let give_up = self.writer_ctx.give_up.clone();
        let give_up_timer = tokio::spawn(async move {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "writers still retrying at shutdown; giving up on what is not stored");
            give_up.cancel();
        });
        let keys: Vec<_> = buffers.keys().cloned().collect();
        for key in keys {
            self.flush(&key, &mut buffers, &mut writers, &mut buffered).await;
        }
        let mut final_offsets = Vec::new();
        let assigned = self.status.snapshot().assigned;
        for ((topic, partition), writer) in writers {
            drop(writer.sender);
            match writer.task.await {
                // Only partitions this worker still owns: another member may own the rest.
                Ok(Some(last)) if assigned.contains(&format!("{topic}/{partition}")) => {
                    final_offsets.push((topic, partition, last + 1));
                }
                Ok(_) => {}
                Err(e) => result = Err(PipelineError::Other(format!("writer task failed: {e}"))),
            }
        }
        give_up_timer.abort();
        if let Err(e) = self.source.commit_final(&final_offsets) {
            tracing::warn!(error = %e, "final offset commit failed; stored batches will be skipped on replay");
        }
        self.source.unsubscribe();
        heartbeat_cancel.cancel();
        let _ = heartbeat.await;
        let _ = watchdog.await;
        if let Some(definitions_watch) = definitions_watch {
            let _ = definitions_watch.await;
        }
        metrics.buffered_events.set(0);
        tracing::info!(worker = %self.config.worker_id, "worker stopped");
        result
    }

    async fn apply_rebalances(
        &self,
        buffers: &mut HashMap<(String, i32), Buffer>,
        writers: &mut HashMap<(String, i32), PartitionWriter>,
        buffered: &mut i64,
    ) {
        let events = self.source.take_rebalances();
        if events.is_empty() {
            return;
        }
        for event in events {
            match event {
                RebalanceEvent::Revoked(list) => {
                    tracing::info!(partitions = ?list, "partitions revoked");
                    for key in &list {
                        if let Some(b) = buffers.remove(key) {
                            *buffered -= b.batch.len() as i64;
                        }
                        if let Some(w) = writers.get(key) {
                            let _ = w.sender.send(WriterJob::Revoked).await;
                        }
                    }
                    self.status.update(|s| s.assigned.retain(|a| !list.iter().any(|(t, p)| *a == format!("{t}/{p}"))));
                }
                RebalanceEvent::Assigned(list) => {
                    tracing::info!(partitions = ?list, "partitions assigned");
                    for key in &list {
                        if let Some(b) = buffers.remove(key) {
                            *buffered -= b.batch.len() as i64;
                        }
                        let dataset = self.config.topics.get(&key.0).copied();
                        match (writers.get(key), dataset) {
                            (Some(w), _) => {
                                let _ = w.sender.send(WriterJob::Assigned).await;
                            }
                            (None, Some(dataset)) => {
                                writers.insert(
                                    key.clone(),
                                    PartitionWriter::spawn(self.writer_ctx.clone(), key.0.clone(), key.1, dataset),
                                );
                            }
                            (None, None) => {}
                        }
                    }
                    self.status.update(|s| {
                        for (t, p) in &list {
                            let name = format!("{t}/{p}");
                            if !s.assigned.contains(&name) {
                                s.assigned.push(name);
                            }
                        }
                        s.assigned.sort();
                    });
                }
            }
        }
        self.status.update(|s| s.last_rebalance_at_ms = Some(callscope_runtime::now_ms()));
        let assigned = self.status.snapshot().assigned.len();
        PipelineMetrics::global().assigned_partitions.set(assigned as i64);
    }

    async fn flush(
        &self,
        key: &(String, i32),
        buffers: &mut HashMap<(String, i32), Buffer>,
        writers: &mut HashMap<(String, i32), PartitionWriter>,
        buffered: &mut i64,
    ) {
        let Some(buffer) = buffers.remove(key) else { return };
        if buffer.batch.is_empty() {
            return;
        }
        *buffered -= buffer.batch.len() as i64;
        let Some(dataset) = self.config.topics.get(&key.0).copied() else { return };
        let writer = writers
            .entry(key.clone())
            .or_insert_with(|| PartitionWriter::spawn(self.writer_ctx.clone(), key.0.clone(), key.1, dataset));
        let n = buffer.batch.len() as u64;
        if writer.sender.send(WriterJob::Batch(buffer.batch)).await.is_err() {
            tracing::error!(topic = %key.0, partition = key.1, "partition writer stopped; batch will be re-read after restart");
        } else {
            self.status.update(|s| s.consumed += n);
        }
    }
}

/// Decodes one message into `batch` (its events, or its dead letters); returns how many
/// entries it added.
fn append(batch: &mut PendingBatch, dataset: Dataset, m: &BorrowedMessage<'_>, config: &WorkerConfig) -> usize {
    let offset = m.offset();
    if batch.is_empty() {
        batch.first_offset = offset;
    }
    batch.last_offset = offset;
    batch.messages += 1;
    let options = DecodeOptions {
        max_time_skew_ms: config.max_time_skew.as_millis() as i64,
        now_ms: callscope_runtime::now_ms(),
    };
    let payload = m.payload().unwrap_or_default();
    let headers = || {
        m.headers()
            .map(|hs| hs.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
            .unwrap_or_default()
    };
    if config.otlp_topics.contains(m.topic()) {
        let message = OtlpMessage { partition: m.partition(), offset, key: m.key(), payload, headers: headers() };
        return otlp_input::append(batch, dataset, &message, &options);
    }
    match decode_event(dataset, payload, &options) {
        Ok((event, _encoding)) => batch.events.push(SourcedEvent { partition: m.partition(), offset, event }),
        Err(e) => {
            let headers = headers();
            tracing::debug!(topic = m.topic(), partition = m.partition(), offset, reason = %e, "dead-lettering message");
            batch.dead_letters.push(DeadLetter {
                offset,
                key: m.key().map(<[u8]>::to_vec),
                payload: payload.to_vec(),
                headers,
                reason: e.to_string(),
                kind: e.kind(),
            });
        }
    }
    1
}
