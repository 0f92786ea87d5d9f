//! The batch commit log: how a Kafka offset range becomes stored exactly once, even with a
//! second writer of the same partition alive (a zombie that lost the partition and did not
//! notice).
//!
//! A worker writes each batch of one topic partition in three steps:
//!
//! 1. the **data files**, under a pending prefix of its own
//!    (`_catalog/pending/<topic>/p<partition>/<first offset>-<writer>/<final key>`), where
//!    no table and no query looks;
//! 2. the **batch record** `_catalog/commits/<topic>/p<partition>/<first offset>.json`, naming
//!    the offset range, the files and the pending prefix, created with `PutMode::Create`.
//!    This PUT is the commit point: of two writers that claim a range at the same first
//!    offset, exactly one succeeds, and the other is fenced
//!    ([`StorageError::Fenced`]) and deletes its pending files;
//! 3. the files are **published**: renamed from the pending prefix to their final keys
//!    (atomic on local disks; copy and delete on S3). Whoever finds a record whose files are
//!    still pending finishes the renames, so the work is idempotent;
//!
//! then the pipeline commits the Kafka offset.
//!
//! Queries read only final keys, so they only ever see files of committed batches; the
//! files of a writer that crashed or lost the race stay pending and are deleted.
//! [`CommitLog::recover`] never deletes a record: every record is committed by definition,
//! and recovery only finishes its publication. A writer claims its next range from the
//! last offset it knows is stored, so the chain of records is contiguous; recovery refuses
//! a gap or an overlap between records instead of skipping it.
//!
//! Records whose whole range is below the Kafka-committed offset are pruned once they are
//! [`PRUNE_GRACE_MS`] old: until then a zombie that was frozen between its data files and
//! its record still collides with the record at its first offset.
//!
//! Records written before pending prefixes existed (`pending` empty) wrote their files
//! first-hand after the record; for those, recovery still rolls back an incomplete one.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::catalog::{CatalogDir, CatalogKey};
use crate::tier::Tier;
use crate::{Result, StorageError};

/// How old a batch record must be before it is pruned (see the module docs).
pub const PRUNE_GRACE_MS: i64 = 10 * 60_000;

/// One batch of one topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    /// Data files relative to the tier (their final keys).
    pub files: Vec<String>,
    pub rows: u64,
    pub dead_letters: u64,
    /// Id of the worker that wrote it.
    pub writer: String,
    pub created_at_ms: i64,
    /// Where the files were staged before the record committed them; empty for records of
    /// the older protocol, which wrote final keys directly.
    #[serde(default)]
    pub pending: String,
}

/// What recovery found for one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Highest offset durably stored, if any batch at or after the starting offset exists.
    /// Offsets up to it must be skipped.
    pub durable_last: Option<i64>,
    /// Batches found, as (first, last) offset ranges, ascending.
    pub complete: Vec<(i64, i64)>,
    /// Batches whose publication recovery finished (files moved from pending).
    pub published: usize,
    /// Incomplete batches of the older protocol that were rolled back.
    pub rolled_back: usize,
    /// Pending directories deleted (writers that crashed or lost the race).
    pub orphans_deleted: usize,
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

/// The pending prefix of one attempt to write a batch.
pub fn pending_dir(topic: &str, partition: i32, first_offset: i64, writer: &str) -> String {
    format!(
        "{}/{first_offset:020}-{}",
        CatalogDir::Pending { topic: topic.to_string(), partition }.path(),
        crate::layout::sanitize(writer)
    )
}

impl CommitLog {
    pub fn new(tier: Tier) -> CommitLog {
        CommitLog { tier }
    }

    pub fn tier(&self) -> &Tier {
        &self.tier
    }

