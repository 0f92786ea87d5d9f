//! Compaction of the trace-id index: level-0 segments merged into bucket runs, a new
//! manifest committed with a create-only write, and garbage collected after its grace.

use std::collections::{BTreeMap, BTreeSet};

use super::segment::{self, Entry};
use super::{
    GC_GRACE_MS, IndexManifest, IndexMetrics, TraceIndex, generation_of, manifest_key, manifests_dir, run_key, runs_dir,
};
use crate::{Result, StorageError};

/// A bucket with more runs than this after a compaction has them merged into one, so a
/// lookup reads at most this many runs.
pub const MAX_RUNS_PER_BUCKET: usize = 8;
/// Level-0 segments merged by one compaction at most (the rest wait for the next), which
/// bounds its memory.
pub const MAX_SEGMENTS_PER_COMPACTION: usize = 4096;
/// Manifests kept besides the newest (readers may still be reading them).
const MANIFESTS_KEPT: u64 = 2;

/// What one compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// `done`, `nothing_to_do` or `lost_race`.
    pub outcome: &'static str,
    pub generation: u64,
    pub segments_merged: usize,
    pub runs_written: usize,
    pub buckets_fully_merged: usize,
    pub entries_written: u64,
    pub bytes_written: u64,
    pub files_deleted: usize,
}

fn entries_in(bytes: usize) -> u64 {
    (bytes.saturating_sub(20) / 32) as u64
}

/// Merges the unmerged level-0 segments into bucket runs and commits the next manifest,
/// then deletes what the grace period has released. Safe to run in several processes at
/// once and to interrupt at any point.
pub async fn compact(index: &TraceIndex, runner: &str, now_ms: i64) -> Result<CompactReport> {
    compact_with_hook(index, runner, now_ms, async {}).await
}

/// [`compact`], running `before_commit` between reading the state and committing the next
/// manifest (tests put a rival's commit there).
pub(crate) async fn compact_with_hook(
    index: &TraceIndex,
    runner: &str,
    now_ms: i64,
    before_commit: impl std::future::Future<Output = ()>,
) -> Result<CompactReport> {
    let result = compact_inner(index, runner, now_ms, before_commit).await;
    let outcome = result.as_ref().map_or("failed", |r| r.outcome);
    IndexMetrics::global().compactions.with_label_values(&[outcome]).inc();
    result
}

