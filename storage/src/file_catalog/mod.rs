//! The catalog of data files: which Parquet files, in which tier, hold the rows of a table.
//! It is the single source of truth for what a query reads.
//!
//! The unit of the catalog is one **table-hour** (a *unit*): the directory
//! `<table>/[resolution=…/]date=YYYY-MM-DD/hour=HH` that the workers write into. A unit's
//! visible files are
//!
//! * the files its latest **manifest** names (`_catalog/manifests/<unit>/<generation>.json`,
//!   in the hot tier), in whichever tier each one lives, plus
//! * every Parquet file of the unit in the hot tier that the manifest does not list as
//!   **replaced** (fresh batches: a batch file is published by rename only once its batch
//!   record committed it, see [`crate::commit_log`]).
//!
//! A unit that the lifecycle never touched has no manifest: its visible files are its hot
//! files. Every lifecycle step on a unit (compaction, a move between tiers, downsampling,
//! retention) is one **manifest commit**: it writes its new files first under names no
//! reader looks at (they are not in any manifest yet), then creates manifest generation
//! `g + 1` with `PutMode::Create`. That PUT is the step's atomic commit point: a reader sees
//! either generation `g` (the old files) or `g + 1` (the new ones), never both and never
//! neither; of two jobs racing on one unit exactly one commits, and the other's files are
//! garbage. Replaced files are deleted only [`GC_GRACE_MS`] after the generation that
//! replaced them, longer than any query may run, so a query that read generation `g` finds
//! every file it names. A crash at any step leaves the old or the new state, plus garbage
//! that [`FileCatalog::collect_garbage`] removes.
//!
//! Readers read the manifest first and list the hot files second: a hot file replaced
//! after the manifest was read is still there (grace), and a hot file published after it
//! holds rows no manifest has yet.

mod gc;
pub mod table;
pub mod time_range;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use callscope_schemas::Dataset;
use serde::{Deserialize, Serialize};

use crate::catalog::{CATALOG_ROOT, CatalogDir, CatalogKey};
use crate::layout::HourPartition;
use crate::tier::{ObjectInfo, Tier};
use crate::tiers::{TierName, Tiers};
use crate::{Result, StorageError};

pub use time_range::TimeRange;

/// How long replaced files stay readable after the manifest that replaced them (queries
/// are cut off well before: see the query API's time limit).
pub const GC_GRACE_MS: i64 = 10 * 60_000;

/// A table of stored data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataTable {
    /// The raw events of a dataset.
    Events(Dataset),
    /// The metric roll-ups (`metric_rollups/resolution=…/…`).
    Rollups,
}

impl DataTable {
    pub const ALL: [DataTable; 4] = [
        DataTable::Events(Dataset::Metrics),
        DataTable::Events(Dataset::Spans),
        DataTable::Events(Dataset::Alerts),
        DataTable::Rollups,
    ];

