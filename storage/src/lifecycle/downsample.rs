//! Downsampling: a roll-up table-hour of resolution `from` becomes, for each coarser
//! resolution `to`, the table-hour `metric_rollups/resolution=<to>/date=…/hour=…` in the
//! cold tier, its windows merged from the source's partials and sketches (so quantiles of
//! the coarse windows are exactly as mergeable as the fine ones).
//!
//! The target records which state of the source it was made from (`derived_from`): a
//! source that changed (late data, a compaction) is downsampled again; an unchanged one is
//! left alone. A target hour that the workers write themselves (the resolution is one of
//! `--rollup-resolutions`) is never overwritten.
//!
//! A source hour deleted after downsampling (`delete_source_after`) that receives late
//! rows has only those left to read: they are merged into the coarse hours as they are,
//! never written over them.

use super::rewrite::{RewriteOptions, df_error, units_rows};
use super::rollup_merge::merge_rollups;
use super::sorted_files::SortedFileWriter;
use super::{Outcome, StepResult};
use crate::Result;
use crate::file_catalog::{DataTable, FileCatalog, Manifest};
use crate::tiers::TierName;
use callscope_schemas::rollup::resolution_label;

/// The unit of the same hour at another resolution, if `unit` is a roll-up unit of
/// resolution `from_label`.
fn at_resolution(unit: &str, from_label: &str, to_label: &str) -> Option<String> {
    let from = format!("/resolution={from_label}/");
    unit.contains(&from).then(|| unit.replacen(&from, &format!("/resolution={to_label}/"), 1))
}

/// Downsamples one roll-up unit into each of `to_ms` (see the module docs).
#[allow(clippy::too_many_arguments)]
pub async fn downsample_unit(
    catalog: &FileCatalog,
    unit: &str,
    from_ms: i64,
    to_ms: &[i64],
    job: &str,
    options: &RewriteOptions,
    now_ms: i64,
    dry_run: bool,
) -> Result<StepResult> {
    let from_label = resolution_label(from_ms);
    let mut result = StepResult::nothing();
    if at_resolution(unit, &from_label, &from_label).is_none() {
        return Ok(result);
    }
    let source = catalog.unit_snapshot(unit).await?;
    let files = source.files();
    if files.is_empty() {
        return Ok(result);
    }
    // What the source is now: its generation and its fresh files.
    let state = format!(
        "{unit}@g{}+{}",
        source.manifest.as_ref().map_or(0, |m| m.generation),
        source.fresh_hot.iter().map(|o| o.key.rsplit('/').next().unwrap_or_default()).collect::<Vec<_>>().join(",")
    );
    // The source's rows were deleted after an earlier downsampling: what it shows now is
    // late, to be added to the coarse hours.
    let source_deleted = source.manifest.as_ref().is_some_and(|m| m.step == "delete");
    let mut batches = None;
    for &to in to_ms {
        let Some(target_unit) = at_resolution(unit, &from_label, &resolution_label(to)) else { continue };
        let target = catalog.unit_snapshot(&target_unit).await?;
        let previous = target.manifest.clone();
        let written_by_workers =
            !target.fresh_hot.is_empty() || previous.as_ref().is_some_and(|m| m.derived_from.is_none());
        if written_by_workers || previous.as_ref().and_then(|m| m.derived_from.as_deref()) == Some(state.as_str()) {
            continue;
        }
        result.outcome = Outcome::Changed;
        if dry_run {
            continue;
        }
        // The source's rows, read once for every target; with a deleted source, read again
        // with each target's own.
        if source_deleted || batches.is_none() {
            let mut units = vec![source.clone()];
            units.extend(source_deleted.then_some(target));
            let rows = units_rows(catalog, DataTable::Rollups, units, options.memory_limit)?;
            batches = Some(rows.collect().await.map_err(df_error)?);
            result.bytes_read += files.iter().map(|f| f.size).sum::<u64>();
        }
        let (merged, _) = merge_rollups(batches.as_deref().unwrap_or_default(), Some(to))?;
        let generation = previous.as_ref().map_or(1, |m| m.generation + 1);
        let mut writer = SortedFileWriter::new(
            catalog.tiers().cold.clone(),
            TierName::Cold,
            DataTable::Rollups,
            &target_unit,
            generation,
            job,
            options.cold,
        )?;
        if let Some(merged) = merged {
            result.rows += merged.num_rows() as u64;
            writer.write(&merged).await?;
        }
        let written = writer.finish().await?;
        result.bytes_written += written.iter().map(|f| f.bytes).sum::<u64>();
        let manifest = Manifest {
            unit: target_unit.clone(),
            generation,
            files: written,
            replaced_hot: Default::default(),
            superseded: previous.as_ref().map(|m| m.files.clone()).unwrap_or_default(),
            raw_bytes: 0,
            derived_from: Some(state.clone()),
            job: job.to_string(),
            step: "downsample".into(),
            created_at_ms: now_ms,
        };
        if !catalog.commit(&manifest).await? {
            result.outcome = Outcome::LostRace;
        }
    }
    Ok(result)
}
