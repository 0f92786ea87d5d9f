//! Dropping sparse names from downsampled roll-up hours.
//!
//! A 1-minute roll-up row of a series scraped every 15 s summarises 4 samples with five
//! numbers and a sketch: it weighs more than the samples it stands for (1.2 to 1.5 times,
//! measured by `callscope bench storage`), and warm files sorted by series answer a
//! 1-minute step from the samples about as fast. Such rows earn no keep once the hour's
//! coarser roll-ups are written. So, after an hour of resolution `from` is downsampled, the
//! names whose windows there hold fewer than `below` samples on average are dropped from
//! it, when the hour's raw samples of that name are all there (at least as many as its
//! roll-ups count: span metrics, which exist only as roll-ups, are never dropped, nor are
//! names whose raw samples retention took).
//!
//! The drop is one manifest commit of the hour's next generation, its files rewritten
//! without those names (an hour with nothing to drop gets a generation of the same files,
//! so that it is not read again until it changes); the manifest lists them (`dropped_names`), every later generation
//! keeps the list, and queries answer those names in that hour from raw samples (see
//! [`crate::file_catalog::FileCatalog::rollup_gaps`]). It records the state the
//! downsampled hours were made from (`downsampled_as`), which the drop changed in no
//! window they hold, so they are not made again. Late rows of a dropped name are merged
//! into the downsampled hours like the rest of the source (with the coarse hours' own rows
//! of the dropped names, [`super::downsample`]), then dropped again in the same run.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{AsArray, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Int64Type};
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::prelude::{col, lit};

use super::downsample::SourceState;
use super::holds::{LegalHold, any_blocks};
use super::rewrite::{RewriteOptions, df_error, units_rows, write_rollups};
use super::rollup_merge::merge_rollups;
use super::{Outcome, StepResult};
use crate::file_catalog::{DataTable, FileCatalog, Manifest};
use crate::tiers::TierName;
use crate::{Result, StorageError};

/// The manifest step of a generation that dropped sparse names.
pub const STEP: &str = "drop_sparse";

/// `name` and `count` of a batch of roll-ups or samples, the names as plain strings.
fn names_and_counts(batch: &RecordBatch, count_column: usize) -> Result<(StringArray, Int64Array)> {
    let unexpected = |what: &str| arrow::error::ArrowError::SchemaError(format!("roll-ups: {what}"));
    let name = batch.column_by_name("name").ok_or_else(|| unexpected("no name column"))?;
    let names = arrow::compute::cast(name, &DataType::Utf8)?.as_string::<i32>().clone();
    let counts = batch.column(count_column).as_primitive_opt::<Int64Type>().ok_or_else(|| unexpected("count"))?;
    Ok((names, counts.clone()))
}

/// Per name of a roll-up batch: (rows, samples counted).
fn counts_by_name(batch: &RecordBatch) -> Result<BTreeMap<String, (u64, u64)>> {
    let count_column =
        batch.schema().index_of("count").map_err(|_| arrow::error::ArrowError::SchemaError("no count".into()))?;
    let (names, counts) = names_and_counts(batch, count_column)?;
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (name, n) in names.iter().zip(counts.iter()) {
        let entry = out.entry(name.unwrap_or_default().to_string()).or_default();
        entry.0 += 1;
        entry.1 += n.unwrap_or(0).max(0) as u64;
    }
    Ok(out)
}

/// Raw samples per name in the metrics hour of `unit`, for `names`.
async fn raw_counts(
    catalog: &FileCatalog,
    unit: &str,
    names: &BTreeSet<String>,
    memory_limit: usize,
) -> Result<BTreeMap<String, u64>> {
    let hour = crate::layout::HourPartition::parse_dir(unit)
        .ok_or_else(|| StorageError::CorruptRecord { path: unit.into(), reason: "not a table-hour".into() })?;
    let table = DataTable::Events(callscope_schemas::Dataset::Metrics);
    let metrics = catalog.unit_snapshot(&format!("{}/{}", table.name(), hour.dir())).await?;
    let wanted = names.iter().map(|n| lit(n.clone())).collect();
    let df = units_rows(catalog, table, vec![metrics], memory_limit)?
        .filter(col("name").in_list(wanted, false))
        .and_then(|df| df.aggregate(vec![col("name")], vec![count(lit(1)).alias("n")]))
        .map_err(df_error)?;
    let mut out = BTreeMap::new();
    for batch in df.collect().await.map_err(df_error)? {
        let (names, counts) = names_and_counts(&batch, 1)?;
        for (name, n) in names.iter().zip(counts.iter()) {
            out.insert(name.unwrap_or_default().to_string(), n.unwrap_or(0).max(0) as u64);
        }
    }
    Ok(out)
}

