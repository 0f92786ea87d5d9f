//! The window state of one topic partition, as its writer drives it: restored from the
//! checkpoint the partition's owners committed (see [`callscope_storage::epochs`]; for
//! partitions of older versions, the newest one at or below the durable offset), fed every
//! batch in offset order, checkpointed (and the checkpoint committed under the writer's
//! epoch) after the batches it reflects are durable, and closed when the partition goes
//! idle. Offsets of windowed partitions are acknowledged only up to the newest
//! checkpoint, so a restart replays from there and rebuilds the same state.

use std::sync::Arc;
use std::time::Instant;

use callscope_runtime::dead_letter::DeadLetter;
use callscope_schemas::arrow_schema::SourcedEvent;
use callscope_schemas::custom_metrics::CustomMetric;
use callscope_schemas::rollup::{RollupRow, resolution_label};
use callscope_schemas::{Event, Metric};
use callscope_storage::window_state::CheckpointName;
use callscope_storage::{Ownership, RollupSource};

use super::aggregate::{Outcome, PartitionAggregator};
use super::checkpoint::{self, PendingIdle};
use super::definitions::AggregationShared;
use crate::acks::OffsetAck;
use crate::error::{PipelineError, Result};
use crate::metrics::PipelineMetrics;

/// What aggregating one batch produced.
#[derive(Debug, Default)]
pub struct AggregateOutput {
    /// Rows of windows the batch closed (and late corrections) that the batch must write.
    pub rows: Vec<RollupRow>,
    pub late: u64,
    /// Samples over the cardinality limit, by offset.
    pub over_limit: Vec<(i64, Metric)>,
    /// Windows closed, per resolution.
    pub closed: Vec<u64>,
    /// Span children that expired without meeting their parent.
    pub unpaired: u64,
}

/// Feeds a batch to the aggregator. Events at or below `durable` were stored by an earlier
/// batch (a replay after restoring an older checkpoint): they rebuild state, and what they
/// emit is dropped, because those batches already hold it.
pub fn aggregate_batch(
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
        let m = match &e.event {
            Event::Metric(m) => m,
            Event::Span(span) => {
                if let Outcome::Late = agg.process_span(e.offset, span)
                    && !replay
                {
                    out.late += 1;
                }
                continue;
            }
            _ => continue,
        };
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
    out.unpaired = agg.take_unpaired();
    out
}

/// What a batch's aggregation leaves for the batch to store.
#[derive(Debug, Default)]
pub struct Settled {
    /// Events late for their (finest) window.
    pub late: u64,
    /// Roll-up rows the batch writes.
    pub rows: Vec<RollupRow>,
}

/// The window state of one partition.
pub struct PartitionWindows {
    shared: Arc<AggregationShared>,
    topic: String,
    partition: i32,
    /// `None` until restored, and while lent to an encoder task.
    aggregator: Option<Box<PartitionAggregator>>,
    /// Offset of the newest window-state checkpoint written or restored.
    checkpointed: Option<i64>,
    last_checkpoint_at: Instant,
    /// Windows closed because the partition went idle, with the offset the close followed
    /// and the watermark it reached (together they name the files); listed in every
    /// checkpoint until their files are written.
    pending_idle: Option<PendingIdle>,
    /// An idle close happened that no checkpoint holds yet.
    idle_close_unsaved: bool,
    last_event_at: Instant,
}

impl PartitionWindows {
    pub fn new(shared: Arc<AggregationShared>, topic: String, partition: i32) -> PartitionWindows {
        PartitionWindows {
            shared,
            topic,
            partition,
            aggregator: None,
            checkpointed: None,
            last_checkpoint_at: Instant::now(),
            pending_idle: None,
            idle_close_unsaved: false,
            last_event_at: Instant::now(),
        }
    }

    /// Offset of the newest checkpoint: with windows, the last offset the group may commit.
    pub fn checkpointed(&self) -> Option<i64> {
        self.checkpointed
    }

    /// The custom metrics to materialize now.
    pub fn definitions(&self) -> Arc<Vec<CustomMetric>> {
        self.shared.definitions()
    }

    /// The partition was revoked: forget the in-memory state (the next owner restores the
    /// newest checkpoint).
    pub fn forget(&mut self) {
        self.aggregator = None;
        self.pending_idle = None;
        self.idle_close_unsaved = false;
        self.shared.board.remove(&self.topic, self.partition);
    }

