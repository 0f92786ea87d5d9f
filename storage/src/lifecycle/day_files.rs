//! Day files: the roll-up hours of one day and resolution, packed into shared files in the
//! cold tier when the day is due for its `cold` step (every resolution but the one a
//! policy downsamples from: its hours' state is what their coarse hours were made from).
//!
//! A coarse roll-up hour is small: a 1-hour resolution holds one row per series, a
//! 15-minute one four. Written an hour per file, each file pays its own footer (about
//! 5 KB: the column chunks' metadata and statistics, the Arrow schema) and restates every
//! series' name, service and labels; `callscope bench storage` measured that half of the
//! coarse roll-ups' bytes in cold. A day per file pays them once, with each series' 24 or
//! 96 windows side by side (the identities run-length encoded, the values delta-encoded
//! within the series).
//!
//! The catalog's unit stays the table-hour. Each hour's next generation names the day's
//! files with its own share (`CatalogFile::shared_object_bytes`; rows, bytes and time range
//! are the hour's), and queries read such a file once for all the hours that name it,
//! keeping only those hours' rows ([`crate::file_catalog::table`]). The hours commit one by
//! one, each atomically: a query between two commits reads one hour from the day file
//! and the next from its own, every row once. An hour that changes later (late rows
//! downsampled again, the archive step, retention) gets files of its own and stops naming
//! the day file; the next `cold` run packs the day again. A day file that no hour names
//! any more is deleted by garbage collection once the grace has passed
//! ([`crate::file_catalog::FileCatalog::collect_shared_garbage`]).
//!
//! The step holds a day's roll-ups in memory; a day of more than [`MAX_DAY_ROWS`] keeps its
//! hours' own files. Packing runs after a job's other steps, so that a source hour's own
//! step (which may make its coarse hours again) comes first and the day is packed once.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::rewrite::{RewriteOptions, df_error, units_rows, write_rollups};
use super::rollup_merge::merge_rollups;
use super::{Outcome, StepResult};
use crate::file_catalog::{CatalogFile, DataTable, FileCatalog, Manifest, UnitSnapshot, shared_day_dir};
use crate::tiers::TierName;
use crate::{Result, StorageError};

/// The manifest step of a generation that names its day's files.
pub const STEP: &str = "day_files";

const HOUR_MS: i64 = 3_600_000;

/// Most rows a day is packed with: the step holds a day's roll-ups in memory (a row takes
/// about 150 B there), like the hour's own rewrite does an hour's. Beyond it (about
/// 80 000 series at 15 minutes), hours keep their own files.
pub const MAX_DAY_ROWS: u64 = 8_000_000;

/// Whether an hour of roll-ups goes into its day's files: whole in cold.
fn packable(unit: &UnitSnapshot) -> bool {
    unit.fresh_hot.is_empty()
        && unit.manifest.as_ref().is_some_and(|m| {
            m.step != "delete" && !m.files.is_empty() && m.files.iter().all(|f| f.tier == TierName::Cold)
        })
}

/// The keys of the shared files an hour names, if it names only shared files.
fn shared_keys(unit: &UnitSnapshot) -> Option<BTreeSet<&str>> {
    let files = &unit.manifest.as_ref()?.files;
    files.iter().all(|f| f.shared_object_bytes.is_some()).then(|| files.iter().map(|f| f.key.as_str()).collect())
}

/// Per hour (start ms) of a file: its rows, series and time range there.
#[derive(Default)]
struct HourShare {
    rows: u64,
    series: HashSet<u64>,
    min_time_ms: i64,
    max_time_ms: i64,
}

/// Reads back the time and series columns of a written day file: each hour's share.
async fn hour_shares(catalog: &FileCatalog, file: &CatalogFile) -> Result<BTreeMap<i64, HourShare>> {
    // A day of coarse roll-ups is small: read whole.
    let bytes = catalog.tiers().get(file.tier).get(&file.key).await?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let table = DataTable::Rollups;
    let (time_column, _) = table.time_column();
    let mut wanted = vec![time_column];
    wanted.extend(table.series_columns());
    let mask = ProjectionMask::columns(builder.parquet_schema(), wanted.iter().copied());
    let batches: Vec<RecordBatch> = builder.with_projection(mask).build()?.collect::<std::result::Result<_, _>>()?;
    let mut shares: BTreeMap<i64, HourShare> = BTreeMap::new();
    let missing = |c: &str| StorageError::CorruptRecord { path: file.key.clone(), reason: format!("no column {c}") };
    for batch in batches {
        let times = batch.column_by_name(time_column).ok_or_else(|| missing(time_column))?;
        let times = times.as_primitive_opt::<Int64Type>().ok_or_else(|| missing(time_column))?;
        let mut series = Vec::new();
        for column in table.series_columns() {
            let array = batch.column_by_name(column).ok_or_else(|| missing(column))?;
            series.push(arrow::compute::cast(array, &DataType::Utf8)?);
        }
        for row in 0..batch.num_rows() {
            let time = times.value(row);
            let share = shares.entry(time.div_euclid(HOUR_MS) * HOUR_MS).or_insert_with(|| HourShare {
                min_time_ms: time,
                max_time_ms: time,
                ..HourShare::default()
            });
            share.rows += 1;
            share.min_time_ms = share.min_time_ms.min(time);
            share.max_time_ms = share.max_time_ms.max(time);
            let mut hasher = DefaultHasher::new();
            for column in &series {
                let strings = column.as_string::<i32>();
                (!strings.is_null(row)).then(|| strings.value(row)).hash(&mut hasher);
            }
            share.series.insert(hasher.finish());
        }
    }
    Ok(shares)
}

