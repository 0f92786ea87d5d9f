//! Compaction (hot → warm) of one table-hour: its fresh hot files, merged with what the
//! unit already holds, become a few sorted, compressed files in the warm tier, committed
//! as the unit's next manifest generation (see [`crate::file_catalog`]).
//!
//! Late data for a unit compacted before is compacted again, never refused: when the late
//! files are small next to the unit's files (under a tenth of their bytes, and the unit has
//! fewer than [`MAX_APPENDED_FILES`] files) they become one more sorted file beside them;
//! otherwise the whole unit is merged and rewritten. A unit already moved to a colder tier
//! always takes its late data as an extra warm file.

use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext, col};
use futures::StreamExt;

use super::sorted_files::{FileLayout, SortedFileWriter};
use super::{Outcome, StepResult};
use crate::file_catalog::table::{CatalogTable, register_tier_stores};
use crate::file_catalog::{DataTable, FileCatalog, Manifest, UnitSnapshot};
use crate::tiers::TierName;
use crate::{Result, StorageError};

/// A unit with this many files is merged whole instead of taking one more.
pub const MAX_APPENDED_FILES: usize = 8;

/// Options of compaction.
#[derive(Debug, Clone, Copy)]
pub struct CompactOptions {
    pub layout: FileLayout,
    /// Memory the merge sort may hold before it spills to local disk.
    pub memory_limit: usize,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions { layout: FileLayout::default(), memory_limit: 256 << 20 }
    }
}

fn df_error(e: datafusion::error::DataFusionError) -> StorageError {
    StorageError::Query(Box::new(e))
}

/// Compacts one unit. `snapshot` is the unit as the caller saw it; the step re-reads it so
/// that what it commits is based on the newest generation.
pub async fn compact_unit(
    catalog: &FileCatalog,
    table: DataTable,
    unit: &str,
    job: &str,
    options: &CompactOptions,
    now_ms: i64,
    dry_run: bool,
) -> Result<StepResult> {
    let snapshot = catalog.unit_snapshot(unit).await?;
    if snapshot.fresh_hot.is_empty() {
        return Ok(StepResult::nothing());
    }
    let fresh_bytes: u64 = snapshot.fresh_hot.iter().map(|o| o.size).sum();
    let previous = snapshot.manifest.clone();
    let previous_files = previous.as_ref().map(|m| m.files.clone()).unwrap_or_default();
    let previous_bytes: u64 = previous_files.iter().map(|f| f.bytes).sum();
    let moved_on = previous_files.iter().any(|f| f.tier != TierName::Warm);
    let append = !previous_files.is_empty()
        && (moved_on || (fresh_bytes.saturating_mul(10) < previous_bytes && previous_files.len() < MAX_APPENDED_FILES));
    let input = UnitSnapshot { manifest: if append { None } else { previous.clone() }, ..snapshot.clone() };
    let bytes_read = fresh_bytes + if append { 0 } else { previous_bytes };
    let files_replaced = (snapshot.fresh_hot.len() + if append { 0 } else { previous_files.len() }) as u64;
    if dry_run {
        return Ok(StepResult { outcome: Outcome::Changed, bytes_read, files_replaced, ..StepResult::nothing() });
    }
    let generation = previous.as_ref().map_or(1, |m| m.generation + 1);

    let runtime =
        RuntimeEnvBuilder::new().with_memory_limit(options.memory_limit, 1.0).build_arc().map_err(df_error)?;
    register_tier_stores(&runtime, catalog.tiers());
    let ctx = SessionContext::new_with_config_rt(SessionConfig::new().with_target_partitions(2), runtime);
    let provider = CatalogTable::of_units(catalog.clone(), table, vec![input]);
    let file_schema = table.file_schema();
    let columns: Vec<&str> = file_schema.fields().iter().map(|f| f.name().as_str()).collect();
    let sorted = ctx
        .read_table(Arc::new(provider))
        .and_then(|df| df.select_columns(&columns))
        .and_then(|df| df.sort(table.sort_columns().iter().map(|c| col(*c).sort(true, false)).collect()))
        .map_err(df_error)?;
    let mut stream = sorted.execute_stream().await.map_err(df_error)?;
    let mut writer = SortedFileWriter::new(
        catalog.tiers().warm.clone(),
        TierName::Warm,
        table,
        unit,
        generation,
        job,
        options.layout,
    )?;
    while let Some(batch) = stream.next().await {
        writer.write(&batch.map_err(df_error)?).await?;
    }
    let written = writer.finish().await?;
    let rows: u64 = written.iter().map(|f| f.rows).sum();
    let bytes_written: u64 = written.iter().map(|f| f.bytes).sum();

    let mut files = if append { previous_files.clone() } else { Vec::new() };
    files.extend(written);
    let mut replaced_hot = previous.as_ref().map(|m| m.replaced_hot.clone()).unwrap_or_default();
    replaced_hot.extend(snapshot.fresh_hot.iter().map(|o| o.key.clone()));
    let manifest = Manifest {
        unit: unit.to_string(),
        generation,
        files,
        replaced_hot,
        superseded: if append { Vec::new() } else { previous_files },
        raw_bytes: previous.as_ref().map_or(0, |m| m.raw_bytes) + fresh_bytes,
        job: job.to_string(),
        step: "compact".into(),
        created_at_ms: now_ms,
    };
    if !catalog.commit(&manifest).await? {
        return Ok(StepResult { outcome: Outcome::LostRace, bytes_read, bytes_written, ..StepResult::nothing() });
    }
    tracing::debug!(unit, generation, rows, bytes_read, bytes_written, append, "compacted");
    Ok(StepResult { outcome: Outcome::Changed, rows, bytes_read, bytes_written, files_replaced, files_deleted: 0 })
}
