//! The trace-id index: trace id → where its spans start in time, so that a lookup by id
//! without a time range reads only the hours (and, inside them, the files whose bloom
//! filter admits the id) that hold the trace, whatever the retention.
//!
//! It is maintained in the stream and kept like a small LSM tree in the hot tier:
//!
//! | key | object |
//! | --- | --- |
//! | `_catalog/trace_index/l0/<topic>-p<partition>-<first>-<last>.tix` | the traces of one span batch, committed with the batch's files (so exactly once, and never behind the data) |
//! | `_catalog/trace_index/runs/bucket=<xx>/<generation>.tix` | merged entries of the traces whose id starts with byte `xx` |
//! | `_catalog/trace_index/manifests/<generation>.json` | the runs of every bucket, and the level-0 segments already merged into them |
//!
//! [`compact`] merges level-0 segments into bucket runs (a bucket with too many runs is
//! merged into one) and commits a new manifest with a create-only write, so two compactors
//! at once are safe: one wins, the other deletes what it wrote. Merged segments and
//! replaced runs are deleted a grace period later ([`GC_GRACE_MS`]), so a lookup that read
//! the previous manifest still finds its files.
//!
//! A lookup reads the newest manifest, the bucket's runs and the unmerged level-0 segments
//! (all immutable, so cached in memory by key) and binary-searches each.

pub mod compact;
pub mod segment;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use serde::{Deserialize, Serialize};

use crate::catalog::CATALOG_ROOT;
use crate::layout::sanitize;
use crate::tier::Tier;
use crate::{Result, StorageError};
pub use compact::{CompactReport, compact};
pub use segment::{Entry, TraceKey, trace_key};

/// Replaced runs and merged segments are deleted this long after they stopped being read.
pub const GC_GRACE_MS: i64 = crate::file_catalog::GC_GRACE_MS;

fn root() -> String {
    format!("{CATALOG_ROOT}/trace_index")
}

/// Directory of the level-0 segments.
pub fn l0_dir() -> String {
    format!("{}/l0", root())
}

/// The level-0 segment of the span batch `first..=last` of a topic partition.
pub fn l0_key(topic: &str, partition: i32, first_offset: i64, last_offset: i64) -> String {
    format!("{}/{}-p{partition}-{first_offset:020}-{last_offset:020}.tix", l0_dir(), sanitize(topic))
}

fn runs_dir() -> String {
    format!("{}/runs", root())
}

fn run_key(bucket: u8, generation: u64) -> String {
    format!("{}/bucket={bucket:02x}/{generation:020}.tix", runs_dir())
}

fn manifests_dir() -> String {
    format!("{}/manifests", root())
}

fn manifest_key(generation: u64) -> String {
    format!("{}/{generation:020}.json", manifests_dir())
}

/// The generation a manifest or run key names (the digits its file name starts with).
fn generation_of(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.split(['.', '-']).next()?.parse().ok()
}

/// The state of the merged index at one generation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IndexManifest {
    pub generation: u64,
    pub created_at_ms: i64,
    /// Who committed it.
    pub runner: String,
    /// Runs per bucket (two hex digits), oldest first.
    pub buckets: BTreeMap<String, Vec<String>>,
    /// Level-0 segments merged into the runs, with when (deleted a grace period later).
    pub merged_l0: BTreeMap<String, i64>,
    /// Runs no longer read, with since when (deleted a grace period later).
    pub retired: BTreeMap<String, i64>,
    /// Entries over all runs (a trace present in several runs counts once per run).
    pub entries: u64,
}

/// Builds the level-0 segment of a batch from its spans' `(trace id, start µs)`; `None`
/// when no span has a valid trace id.
pub fn l0_segment<'a>(spans: impl IntoIterator<Item = (&'a str, i64)>) -> Option<Bytes> {
    let entries: Vec<Entry> = spans
        .into_iter()
        .filter_map(|(id, start)| {
            trace_key(id).map(|trace| Entry { trace, first_start_us: start, last_start_us: start })
        })
        .collect();
    if entries.is_empty() {
        return None;
    }
    Some(segment::encode(&segment::normalize(entries)))
}