    /// Rebuilds the state from the `committed` checkpoint (the one the partition's epochs
    /// name; without one, the newest at or below `durable_last`), or starts empty; a
    /// restored checkpoint's offset is acknowledged.
    pub async fn restore(
        &mut self,
        durable_last: Option<i64>,
        committed: Option<&str>,
        acks: &dyn OffsetAck,
    ) -> Result<()> {
        let mut aggregator = PartitionAggregator::new(self.shared.config.clone(), self.partition);
        self.checkpointed = None;
        self.pending_idle = None;
        self.idle_close_unsaved = false;
        let committed = committed.and_then(CheckpointName::parse);
        let stored = match (durable_last, committed) {
            (Some(durable), Some(name)) if name.offset <= durable => {
                let bytes = self.shared.checkpoints.load(&self.topic, self.partition, &name.name).await?;
                Some((name.offset, bytes))
            }
            (Some(durable), Some(name)) => {
                return Err(PipelineError::Other(format!(
                    "the committed window checkpoint {} is past the durable offset {durable}: the commit log and the checkpoint disagree",
                    name.name
                )));
            }
            (Some(durable), None) => self
                .shared
                .checkpoints
                .load_latest(&self.topic, self.partition, durable)
                .await?
                .map(|(name, bytes)| (name.offset, bytes)),
            (None, _) => None,
        };
        if let Some((offset, bytes)) = stored {
            let config = self.shared.config.clone();
            let partition = self.partition;
            let decoded = tokio::task::spawn_blocking(move || checkpoint::decode(config, partition, bytes))
                .await
                .map_err(|e| PipelineError::Other(format!("checkpoint decoder failed: {e}")))??;
            aggregator = decoded.aggregator;
            self.pending_idle = decoded.pending;
            self.checkpointed = Some(offset);
            self.last_checkpoint_at = Instant::now();
            tracing::info!(topic = %self.topic, partition = self.partition, checkpoint = offset, open_windows = aggregator.open_windows(), "restored window state; replaying from the checkpoint");
            acks.ack(&self.topic, self.partition, offset + 1);
        }
        self.aggregator = Some(Box::new(aggregator));
        self.last_event_at = Instant::now();
        Ok(())
    }

    /// Lends the state to a blocking task (aggregation runs off the async threads).
    pub fn lend(&mut self) -> Option<Box<PartitionAggregator>> {
        self.aggregator.take()
    }

    /// Takes back what [`lend`](Self::lend) lent.
    pub fn give_back(&mut self, aggregator: Option<Box<PartitionAggregator>>) {
        self.aggregator = aggregator;
    }