    /// Writes a batch: its files under a pending prefix, the record (create-only: the
    /// commit point), then publishes the files. Returns [`StorageError::Fenced`] when
    /// another writer already recorded a batch at the same first offset; its pending files
    /// are then deleted.
    pub async fn commit_batch(&self, record: &BatchRecord, files: Vec<(String, Bytes)>) -> Result<()> {
        let mut record = record.clone();
        record.pending = pending_dir(&record.topic, record.partition, record.first_offset, &record.writer);
        let staged = files.into_iter().map(|(key, bytes)| (format!("{}/{key}", record.pending), bytes)).collect();
        self.tier.put_all_durable(staged).await?;
        let key = record_key(&record.topic, record.partition, record.first_offset);
        let body = serde_json::to_vec(&record)
            .map_err(|e| StorageError::CorruptRecord { path: key.clone(), reason: e.to_string() })?;
        match self.tier.put_durable(&key, Bytes::from(body), true).await {
            Ok(()) => {}
            Err(StorageError::ObjectStore(object_store::Error::AlreadyExists { .. })) => {
                // The record that won may be this writer's own, when a PUT succeeded but its
                // answer was lost: then it is committed, and publication goes on.
                if self.read_record(&key).await.is_ok_and(|r| r.pending == record.pending) {
                    return self.publish(&record).await.map(drop);
                }
                self.delete_pending(&record.pending).await;
                return Err(StorageError::Fenced {
                    topic: record.topic.clone(),
                    partition: record.partition,
                    first_offset: record.first_offset,
                });
            }
            Err(e) => return Err(e),
        }
        self.publish(&record).await.map(drop)
    }