    /// The table's name in SQL and its first path segment in every tier.
    pub fn name(self) -> &'static str {
        match self {
            DataTable::Events(dataset) => dataset.name(),
            DataTable::Rollups => callscope_schemas::rollup::ROLLUP_TABLE,
        }
    }

    pub fn from_name(name: &str) -> Option<DataTable> {
        DataTable::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Hive partition columns, outermost first (values come from the unit's directory).
    pub fn partition_columns(self) -> &'static [&'static str] {
        match self {
            DataTable::Events(_) => &["date", "hour"],
            DataTable::Rollups => &["resolution", "date", "hour"],
        }
    }

    /// Schema of the Parquet files (without the partition columns).
    pub fn file_schema(self) -> SchemaRef {
        match self {
            DataTable::Events(dataset) => callscope_schemas::arrow_schema::schema(dataset),
            DataTable::Rollups => callscope_schemas::rollup::rollup_schema(),
        }
    }

    /// The column whose value placed a row in its hour, and how many of its units make a
    /// millisecond.
    pub fn time_column(self) -> (&'static str, i64) {
        match self {
            DataTable::Events(Dataset::Metrics) => ("timestamp_ms", 1),
            DataTable::Events(Dataset::Spans) => ("start_time_us", 1000),
            DataTable::Events(Dataset::Alerts) => ("starts_at_ms", 1),
            DataTable::Rollups => ("window_start_ms", 1),
        }
    }

    /// The same instant as a timestamp column (what SQL users filter on).
    pub fn timestamp_column(self) -> &'static str {
        match self {
            DataTable::Events(Dataset::Metrics) => "event_time",
            DataTable::Events(Dataset::Spans) => "start_time",
            DataTable::Events(Dataset::Alerts) => "starts_at",
            DataTable::Rollups => "window_start",
        }
    }

    /// How compacted files are sorted: by series (spans: by trace), then time.
    pub fn sort_columns(self) -> &'static [&'static str] {
        match self {
            DataTable::Events(Dataset::Metrics) => &["name", "service", "labels_key", "timestamp_ms"],
            DataTable::Events(Dataset::Spans) => &["trace_id", "start_time_us"],
            DataTable::Events(Dataset::Alerts) => &["alert_name", "service", "starts_at_ms"],
            DataTable::Rollups => &["name", "service", "labels_key", "window_start_ms"],
        }
    }

    /// Columns that identify one series (spans: one trace): counted per compacted file.
    pub fn series_columns(self) -> &'static [&'static str] {
        match self {
            DataTable::Events(Dataset::Metrics) | DataTable::Rollups => &["name", "service", "labels_key"],
            DataTable::Events(Dataset::Spans) => &["trace_id"],
            DataTable::Events(Dataset::Alerts) => &["alert_name", "service"],
        }
    }

    /// Columns that point lookups filter by equality: compacted files carry bloom filters
    /// on them.
    pub fn bloom_filter_columns(self) -> &'static [&'static str] {
        match self {
            DataTable::Events(Dataset::Metrics) | DataTable::Rollups => &["name", "service"],
            DataTable::Events(Dataset::Spans) => &["trace_id", "service"],
            DataTable::Events(Dataset::Alerts) => &["alert_name"],
        }
    }
}

/// One data file the catalog names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogFile {
    pub tier: TierName,
    /// Key relative to its tier.
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    /// Time range of the rows (the table's time column, in unix ms).
    pub min_time_ms: i64,
    pub max_time_ms: i64,
    /// Distinct series (metrics, roll-ups, alerts) or trace ids (spans) in the file.
    pub series: u64,
    /// The lifecycle job that wrote it.
    pub produced_by: String,
    /// For a file shared by the table-hours of one day ([`crate::lifecycle::day_files`]):
    /// the object's size. The unit reads only the rows of its own hour; `rows`, `bytes`,
    /// `series` and the time range above are its share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_object_bytes: Option<u64>,
}

/// One generation of a unit's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `<table>/[resolution=…/]date=…/hour=…`
    pub unit: String,
    pub generation: u64,
    /// The unit's files outside the hot listing.
    pub files: Vec<CatalogFile>,
    /// Hot files whose rows `files` hold (hidden from readers, deleted after the grace).
    pub replaced_hot: BTreeSet<String>,
    /// Files of earlier generations that this one no longer names (deleted after the grace;
    /// kept here as the record of what the step replaced).
    pub superseded: Vec<CatalogFile>,
    /// Bytes of the hot files this unit's rows were first written as (for compression
    /// statistics), summed over generations.
    pub raw_bytes: u64,
    /// For a table-hour made from another (downsampling): that table-hour and the state of
    /// it this one was made from, so that a changed source is downsampled again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived_from: Option<String>,
    /// For a roll-up table-hour: metric names whose rows it no longer holds, dropped after
    /// downsampling because their windows held too few samples to earn their keep (see
    /// [`crate::lifecycle::sparse`]). Queries answer those names for this hour from raw
    /// samples; every later generation of the unit keeps the list.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub dropped_names: BTreeSet<String>,
    /// For a generation that only dropped sparse names: the state of the unit its
    /// downsampled hours were made from, which dropping changed in no window they hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downsampled_as: Option<String>,
    /// The job that committed this generation, and what it did.
    pub job: String,
    pub step: String,
    pub created_at_ms: i64,
}