/// Packs the roll-up hours of the day of `unit` (and its resolution) into shared files in
/// cold (see the module docs), unless they already name the same ones. Hours not whole in cold (or
/// with fresh files, or deleted) keep their own files.
pub async fn pack_day(
    catalog: &FileCatalog,
    unit: &str,
    job: &str,
    options: &RewriteOptions,
    now_ms: i64,
    dry_run: bool,
) -> Result<StepResult> {
    let (Some(day_dir), Some((day_prefix, _))) = (shared_day_dir(unit), unit.rsplit_once('/')) else {
        return Ok(StepResult::nothing());
    };
    let mut hours = Vec::new();
    for hour in 0..24 {
        let snapshot = catalog.unit_snapshot(&format!("{day_prefix}/hour={hour:02}")).await?;
        if packable(&snapshot) {
            hours.push(snapshot);
        }
    }
    let packed: BTreeSet<Option<BTreeSet<&str>>> = hours.iter().map(shared_keys).collect();
    if hours.len() < 2 || (packed.len() == 1 && packed.first().is_some_and(Option::is_some)) {
        return Ok(StepResult::nothing());
    }
    let day_rows: u64 = hours.iter().filter_map(|h| h.manifest.as_ref()).map(|m| m.rows()).sum();
    if day_rows > MAX_DAY_ROWS {
        tracing::info!(day = day_dir, rows = day_rows, "not packed: more rows than a day file holds in memory");
        return Ok(StepResult::nothing());
    }
    let previous: Vec<&CatalogFile> = hours.iter().filter_map(|h| h.manifest.as_ref()).flat_map(|m| &m.files).collect();
    // A day file shared by several hours is read (and counted) once.
    let read: BTreeMap<&str, u64> =
        previous.iter().map(|f| (f.key.as_str(), f.shared_object_bytes.unwrap_or(f.bytes))).collect();
    let bytes_read: u64 = read.values().sum();
    let files_replaced = previous.len() as u64;
    if dry_run {
        return Ok(StepResult { outcome: Outcome::Changed, bytes_read, files_replaced, ..StepResult::nothing() });
    }
    let batches = units_rows(catalog, DataTable::Rollups, hours.clone(), options.memory_limit)?
        .collect()
        .await
        .map_err(df_error)?;
    let (merged, _) = merge_rollups(&batches, None)?;
    // Named by the time they are written, which garbage collection reads back.
    let generation = u64::try_from(now_ms).unwrap_or_default();
    let written = write_rollups(catalog, TierName::Cold, &day_dir, generation, job, options, merged.as_ref()).await?;
    let bytes_written: u64 = written.iter().map(|f| f.bytes).sum();
    let mut per_file = Vec::with_capacity(written.len());
    for file in &written {
        per_file.push((file, hour_shares(catalog, file).await?));
    }

    let mut result = StepResult { bytes_read, bytes_written, files_replaced, ..StepResult::nothing() };
    for hour in &hours {
        let Some(previous) = hour.manifest.as_deref() else { continue };
        let start = hour.hour.start_ms();
        let mut files = Vec::new();
        for (file, shares) in &per_file {
            let Some(share) = shares.get(&start) else { continue };
            files.push(CatalogFile {
                rows: share.rows,
                bytes: (file.bytes as f64 * share.rows as f64 / file.rows.max(1) as f64).round() as u64,
                min_time_ms: share.min_time_ms,
                max_time_ms: share.max_time_ms,
                series: share.series.len() as u64,
                shared_object_bytes: Some(file.bytes),
                ..(*file).clone()
            });
        }
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        if rows != previous.rows() {
            // Not what the hour held when read (the read above is of this very state, so
            // this is a bug): its own files stay.
            tracing::warn!(unit = hour.unit, rows, held = previous.rows(), "not packed: the day file's rows differ");
            continue;
        }
        let manifest = Manifest {
            files,
            superseded: previous.files.clone(),
            ..Manifest::next(Some(previous), &hour.unit, &[], job, STEP, now_ms)
        };
        if catalog.commit(&manifest).await? {
            result.outcome = Outcome::Changed;
            result.rows += rows;
        } else if result.outcome == Outcome::NothingToDo {
            result.outcome = Outcome::LostRace;
        }
    }
    tracing::debug!(day = day_dir, hours = hours.len(), rows = result.rows, bytes_read, bytes_written, "packed a day");
    Ok(result)
}
