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
//! [`crate::aggregate`]); their offsets are committed up to the newest window checkpoint.
//!
//! Shutdown: stop consuming, flush every buffer, let the writers finish (they checkpoint
//! their windows), commit offsets.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callscope_schemas::arrow_schema::SourcedEvent;
use callscope_schemas::{Dataset, DecodeOptions, decode_event};
use callscope_storage::workers::WorkerStatus;
use callscope_storage::{CommitLog, CustomMetricStore, Tier};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::aggregate::AggregationConfig;
use crate::kafka::KafkaConnection;
use crate::metrics::PipelineMetrics;
use crate::partition_writer::{AggregationShared, DeadLetter, PartitionWriter, PendingBatch, WriterContext, WriterJob};
use crate::status::{StatusHandle, publish_heartbeats};
use crate::{PipelineError, Result};

/// Settings of one worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub kafka: KafkaConnection,
    pub group_id: String,
    /// Input topic → dataset it carries.
    pub topics: BTreeMap<String, Dataset>,
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
    pub fn new(kafka: KafkaConnection, group_id: impl Into<String>) -> Self {
        WorkerConfig {
            kafka,
            group_id: group_id.into(),
            topics: Dataset::ALL.into_iter().map(|d| (d.default_topic().to_string(), d)).collect(),
            flush_rows: 50_000,
            flush_interval: Duration::from_secs(1),
            max_time_skew: Duration::from_secs(7 * 24 * 3600),
            worker_id: format!("worker-{}", uuid::Uuid::new_v4().simple()),
            heartbeat_interval: Duration::from_secs(5),
            aggregation: Some(AggregationConfig::default()),
        }
    }
}

enum RebalanceEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

