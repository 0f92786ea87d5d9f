//! Recovery of a partition's durable state when the writer (re)gains the partition, before
//! it writes again: the commit log first (finishing the publication of committed batches,
//! deleting pending files that can never commit, and learning the highest stored offset,
//! which replays skip), then the window state from the checkpoint the partition's epochs
//! committed. What recovery finds durable is
//! acknowledged, so the group does not re-read it again.

use callscope_runtime::now_ms;
use callscope_storage::PartitionEpochs;

use super::WriterState;
use crate::error::Result;
use crate::metrics::PipelineMetrics;

impl WriterState {
    /// Takes the partition's next ownership epoch (which fences the previous owner), then
    /// reads its durable state: the commit log, then the window state.
    pub(super) async fn recover(&mut self) -> Result<()> {
        let epochs = PartitionEpochs::new(self.ctx.log.tier().clone());
        let ownership =
            epochs.take(&self.topic, self.partition, &self.ctx.worker_id, now_ms(), self.windows.is_some()).await?;
        tracing::info!(topic = %self.topic, partition = self.partition, epoch = ownership.epoch, checkpoint = ?ownership.checkpoint(), "took the partition's ownership epoch");
        let committed = ownership.checkpoint().map(str::to_string);
        self.ownership = Some(ownership);
        self.recover_log().await?;
        if let Some(windows) = self.windows.as_mut() {
            windows.restore(self.durable_last, committed.as_deref(), &*self.ctx.acks).await?;
        } else if let Some(last) = self.durable_last {
            self.ctx.acks.ack(&self.topic, self.partition, last + 1);
        }
        self.needs_recovery = false;
        Ok(())
    }

    /// Reads the commit log: finishes what a crash or another writer left half-published,
    /// and learns the stored ranges.
    pub(super) async fn recover_log(&mut self) -> Result<()> {
        let recovery = self.ctx.log.recover(&self.topic, self.partition, 0).await?;
        let metrics = PipelineMetrics::global();
        if recovery.rolled_back > 0 {
            metrics.rollbacks.with_label_values(&[&self.topic]).inc_by(recovery.rolled_back as u64);
        }
        if recovery.published > 0 {
            metrics.published_by_recovery.with_label_values(&[&self.topic]).inc_by(recovery.published as u64);
        }
        if recovery.orphans_deleted > 0 {
            tracing::info!(topic = %self.topic, partition = self.partition, attempts = recovery.orphans_deleted, "deleted the pending files of batches that can never commit");
        }
        self.durable_last = recovery.durable_last;
        self.ranges = recovery.complete.into_iter().collect();
        if let Some(last) = self.durable_last {
            tracing::info!(topic = %self.topic, partition = self.partition, durable_last = last, "recovered partition; already stored offsets will be skipped");
        }
        Ok(())
    }
}
