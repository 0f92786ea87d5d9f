//! One writer task per topic partition. It receives batches from the consume loop in
//! offset order and, for each: recovers the partition's durable state when the partition
//! was (re)assigned ([`recovery`]), drops offsets that are already stored, aggregates the
//! batch's metrics in windows and encodes Parquet per `date/hour` ([`prepare`],
//! [`encode`]), then runs the exactly-once sequence ([`commit`]): dead letters sent and
//! acknowledged, the batch committed through the [`CommitLog`], and only then the durable
//! offset reported through [`OffsetAck`]. Transient failures are retried with backoff; the
//! consume loop is only slowed down by the bounded channel.
//!
//! The writer talks to Kafka only through the seams of [`crate::acks`], so every crash point
//! is unit-tested over an in-memory tier (`tests.rs`).

mod commit;
mod encode;
mod prepare;
mod recovery;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use callscope_schemas::Dataset;
use callscope_storage::{CommitLog, Ownership, PartitionEpochs};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::acks::{DeadLetterSink, OffsetAck};
use crate::batch::{PendingBatch, WriterJob};
use crate::error::{PipelineError, Result, RetryHint};
use crate::metrics::PipelineMetrics;
use crate::status::StatusHandle;
use crate::windows::definitions::AggregationShared;
use crate::windows::partition::PartitionWindows;