/// Consumer context: forwards rebalances to the loop, records committed offsets and lag.
pub struct WorkerContext {
    rebalances: Mutex<Vec<RebalanceEvent>>,
    committed: Arc<Mutex<BTreeMap<(String, i32), i64>>>,
    status: StatusHandle,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

impl ClientContext for WorkerContext {
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

impl ConsumerContext for WorkerContext {
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

pub type WorkerConsumer = StreamConsumer<WorkerContext>;

struct Buffer {
    batch: PendingBatch,
    opened: Option<Instant>,
}

/// A stream worker: construct with [`Worker::new`], run with [`Worker::run`].
pub struct Worker {
    config: WorkerConfig,
    consumer: Arc<WorkerConsumer>,
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
            state: "starting".into(),
            started_at_ms: crate::now_ms(),
            last_rebalance_at_ms: Some(crate::now_ms()),
            ..Default::default()
        });
        let committed = Arc::new(Mutex::new(BTreeMap::new()));
        let context =
            WorkerContext { rebalances: Mutex::new(Vec::new()), committed: committed.clone(), status: status.clone() };
        let consumer: WorkerConsumer = config
            .kafka
            .client_config()
            .set("group.id", &config.group_id)
            .set("client.id", &config.worker_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "100")
            .set("statistics.interval.ms", "5000")
            .create_with_context(context)?;
        let topics: Vec<&str> = config.topics.keys().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let consumer = Arc::new(consumer);
        let writer_ctx = WriterContext {
            consumer: consumer.clone(),
            producer: config.kafka.producer()?,
            log: CommitLog::new(hot.clone()),
            worker_id: config.worker_id.clone(),
            status: status.clone(),
            committed,
            aggregation: config.aggregation.clone().map(|c| Arc::new(AggregationShared::new(c, hot.clone()))),
        };
        Ok(Worker { config, consumer, writer_ctx, status, tier: hot })
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
        let rejoin = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watchdog = tokio::spawn(watch_for_orphaned_partitions(
            self.consumer.clone(),
            self.tier.clone(),
            self.config.clone(),
            self.status.clone(),
            rejoin.clone(),
            heartbeat_cancel.clone(),
        ));
        let definitions = self.writer_ctx.aggregation.clone().map(|shared| {
            tokio::spawn(crate::custom_metrics::watch(
                shared,
                CustomMetricStore::new(self.tier.clone()),
                heartbeat_cancel.clone(),
            ))
        });
        self.status.update(|s| s.state = "running".into());
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
                    if rejoin.swap(false, std::sync::atomic::Ordering::Relaxed) {
                        self.rejoin_group();
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
                message = self.consumer.recv() => {
                    self.apply_rebalances(&mut buffers, &mut writers, &mut buffered).await;
                    match message {
                        Ok(m) => {
                            let key = (m.topic().to_string(), m.partition());
                            let Some(dataset) = self.config.topics.get(m.topic()).copied() else { continue };
                            let buffer = buffers.entry(key.clone()).or_insert_with(|| Buffer { batch: PendingBatch::default(), opened: None });
                            append(&mut buffer.batch, dataset, &m, &self.config);
                            buffer.opened.get_or_insert_with(Instant::now);
                            buffered += 1;
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
        self.status.update(|s| s.state = "stopping".into());
        let keys: Vec<_> = buffers.keys().cloned().collect();
        for key in keys {
            self.flush(&key, &mut buffers, &mut writers, &mut buffered).await;
        }
        let mut final_offsets = TopicPartitionList::new();
        let assigned = self.status.snapshot().assigned;
        for ((topic, partition), writer) in writers {
            drop(writer.sender);
            match writer.task.await {
                // Only partitions this worker still owns: another member may own the rest.
                Ok(Some(last)) if assigned.contains(&format!("{topic}/{partition}")) => {
                    let _ = final_offsets.add_partition_offset(&topic, partition, Offset::Offset(last + 1));
                }
                Ok(_) => {}
                Err(e) => result = Err(PipelineError::Other(format!("writer task failed: {e}"))),
            }
        }
        if final_offsets.count() > 0
            && let Err(e) = self.consumer.commit(&final_offsets, CommitMode::Sync)
        {
            tracing::warn!(error = %e, "final offset commit failed; stored batches will be skipped on replay");
        }
        self.consumer.unsubscribe();
        heartbeat_cancel.cancel();
        let _ = heartbeat.await;
        let _ = watchdog.await;
        if let Some(definitions) = definitions {
            let _ = definitions.await;
        }
        metrics.buffered_events.set(0);
        tracing::info!(worker = %self.config.worker_id, "worker stopped");
        result
    }

    /// Leaves and rejoins the consumer group, which forces a new generation and a fresh
    /// assignment computed by a live leader.
    fn rejoin_group(&self) {
        let topics: Vec<&str> = self.config.topics.keys().map(String::as_str).collect();
        self.consumer.unsubscribe();
        if let Err(e) = self.consumer.subscribe(&topics) {
            tracing::error!(error = %e, "could not rejoin the consumer group");
        }
    }

    async fn apply_rebalances(
        &self,
        buffers: &mut HashMap<(String, i32), Buffer>,
        writers: &mut HashMap<(String, i32), PartitionWriter>,
        buffered: &mut i64,
    ) {
        let events = match self.consumer.context().rebalances.lock() {
            Ok(mut events) if !events.is_empty() => std::mem::take(&mut *events),
            _ => return,
        };
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
        self.status.update(|s| s.last_rebalance_at_ms = Some(crate::now_ms()));
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

fn append(batch: &mut PendingBatch, dataset: Dataset, m: &BorrowedMessage<'_>, config: &WorkerConfig) {
    let offset = m.offset();
    if batch.is_empty() {
        batch.first_offset = offset;
    }
    batch.last_offset = offset;
    let options = DecodeOptions { max_time_skew_ms: config.max_time_skew.as_millis() as i64, now_ms: crate::now_ms() };
    let payload = m.payload().unwrap_or_default();
    match decode_event(dataset, payload, &options) {
        Ok((event, _encoding)) => batch.events.push(SourcedEvent { partition: m.partition(), offset, event }),
        Err(e) => {
            let headers = m
                .headers()
                .map(|hs| hs.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
                .unwrap_or_default();
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
}

/// Watches for input partitions that no live worker owns, and asks the loop to rejoin the
/// group when that lasts.
///
/// Why: a group coordinator can hand a dead member's partitions to nobody. Tansu 0.6.0 does
/// so when the group's leader dies (`kill -9`): after the session timeout it drops the
/// member, but the survivors' next assignment still leaves its partitions unowned, and a
/// restarted worker is assigned nothing. Workers publish their assignments in heartbeat
/// objects, so any worker can see that a partition has had no live owner for three checks
/// in a row (15 s); rejoining starts a new generation whose leader is alive and assigns
/// every partition. On a healthy cluster this never fires.
async fn watch_for_orphaned_partitions(
    consumer: Arc<WorkerConsumer>,
    tier: Tier,
    config: WorkerConfig,
    status: StatusHandle,
    rejoin: Arc<std::sync::atomic::AtomicBool>,
    cancel: CancellationToken,
) {
    const EVERY: Duration = Duration::from_secs(5);
    let mut strikes = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let own = status.snapshot();
        let settle_ms = 3 * EVERY.as_millis() as i64;
        if own.last_rebalance_at_ms.is_some_and(|t| crate::now_ms() - t < settle_ms) {
            // Assignments are still settling (and others' heartbeats may lag behind).
            strikes = 0;
            continue;
        }
        let c = consumer.clone();
        let topics = config.topics.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            c.fetch_metadata(None, Duration::from_secs(5)).map(|m| {
                m.topics()
                    .iter()
                    .filter(|t| topics.contains_key(t.name()))
                    .flat_map(|t| t.partitions().iter().map(|p| format!("{}/{}", t.name(), p.id())).collect::<Vec<_>>())
                    .collect::<Vec<String>>()
            })
        })
        .await;
        let Ok(Ok(inputs)) = metadata else { continue };
        let Ok(heartbeats) = callscope_storage::workers::read_all(&tier).await else { continue };
        let now = crate::now_ms();
        let mut owned: std::collections::BTreeSet<String> = heartbeats
            .into_iter()
            .filter(|h| {
                h.worker_id != own.worker_id
                    && h.group_id == config.group_id
                    && now - h.updated_at_ms < settle_ms
                    && h.state == "running"
            })
            .flat_map(|h| h.assigned)
            .collect();
        owned.extend(own.assigned);
        let orphaned: Vec<&String> = inputs.iter().filter(|p| !owned.contains(*p)).collect();
        if orphaned.is_empty() {
            strikes = 0;
            continue;
        }
        strikes += 1;
        if strikes >= 3 {
            tracing::warn!(orphaned = ?orphaned, "partitions have had no live owner for 15 s; rejoining the consumer group");
            rejoin.store(true, std::sync::atomic::Ordering::Relaxed);
            strikes = 0;
        }
    }
}
