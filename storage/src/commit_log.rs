//! The batch commit log: how a Kafka offset range becomes stored exactly once.
//!
//! A worker writes each batch of one topic partition in three steps:
//!
//! 1. a **batch record** `_catalog/commits/<topic>/p<partition>/<first offset>.json` naming the
//!    offset range and every data file the batch will write, created with
//!    `PutMode::Create`, so that two writers of the same range (a zombie after a rebalance)
//!    cannot both succeed;
//! 2. the **data files** (each an atomic PUT, fsynced on local disks);
//! 3. the Kafka offset commit (done by the pipeline, after this returns).
//!
//! A batch is *complete* when its record exists and all its files exist. After a crash,
//! the worker that next owns the partition calls [`CommitLog::recover`]: complete batches
//! past the Kafka-committed offset are kept and their offsets are skipped on replay;
//! the one incomplete batch a crash can leave (record written, some files missing) is
//! deleted, files and record, and re-read from Kafka. Object names derive from offset
//! ranges, and no offset is ever in two complete batches, so `kill -9` at any point loses
//! and duplicates nothing.
//!
//! Records whose whole range is below the Kafka-committed offset are never needed again
//! and are pruned, so the log stays a handful of small objects per partition.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::catalog::{CatalogDir, CatalogKey};
use crate::tier::Tier;
use crate::{Result, StorageError};

/// One batch of one topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    /// Data files relative to the tier.
    pub files: Vec<String>,
    pub rows: u64,
    pub dead_letters: u64,
    /// Id of the worker that wrote it.
    pub writer: String,
    pub created_at_ms: i64,
}

/// What recovery found for one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Highest offset durably stored (complete batches), if any batch at or after the
    /// starting offset is complete. Offsets up to it must be skipped.
    pub durable_last: Option<i64>,
    /// Complete batches found, as (first, last) offset ranges, ascending.
    pub complete: Vec<(i64, i64)>,
    /// Incomplete batches that were rolled back.
    pub rolled_back: usize,
}

/// The commit log of one tier.
#[derive(Debug, Clone)]
pub struct CommitLog {
    tier: Tier,
}

fn dir(topic: &str, partition: i32) -> String {
    CatalogDir::Commits { topic: topic.to_string(), partition }.path()
}

fn record_key(topic: &str, partition: i32, first_offset: i64) -> String {
    CatalogKey::BatchRecord { topic: topic.to_string(), partition, first_offset }.path()
}

impl CommitLog {
    pub fn new(tier: Tier) -> CommitLog {
        CommitLog { tier }
    }

    pub fn tier(&self) -> &Tier {
        &self.tier
    }

    /// Writes a batch: the record (create-only), then its files. Returns
    /// [`StorageError::Fenced`] when another writer already recorded a batch at the same
    /// first offset.
    pub async fn commit_batch(&self, record: &BatchRecord, files: Vec<(String, Bytes)>) -> Result<()> {
        let key = record_key(&record.topic, record.partition, record.first_offset);
        let body = serde_json::to_vec(record)
            .map_err(|e| StorageError::CorruptRecord { path: key.clone(), reason: e.to_string() })?;
        match self.tier.put_durable(&key, Bytes::from(body), true).await {
            Ok(()) => {}
            Err(StorageError::ObjectStore(object_store::Error::AlreadyExists { .. })) => {
                return Err(StorageError::Fenced {
                    topic: record.topic.clone(),
                    partition: record.partition,
                    first_offset: record.first_offset,
                });
            }
            Err(e) => return Err(e),
        }
        self.tier.put_all_durable(files).await
    }