    /// Moves a committed batch's files from its pending prefix to their final keys and
    /// returns how many it moved; a file whose pending copy is gone is already final
    /// (published earlier, or by another process at the same time, so two processes may
    /// publish the same batch at once) or was removed by the lifecycle since. The
    /// rename comes first: on the commit path the files are never final yet, and a look
    /// before it would cost a HEAD per file per batch.
    async fn publish(&self, record: &BatchRecord) -> Result<usize> {
        let mut moved = 0;
        for file in &record.files {
            match self.tier.rename_durable(&format!("{}/{file}", record.pending), file).await {
                Ok(()) => moved += 1,
                // Neither pending nor final: it was published, and the lifecycle (a
                // compaction's garbage collection, the trace-index merge) has removed it
                // since. Every file was staged before the record, so nothing is lost.
                Err(StorageError::ObjectStore(object_store::Error::NotFound { .. })) => {
                    tracing::debug!(file, "a committed file was removed after its publication");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    async fn delete_pending(&self, pending: &str) {
        match self.tier.list(pending).await {
            Ok(keys) => {
                for key in keys {
                    if let Err(e) = self.tier.delete(&key).await {
                        tracing::debug!(key = %key, error = %e, "could not delete a pending file");
                    }
                }
            }
            Err(e) => tracing::debug!(pending, error = %e, "could not list pending files"),
        }
    }

    async fn read_record(&self, key: &str) -> Result<BatchRecord> {
        let bytes = self.tier.get(key).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StorageError::CorruptRecord { path: key.to_string(), reason: e.to_string() })
    }

    /// Finds the durable state of a partition for a consumer about to read from
    /// `from_offset`: finishes the publication of batches whose files are still pending,
    /// deletes the pending files of writers that crashed or lost a race, and refuses a
    /// chain of records with a gap or an overlap. An unreadable record is an error (never
    /// deleted: its files may be visible).
    pub async fn recover(&self, topic: &str, partition: i32, from_offset: i64) -> Result<Recovery> {
        let keys = self.tier.list(&dir(topic, partition)).await?;
        let mut records = Vec::new();
        for key in keys.iter().filter(|k| k.ends_with(".json")) {
            let record = self.read_record(key).await?;
            if record.last_offset >= from_offset {
                records.push((key.clone(), record));
            }
        }
        records.sort_by_key(|(_, r)| r.first_offset);
        let mut recovery = Recovery::default();
        let mut previous: Option<&BatchRecord> = None;
        let mut legacy_broken = false;
        for (key, record) in &records {
            if let Some(p) = previous {
                let gap =
                    record.first_offset > p.last_offset + 1 && !p.pending.is_empty() && !record.pending.is_empty();
                if record.first_offset <= p.last_offset || gap {
                    return Err(StorageError::CorruptRecord {
                        path: key.clone(),
                        reason: format!(
                            "batch {}..={} does not follow batch {}..={} (an {}); the partition needs an operator",
                            record.first_offset,
                            record.last_offset,
                            p.first_offset,
                            p.last_offset,
                            if gap { "offset gap" } else { "overlap" }
                        ),
                    });
                }
            }
            if record.pending.is_empty() {
                // The older protocol: a record whose files are missing is crash debris, and
                // so is everything after it.
                if !legacy_broken && self.legacy_complete(record).await? {
                    recovery.durable_last = Some(record.last_offset);
                    recovery.complete.push((record.first_offset, record.last_offset));
                    previous = Some(record);
                    continue;
                }
                legacy_broken = true;
                self.roll_back_legacy(key, record).await?;
                recovery.rolled_back += 1;
                continue;
            }
            if legacy_broken {
                return Err(StorageError::CorruptRecord {
                    path: key.clone(),
                    reason: "a batch follows an incomplete batch of the older protocol".into(),
                });
            }
            let mut pending = false;
            for file in &record.files {
                if !self.tier.exists(file).await? {
                    pending = true;
                    break;
                }
            }
            // A missing file is either still pending (a crash mid-publication) or was
            // removed by the lifecycle since; publishing again moves only the former.
            if pending && self.publish(record).await? > 0 {
                tracing::info!(
                    topic,
                    partition,
                    first_offset = record.first_offset,
                    "finished the publication of a committed batch"
                );
                recovery.published += 1;
            }
            recovery.durable_last = Some(record.last_offset);
            recovery.complete.push((record.first_offset, record.last_offset));
            previous = Some(record);
        }
        recovery.orphans_deleted = self.delete_orphans(topic, partition, recovery.durable_last).await?;
        Ok(recovery)
    }

    async fn legacy_complete(&self, record: &BatchRecord) -> Result<bool> {
        for file in &record.files {
            if !self.tier.exists(file).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Rolls back an incomplete batch of the older protocol: files first, then the record,
    /// so a crash here leaves a record whose files are missing, rolled back again next time.
    async fn roll_back_legacy(&self, key: &str, record: &BatchRecord) -> Result<()> {
        tracing::warn!(
            topic = %record.topic,
            partition = record.partition,
            first_offset = record.first_offset,
            last_offset = record.last_offset,
            "rolling back an incomplete batch of the older protocol"
        );
        for file in &record.files {
            self.tier.delete(file).await?;
        }
        self.tier.delete(key).await
    }

    /// Deletes pending directories that can never be committed: those whose first offset
    /// has a record naming another pending directory (the race was lost), and those at or
    /// below the stored high-water mark with no record (its range is stored by others).
    /// A pending directory past the high-water mark may belong to a live writer about to
    /// create its record, and is kept.
    async fn delete_orphans(&self, topic: &str, partition: i32, durable_last: Option<i64>) -> Result<usize> {
        let root = CatalogDir::Pending { topic: topic.to_string(), partition }.path();
        let keys = self.tier.list(&root).await?;
        let mut dirs: Vec<String> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&format!("{root}/")).and_then(|rest| rest.split('/').next()))
            .map(str::to_string)
            .collect();
        dirs.dedup();
        let mut deleted = 0;
        for name in dirs {
            let Some(first) = name.split('-').next().and_then(|n| n.parse::<i64>().ok()) else { continue };
            let pending = format!("{root}/{name}");
            let orphan = match self.read_record(&record_key(topic, partition, first)).await {
                Ok(record) => record.pending != pending,
                Err(StorageError::ObjectStore(object_store::Error::NotFound { .. })) => {
                    durable_last.is_some_and(|d| first <= d)
                }
                Err(e) => return Err(e),
            };
            if orphan {
                self.delete_pending(&pending).await;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Deletes the records of batches that lie wholly below `committed_offset` (the next
    /// offset the consumer group will read) and are older than [`PRUNE_GRACE_MS`] at
    /// `now_ms`; returns the ranges deleted.
    pub async fn prune(
        &self,
        topic: &str,
        partition: i32,
        ranges: &[(i64, i64)],
        committed_offset: i64,
        now_ms: i64,
    ) -> Result<Vec<(i64, i64)>> {
        let mut deleted = Vec::new();
        for &(first, last) in ranges {
            if last >= committed_offset {
                continue;
            }
            let key = record_key(topic, partition, first);
            let record = match self.read_record(&key).await {
                Ok(r) => r,
                Err(StorageError::ObjectStore(object_store::Error::NotFound { .. })) => {
                    deleted.push((first, last));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if record.created_at_ms <= now_ms - PRUNE_GRACE_MS {
                self.tier.delete(&key).await?;
                deleted.push((first, last));
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests;