/// What the index knows of one trace: the span starts it has seen (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceSpan {
    pub first_start_us: i64,
    pub last_start_us: i64,
    /// Index files that held an entry for the trace.
    pub files: usize,
}

/// The index's figures for the health route.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct IndexHealth {
    pub generation: u64,
    /// When the newest manifest was committed (unix ms), if any.
    pub last_compaction_ms: Option<i64>,
    pub runs: usize,
    pub entries: u64,
    /// Level-0 segments not merged yet (a lookup reads each).
    pub unmerged_segments: usize,
}

/// The index's metrics (process-wide registry).
pub struct IndexMetrics {
    /// Lookups by result (`hit`, `miss`).
    pub lookups: IntCounterVec,
    /// Compactions by outcome (`done`, `nothing_to_do`, `lost_race`, `failed`).
    pub compactions: IntCounterVec,
    pub segments_merged: IntCounter,
    pub files_deleted: IntCounterVec,
    pub cached_bytes: IntGauge,
}

impl IndexMetrics {
    pub fn global() -> &'static IndexMetrics {
        static METRICS: std::sync::OnceLock<IndexMetrics> = std::sync::OnceLock::new();
        METRICS.get_or_init(|| {
            let registry = prometheus::default_registry();
            let counter = |name: &str, help: &str, labels: &[&str]| {
                let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"));
                let _ = registry.register(Box::new(c.clone()));
                c
            };
            let cached_bytes = IntGauge::new(
                "callscope_trace_index_cached_bytes",
                "Bytes of trace-index files held in the query process's cache",
            )
            .unwrap_or_else(|e| panic!("cached bytes: {e}"));
            let _ = registry.register(Box::new(cached_bytes.clone()));
            IndexMetrics {
                lookups: counter(
                    "callscope_trace_index_lookups_total",
                    "Trace-id index lookups, by result",
                    &["result"],
                ),
                compactions: counter(
                    "callscope_trace_index_compactions_total",
                    "Trace-index compactions, by outcome",
                    &["outcome"],
                ),
                segments_merged: {
                    let c = IntCounter::new(
                        "callscope_trace_index_segments_merged_total",
                        "Level-0 trace-index segments merged into bucket runs",
                    )
                    .unwrap_or_else(|e| panic!("segments merged: {e}"));
                    let _ = registry.register(Box::new(c.clone()));
                    c
                },
                files_deleted: counter(
                    "callscope_trace_index_files_deleted_total",
                    "Trace-index files deleted after their grace period, by kind",
                    &["kind"],
                ),
                cached_bytes,
            }
        })
    }
}

/// Decoded index files by key (they never change once written), up to a byte budget.
#[derive(Default)]
struct FileCache {
    files: HashMap<String, Arc<Vec<Entry>>>,
    bytes: usize,
}

/// The trace-id index of a hot tier.
#[derive(Clone)]
pub struct TraceIndex {
    tier: Tier,
    cache: Arc<Mutex<FileCache>>,
    cache_budget: usize,
}

impl std::fmt::Debug for TraceIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceIndex").field("tier", &self.tier.store_url().as_str()).finish()
    }
}

/// Default memory for cached index files (32 bytes per trace and file: about 8 million
/// trace entries).
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

impl TraceIndex {
    pub fn new(tier: Tier) -> TraceIndex {
        TraceIndex { tier, cache: Arc::default(), cache_budget: DEFAULT_CACHE_BYTES }
    }

    pub fn tier(&self) -> &Tier {
        &self.tier
    }