impl Manifest {
    /// The generation after `previous` (the first when `None`) of `unit`, committed by
    /// `job`'s `step`: it replaces the unit's `fresh_hot` files and carries what every
    /// generation keeps (replaced hot files, raw bytes, the source it was made from, the
    /// names dropped from it). It names no files yet.
    pub fn next(
        previous: Option<&Manifest>,
        unit: &str,
        fresh_hot: &[ObjectInfo],
        job: &str,
        step: &str,
        now_ms: i64,
    ) -> Manifest {
        let mut replaced_hot = previous.map(|m| m.replaced_hot.clone()).unwrap_or_default();
        replaced_hot.extend(fresh_hot.iter().map(|o| o.key.clone()));
        Manifest {
            unit: unit.to_string(),
            generation: previous.map_or(1, |m| m.generation + 1),
            files: Vec::new(),
            replaced_hot,
            superseded: Vec::new(),
            raw_bytes: previous.map_or(0, |m| m.raw_bytes) + fresh_hot.iter().map(|o| o.size).sum::<u64>(),
            derived_from: previous.and_then(|m| m.derived_from.clone()),
            dropped_names: previous.map(|m| m.dropped_names.clone()).unwrap_or_default(),
            downsampled_as: None,
            job: job.to_string(),
            step: step.to_string(),
            created_at_ms: now_ms,
        }
    }

    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
}

/// Where roll-ups of one resolution are gone ([`FileCatalog::rollup_gaps`]), hours by
/// start (ms).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupGaps {
    /// Hours whose roll-ups were deleted whole.
    pub deleted: BTreeSet<i64>,
    /// Hours some names were dropped from (as sparse), and those names.
    pub dropped: BTreeMap<i64, BTreeSet<String>>,
}

impl RollupGaps {
    /// The hours without roll-ups of the metric `name`.
    pub fn hours_without(&self, name: &str) -> BTreeSet<i64> {
        let dropped = self.dropped.iter().filter(|(_, names)| names.contains(name)).map(|(hour, _)| *hour);
        self.deleted.iter().copied().chain(dropped).collect()
    }
}

/// Where the files shared by the table-hours of one day live
/// ([`crate::lifecycle::day_files`]): `<table>/[resolution=…/]date=…/day`, beside the hours'
/// own directories (so that no hour's garbage collection takes them).
pub fn shared_day_dir(unit: &str) -> Option<String> {
    let (day, hour) = unit.rsplit_once('/')?;
    hour.starts_with("hour=").then(|| format!("{day}/day"))
}

/// A file a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibleFile {
    pub tier: TierName,
    pub key: String,
    /// The object's size.
    pub size: u64,
    /// The object holds rows of other hours of the day too: read only the unit's hour.
    pub shared: bool,
}

/// The visible state of one unit at one instant.
#[derive(Debug, Clone)]
pub struct UnitSnapshot {
    pub unit: String,
    pub hour: HourPartition,
    pub manifest: Option<Arc<Manifest>>,
    /// Hot files not replaced by the manifest (fresh batches).
    pub fresh_hot: Vec<ObjectInfo>,
    /// Garbage in sight: replaced hot files still listed, and manifests older than the
    /// newest (what tells the lifecycle that [`FileCatalog::collect_garbage`] has work).
    pub hidden_hot: usize,
    pub older_manifests: usize,
}

impl UnitSnapshot {
    /// Whether garbage collection has anything to look at in this unit.
    pub fn has_garbage(&self) -> bool {
        self.hidden_hot > 0 || self.older_manifests > 0
    }
}