/// Drops the sparse names of the roll-up hour `unit` (see the module docs), whose
/// downsampled hours are made from its state `made_from`; if the hour changed since (late
/// rows arrived), it waits for the next run.
#[allow(clippy::too_many_arguments)]
pub async fn drop_sparse_names(
    catalog: &FileCatalog,
    unit: &str,
    made_from: &str,
    below: u32,
    holds: &[LegalHold],
    job: &str,
    options: &RewriteOptions,
    now_ms: i64,
    dry_run: bool,
) -> Result<StepResult> {
    let snapshot = catalog.unit_snapshot(unit).await?;
    // Not deleted hours. An hour no step has written yet is one of fresh files alone.
    let previous = snapshot.manifest.as_deref();
    if previous.is_some_and(|m| m.step == "delete") {
        return Ok(StepResult::nothing());
    }
    if any_blocks(holds, DataTable::Rollups, &snapshot.hour) {
        return Ok(StepResult { outcome: Outcome::Held, ..StepResult::nothing() });
    }
    let state = SourceState::of(unit, &snapshot).text;
    // Changed since it was downsampled: wait. Looked at in this very state before: done.
    if state != made_from || previous.and_then(|m| m.downsampled_as.as_deref()) == Some(state.as_str()) {
        return Ok(StepResult::nothing());
    }
    let batches = units_rows(catalog, DataTable::Rollups, vec![snapshot.clone()], options.memory_limit)?
        .collect()
        .await
        .map_err(df_error)?;
    let (folded, _) = merge_rollups(&batches, None)?;
    let Some(folded) = folded else { return Ok(StepResult::nothing()) };
    let per_name = counts_by_name(&folded)?;
    // Names dropped before that late rows brought back go again; new sparse names go when
    // their raw samples are all there.
    let dropped_before = previous.map(|m| m.dropped_names.clone()).unwrap_or_default();
    let mut drop: BTreeSet<String> = per_name.keys().filter(|n| dropped_before.contains(*n)).cloned().collect();
    let sparse: BTreeSet<String> = per_name
        .iter()
        .filter(|(name, (rows, samples))| !drop.contains(*name) && *samples < u64::from(below) * rows)
        .map(|(name, _)| name.clone())
        .collect();
    if !sparse.is_empty() {
        let raw = raw_counts(catalog, unit, &sparse, options.memory_limit).await?;
        drop.extend(sparse.into_iter().filter(|n| raw.get(n).copied().unwrap_or(0) >= per_name[n].1));
    }
    if drop.is_empty() {
        // Nothing sparse: a generation of the same files records that this state was
        // looked at, so later runs do not read the hour again until it changes (fresh
        // files are left to the hour's own step).
        if let Some(previous) = previous.filter(|_| snapshot.fresh_hot.is_empty() && !dry_run) {
            let next = Manifest::next(Some(previous), unit, &[], job, STEP, now_ms);
            let looked_at = Manifest { files: previous.files.clone(), downsampled_as: Some(state), ..next };
            catalog.commit(&looked_at).await?;
        }
        return Ok(StepResult::nothing());
    }
    let previous_files = previous.map(|m| m.files.clone()).unwrap_or_default();
    let fresh_bytes: u64 = snapshot.fresh_hot.iter().map(|o| o.size).sum();
    let bytes_read = fresh_bytes + previous_files.iter().map(|f| f.bytes).sum::<u64>();
    let files_replaced = (snapshot.fresh_hot.len() + previous_files.len()) as u64;
    if dry_run {
        return Ok(StepResult { outcome: Outcome::Changed, bytes_read, files_replaced, ..StepResult::nothing() });
    }
    let (names, _) = names_and_counts(&folded, folded.schema().index_of("count")?)?;
    let keep: BooleanArray = names.iter().map(|name| Some(!drop.contains(name.unwrap_or_default()))).collect();
    let kept = filter_record_batch(&folded, &keep)?;
    // The rewritten files stay in the tier the hour is in.
    let tier = previous_files.iter().map(|f| f.tier).max().unwrap_or(TierName::Warm).max(TierName::Warm);
    let next = Manifest::next(previous, unit, &snapshot.fresh_hot, job, STEP, now_ms);
    let generation = next.generation;
    let written = write_rollups(catalog, tier, unit, generation, job, options, Some(&kept)).await?;
    let bytes_written: u64 = written.iter().map(|f| f.bytes).sum();
    let mut dropped_names = next.dropped_names.clone();
    dropped_names.extend(drop.iter().cloned());
    let manifest =
        Manifest { files: written, superseded: previous_files, dropped_names, downsampled_as: Some(state), ..next };
    if !catalog.commit(&manifest).await? {
        return Ok(StepResult { outcome: Outcome::LostRace, bytes_read, bytes_written, ..StepResult::nothing() });
    }
    let rows = (folded.num_rows() - kept.num_rows()) as u64;
    tracing::debug!(unit, generation, dropped = ?drop, rows, "dropped sparse names");
    Ok(StepResult { outcome: Outcome::Changed, rows, bytes_read, bytes_written, files_replaced, files_deleted: 0 })
}
