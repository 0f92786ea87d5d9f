//! Preparing a batch for its commit, once: offsets already stored are dropped, the
//! batch's metrics go through the partition's windows, and its events and the window rows
//! it emitted are encoded ([`super::encode`]). The heavy part runs off the async threads.

use bytes::Bytes;
use callscope_schemas::rollup::RollupRow;
use callscope_storage::RollupSource;

use super::WriterState;
use super::encode::{encode_files, encode_rollups};
use crate::batch::PendingBatch;
use crate::error::{PipelineError, Result};
use crate::metrics::PipelineMetrics;
use crate::windows::partition::{PartitionWindows, aggregate_batch};

/// A batch encoded and ready to commit.
pub(super) struct Prepared {
    /// The range the batch record claims: the batch's range minus offsets already stored.
    pub first: i64,
    pub last: i64,
    pub raw_rows: u64,
    pub files: Vec<(String, Bytes)>,
    pub rollup_rows: Vec<RollupRow>,
    pub late: u64,
}

impl WriterState {
    /// Aggregates the batch and encodes its files. `None`: every offset of the batch was
    /// already stored.
    pub(super) async fn prepare(&mut self, batch: &mut PendingBatch) -> Result<Option<Prepared>> {
        let durable = self.durable_last;
        let dataset = self.dataset;
        let topic = self.topic.clone();
        let partition = self.partition;
        let (batch_first, last) = (batch.first_offset, batch.last_offset);
        // The record claims from the offset after the stored ones, so the chain of records
        // has no gap even where Kafka has no message (transaction markers, retention).
        let first = durable.map_or(batch_first, |d| d + 1);
        let events = std::mem::take(&mut batch.events);
        let aggregator = self.windows.as_mut().and_then(PartitionWindows::lend);
        let definitions = self.windows.as_ref().map(|w| w.definitions()).unwrap_or_default();
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
        if let Some(windows) = self.windows.as_mut() {
            windows.give_back(aggregator);
        }
        batch.events = events;
        let skipped = durable.map_or(0, |d| batch.skip_through(d));
        if skipped > 0 {
            PipelineMetrics::global().replay_skipped.with_label_values(&[&self.topic]).inc_by(skipped as u64);
        }
        let mut late = 0;
        let mut rollup_rows = Vec::new();
        if let (Some(output), Some(windows)) = (output, &self.windows) {
            let settled = windows.settle(output, &mut batch.dead_letters);
            late = settled.late;
            rollup_rows = settled.rows;
        } else if let Some(shared) = &self.ctx.aggregation {
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
}
