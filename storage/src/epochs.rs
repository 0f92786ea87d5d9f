//! Partition ownership epochs: the fence that stops a writer which lost its partition from
//! making anything more durable.
//!
//! A writer that is assigned a partition takes the next epoch with a create-only PUT of
//! `_catalog/epochs/<topic>/p<partition>/<epoch>.json`. Epochs are taken in order (newest
//! + 1), so a writer holding epoch `e` has lost the partition exactly when epoch `e + 1`
//! exists; it checks that (one HEAD) before each durable step, which stops a writer that
//! lost its partition long ago. Batch records are fenced by their own create-only key
//! ([`crate::commit_log`]).
//!
//! A check before a write leaves a window (the check passes, the writer stalls, a new owner
//! takes over, the write lands). For the window state, which is rewritten rather than
//! created once, the epoch record itself closes it: it names the owner's last committed
//! window checkpoint, and the owner commits each new checkpoint with a conditional update
//! of its own record ([`Ownership::commit_checkpoint`], on the version it wrote last). A new
//! owner first **seals** the records before its own (a conditional update setting
//! `sealed`), so any commit the old owner attempts afterwards fails on the changed version,
//! however long it stalled; the sealed records' checkpoint is final, and the new owner
//! restores exactly that one. What the old owner wrote without a commit (a checkpoint it
//! could not commit; the roll-up files of windows closed while idle, which are written only
//! after the checkpoint that lists them commits) is never restored or published.
//!
//! Epochs are never deleted (one small object per assignment of a partition): if `e + 1`
//! could disappear, a writer frozen long enough would take itself for the owner again.

use bytes::Bytes;
use object_store::UpdateVersion;
use serde::{Deserialize, Serialize};

use crate::catalog::{CatalogDir, CatalogKey};
use crate::tier::Tier;
use crate::{Result, StorageError};

/// Attempts to take an epoch while others take them at the same time.
const ATTEMPTS: u64 = 64;

/// Who took an epoch, when, and what its owner committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub writer: String,
    pub taken_at_ms: i64,
    /// The window checkpoint (its name in [`crate::CheckpointStore`]) the partition's
    /// owner committed last: this epoch's own, or the one it inherited. Absent in records
    /// of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Set by a newer owner: nothing more commits under this epoch.
    #[serde(default)]
    pub sealed: bool,
}

impl EpochRecord {
    fn to_bytes(&self) -> Result<Bytes> {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .map_err(|e| StorageError::CorruptRecord { path: "epoch record".into(), reason: e.to_string() })
    }
}

/// The epochs of the partitions of one tier.
#[derive(Debug, Clone)]
pub struct PartitionEpochs {
    tier: Tier,
}

/// A partition taken by this writer: its epoch, and the version of its epoch record that
/// the next commit is conditional on.
#[derive(Debug, Clone)]
pub struct Ownership {
    tier: Tier,
    topic: String,
    partition: i32,
    pub epoch: u64,
    record: EpochRecord,
    version: UpdateVersion,
}

impl Ownership {
    /// The window checkpoint committed last (inherited from the sealed owners before this
    /// one, until this owner commits its own).
    pub fn checkpoint(&self) -> Option<&str> {
        self.record.checkpoint.as_deref()
    }

    fn key(&self) -> String {
        CatalogKey::Epoch { topic: self.topic.clone(), partition: self.partition, epoch: self.epoch }.path()
    }