    /// Counts what a batch's aggregation did and dead-letters the samples over the
    /// cardinality limit (they are still stored raw); returns what the batch stores.
    pub fn settle(&self, output: AggregateOutput, dead_letters: &mut Vec<DeadLetter>) -> Settled {
        let metrics = PipelineMetrics::global();
        let config = &self.shared.config;
        for (resolution, closed) in config.resolutions_ms.iter().zip(output.closed) {
            if closed > 0 {
                metrics.windows_closed.with_label_values(&[&resolution_label(*resolution)]).inc_by(closed);
            }
        }
        if output.unpaired > 0 {
            metrics.spans_unpaired.with_label_values(&[&self.topic]).inc_by(output.unpaired);
        }
        if !output.over_limit.is_empty() {
            metrics.series_over_limit.with_label_values(&[&self.topic]).inc_by(output.over_limit.len() as u64);
        }
        let limit = config.max_series_per_metric;
        for (offset, metric) in output.over_limit {
            dead_letters.push(DeadLetter {
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
        dead_letters.sort_by_key(|d| d.offset);
        Settled { late: output.late, rows: output.rows }
    }

    /// Publishes the partition's watermark and state gauges; `had_events` marks it active.
    pub fn publish_progress(&mut self, had_events: bool) {
        if had_events {
            self.last_event_at = Instant::now();
        }
        let Some(agg) = &self.aggregator else { return };
        self.shared.board.update(&self.topic, self.partition, agg.watermark_ms(), had_events);
        let metrics = PipelineMetrics::global();
        let labels = [self.topic.as_str(), &self.partition.to_string()];
        metrics.windows_open.with_label_values(&labels).set(agg.open_windows() as i64);
        metrics.active_series.with_label_values(&labels).set(agg.active_series() as i64);
        if let Some(w) = agg.watermark_ms() {
            metrics.watermark_delay_seconds.with_label_values(&labels).set((callscope_runtime::now_ms() - w) / 1000);
        }
    }

    /// Whether an idle close happened that no checkpoint holds yet: later batches must wait
    /// for one (otherwise a restart from an older checkpoint would replay them without the
    /// close and drop what they emitted as already stored).
    pub fn idle_close_unsaved(&self) -> bool {
        self.idle_close_unsaved
    }

    /// Writes a checkpoint when the interval has passed (or none exists yet).
    pub async fn checkpoint_if_due(
        &mut self,
        durable_last: Option<i64>,
        acks: &dyn OffsetAck,
        owner: &mut Ownership,
    ) -> Result<()> {
        let due =
            self.checkpointed.is_none() || self.last_checkpoint_at.elapsed() >= self.shared.config.checkpoint_interval;
        if due { self.checkpoint(durable_last, acks, owner).await } else { Ok(()) }
    }

    /// Writes a checkpoint of the state at the offset it reflects, if everything it reflects
    /// is durable (`durable_last`) and it changed, commits it under the `owner`'s epoch, then
    /// acknowledges that offset. A newer owner's seal makes the commit fail with
    /// [`PipelineError::LostPartition`]: the checkpoint is then never restored.
    pub async fn checkpoint(
        &mut self,
        durable_last: Option<i64>,
        acks: &dyn OffsetAck,
        owner: &mut Ownership,
    ) -> Result<()> {
        self.save(durable_last, acks, owner).await?;
        self.idle_close_unsaved = false;
        Ok(())
    }

    async fn save(&mut self, durable_last: Option<i64>, acks: &dyn OffsetAck, owner: &mut Ownership) -> Result<()> {
        let Some(agg) = self.aggregator.take() else { return Ok(()) };
        let offset = match (agg.offset(), durable_last) {
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
            let encoded = checkpoint::encode(&agg, pending.as_ref());
            (agg, encoded)
        })
        .await
        .map_err(|e| PipelineError::Other(format!("checkpoint encoder failed: {e}")))?;
        let state_bytes = agg.state_bytes();
        self.aggregator = Some(agg);
        let bytes = encoded?;
        let epoch = owner.epoch;
        let name = self.shared.checkpoints.save(&self.topic, self.partition, offset, epoch, bytes).await?;
        let metrics = PipelineMetrics::global();
        if !owner.commit_checkpoint(&name).await? {
            metrics.fenced.with_label_values(&[&self.topic]).inc();
            return Err(PipelineError::LostPartition { held: epoch, newer: epoch + 1 });
        }
        metrics.checkpoints.with_label_values(&[&self.topic]).inc();
        metrics.checkpoint_seconds.observe(started.elapsed().as_secs_f64());
        metrics
            .window_state_bytes
            .with_label_values(&[self.topic.as_str(), &self.partition.to_string()])
            .set(state_bytes as i64);
        self.checkpointed = Some(offset);
        self.last_checkpoint_at = Instant::now();
        acks.ack(&self.topic, self.partition, offset + 1);
        if let Err(e) = self.shared.checkpoints.prune(&self.topic, self.partition, epoch, &name).await {
            tracing::debug!(error = %e, "could not prune window checkpoints");
        }
        Ok(())
    }

    /// Closes the windows of a partition that has had no events for the idle timeout (and
    /// is not replaying stored batches), up to the combined watermark of the process's
    /// active partitions. The rows wait in [`pending_idle`](Self::pending_idle) until a
    /// checkpoint lists them and their files are written.
    pub fn close_if_idle(&mut self, durable_last: Option<i64>) {
        let idle_timeout = self.shared.config.idle_timeout;
        // A partition still replaying stored batches is catching up, not idle.
        let replaying = self.aggregator.as_ref().and_then(|a| a.offset()).zip(durable_last).is_some_and(|(o, d)| o < d);
        let idle = !replaying && self.last_event_at.elapsed() >= idle_timeout;
        let Some(agg) = self.aggregator.as_mut() else { return };
        if !idle || !agg.has_open_windows() {
            return;
        }
        let combined = self.shared.board.combined_active(&self.topic, self.partition, idle_timeout);
        if !agg.close_idle(combined) {
            return;
        }
        let rows = agg.take_emitted();
        let closed = agg.take_closed_counts();
        let source = RollupSource::Idle {
            after_offset: agg.offset().unwrap_or(-1),
            watermark_ms: agg.watermark_ms().unwrap_or(i64::MIN),
        };
        for (resolution, n) in self.shared.config.resolutions_ms.iter().zip(closed) {
            PipelineMetrics::global().windows_closed.with_label_values(&[&resolution_label(*resolution)]).inc_by(n);
        }
        tracing::debug!(topic = %self.topic, partition = self.partition, rows = rows.len(), ?combined, "idle partition closed its windows");
        match &mut self.pending_idle {
            Some((_, pending)) => pending.extend(rows),
            None => self.pending_idle = Some((source, rows)),
        }
        self.idle_close_unsaved = true;
    }

    /// Idle-closed rows whose files are not written yet, and the source that names them.
    /// Rows of a later idle close that joined unwritten ones go under the first name: a file
    /// there holds a subset of them, which the rewrite replaces.
    pub fn pending_idle(&self) -> Option<&PendingIdle> {
        self.pending_idle.as_ref()
    }

    /// The files of [`pending_idle`](Self::pending_idle) are written.
    pub fn idle_written(&mut self) {
        self.pending_idle = None;
    }
}