/// Shared context of all partition writers of a worker.
#[derive(Clone)]
pub struct WriterContext {
    /// Where durable offsets are reported (the source commits them).
    pub acks: Arc<dyn OffsetAck>,
    pub dead_letters: Arc<dyn DeadLetterSink>,
    pub log: CommitLog,
    pub worker_id: String,
    pub status: StatusHandle,
    /// Windowed aggregation of the metrics dataset; `None` turns it off.
    pub aggregation: Option<Arc<AggregationShared>>,
    /// Cancelled when a shutting-down worker stops waiting for storage: writers stop
    /// retrying and leave what is not durable unacknowledged (re-read after a restart).
    pub give_up: CancellationToken,
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
        let state = WriterState::new(ctx, topic, partition, dataset);
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
    /// The ownership epoch taken at the last recovery, which commits checkpoints (see
    /// [`callscope_storage::epochs`]).
    ownership: Option<Ownership>,
    /// Committed batch ranges whose records may still be needed by recovery.
    ranges: VecDeque<(i64, i64)>,
    /// Set when this partition's events are aggregated in windows.
    windows: Option<PartitionWindows>,
    /// Largest event time seen (lateness of datasets that are not aggregated).
    max_event_ms: Option<i64>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A writer that received nothing for this long looks after idle windows and checkpoints.
const QUIET_TICK: Duration = Duration::from_secs(1);

impl WriterState {
    fn new(ctx: WriterContext, topic: String, partition: i32, dataset: Dataset) -> WriterState {
        let windows = match (&ctx.aggregation, dataset) {
            (Some(shared), Dataset::Metrics | Dataset::Spans) => {
                Some(PartitionWindows::new(shared.clone(), topic.clone(), partition))
            }
            _ => None,
        };
        WriterState {
            ctx,
            topic,
            partition,
            dataset,
            needs_recovery: true,
            stopped: false,
            owned: true,
            durable_last: None,
            ownership: None,
            ranges: VecDeque::new(),
            windows,
            max_event_ms: None,
        }
    }

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
                    // A new assignment gives a stopped partition another try, and reading
                    // it resumes (a pause outlives the assignment it was made in).
                    if self.stopped {
                        self.stopped = false;
                        let key = format!("{}/{}", self.topic, self.partition);
                        self.ctx.status.update(|s| {
                            s.stopped.remove(&key);
                        });
                        self.ctx.acks.resume(&self.topic, self.partition);
                    }
                }
                WriterJob::Revoked => {
                    self.owned = false;
                    self.needs_recovery = true;
                    if let Some(windows) = self.windows.as_mut() {
                        windows.forget();
                    }
                }
                WriterJob::Batch(_) if self.stopped => {}
                WriterJob::Batch(batch) => self.handle_batch(batch).await,
            }
        }
        // Shutdown: leave a checkpoint of the newest state, so that a restart replays nothing.
        if self.owned
            && !self.stopped
            && !self.needs_recovery
            && self.ensure_owner().await.is_ok()
            && let Some(windows) = self.windows.as_mut()
            && let Some(owner) = self.ownership.as_mut()
            && let Err(e) = windows.checkpoint(self.durable_last, &*self.ctx.acks, owner).await
        {
            tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "final window checkpoint failed; the next owner replays from the previous one");
        }
        self.commit_target()
    }

    /// The last offset whose effects are all durable: with window state, the newest
    /// checkpoint (a restart replays from the one after it); without, the newest batch.
    fn commit_target(&self) -> Option<i64> {
        match &self.windows {
            Some(windows) => windows.checkpointed(),
            None => self.durable_last,
        }
    }

    /// Sleeps before a retry, or stops the partition when `e` is not transient. Returns
    /// whether to retry.
    /// A shutting-down worker that gave up waiting ([`WriterContext::give_up`]) gets no
    /// more retries: the batch stays unacknowledged and is re-read after the restart.
    async fn backoff_or_stop(&mut self, e: &PipelineError, backoff: &mut Duration) -> bool {
        if e.retry_hint() != RetryHint::Retry {
            self.stop(e);
            return false;
        }
        if self.ctx.give_up.is_cancelled() {
            tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "shutting down during a storage failure; the batch is left unacknowledged and re-read after the restart");
            return false;
        }
        PipelineMetrics::global().write_retries.with_label_values(&[&self.topic]).inc();
        tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, backoff = ?*backoff, "batch write failed; retrying");
        self.ctx.status.update(|s| s.last_error = Some(e.to_string()));
        tokio::select! {
            _ = tokio::time::sleep(*backoff) => {}
            _ = self.ctx.give_up.cancelled() => {
                tracing::warn!(topic = %self.topic, partition = self.partition, "shutting down during a storage failure; the batch is left unacknowledged and re-read after the restart");
                return false;
            }
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        true
    }

    /// Writing later batches would leave a hole behind the durable high-water mark: stop
    /// this partition instead, pause reading it, and say so in the heartbeat (shown by
    /// `/monitoring/health`). Nothing after the last checkpoint or batch is acknowledged, so
    /// the next owner (after a rebalance or restart) re-reads it.
    fn stop(&mut self, e: &dyn std::fmt::Display) {
        tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "batch write failed permanently; reading this partition is paused until it is assigned again or the worker restarts");
        let key = format!("{}/{}", self.topic, self.partition);
        let reason = e.to_string();
        self.ctx.status.update(|s| {
            s.last_error = Some(format!("{key} stopped: {reason}"));
            s.stopped.insert(key, reason);
        });
        PipelineMetrics::global().stopped_partitions.with_label_values(&[&self.topic]).inc();
        self.ctx.acks.pause(&self.topic, self.partition);
        self.stopped = true;
    }

    async fn handle_batch(&mut self, mut batch: PendingBatch) {
        let mut backoff = Duration::from_millis(100);
        // Windows an idle close emitted must be in a checkpoint before later batches are
        // committed (see `PartitionWindows::idle_close_unsaved`).
        while self.windows.as_ref().is_some_and(|w| w.idle_close_unsaved()) {
            let saved = match self.ensure_owner().await {
                Ok(()) => match (self.windows.as_mut(), self.ownership.as_mut()) {
                    (Some(windows), Some(owner)) => windows.checkpoint(self.durable_last, &*self.ctx.acks, owner).await,
                    _ => Ok(()),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = saved
                && !self.backoff_or_stop(&e, &mut backoff).await
            {
                return;
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
                if e.retry_hint() != RetryHint::Retry {
                    // A log with a gap, an overlap or an unreadable record needs an operator.
                    self.stop(&e);
                    return;
                }
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "recovery before retry failed");
                continue;
            }
            match self.durable_last {
                // The log holds exactly this range (this writer's record, whose publication
                // recovery finished, or an identical claim): the batch is stored.
                Some(d) if d >= prepared.last && self.ranges.contains(&(prepared.first, prepared.last)) => {
                    self.ranges.retain(|r| *r != (prepared.first, prepared.last));
                    break;
                }
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

    /// Checks that no newer writer took the partition since this one's recovery: called
    /// before every durable step (batch record, checkpoints, idle roll-ups).
    pub(super) async fn ensure_owner(&self) -> Result<()> {
        let Some(held) = self.ownership.as_ref().map(|o| o.epoch) else { return Ok(()) };
        let epochs = PartitionEpochs::new(self.ctx.log.tier().clone());
        if epochs.is_current(&self.topic, self.partition, held).await? {
            return Ok(());
        }
        PipelineMetrics::global().fenced.with_label_values(&[&self.topic]).inc();
        Err(PipelineError::LostPartition { held, newer: held + 1 })
    }

    /// Publishes the partition's watermark and state gauges.
    fn publish_progress(&mut self, had_events: bool) {
        if let Some(windows) = self.windows.as_mut() {
            windows.publish_progress(had_events);
        }
    }

    /// Called when no job arrived for a while: closes the windows of an idle partition,
    /// checkpoints changed state, and writes the files of idle-closed windows.
    async fn on_quiet(&mut self) {
        if self.windows.is_none() || self.stopped || !self.owned {
            return;
        }
        if self.needs_recovery
            && let Err(e) = self.recover().await
        {
            tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "recovery failed; will retry");
            return;
        }
        // A writer that lost the partition closes and writes nothing more.
        if let Err(e) = self.ensure_owner().await {
            if e.retry_hint() == RetryHint::Stop {
                self.stop(&e);
            }
            return;
        }
        let (Some(windows), Some(owner)) = (self.windows.as_mut(), self.ownership.as_mut()) else { return };
        windows.close_if_idle(self.durable_last);
        windows.publish_progress(false);
        // The checkpoint lists the idle-closed rows first, so that a crash between it and
        // their files re-writes the same files rather than re-opening the windows; and the
        // files are written only once it is committed, so a writer that lost the partition
        // (its commit fails on the new owner's seal) publishes none.
        if let Err(e) = windows.checkpoint(self.durable_last, &*self.ctx.acks, owner).await {
            if e.retry_hint() == RetryHint::Stop {
                self.stop(&e);
            } else {
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "window checkpoint failed; will retry");
            }
            return;
        }
        let Some((source, rows)) = windows.pending_idle() else { return };
        let written = match encode::encode_rollups(&self.topic, self.partition, *source, rows) {
            Ok(files) => self.ctx.log.tier().put_all_durable(files).await.map_err(PipelineError::from),
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => {
                PipelineMetrics::global().count_rollup_rows(rows);
                windows.idle_written();
            }
            Err(e) => {
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "writing idle-closed windows failed; will retry")
            }
        }
    }
}