    /// The newest manifest (an empty one at generation 0 before the first compaction).
    pub async fn newest_manifest(&self) -> Result<IndexManifest> {
        let newest =
            self.tier.list(&format!("{}/", manifests_dir())).await?.iter().filter_map(|k| generation_of(k)).max();
        match newest {
            None => Ok(IndexManifest::default()),
            Some(generation) => {
                let key = manifest_key(generation);
                let bytes = self.tier.get(&key).await?;
                serde_json::from_slice(&bytes)
                    .map_err(|e| StorageError::CorruptRecord { path: key, reason: e.to_string() })
            }
        }
    }

    /// Level-0 segments present, by key.
    pub async fn l0_segments(&self) -> Result<Vec<String>> {
        Ok(self.tier.list(&format!("{}/", l0_dir())).await?.into_iter().filter(|k| k.ends_with(".tix")).collect())
    }

    async fn read_file(&self, key: &str) -> Result<Arc<Vec<Entry>>> {
        if let Some(hit) = self.cache.lock().map_err(|_| poisoned())?.files.get(key) {
            return Ok(hit.clone());
        }
        let bytes = self.tier.get(key).await?;
        let entries = Arc::new(
            segment::decode(&bytes).map_err(|reason| StorageError::CorruptRecord { path: key.to_string(), reason })?,
        );
        let mut cache = self.cache.lock().map_err(|_| poisoned())?;
        if cache.bytes + bytes.len() > self.cache_budget {
            cache.files.clear();
            cache.bytes = 0;
        }
        cache.bytes += bytes.len();
        cache.files.insert(key.to_string(), entries.clone());
        IndexMetrics::global().cached_bytes.set(cache.bytes as i64);
        Ok(entries)
    }

    /// Where the spans of `trace_id` start, or `None` when the index has no entry for it.
    pub async fn lookup(&self, trace_id: &str) -> Result<Option<TraceSpan>> {
        let Some(trace) = trace_key(trace_id) else { return Ok(None) };
        // A file can disappear between the listing and the read only when a newer
        // manifest replaced it long enough ago; the second attempt reads that manifest.
        let result = match self.lookup_once(&trace).await {
            Err(StorageError::ObjectStore(object_store::Error::NotFound { .. })) => self.lookup_once(&trace).await,
            other => other,
        }?;
        let outcome = if result.is_some() { "hit" } else { "miss" };
        IndexMetrics::global().lookups.with_label_values(&[outcome]).inc();
        Ok(result)
    }

    async fn lookup_once(&self, trace: &TraceKey) -> Result<Option<TraceSpan>> {
        let manifest = self.newest_manifest().await?;
        let mut keys: Vec<String> = manifest.buckets.get(&format!("{:02x}", trace[0])).cloned().unwrap_or_default();
        keys.extend(self.l0_segments().await?.into_iter().filter(|k| !manifest.merged_l0.contains_key(k)));
        let mut found: Option<TraceSpan> = None;
        for key in keys {
            let entries = self.read_file(&key).await?;
            if let Some(e) = segment::find(&entries, trace) {
                found = Some(match found {
                    None => TraceSpan { first_start_us: e.first_start_us, last_start_us: e.last_start_us, files: 1 },
                    Some(s) => TraceSpan {
                        first_start_us: s.first_start_us.min(e.first_start_us),
                        last_start_us: s.last_start_us.max(e.last_start_us),
                        files: s.files + 1,
                    },
                });
            }
        }
        Ok(found)
    }

    /// Figures for the health route.
    pub async fn health(&self) -> Result<IndexHealth> {
        let manifest = self.newest_manifest().await?;
        let unmerged = self.l0_segments().await?.into_iter().filter(|k| !manifest.merged_l0.contains_key(k)).count();
        Ok(IndexHealth {
            generation: manifest.generation,
            last_compaction_ms: (manifest.generation > 0).then_some(manifest.created_at_ms),
            runs: manifest.buckets.values().map(Vec::len).sum(),
            entries: manifest.entries,
            unmerged_segments: unmerged,
        })
    }
}

fn poisoned() -> StorageError {
    StorageError::CorruptRecord { path: root(), reason: "the trace-index cache lock is poisoned".into() }
}

#[cfg(test)]
mod tests;
