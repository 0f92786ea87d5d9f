//! The exactly-once sequence of one batch, after it is prepared:
//!
//! 1. its dead letters are sent and acknowledged ([`DeadLetterSink`](crate::acks::DeadLetterSink));
//! 2. the files are staged, the batch record commits them and they are published
//!    ([`CommitLog::commit_batch`]); a record another writer already holds fences this one
//!    ([`PipelineError::Fenced`]);
//! 3. the offset is acknowledged ([`OffsetAck`](crate::acks::OffsetAck)): right away without
//!    windows, with windows once a checkpoint covers the batch;
//! 4. batch records the group's committed offset has passed are pruned.
//!
//! [`CommitLog::commit_batch`]: callscope_storage::CommitLog::commit_batch

use callscope_storage::{BatchRecord, StorageError};

use super::WriterState;
use super::prepare::Prepared;
use crate::batch::{DeadLetter, PendingBatch};
use crate::error::{PipelineError, Result, RetryHint};
use crate::metrics::PipelineMetrics;

impl WriterState {
    /// Steps 1 and 2: dead letters, then the batch record and files.
    pub(super) async fn commit(&self, batch: &PendingBatch, prepared: &Prepared) -> Result<()> {
        self.ensure_owner().await?;
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
            created_at_ms: callscope_runtime::now_ms(),
            pending: String::new(),
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

    async fn send_dead_letters(&self, dead: &[DeadLetter]) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        self.ctx.dead_letters.send(&self.topic, self.partition, dead).await?;
        let metrics = PipelineMetrics::global();
        for d in dead {
            metrics.dead_lettered.with_label_values(&[&self.topic, d.kind]).inc();
        }
        let n = dead.len() as u64;
        self.ctx.status.update(|s| s.dead_lettered += n);
        Ok(())
    }

    /// Steps 3 and 4, once the batch is durable.
    pub(super) async fn after_commit(&mut self, prepared: Prepared, had_events: bool) {
        let metrics = PipelineMetrics::global();
        let dataset = self.dataset.name();
        metrics.stored.with_label_values(&[dataset]).inc_by(prepared.raw_rows);
        metrics.batches.with_label_values(&[dataset]).inc();
        if prepared.late > 0 {
            metrics.late_events.with_label_values(&[dataset]).inc_by(prepared.late);
        }
        metrics.count_rollup_rows(&prepared.rollup_rows);
        let rows = prepared.raw_rows;
        self.ctx.status.update(|s| {
            s.stored += rows;
            s.last_commit_at_ms = Some(callscope_runtime::now_ms());
        });
        self.durable_last = Some(prepared.last);
        self.ranges.push_back((prepared.first, prepared.last));
        self.publish_progress(had_events);
        if self.windows.is_some()
            && let Err(e) = self.ensure_owner().await
        {
            // Lost between the batch and its checkpoint: the next owner replays from its own.
            self.stop(&e);
            return;
        }
        match (self.windows.as_mut(), self.ownership.as_mut()) {
            (Some(windows), Some(owner)) => {
                if let Err(e) = windows.checkpoint_if_due(self.durable_last, &*self.ctx.acks, owner).await {
                    if e.retry_hint() == RetryHint::Stop {
                        self.stop(&e);
                        return;
                    }
                    tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "window checkpoint failed; will retry");
                }
            }
            (Some(_), None) => {}
            (None, _) => self.ctx.acks.ack(&self.topic, self.partition, prepared.last + 1),
        }
        self.prune().await;
    }

    /// Deletes batch records that the group's committed offset has passed (once they are
    /// old enough that no frozen writer can still race for them).
    async fn prune(&mut self) {
        let Some(committed) = self.ctx.acks.committed(&self.topic, self.partition) else { return };
        // Keep the newest record: it carries the durable high-water mark.
        let keep_from = self.ranges.len().saturating_sub(1);
        let prunable: Vec<(i64, i64)> =
            self.ranges.iter().take(keep_from).filter(|(_, last)| *last < committed).copied().collect();
        if prunable.is_empty() {
            return;
        }
        match self.ctx.log.prune(&self.topic, self.partition, &prunable, committed, callscope_runtime::now_ms()).await {
            Ok(deleted) => self.ranges.retain(|r| !deleted.contains(r)),
            Err(e) => tracing::debug!(error = %e, "could not prune batch records"),
        }
    }
}
