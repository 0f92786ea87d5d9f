//! The steps that rewrite a table-hour into another tier: **compaction** (hot → warm),
//! **cold** (dense encoding) and **archive** (maximum compression). Each reads the unit's
//! visible files, sorts them by series (spans: by trace) and time, writes new files into
//! the target tier and commits them as the unit's next manifest generation (see
//! [`crate::file_catalog`]).
//!
//! Roll-up table-hours are folded on the way: the rows of one window, series and Kafka
//! partition (the window's first emission and its late corrections) become one row.
//!
//! Late data for a unit compacted before is compacted again, never refused: when the late
//! files are small next to the unit's files (under a tenth of their bytes, and the unit has
//! fewer than [`MAX_APPENDED_FILES`] files) they become one more sorted file beside them;
//! otherwise the whole unit is merged and rewritten. A unit already moved to a colder tier
//! takes its late data as an extra warm file, merged in when the colder step runs again;
//! the archive step writes it as one more archive file and keeps the archived ones, so the
//! archive tier only ever gains files and a stock reader's glob over it is exact at every
//! moment (a merged rewrite would leave the replaced files beside the new ones for the
//! garbage collector's grace).

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext, col};
use futures::StreamExt;

use super::rollup_merge::merge_rollups;
use super::sorted_files::{FileLayout, SortedFileWriter};
use super::{Outcome, StepResult};
use crate::file_catalog::table::{CatalogTable, register_tier_stores};
use crate::file_catalog::{CatalogFile, DataTable, FileCatalog, Manifest, UnitSnapshot};
use crate::tiers::TierName;
use crate::{Result, StorageError};

/// A unit with this many files is merged whole instead of taking one more.
pub const MAX_APPENDED_FILES: usize = 8;

/// Options of the rewriting steps.
#[derive(Debug, Clone, Copy)]
pub struct RewriteOptions {
    pub warm: FileLayout,
    pub cold: FileLayout,
    pub archive: FileLayout,
    /// Memory the merge sort may hold before it spills to local disk.
    pub memory_limit: usize,
}

impl Default for RewriteOptions {
    fn default() -> Self {
        RewriteOptions {
            warm: FileLayout::default(),
            // Cold and archive are read rarely and kept long: one page per column chunk
            // and zstd's strongest levels (bytes over write time).
            cold: FileLayout {
                target_rows: 512 * 1024,
                zstd_level: 19,
                row_group_rows: 128 * 1024,
                page_rows: 128 * 1024,
                dense: true,
            },
            archive: FileLayout {
                zstd_level: 19,
                row_group_rows: 1024 * 1024,
                page_rows: 1024 * 1024,
                ..FileLayout::default()
            },
            memory_limit: 256 << 20,
        }
    }
}

impl RewriteOptions {
    /// The layout of files written into `tier` (hot: none are; as warm).
    pub fn layout(&self, tier: TierName) -> FileLayout {
        match tier {
            TierName::Hot | TierName::Warm => self.warm,
            TierName::Cold => self.cold,
            TierName::Archive => self.archive,
        }
    }
}

/// Which rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    Compact,
    Cold,
    Archive,
}

impl Rewrite {
    pub fn name(self) -> &'static str {
        match self {
            Rewrite::Compact => "compact",
            Rewrite::Cold => "cold",
            Rewrite::Archive => "archive",
        }
    }

    fn tier(self) -> TierName {
        match self {
            Rewrite::Compact => TierName::Warm,
            Rewrite::Cold => TierName::Cold,
            Rewrite::Archive => TierName::Archive,
        }
    }
}

pub(super) fn df_error(e: datafusion::error::DataFusionError) -> StorageError {
    StorageError::Query(Box::new(e))
}

/// A DataFusion session over the catalog's tiers whose sort may hold `memory_limit` bytes.
fn session(catalog: &FileCatalog, memory_limit: usize) -> Result<SessionContext> {
    let runtime = RuntimeEnvBuilder::new().with_memory_limit(memory_limit, 1.0).build_arc().map_err(df_error)?;
    register_tier_stores(&runtime, catalog.tiers());
    Ok(SessionContext::new_with_config_rt(SessionConfig::new().with_target_partitions(2), runtime))
}

/// The rows of the units' files as they were in `units` (the file columns, without the
/// partition columns), read in a session whose sort may hold `memory_limit` bytes.
pub(super) fn units_rows(
    catalog: &FileCatalog,
    table: DataTable,
    units: Vec<UnitSnapshot>,
    memory_limit: usize,
) -> Result<DataFrame> {
    let ctx = session(catalog, memory_limit)?;
    let provider = Arc::new(CatalogTable::of_units(catalog.clone(), table, units));
    let file_schema = table.file_schema();
    let columns: Vec<&str> = file_schema.fields().iter().map(|f| f.name().as_str()).collect();
    ctx.read_table(provider).and_then(|df| df.select_columns(&columns)).map_err(df_error)
}

