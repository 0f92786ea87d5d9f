//! Window-state checkpoints of the stream aggregator.
//!
//! A checkpoint is one Parquet object per topic partition and offset,
//! `_catalog/window_state/<topic>/p<partition>/<offset>.parquet`: the open windows (and
//! closed windows whose files may not be written yet) as roll-up rows, with the watermark
//! and the offset they reflect in the file's key-value metadata. The store only keeps
//! bytes; the pipeline owns their meaning. Checkpoints are written after the batch that
//! ends at their offset is durable, so the newest one never runs ahead of stored data.

use bytes::Bytes;

use crate::Result;
use crate::catalog::{CatalogDir, CatalogKey};
use crate::tier::Tier;

/// Checkpoints of one tier.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    tier: Tier,
}

fn dir(topic: &str, partition: i32) -> String {
    CatalogDir::WindowState { topic: topic.to_string(), partition }.path()
}

fn key(topic: &str, partition: i32, offset: i64) -> String {
    CatalogKey::WindowCheckpoint { topic: topic.to_string(), partition, offset }.path()
}

fn offset_of(path: &str) -> Option<i64> {
    path.ends_with(".parquet").then(|| CatalogKey::offset_of(path)).flatten()
}

impl CheckpointStore {
    pub fn new(tier: Tier) -> CheckpointStore {
        CheckpointStore { tier }
    }

    /// Offsets of the stored checkpoints of a partition, ascending.
    pub async fn offsets(&self, topic: &str, partition: i32) -> Result<Vec<i64>> {
        let mut offsets: Vec<i64> =
            self.tier.list(&dir(topic, partition)).await?.iter().filter_map(|p| offset_of(p)).collect();
        offsets.sort_unstable();
        Ok(offsets)
    }

    pub async fn save(&self, topic: &str, partition: i32, offset: i64, bytes: Bytes) -> Result<()> {
        self.tier.put_durable(&key(topic, partition, offset), bytes, false).await
    }

    /// The newest checkpoint at or below `at_most` (the durable offset), with its offset.
    pub async fn load_latest(&self, topic: &str, partition: i32, at_most: i64) -> Result<Option<(i64, Bytes)>> {
        let Some(offset) = self.offsets(topic, partition).await?.into_iter().rev().find(|o| *o <= at_most) else {
            return Ok(None);
        };
        let bytes = self.tier.get(&key(topic, partition, offset)).await?;
        Ok(Some((offset, bytes)))
    }

    /// Deletes all but the newest `keep` checkpoints; returns how many were deleted.
    pub async fn prune(&self, topic: &str, partition: i32, keep: usize) -> Result<usize> {
        let offsets = self.offsets(topic, partition).await?;
        let excess = offsets.len().saturating_sub(keep);
        for offset in &offsets[..excess] {
            self.tier.delete(&key(topic, partition, *offset)).await?;
        }
        Ok(excess)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn newest_checkpoint_at_or_below_the_durable_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            CheckpointStore::new(Tier::open(&crate::TierConfig::local_dir(dir.path()).expect("cfg")).expect("tier"));
        for offset in [9, 99, 199] {
            store.save("t", 0, offset, Bytes::from(offset.to_string())).await.expect("save");
        }
        let (offset, bytes) = store.load_latest("t", 0, 150).await.expect("load").expect("found");
        assert_eq!((offset, bytes.as_ref()), (99, b"99".as_ref()));
        assert!(store.load_latest("t", 0, 5).await.expect("load").is_none());
        assert!(store.load_latest("t", 1, 500).await.expect("load").is_none());
        assert_eq!(store.prune("t", 0, 2).await.expect("prune"), 1);
        assert_eq!(store.offsets("t", 0).await.expect("offsets"), vec![99, 199]);
    }
}
