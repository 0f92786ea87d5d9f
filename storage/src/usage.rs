//! What the tiers hold, per tier and table, as the file catalog sees it: files, rows,
//! bytes, time range, and how much smaller the rows became than the batch files they were
//! first written as.

use std::collections::BTreeMap;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use parquet::file::metadata::ParquetMetaDataReader;
use serde::Serialize;

use crate::file_catalog::{DataTable, FileCatalog};
use crate::layout::rollup_resolution_ms;
use crate::tier::Tier;
use crate::tiers::TierName;
use crate::{Result, StorageError};

/// The visible data of one table in one tier.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TierTableUsage {
    pub tier: String,
    pub table: String,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Bytes per row (per sample, for metrics); `null` with no rows.
    pub bytes_per_row: Option<f64>,
    /// Bytes of the batch files these rows were first written as, over `bytes` (hot files
    /// count as 1.0); `null` with no bytes.
    pub compression_ratio: Option<f64>,
    /// Time range of the rows (unix ms); `null` with no rows.
    pub oldest_ms: Option<i64>,
    pub newest_ms: Option<i64>,
    /// Table-hours with data in this tier.
    pub hours: u64,
    #[serde(skip)]
    pub raw_bytes: u64,
    /// Of `bytes`, those of downsampled hours (made by the lifecycle, never first written
    /// by the workers, so no `raw_bytes` of their own).
    #[serde(skip)]
    pub derived_bytes: u64,
}

/// Rows of a Parquet file, from its footer (one ranged read of its last 64 KiB, or two
/// when the footer is larger).
async fn footer_rows(tier: &Tier, key: &str, size: u64) -> Result<u64> {
    let corrupt = |reason: &str| StorageError::CorruptRecord { path: key.to_string(), reason: reason.to_string() };
    if size < 12 {
        return Err(corrupt("too small to be Parquet"));
    }
    let path = tier.path(key);
    let tail = tier.store().get_range(&path, size.saturating_sub(64 * 1024)..size).await?;
    let n = tail.len();
    if &tail[n - 4..] != b"PAR1" {
        return Err(corrupt("no Parquet footer"));
    }
    let footer_len = u32::from_le_bytes([tail[n - 8], tail[n - 7], tail[n - 6], tail[n - 5]]) as usize;
    let metadata = if footer_len + 8 <= n {
        ParquetMetaDataReader::decode_metadata(&tail[n - 8 - footer_len..n - 8])?
    } else {
        let start = size.checked_sub(8 + footer_len as u64).ok_or_else(|| corrupt("footer longer than the file"))?;
        let bytes = tier.store().get_range(&path, start..size - 8).await?;
        ParquetMetaDataReader::decode_metadata(&bytes)?
    };
    Ok(metadata.file_metadata().num_rows().max(0) as u64)
}

