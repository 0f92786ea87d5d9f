//! Partition ownership epochs: the fence that stops a writer which lost its partition from
//! making anything more durable.
//!
//! A writer that is assigned a partition takes the next epoch with a create-only PUT of
//! `_catalog/epochs/<topic>/p<partition>/<epoch>.json`. Epochs are taken in order (newest
//! + 1), so a writer holding epoch `e` has lost the partition exactly when epoch `e + 1`
//! exists; it checks that (one HEAD) before each durable step: its batch record, its
//! window checkpoints and the roll-ups of windows it closes while idle. Batch records are
//! also fenced by their own create-only key ([`crate::commit_log`]); the epoch adds the
//! fence for objects that are overwritten or written without a record, and for a writer
//! frozen past the prune grace of batch records.
//!
//! Epochs are never deleted (one small object per assignment of a partition): if `e + 1`
//! could disappear, a writer frozen long enough would take itself for the owner again.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::catalog::{CatalogDir, CatalogKey};
use crate::tier::Tier;
use crate::{Result, StorageError};

/// Attempts to take an epoch while others take them at the same time.
const ATTEMPTS: u64 = 64;

/// Who took an epoch, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub writer: String,
    pub taken_at_ms: i64,
}

/// The epochs of the partitions of one tier.
#[derive(Debug, Clone)]
pub struct PartitionEpochs {
    tier: Tier,
}

impl PartitionEpochs {
    pub fn new(tier: Tier) -> PartitionEpochs {
        PartitionEpochs { tier }
    }

    /// Takes the next epoch of a partition for `writer`.
    pub async fn take(&self, topic: &str, partition: i32, writer: &str, now_ms: i64) -> Result<u64> {
        let dir = CatalogDir::Epochs { topic: topic.to_string(), partition }.path();
        let newest = self.tier.list(&dir).await?.iter().filter_map(|k| epoch_of(k)).max();
        let mut next = newest.map_or(1, |e| e + 1);
        let body = serde_json::to_vec(&EpochRecord { writer: writer.to_string(), taken_at_ms: now_ms })
            .map_err(|e| StorageError::CorruptRecord { path: dir.clone(), reason: e.to_string() })?;
        for _ in 0..ATTEMPTS {
            let key = CatalogKey::Epoch { topic: topic.to_string(), partition, epoch: next }.path();
            match self.tier.put_durable(&key, Bytes::from(body.clone()), true).await {
                Ok(()) => return Ok(next),
                Err(StorageError::ObjectStore(object_store::Error::AlreadyExists { .. })) => next += 1,
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::CorruptRecord {
            path: dir,
            reason: format!("could not take an epoch in {ATTEMPTS} attempts: too many writers take this partition"),
        })
    }

    /// Whether `epoch` is still the newest epoch of the partition.
    pub async fn is_current(&self, topic: &str, partition: i32, epoch: u64) -> Result<bool> {
        let next = CatalogKey::Epoch { topic: topic.to_string(), partition, epoch: epoch + 1 }.path();
        Ok(!self.tier.exists(&next).await?)
    }
}

fn epoch_of(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::TierConfig;

    #[tokio::test]
    async fn epochs_are_taken_in_order_and_a_newer_one_fences_the_older() {
        let epochs = PartitionEpochs::new(Tier::open(&TierConfig::new("memory:///")).expect("tier"));
        let a = epochs.take("t", 0, "a", 0).await.expect("a");
        assert!(epochs.is_current("t", 0, a).await.expect("head"));
        let b = epochs.take("t", 0, "b", 1).await.expect("b");
        assert_eq!((a, b), (1, 2));
        assert!(!epochs.is_current("t", 0, a).await.expect("head"), "a lost the partition");
        assert!(epochs.is_current("t", 0, b).await.expect("head"));
        assert_eq!(epochs.take("t", 1, "c", 2).await.expect("c"), 1, "partitions have their own epochs");
    }

    #[tokio::test]
    async fn concurrent_takers_get_distinct_epochs() {
        let tier = Tier::open(&TierConfig::new("memory:///")).expect("tier");
        let epochs = PartitionEpochs::new(tier.clone());
        let takes = (0..8).map(|i| {
            let epochs = epochs.clone();
            async move { epochs.take("t", 3, &format!("w{i}"), i).await.expect("take") }
        });
        let mut taken = futures::future::join_all(takes).await;
        taken.sort_unstable();
        assert_eq!(taken, (1..=8).collect::<Vec<u64>>());
        let kept = tier.list(&CatalogDir::Epochs { topic: "t".into(), partition: 3 }.path()).await.expect("list");
        assert_eq!(kept.len(), 8, "epochs are never deleted");
    }
}