    async fn read_record(&self, key: &str) -> Result<BatchRecord> {
        let bytes = self.tier.get(key).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StorageError::CorruptRecord { path: key.to_string(), reason: e.to_string() })
    }

    /// Finds the durable state of a partition for a consumer about to read from
    /// `from_offset`, rolling back an incomplete batch if a crash left one.
    pub async fn recover(&self, topic: &str, partition: i32, from_offset: i64) -> Result<Recovery> {
        let keys = self.tier.list(&dir(topic, partition)).await?;
        let mut records = Vec::new();
        for key in keys.iter().filter(|k| k.ends_with(".json")) {
            match self.read_record(key).await {
                Ok(record) if record.last_offset >= from_offset => records.push((key.clone(), record)),
                Ok(_) => {}
                // A record is written whole by one PUT; an unreadable one is treated as the
                // incomplete batch it must be.
                Err(StorageError::CorruptRecord { .. }) => {
                    tracing::warn!(key = %key, "unreadable batch record; deleting it");
                    self.tier.delete(key).await?;
                }
                Err(e) => return Err(e),
            }
        }
        records.sort_by_key(|(_, r)| r.first_offset);
        let mut recovery = Recovery::default();
        let mut broken = false;
        for (key, record) in records {
            if !broken {
                let mut complete = true;
                for file in &record.files {
                    if !self.tier.exists(file).await? {
                        complete = false;
                        break;
                    }
                }
                if complete {
                    recovery.durable_last = Some(record.last_offset);
                    recovery.complete.push((record.first_offset, record.last_offset));
                    continue;
                }
                broken = true;
            }
            // Roll back: files first, then the record, so a crash here leaves a record whose
            // files are missing, which the next recovery rolls back again.
            tracing::warn!(
                topic,
                partition,
                first_offset = record.first_offset,
                last_offset = record.last_offset,
                "rolling back incomplete batch left by a crash"
            );
            for file in &record.files {
                self.tier.delete(file).await?;
            }
            self.tier.delete(&key).await?;
            recovery.rolled_back += 1;
        }
        Ok(recovery)
    }

    /// Deletes the records of batches that lie wholly below `committed_offset` (the next
    /// offset the consumer group will read), which recovery never needs again.
    pub async fn prune(
        &self,
        topic: &str,
        partition: i32,
        ranges: &[(i64, i64)],
        committed_offset: i64,
    ) -> Result<usize> {
        let mut deleted = 0;
        for &(first, last) in ranges {
            if last < committed_offset {
                self.tier.delete(&record_key(topic, partition, first)).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::TierConfig;

    fn record(first: i64, last: i64, files: &[&str]) -> BatchRecord {
        BatchRecord {
            topic: "callscope.metrics".into(),
            partition: 2,
            first_offset: first,
            last_offset: last,
            files: files.iter().map(|s| s.to_string()).collect(),
            rows: (last - first + 1) as u64,
            dead_letters: 0,
            writer: "test".into(),
            created_at_ms: 0,
        }
    }

    fn file(name: &str) -> (String, Bytes) {
        (name.to_string(), Bytes::from_static(b"PAR1"))
    }

    async fn log() -> (tempfile::TempDir, CommitLog) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tier = Tier::open(&TierConfig::local_dir(dir.path()).expect("cfg")).expect("open");
        (dir, CommitLog::new(tier))
    }

    #[tokio::test]
    async fn complete_batches_are_found_past_the_committed_offset() {
        let (_dir, log) = log().await;
        log.commit_batch(&record(0, 9, &["m/a"]), vec![file("m/a")]).await.expect("b1");
        log.commit_batch(&record(10, 19, &["m/b", "m/c"]), vec![file("m/b"), file("m/c")]).await.expect("b2");
        let r = log.recover("callscope.metrics", 2, 10).await.expect("recover");
        assert_eq!(r.durable_last, Some(19));
        assert_eq!(r.complete, vec![(10, 19)]);
        assert_eq!(r.rolled_back, 0);
        let r = log.recover("callscope.metrics", 2, 0).await.expect("recover");
        assert_eq!(r.complete, vec![(0, 9), (10, 19)]);
        let r = log.recover("callscope.metrics", 2, 20).await.expect("recover");
        assert_eq!(r.durable_last, None);
    }

    #[tokio::test]
    async fn an_incomplete_batch_is_rolled_back() {
        let (_dir, log) = log().await;
        log.commit_batch(&record(0, 9, &["m/a"]), vec![file("m/a")]).await.expect("b1");
        // Simulate a crash between the record and the second file.
        log.commit_batch(&record(10, 19, &["m/b", "m/c"]), vec![file("m/b")]).await.expect("b2");
        let r = log.recover("callscope.metrics", 2, 0).await.expect("recover");
        assert_eq!(r.durable_last, Some(9));
        assert_eq!(r.rolled_back, 1);
        assert!(!log.tier().exists("m/b").await.expect("head"), "partial file must be deleted");
        // The range can now be written again.
        log.commit_batch(&record(10, 25, &["m/d"]), vec![file("m/d")]).await.expect("rewrite");
        assert_eq!(log.recover("callscope.metrics", 2, 10).await.expect("recover").durable_last, Some(25));
    }

    #[tokio::test]
    async fn a_second_writer_of_the_same_range_is_fenced() {
        let (_dir, log) = log().await;
        log.commit_batch(&record(0, 9, &["m/a"]), vec![file("m/a")]).await.expect("b1");
        let err = log.commit_batch(&record(0, 12, &["m/z"]), vec![file("m/z")]).await.expect_err("fenced");
        assert!(matches!(err, StorageError::Fenced { first_offset: 0, .. }));
        assert!(!log.tier().exists("m/z").await.expect("head"));
    }

    #[tokio::test]
    async fn prune_keeps_records_at_or_after_the_committed_offset() {
        let (_dir, log) = log().await;
        log.commit_batch(&record(0, 9, &[]), vec![]).await.expect("b1");
        log.commit_batch(&record(10, 19, &[]), vec![]).await.expect("b2");
        let deleted = log.prune("callscope.metrics", 2, &[(0, 9), (10, 19)], 15).await.expect("prune");
        assert_eq!(deleted, 1);
        assert_eq!(log.recover("callscope.metrics", 2, 0).await.expect("r").complete, vec![(10, 19)]);
    }
}