/// Usage of every table in every tier (footers of fresh hot files are read, a few at a
/// time; every other figure comes from the manifests).
pub async fn collect(catalog: &FileCatalog) -> Result<Vec<TierTableUsage>> {
    let mut usage: BTreeMap<(TierName, &'static str), TierTableUsage> = BTreeMap::new();
    let mut shared_seen = std::collections::BTreeSet::new();
    for table in DataTable::ALL {
        let units = catalog.snapshot(table, None).await?;
        for unit in &units {
            let mut tiers_seen = Vec::new();
            if let Some(manifest) = &unit.manifest {
                let total: u64 = manifest.files.iter().map(|f| f.bytes).sum();
                for file in &manifest.files {
                    let entry = usage.entry((file.tier, table.name())).or_default();
                    // A day file shared by several hours is one file; its bytes are shared out.
                    if file.shared_object_bytes.is_none() || shared_seen.insert((file.tier, file.key.clone())) {
                        entry.files += 1;
                    }
                    entry.rows += file.rows;
                    entry.bytes += file.bytes;
                    if manifest.derived_from.is_some() {
                        entry.derived_bytes += file.bytes;
                    }
                    // The unit's first-written bytes, shared out by size.
                    if total > 0 {
                        entry.raw_bytes += (manifest.raw_bytes as f64 * file.bytes as f64 / total as f64) as u64;
                    }
                    widen(entry, file.min_time_ms, file.max_time_ms);
                    tiers_seen.push(file.tier);
                }
            }
            let files: Vec<(String, u64)> = unit.fresh_hot.iter().map(|o| (o.key.clone(), o.size)).collect();
            let rows: Vec<u64> = futures::stream::iter(files)
                .map(|(key, size)| {
                    let hot = catalog.tiers().hot.clone();
                    async move { footer_rows(&hot, &key, size).await }
                })
                .buffered(8)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_>>()?;
            for (object, rows) in unit.fresh_hot.iter().zip(rows) {
                let entry = usage.entry((TierName::Hot, table.name())).or_default();
                entry.files += 1;
                entry.rows += rows;
                entry.bytes += object.size;
                entry.raw_bytes += object.size;
                widen(entry, unit.hour.start_ms(), unit.hour.end_ms() - 1);
                tiers_seen.push(TierName::Hot);
            }
            tiers_seen.sort();
            tiers_seen.dedup();
            for tier in tiers_seen {
                if let Some(entry) = usage.get_mut(&(tier, table.name())) {
                    entry.hours += 1;
                }
            }
        }
    }
    Ok(usage
        .into_iter()
        .map(|((tier, table), mut u)| {
            u.tier = tier.to_string();
            u.table = table.to_string();
            u.bytes_per_row = (u.rows > 0).then(|| u.bytes as f64 / u.rows as f64);
            u.compression_ratio = (u.bytes > 0).then(|| u.raw_bytes as f64 / u.bytes as f64);
            u
        })
        .collect())
}

fn widen(entry: &mut TierTableUsage, min_ms: i64, max_ms: i64) {
    entry.oldest_ms = Some(entry.oldest_ms.map_or(min_ms, |o| o.min(min_ms)));
    entry.newest_ms = Some(entry.newest_ms.map_or(max_ms, |n| n.max(max_ms)));
}

/// What the workers wrote in the day before `now_ms`: the ingest rate the cost projection
/// extrapolates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestLastDay {
    /// Bytes of the batch files, per table.
    pub bytes: BTreeMap<String, u64>,
    /// Batch files (one per partition, table-hour and flush), every table.
    pub files: u64,
    /// Of `metric_rollups`' bytes, those of each resolution (ms).
    pub rollup_bytes: BTreeMap<i64, u64>,
    /// Per downsampled resolution (ms): the bytes of its hours over the bytes their source
    /// hours were first written as, over every downsampled hour the catalog holds.
    pub downsampled_ratio: BTreeMap<i64, f64>,
}

/// The bytes a unit's batch files were first written as: the fresh ones, and those a
/// lifecycle step replaced (their manifest keeps their size).
fn first_written(u: &crate::file_catalog::UnitSnapshot) -> u64 {
    u.fresh_hot.iter().map(|o| o.size).sum::<u64>() + u.manifest.as_ref().map_or(0, |m| m.raw_bytes)
}

/// The batch files of the table-hours of the day before `now_ms`, as first written: those
/// still in hot, and those a lifecycle step has replaced (their manifest keeps their size
/// and names).
pub async fn ingest_last_day(catalog: &FileCatalog, now_ms: i64) -> Result<IngestLastDay> {
    let mut out = IngestLastDay::default();
    for table in DataTable::ALL {
        let range = crate::file_catalog::TimeRange::new(now_ms - 86_400_000, now_ms);
        let units = catalog.snapshot(table, Some(range)).await?;
        let mut bytes = 0;
        for u in &units {
            let written = first_written(u);
            bytes += written;
            out.files += (u.fresh_hot.len() + u.manifest.as_ref().map_or(0, |m| m.replaced_hot.len())) as u64;
            if table == DataTable::Rollups
                && let Some(resolution) = rollup_resolution_ms(&u.unit)
                && written > 0
            {
                *out.rollup_bytes.entry(resolution).or_default() += written;
            }
        }
        out.bytes.insert(table.name().to_string(), bytes);
    }
    out.downsampled_ratio = downsampled_ratio(catalog).await?;
    Ok(out)
}

/// Per downsampled resolution: the bytes of its hours over the first-written bytes of the
/// source hours they were made from (named by their manifests' `derived_from`).
async fn downsampled_ratio(catalog: &FileCatalog) -> Result<BTreeMap<i64, f64>> {
    let units = catalog.snapshot(DataTable::Rollups, None).await?;
    let source_bytes: BTreeMap<&str, u64> = units.iter().map(|u| (u.unit.as_str(), first_written(u))).collect();
    let mut sums: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for u in &units {
        let Some(m) = &u.manifest else { continue };
        let (Some(derived_from), Some(resolution)) = (m.derived_from.as_deref(), rollup_resolution_ms(&u.unit)) else {
            continue;
        };
        let source = derived_from.split('@').next().unwrap_or_default();
        if let Some(&raw) = source_bytes.get(source).filter(|b| **b > 0) {
            let sum = sums.entry(resolution).or_default();
            sum.0 += m.files.iter().map(|f| f.bytes).sum::<u64>();
            sum.1 += raw;
        }
    }
    Ok(sums.into_iter().map(|(r, (bytes, raw))| (r, bytes as f64 / raw as f64)).collect())
}