async fn compact_inner(
    index: &TraceIndex,
    runner: &str,
    now_ms: i64,
    before_commit: impl std::future::Future<Output = ()>,
) -> Result<CompactReport> {
    let tier = index.tier();
    let manifest = index.newest_manifest().await?;
    let present: BTreeSet<String> = index.l0_segments().await?.into_iter().collect();
    let unmerged: Vec<&String> =
        present.iter().filter(|k| !manifest.merged_l0.contains_key(*k)).take(MAX_SEGMENTS_PER_COMPACTION).collect();
    let mut report = CompactReport { outcome: "nothing_to_do", generation: manifest.generation, ..Default::default() };
    if unmerged.is_empty() {
        report.files_deleted = collect_garbage(index, &manifest, &present, now_ms).await?;
        return Ok(report);
    }
    let mut by_bucket: BTreeMap<u8, Vec<Entry>> = BTreeMap::new();
    for key in &unmerged {
        let bytes = tier.get(key).await?;
        let entries =
            segment::decode(&bytes).map_err(|reason| StorageError::CorruptRecord { path: (*key).clone(), reason })?;
        for e in entries {
            by_bucket.entry(e.trace[0]).or_default().push(e);
        }
    }
    let runs_present: BTreeSet<String> = tier.list(&format!("{}/", runs_dir())).await?.into_iter().collect();
    let generation = manifest.generation + 1;
    let token = format!("{}-{:08x}", crate::layout::sanitize(runner), rand::random::<u32>());
    let mut next = IndexManifest {
        generation,
        created_at_ms: now_ms,
        runner: runner.to_string(),
        buckets: manifest.buckets.clone(),
        // Segments merged earlier stay listed while they exist (lookups skip them).
        merged_l0: manifest
            .merged_l0
            .iter()
            .filter(|(k, _)| present.contains(*k))
            .map(|(k, t)| (k.clone(), *t))
            .collect(),
        // Retired runs stay listed until garbage collection has deleted them.
        retired: manifest
            .retired
            .iter()
            .filter(|(k, _)| runs_present.contains(*k))
            .map(|(k, t)| (k.clone(), *t))
            .collect(),
        entries: manifest.entries,
    };
    let mut written = Vec::new();
    for (bucket, fresh) in by_bucket {
        let name = format!("{bucket:02x}");
        let mut runs = next.buckets.remove(&name).unwrap_or_default();
        let mut entries = fresh;
        if runs.len() + 1 > MAX_RUNS_PER_BUCKET {
            for run in &runs {
                let bytes = tier.get(run).await?;
                next.entries = next.entries.saturating_sub(entries_in(bytes.len()));
                entries.extend(
                    segment::decode(&bytes)
                        .map_err(|reason| StorageError::CorruptRecord { path: run.clone(), reason })?,
                );
                next.retired.insert(run.clone(), now_ms);
            }
            runs.clear();
            report.buckets_fully_merged += 1;
        }
        let merged = segment::normalize(entries);
        let bytes = segment::encode(&merged);
        let key = format!("{}-{token}.tix", run_key(bucket, generation).trim_end_matches(".tix"));
        report.bytes_written += bytes.len() as u64;
        report.entries_written += merged.len() as u64;
        next.entries += merged.len() as u64;
        tier.put_durable(&key, bytes, true).await?;
        written.push(key.clone());
        runs.push(key);
        next.buckets.insert(name, runs);
    }
    report.runs_written = written.len();
    for key in &unmerged {
        next.merged_l0.insert((*key).clone(), now_ms);
    }
    before_commit.await;
    let body = serde_json::to_vec_pretty(&next)
        .map_err(|e| StorageError::CorruptRecord { path: manifest_key(generation), reason: e.to_string() })?;
    match tier.put_durable(&manifest_key(generation), body.into(), true).await {
        Ok(()) => {}
        Err(StorageError::ObjectStore(object_store::Error::AlreadyExists { .. })) => {
            for key in &written {
                tier.delete(key).await?;
            }
            return Ok(CompactReport { outcome: "lost_race", ..report });
        }
        Err(e) => return Err(e),
    }
    report.outcome = "done";
    report.generation = generation;
    report.segments_merged = unmerged.len();
    IndexMetrics::global().segments_merged.inc_by(unmerged.len() as u64);
    report.files_deleted = collect_garbage(index, &next, &present, now_ms).await?;
    Ok(report)
}

/// Deletes merged level-0 segments and runs that `manifest` (the newest) no longer reads,
/// once their grace has passed, runs of commits that lost or died, and old manifests.
async fn collect_garbage(
    index: &TraceIndex,
    manifest: &IndexManifest,
    present: &BTreeSet<String>,
    now_ms: i64,
) -> Result<usize> {
    let tier = index.tier();
    let metrics = IndexMetrics::global();
    let mut deleted = 0;
    for (key, merged_at) in &manifest.merged_l0 {
        if now_ms - merged_at >= GC_GRACE_MS && present.contains(key) {
            tier.delete(key).await?;
            metrics.files_deleted.with_label_values(&["segment"]).inc();
            deleted += 1;
        }
    }
    let live: BTreeSet<&String> = manifest.buckets.values().flatten().collect();
    for object in tier.list_meta(&format!("{}/", runs_dir())).await? {
        if live.contains(&object.key) {
            continue;
        }
        let decided = generation_of(&object.key).is_some_and(|g| g <= manifest.generation);
        let released = match manifest.retired.get(&object.key) {
            Some(retired_at) => now_ms - retired_at >= GC_GRACE_MS,
            None => now_ms - object.modified_ms >= GC_GRACE_MS,
        };
        if decided && released {
            tier.delete(&object.key).await?;
            metrics.files_deleted.with_label_values(&["run"]).inc();
            deleted += 1;
        }
    }
    for key in tier.list(&format!("{}/", manifests_dir())).await? {
        if generation_of(&key).is_some_and(|g| g + MANIFESTS_KEPT < manifest.generation) {
            tier.delete(&key).await?;
            metrics.files_deleted.with_label_values(&["manifest"]).inc();
            deleted += 1;
        }
    }
    Ok(deleted)
}