impl UnitSnapshot {
    /// Every file a query of this unit reads.
    pub fn files(&self) -> Vec<VisibleFile> {
        let mut files: Vec<VisibleFile> = self
            .manifest
            .iter()
            .flat_map(|m| m.files.iter())
            .map(|f| VisibleFile {
                tier: f.tier,
                key: f.key.clone(),
                size: f.shared_object_bytes.unwrap_or(f.bytes),
                shared: f.shared_object_bytes.is_some(),
            })
            .collect();
        files.extend(self.fresh_hot.iter().map(|o| VisibleFile {
            tier: TierName::Hot,
            key: o.key.clone(),
            size: o.size,
            shared: false,
        }));
        files
    }

    /// Hive partition values (`resolution`, `date`, `hour`) of the unit, in the order of
    /// [`DataTable::partition_columns`].
    pub fn partition_values(&self, table: DataTable) -> Vec<String> {
        table
            .partition_columns()
            .iter()
            .map(|col| {
                self.unit
                    .split('/')
                    .find_map(|part| part.strip_prefix(&format!("{col}=")[..]))
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }
}

/// What garbage collection removed from one unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub files_deleted: u64,
    pub bytes_deleted: u64,
    pub manifests_deleted: u64,
}

/// The file catalog over the four tiers.
#[derive(Debug, Clone)]
pub struct FileCatalog {
    tiers: Tiers,
    /// Manifests are immutable once written: read each once.
    cache: Arc<Mutex<HashMap<String, Arc<Manifest>>>>,
}

/// Manifests kept in memory per catalog (a year of hourly units of every table is ~35k).
const CACHE_LIMIT: usize = 50_000;

impl FileCatalog {
    pub fn new(tiers: Tiers) -> FileCatalog {
        FileCatalog { tiers, cache: Arc::default() }
    }

    pub fn tiers(&self) -> &Tiers {
        &self.tiers
    }

    fn hot(&self) -> &Tier {
        &self.tiers.hot
    }

    /// The units of a table that may hold rows in `range` (all units when `None`), each
    /// with its visible files.
    pub async fn snapshot(&self, table: DataTable, range: Option<TimeRange>) -> Result<Vec<UnitSnapshot>> {
        let manifests_root = format!("{CATALOG_ROOT}/manifests/{}", table.name());
        let manifest_dirs = self.list_units(&manifests_root, table, range).await?;
        let mut latest: BTreeMap<String, (Arc<Manifest>, usize)> = BTreeMap::new();
        for (dir, objects) in manifest_dirs {
            let unit = dir.strip_prefix(&format!("{CATALOG_ROOT}/manifests/")[..]).unwrap_or(&dir).to_string();
            let generations: Vec<i64> = objects.iter().filter_map(|o| CatalogKey::offset_of(&o.key)).collect();
            let Some(&generation) = generations.iter().max() else { continue };
            let manifest = self.manifest(&unit, generation as u64).await?;
            latest.insert(unit, (manifest, generations.len() - 1));
        }
        // Hot files are listed after the manifests were read (see the module docs).
        let mut hot = self.list_units(table.name(), table, range).await?;
        let units: BTreeSet<String> = latest.keys().chain(hot.keys()).cloned().collect();
        let mut snapshots = Vec::with_capacity(units.len());
        for unit in units {
            let Some(hour) = HourPartition::parse_dir(&unit) else { continue };
            if let Some(range) = range
                && !range.overlaps(hour.start_ms(), hour.end_ms())
            {
                continue;
            }
            let (manifest, older_manifests) = match latest.remove(&unit) {
                Some((m, older)) => (Some(m), older),
                None => (None, 0),
            };
            let listed = hot.remove(&unit).unwrap_or_default();
            let (fresh_hot, hidden_hot) = split_hot(listed, manifest.as_deref());
            snapshots.push(UnitSnapshot { unit, hour, manifest, hidden_hot, fresh_hot, older_manifests });
        }
        Ok(snapshots)
    }

