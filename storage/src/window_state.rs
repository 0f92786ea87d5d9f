//! Window-state checkpoints of the stream aggregator.
//!
//! A checkpoint is one Parquet object per write,
//! `_catalog/window_state/<topic>/p<partition>/<offset>-e<epoch>-<nonce>.parquet`: the open
//! windows (and closed windows whose files may not be written yet) as roll-up rows, with
//! the watermark and the offset they reflect in the file's key-value metadata. Objects are
//! created once and never rewritten; which one is the partition's state is what the
//! owner's epoch record commits ([`crate::Ownership::commit_checkpoint`]), so a checkpoint
//! that a fenced writer stored without committing is never restored. Checkpoints are
//! written after the batch that ends at their offset is durable, so the committed one never
//! runs ahead of stored data. Older versions named checkpoints `<offset>.parquet` and
//! committed none: [`CheckpointStore::load_latest`] still reads those.
//!
//! The store only keeps bytes; the pipeline owns their meaning.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::Result;
use crate::catalog::CatalogDir;
use crate::tier::Tier;

/// Checkpoints of one tier.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    tier: Tier,
}

fn dir(topic: &str, partition: i32) -> String {
    CatalogDir::WindowState { topic: topic.to_string(), partition }.path()
}

/// A stored checkpoint's name (the last segment of its key), read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointName {
    pub offset: i64,
    /// The epoch of the writer (0: a name of older versions).
    pub epoch: u64,
    pub name: String,
}

impl CheckpointName {
    /// Parses `<offset>-e<epoch>-<nonce>.parquet` or the older `<offset>.parquet`.
    pub fn parse(name: &str) -> Option<CheckpointName> {
        let stem = name.rsplit('/').next()?.strip_suffix(".parquet")?;
        let mut parts = stem.splitn(3, '-');
        let offset = parts.next()?.parse().ok()?;
        let epoch = match parts.next() {
            None => 0,
            Some(e) => e.strip_prefix('e')?.parse().ok()?,
        };
        Some(CheckpointName { offset, epoch, name: format!("{stem}.parquet") })
    }
}

/// Distinguishes the checkpoints one writer stores at one offset.
fn nonce() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{now:x}{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl CheckpointStore {
    pub fn new(tier: Tier) -> CheckpointStore {
        CheckpointStore { tier }
    }

    /// The stored checkpoints of a partition, by offset then epoch.
    pub async fn names(&self, topic: &str, partition: i32) -> Result<Vec<CheckpointName>> {
        let mut names: Vec<CheckpointName> =
            self.tier.list(&dir(topic, partition)).await?.iter().filter_map(|p| CheckpointName::parse(p)).collect();
        names.sort_by(|a, b| (a.offset, a.epoch, &a.name).cmp(&(b.offset, b.epoch, &b.name)));
        Ok(names)
    }

    /// Stores a checkpoint of `epoch`'s writer at `offset` under a new name, and returns the
    /// name (to commit).
    pub async fn save(&self, topic: &str, partition: i32, offset: i64, epoch: u64, bytes: Bytes) -> Result<String> {
        let name = format!("{offset:020}-e{epoch}-{}.parquet", nonce());
        self.tier.put_durable(&format!("{}/{name}", dir(topic, partition)), bytes, true).await?;
        Ok(name)
    }

    /// Reads one checkpoint by name.
    pub async fn load(&self, topic: &str, partition: i32, name: &str) -> Result<Bytes> {
        self.tier.get(&format!("{}/{name}", dir(topic, partition))).await
    }

    /// The newest checkpoint at or below `at_most` (the durable offset), with its name: for
    /// partitions whose epochs commit none (written by older versions).
    pub async fn load_latest(
        &self,
        topic: &str,
        partition: i32,
        at_most: i64,
    ) -> Result<Option<(CheckpointName, Bytes)>> {
        let Some(newest) = self.names(topic, partition).await?.into_iter().rev().find(|n| n.offset <= at_most) else {
            return Ok(None);
        };
        let bytes = self.load(topic, partition, &newest.name).await?;
        Ok(Some((newest, bytes)))
    }

    /// Deletes the checkpoints the committed one (`kept`, written by `epoch`'s writer) makes
    /// useless: those at or below its offset written by this epoch or an older one. A newer
    /// epoch's checkpoints are never touched (this writer may have lost the partition), nor
    /// anything above the committed offset. Returns how many were deleted.
    pub async fn prune(&self, topic: &str, partition: i32, epoch: u64, kept: &str) -> Result<usize> {
        let Some(kept) = CheckpointName::parse(kept) else { return Ok(0) };
        let mut deleted = 0;
        for old in self.names(topic, partition).await? {
            if old.name != kept.name && old.offset <= kept.offset && old.epoch <= epoch {
                self.tier.delete(&format!("{}/{}", dir(topic, partition), old.name)).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, CheckpointStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tier = Tier::open(&crate::TierConfig::local_dir(dir.path()).expect("cfg")).expect("tier");
        (dir, CheckpointStore::new(tier))
    }

    #[tokio::test]
    async fn every_save_is_a_new_object_and_loads_by_name() {
        let (_dir, store) = store();
        let a = store.save("t", 0, 9, 1, Bytes::from_static(b"a")).await.expect("save");
        let b = store.save("t", 0, 9, 1, Bytes::from_static(b"b")).await.expect("save");
        assert_ne!(a, b, "two saves at one offset do not overwrite each other");
        assert_eq!(store.load("t", 0, &a).await.expect("load").as_ref(), b"a");
        assert_eq!(CheckpointName::parse(&a).map(|n| (n.offset, n.epoch)), Some((9, 1)));
        assert_eq!(CheckpointName::parse("00000000000000000007.parquet").map(|n| (n.offset, n.epoch)), Some((7, 0)));
        assert_eq!(CheckpointName::parse("x.parquet"), None);
    }

    #[tokio::test]
    async fn the_newest_at_or_below_the_durable_offset_for_older_partitions() {
        let (_dir, store) = store();
        for offset in [9, 99, 199] {
            store.save("t", 0, offset, 1, Bytes::from(offset.to_string())).await.expect("save");
        }
        let (name, bytes) = store.load_latest("t", 0, 150).await.expect("load").expect("found");
        assert_eq!((name.offset, bytes.as_ref()), (99, b"99".as_ref()));
        assert!(store.load_latest("t", 0, 5).await.expect("load").is_none());
        assert!(store.load_latest("t", 1, 500).await.expect("load").is_none());
    }

    #[tokio::test]
    async fn pruning_keeps_the_committed_one_and_never_a_newer_epochs() {
        let (_dir, store) = store();
        let old = store.save("t", 0, 5, 1, Bytes::from_static(b"old")).await.expect("save");
        let kept = store.save("t", 0, 9, 2, Bytes::from_static(b"kept")).await.expect("save");
        let same_offset = store.save("t", 0, 9, 2, Bytes::from_static(b"uncommitted")).await.expect("save");
        let newer_epoch = store.save("t", 0, 9, 3, Bytes::from_static(b"newer owner")).await.expect("save");
        let above = store.save("t", 0, 12, 2, Bytes::from_static(b"above")).await.expect("save");
        assert_eq!(store.prune("t", 0, 2, &kept).await.expect("prune"), 2, "{old} and {same_offset}");
        let left: Vec<String> = store.names("t", 0).await.expect("names").into_iter().map(|n| n.name).collect();
        assert_eq!(left.len(), 3);
        for name in [&kept, &newer_epoch, &above] {
            assert!(left.contains(name), "{name} is kept");
        }
    }
}