/// Writes `rows` (roll-ups, small enough to hold in memory) as files of generation
/// `generation` of `unit` into `tier`, laid out as `options` say for that tier.
pub(super) async fn write_rollups(
    catalog: &FileCatalog,
    tier: TierName,
    unit: &str,
    generation: u64,
    job: &str,
    options: &RewriteOptions,
    rows: Option<&RecordBatch>,
) -> Result<Vec<CatalogFile>> {
    let store = catalog.tiers().get(tier).clone();
    let layout = options.layout(tier);
    let mut writer = SortedFileWriter::new(store, tier, DataTable::Rollups, unit, generation, job, layout)?;
    if let Some(rows) = rows.filter(|r| r.num_rows() > 0) {
        writer.write(rows).await?;
    }
    writer.finish().await
}

/// Rewrites one unit as `rewrite` says (see the module docs). The step reads the unit's
/// newest state itself, so that what it commits follows the newest generation.
#[allow(clippy::too_many_arguments)]
pub async fn rewrite_unit(
    catalog: &FileCatalog,
    table: DataTable,
    unit: &str,
    job: &str,
    rewrite: Rewrite,
    options: &RewriteOptions,
    now_ms: i64,
    dry_run: bool,
) -> Result<StepResult> {
    let snapshot = catalog.unit_snapshot(unit).await?;
    let target = rewrite.tier();
    let previous = snapshot.manifest.clone();
    let previous_files = previous.as_ref().map(|m| m.files.clone()).unwrap_or_default();
    let fresh_bytes: u64 = snapshot.fresh_hot.iter().map(|o| o.size).sum();
    let previous_bytes: u64 = previous_files.iter().map(|f| f.bytes).sum();
    let settled = previous_files.iter().all(|f| f.tier >= target);
    if snapshot.fresh_hot.is_empty() && (settled || rewrite == Rewrite::Compact) {
        return Ok(StepResult::nothing());
    }
    // The earlier files that stay as they are: for compaction, all of them when the late
    // files are small next to them (or the hour is already colder); for the archive step
    // of an event table, those already archived, so that a stock reader globbing the
    // archive never sees a replaced file beside its replacement (the archive only gains
    // files). The others are read with the fresh files and superseded.
    let compact_append = rewrite == Rewrite::Compact
        && !previous_files.is_empty()
        && (previous_files.iter().any(|f| f.tier != TierName::Warm)
            || (fresh_bytes.saturating_mul(10) < previous_bytes && previous_files.len() < MAX_APPENDED_FILES));
    let kept: Vec<CatalogFile> = match rewrite {
        Rewrite::Compact if compact_append => previous_files.clone(),
        Rewrite::Archive if table != DataTable::Rollups && previous_files.len() < MAX_APPENDED_FILES => {
            previous_files.iter().filter(|f| f.tier == TierName::Archive).cloned().collect()
        }
        _ => Vec::new(),
    };
    let rest: Vec<CatalogFile> = previous_files.iter().filter(|f| !kept.contains(f)).cloned().collect();
    let input = UnitSnapshot {
        manifest: previous.as_ref().map(|m| Arc::new(Manifest { files: rest.clone(), ..(**m).clone() })),
        ..snapshot.clone()
    };
    let bytes_read = fresh_bytes + rest.iter().map(|f| f.bytes).sum::<u64>();
    let files_replaced = (snapshot.fresh_hot.len() + rest.len()) as u64;
    if dry_run {
        return Ok(StepResult { outcome: Outcome::Changed, bytes_read, files_replaced, ..StepResult::nothing() });
    }
    let next = Manifest::next(previous.as_deref(), unit, &snapshot.fresh_hot, job, rewrite.name(), now_ms);
    let generation = next.generation;

    let rows = units_rows(catalog, table, vec![input], options.memory_limit)?;
    let written = if table == DataTable::Rollups {
        // A roll-up table-hour is small (one row per window, series and partition): its
        // rows are folded in memory, every late correction into its window.
        let batches = rows.collect().await.map_err(df_error)?;
        let (folded, _) = merge_rollups(&batches, None)?;
        write_rollups(catalog, target, unit, generation, job, options, folded.as_ref()).await?
    } else {
        let store = catalog.tiers().get(target).clone();
        let mut writer = SortedFileWriter::new(store, target, table, unit, generation, job, options.layout(target))?;
        let sort = table.sort_columns().iter().map(|c| col(*c).sort(true, false)).collect();
        let mut stream = rows.sort(sort).map_err(df_error)?.execute_stream().await.map_err(df_error)?;
        while let Some(batch) = stream.next().await {
            writer.write(&batch.map_err(df_error)?).await?;
        }
        writer.finish().await?
    };
    let rows: u64 = written.iter().map(|f| f.rows).sum();
    let bytes_written: u64 = written.iter().map(|f| f.bytes).sum();

    let appended = !kept.is_empty();
    let mut files = kept;
    files.extend(written);
    let manifest = Manifest { files, superseded: rest, ..next };
    if !catalog.commit(&manifest).await? {
        return Ok(StepResult { outcome: Outcome::LostRace, bytes_read, bytes_written, ..StepResult::nothing() });
    }
    tracing::debug!(unit, generation, step = rewrite.name(), rows, bytes_read, bytes_written, appended, "rewrote");
    Ok(StepResult { outcome: Outcome::Changed, rows, bytes_read, bytes_written, files_replaced, files_deleted: 0 })
}