    /// The visible state of one unit.
    pub async fn unit_snapshot(&self, unit: &str) -> Result<UnitSnapshot> {
        let hour = HourPartition::parse_dir(unit).ok_or_else(|| StorageError::CorruptRecord {
            path: unit.to_string(),
            reason: "not a table-hour directory (no date=…/hour=…)".into(),
        })?;
        let dir = CatalogDir::Manifests { unit: unit.to_string() }.path();
        let generations: Vec<i64> =
            self.hot().list(&format!("{dir}/")).await?.iter().filter_map(|k| CatalogKey::offset_of(k)).collect();
        let manifest = match generations.iter().max() {
            Some(&generation) => Some(self.manifest(unit, generation as u64).await?),
            None => None,
        };
        let listed = self.hot().list_meta(&format!("{unit}/")).await?;
        let (fresh_hot, hidden_hot) = split_hot(listed, manifest.as_deref());
        let older_manifests = generations.len().saturating_sub(1);
        Ok(UnitSnapshot { unit: unit.to_string(), hour, manifest, fresh_hot, hidden_hot, older_manifests })
    }

    async fn manifest(&self, unit: &str, generation: u64) -> Result<Arc<Manifest>> {
        let key = CatalogKey::Manifest { unit: unit.to_string(), generation }.path();
        if let Some(found) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(found.clone());
        }
        let bytes = self.hot().get(&key).await?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| StorageError::CorruptRecord { path: key.clone(), reason: e.to_string() })?;
        let manifest = Arc::new(manifest);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, manifest.clone());
        Ok(manifest)
    }

    /// Commits a new generation of a unit (create-only). Returns `Ok(false)` when another
    /// job committed that generation first: this job lost and its files are garbage.
    pub async fn commit(&self, manifest: &Manifest) -> Result<bool> {
        let key = CatalogKey::Manifest { unit: manifest.unit.clone(), generation: manifest.generation }.path();
        let bytes = serde_json::to_vec_pretty(manifest)
            .map_err(|e| StorageError::CorruptRecord { path: key.clone(), reason: e.to_string() })?;
        match self.hot().put_durable(&key, Bytes::from(bytes), true).await {
            Ok(()) => Ok(true),
            Err(StorageError::ObjectStore(object_store::Error::AlreadyExists { .. })) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Downsampled roll-ups (table-hours made by the lifecycle's `downsample` step) that
    /// meet `range`: resolution (ms) → start (ms) of every hour it holds. Resolutions in
    /// `skip` (the ones the workers write) are not looked at.
    pub async fn downsampled_hours(&self, range: TimeRange, skip: &[i64]) -> Result<BTreeMap<i64, BTreeSet<i64>>> {
        let root = format!("{CATALOG_ROOT}/manifests/{}", DataTable::Rollups.name());
        let mut out: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
        for dir in self.hot().list_dirs(&format!("{root}/")).await? {
            let Some(resolution) = crate::layout::rollup_resolution_ms(&dir) else { continue };
            if resolution <= 0 || skip.contains(&resolution) {
                continue;
            }
            for (hour, manifest) in self.latest_manifests(&dir, range).await? {
                if manifest.derived_from.is_some() && !manifest.files.is_empty() {
                    out.entry(resolution).or_default().insert(hour.start_ms());
                }
            }
        }
        Ok(out)
    }

    /// Where the roll-ups of `resolution` (ms) are gone in the hours meeting `range`: hours
    /// deleted whole (their newest manifest is a deletion: retention, or a downsampled
    /// source past its `delete_source_after`), and names dropped from an hour as sparse.
    /// Queries answer those from other sources.
    pub async fn rollup_gaps(&self, resolution: i64, range: TimeRange) -> Result<RollupGaps> {
        let label = callscope_schemas::rollup::resolution_label(resolution);
        let dir = format!("{CATALOG_ROOT}/manifests/{}/resolution={label}", DataTable::Rollups.name());
        let mut gaps = RollupGaps::default();
        for (hour, m) in self.latest_manifests(&dir, range).await? {
            if m.step == "delete" && m.files.is_empty() {
                gaps.deleted.insert(hour.start_ms());
            } else if !m.dropped_names.is_empty() {
                gaps.dropped.insert(hour.start_ms(), m.dropped_names.clone());
            }
        }
        Ok(gaps)
    }

    /// The newest manifest of every unit under the manifest directory `dir` whose hour
    /// meets `range`.
    async fn latest_manifests(&self, dir: &str, range: TimeRange) -> Result<Vec<(HourPartition, Arc<Manifest>)>> {
        let mut latest: BTreeMap<String, u64> = BTreeMap::new();
        for object in self.list_dates(dir, Some(range)).await? {
            let (Some((unit_dir, _)), Some(generation)) =
                (object.key.rsplit_once('/'), CatalogKey::offset_of(&object.key))
            else {
                continue;
            };
            let entry = latest.entry(unit_dir.to_string()).or_default();
            *entry = (*entry).max(generation as u64);
        }
        let mut out = Vec::with_capacity(latest.len());
        for (unit_dir, generation) in latest {
            let unit = unit_dir.strip_prefix(&format!("{CATALOG_ROOT}/manifests/")[..]).unwrap_or(&unit_dir);
            let Some(hour) = HourPartition::parse_dir(unit) else { continue };
            if range.overlaps(hour.start_ms(), hour.end_ms()) {
                out.push((hour, self.manifest(unit, generation).await?));
            }
        }
        Ok(out)
    }

    /// The hot tier's objects under `prefix/`: only under the `date=` directories `range`
    /// touches when it is bounded and short enough, else all of them.
    async fn list_dates(&self, prefix: &str, range: Option<TimeRange>) -> Result<Vec<ObjectInfo>> {
        match range.and_then(|r| r.dates()) {
            Some(dates) => {
                let mut listed = Vec::new();
                for date in dates {
                    listed.extend(self.hot().list_meta(&format!("{prefix}/date={date}/")).await?);
                }
                Ok(listed)
            }
            None => self.hot().list_meta(&format!("{prefix}/")).await,
        }
    }

    /// Lists the objects under `root` (a table directory in the hot tier, or its manifest
    /// directory), grouped by unit directory; only the dates `range` touches are listed.
    async fn list_units(
        &self,
        root: &str,
        table: DataTable,
        range: Option<TimeRange>,
    ) -> Result<BTreeMap<String, Vec<ObjectInfo>>> {
        let tier = self.hot();
        let prefixes = match table {
            DataTable::Rollups => tier.list_dirs(&format!("{root}/")).await?,
            DataTable::Events(_) => vec![root.to_string()],
        };
        let mut listed = Vec::new();
        for prefix in prefixes {
            listed.extend(self.list_dates(&prefix, range).await?);
        }
        let mut units: BTreeMap<String, Vec<ObjectInfo>> = BTreeMap::new();
        for object in listed {
            if let Some((dir, _)) = object.key.rsplit_once('/') {
                units.entry(dir.to_string()).or_default().push(object);
            }
        }
        Ok(units)
    }
}

/// Splits a unit's hot listing into fresh Parquet files and the number of replaced ones.
fn split_hot(listed: Vec<ObjectInfo>, manifest: Option<&Manifest>) -> (Vec<ObjectInfo>, usize) {
    let (fresh, hidden): (Vec<ObjectInfo>, Vec<ObjectInfo>) = listed
        .into_iter()
        .filter(|o| o.key.ends_with(".parquet"))
        .partition(|o| manifest.is_none_or(|m| !m.replaced_hot.contains(&o.key)));
    (fresh, hidden.len())
}

/// The generation a lifecycle-written file name carries (`g<generation>-…`).
pub fn generation_of(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?;
    name.strip_prefix('g')?.split('-').next()?.parse().ok()
}

/// The key of a file a lifecycle job writes into a unit: `<unit>/g<generation>-<job>-<n>.parquet`.
pub fn lifecycle_file_key(unit: &str, generation: u64, job: &str, n: usize) -> String {
    format!("{unit}/g{generation:06}-{}-{n:03}.parquet", crate::layout::sanitize(job))
}

#[cfg(test)]
mod tests;