    /// Commits `checkpoint` as the partition's window state: `Ok(true)` once durable,
    /// `Ok(false)` when a newer owner sealed this epoch (the partition is lost; nothing
    /// changed).
    pub async fn commit_checkpoint(&mut self, checkpoint: &str) -> Result<bool> {
        let mut record = self.record.clone();
        record.checkpoint = Some(checkpoint.to_string());
        match self.tier.put_versioned(&self.key(), record.to_bytes()?, Some(&self.version)).await? {
            Some(version) => {
                self.record = record;
                self.version = version;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

impl PartitionEpochs {
    pub fn new(tier: Tier) -> PartitionEpochs {
        PartitionEpochs { tier }
    }

    /// Takes the next epoch of a partition for `writer`. With `inherit` (a partition whose
    /// writer commits checkpoints), also seals the epochs before it, newest first, until one
    /// names a checkpoint, and inherits that one: usually just the previous epoch, which
    /// copied what it inherited. Without, nothing is sealed (such a writer commits nothing
    /// through its record), and a take stays one LIST and one PUT however many epochs the
    /// partition has had.
    pub async fn take(
        &self,
        topic: &str,
        partition: i32,
        writer: &str,
        now_ms: i64,
        inherit: bool,
    ) -> Result<Ownership> {
        let dir = CatalogDir::Epochs { topic: topic.to_string(), partition }.path();
        let newest = self.tier.list(&dir).await?.iter().filter_map(|k| epoch_of(k)).max();
        let mut epoch = newest.map_or(1, |e| e + 1);
        let mut record =
            EpochRecord { writer: writer.to_string(), taken_at_ms: now_ms, checkpoint: None, sealed: false };
        let key = |epoch| CatalogKey::Epoch { topic: topic.to_string(), partition, epoch }.path();
        let mut version = None;
        for _ in 0..ATTEMPTS {
            if let Some(v) = self.tier.put_versioned(&key(epoch), record.to_bytes()?, None).await? {
                version = Some(v);
                break;
            }
            epoch += 1;
        }
        let Some(mut version) = version else {
            return Err(StorageError::CorruptRecord {
                path: dir,
                reason: format!("could not take an epoch in {ATTEMPTS} attempts: too many writers take this partition"),
            });
        };
        // Seal the older epochs, newest first, until one names a checkpoint.
        for older in (1..epoch).rev().take_while(|_| inherit) {
            if let Some(checkpoint) = self.seal(&key(older)).await? {
                record.checkpoint = Some(checkpoint);
                break;
            }
        }
        if record.checkpoint.is_some() {
            match self.tier.put_versioned(&key(epoch), record.to_bytes()?, Some(&version)).await? {
                Some(v) => version = v,
                // Sealed already: a newer owner took over while this one was taking.
                None => return Err(StorageError::EpochSealed { path: key(epoch) }),
            }
        }
        Ok(Ownership { tier: self.tier.clone(), topic: topic.to_string(), partition, epoch, record, version })
    }

    /// Seals one epoch record (conditionally, retrying while its owner commits); returns the
    /// checkpoint it names, final from now on.
    async fn seal(&self, key: &str) -> Result<Option<String>> {
        for _ in 0..ATTEMPTS {
            let Some((bytes, version)) = self.tier.get_versioned(key).await? else { return Ok(None) };
            let mut record: EpochRecord = serde_json::from_slice(&bytes)
                .map_err(|e| StorageError::CorruptRecord { path: key.to_string(), reason: e.to_string() })?;
            if record.sealed {
                return Ok(record.checkpoint);
            }
            record.sealed = true;
            if self.tier.put_versioned(key, record.to_bytes()?, Some(&version)).await?.is_some() {
                return Ok(record.checkpoint);
            }
        }
        Err(StorageError::CorruptRecord {
            path: key.to_string(),
            reason: format!("could not seal the epoch in {ATTEMPTS} attempts"),
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

    fn tiers() -> Vec<(tempfile::TempDir, Tier)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = Tier::open(&TierConfig::local_dir(dir.path()).expect("cfg")).expect("local tier");
        let unused = tempfile::tempdir().expect("tempdir");
        vec![(dir, local), (unused, Tier::open(&TierConfig::new("memory:///")).expect("memory tier"))]
    }

    #[tokio::test]
    async fn epochs_are_taken_in_order_and_a_newer_one_fences_the_older() {
        for (_dir, tier) in tiers() {
            let epochs = PartitionEpochs::new(tier);
            let a = epochs.take("t", 0, "a", 0, true).await.expect("a").epoch;
            assert!(epochs.is_current("t", 0, a).await.expect("head"));
            let b = epochs.take("t", 0, "b", 1, true).await.expect("b").epoch;
            assert_eq!((a, b), (1, 2));
            assert!(!epochs.is_current("t", 0, a).await.expect("head"), "a lost the partition");
            assert!(epochs.is_current("t", 0, b).await.expect("head"));
            assert_eq!(
                epochs.take("t", 1, "c", 2, true).await.expect("c").epoch,
                1,
                "partitions have their own epochs"
            );
        }
    }

    #[tokio::test]
    async fn concurrent_takers_get_distinct_epochs() {
        let tier = Tier::open(&TierConfig::new("memory:///")).expect("tier");
        let epochs = PartitionEpochs::new(tier.clone());
        let takes = (0..8).map(|i| {
            let epochs = epochs.clone();
            async move { epochs.take("t", 3, &format!("w{i}"), i, true).await.map(|o| o.epoch) }
        });
        // A taker whose own epoch a faster newer taker sealed before it finished gives up.
        let mut taken: Vec<u64> = futures::future::join_all(takes).await.into_iter().filter_map(|r| r.ok()).collect();
        taken.sort_unstable();
        taken.dedup();
        assert!(!taken.is_empty() && taken.len() <= 8, "{taken:?}");
        let kept = tier.list(&CatalogDir::Epochs { topic: "t".into(), partition: 3 }.path()).await.expect("list");
        assert_eq!(kept.len(), 8, "epochs are never deleted");
    }

    /// The fence the check-before-write cannot give: an owner that passed every check and
    /// commits after a newer owner took over is refused by storage, whatever the timing.
    #[tokio::test]
    async fn a_sealed_owner_cannot_commit_and_the_new_owner_inherits_the_last_commit() {
        for (_dir, tier) in tiers() {
            let epochs = PartitionEpochs::new(tier);
            let mut old = epochs.take("t", 0, "old", 0, true).await.expect("old");
            assert_eq!(old.checkpoint(), None);
            assert!(old.commit_checkpoint("9-e1-a.parquet").await.expect("commit"));
            assert!(old.commit_checkpoint("19-e1-b.parquet").await.expect("commit"), "commits chain on versions");
            let mut new = epochs.take("t", 0, "new", 1, true).await.expect("new");
            assert_eq!(new.checkpoint(), Some("19-e1-b.parquet"), "the sealed epoch's last commit is inherited");
            assert!(!old.commit_checkpoint("29-e1-c.parquet").await.expect("commit"), "the old owner is sealed");
            let third = epochs.take("t", 0, "third", 2, true).await.expect("third");
            assert_eq!(third.checkpoint(), Some("19-e1-b.parquet"), "the refused commit changed nothing");
            assert!(!new.commit_checkpoint("39-e2-d.parquet").await.expect("commit"), "sealed in turn");
        }
    }

    #[tokio::test]
    async fn an_owner_that_never_committed_passes_on_what_it_inherited() {
        let epochs = PartitionEpochs::new(Tier::open(&TierConfig::new("memory:///")).expect("tier"));
        let mut first = epochs.take("t", 0, "a", 0, true).await.expect("a");
        assert!(first.commit_checkpoint("5-e1-a.parquet").await.expect("commit"));
        let _crashed_at_once = epochs.take("t", 0, "b", 1, true).await.expect("b");
        let third = epochs.take("t", 0, "c", 2, true).await.expect("c");
        assert_eq!(third.checkpoint(), Some("5-e1-a.parquet"));
    }
}
