//! Window-state checkpoints as the writer stores them (the bytes live in
//! [`callscope_storage::CheckpointStore`]): the aggregator's state
//! ([`PartitionAggregator::checkpoint`]) plus the rows of windows an idle close emitted
//! whose files may not be written yet. The name those files take
//! ([`RollupSource::Idle`]) is kept in the footer, so that a restart re-writes the same
//! files rather than re-opening the windows.

use std::sync::Arc;

use bytes::Bytes;
use callscope_schemas::rollup::RollupRow;
use callscope_storage::{RollupSource, StorageError, parquet_file};

use super::aggregate::{AggregationConfig, PartitionAggregator};

const META_PENDING_AFTER: &str = "callscope.pending_after_offset";
const META_PENDING_WATERMARK: &str = "callscope.pending_watermark_ms";

/// Rows of windows an idle close emitted, and the source that names their files.
pub type PendingIdle = (RollupSource, Vec<RollupRow>);

/// Encodes the state of `agg` and the `pending` idle-closed rows as one Parquet object.
pub fn encode(agg: &PartitionAggregator, pending: Option<&PendingIdle>) -> Result<Bytes, StorageError> {
    let (batch, mut metadata) =
        agg.checkpoint(pending.map_or(&[][..], |(_, rows)| rows.as_slice())).map_err(StorageError::from)?;
    if let Some((RollupSource::Idle { after_offset, watermark_ms }, _)) = pending {
        metadata.push((META_PENDING_AFTER.to_string(), after_offset.to_string()));
        metadata.push((META_PENDING_WATERMARK.to_string(), watermark_ms.to_string()));
    }
    parquet_file::encode_with_metadata(&[batch], metadata)
}

/// A checkpoint read back.
pub struct Decoded {
    pub aggregator: PartitionAggregator,
    /// Idle-closed rows whose files may still be missing.
    pub pending: Option<PendingIdle>,
}

/// Decodes a checkpoint written by [`encode`].
pub fn decode(config: Arc<AggregationConfig>, partition: i32, bytes: Bytes) -> Result<Decoded, StorageError> {
    let (batches, metadata) = parquet_file::decode_with_metadata(bytes)?;
    let restored = PartitionAggregator::restore(config, partition, &batches, &metadata).map_err(StorageError::from)?;
    let meta = |key: &str| metadata.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.parse::<i64>().ok());
    let source = meta(META_PENDING_AFTER)
        .zip(meta(META_PENDING_WATERMARK))
        .map(|(after_offset, watermark_ms)| RollupSource::Idle { after_offset, watermark_ms });
    let pending = match source {
        Some(source) if !restored.pending.is_empty() => Some((source, restored.pending)),
        _ => None,
    };
    Ok(Decoded { aggregator: restored.aggregator, pending })
}
