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
//! never written over them. Likewise for the names dropped from a source hour as sparse
//! ([`super::sparse`]): the coarse hours' own rows of those names are read back beside the
//! source. A coarse hour that does not exist yet is not made from such a source (it would
//! lack what the source no longer holds); queries then read the finer data.

use std::collections::BTreeSet;

use arrow::array::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{col, lit};

use super::rewrite::{RewriteOptions, df_error, units_rows, write_rollups};
use super::rollup_merge::merge_rollups;
use super::{Outcome, StepResult};
use crate::Result;
use crate::file_catalog::{DataTable, FileCatalog, Manifest, UnitSnapshot};
use crate::tiers::TierName;
use callscope_schemas::rollup::resolution_label;

/// The unit of the same hour at another resolution, if `unit` is a roll-up unit of
/// resolution `from_label`.
fn at_resolution(unit: &str, from_label: &str, to_label: &str) -> Option<String> {
    let from = format!("/resolution={from_label}/");
    unit.contains(&from).then(|| unit.replacen(&from, &format!("/resolution={to_label}/"), 1))
}

/// The state of a source hour that its downsampled hours record (`derived_from`): a base
/// (its generation; for a generation that only dropped sparse names, the state it was made
/// from, which the drop changed in no coarse window) and its fresh files.
pub(super) struct SourceState {
    base: String,
    fresh: Vec<String>,
    /// `base+fresh,…`, or the base alone when a drop left no fresh files.
    pub(super) text: String,
}

impl SourceState {
    pub(super) fn of(unit: &str, source: &UnitSnapshot) -> SourceState {
        let fresh: Vec<String> =
            source.fresh_hot.iter().map(|o| o.key.rsplit('/').next().unwrap_or_default().to_string()).collect();
        let dropped_as = source.manifest.as_ref().and_then(|m| m.downsampled_as.clone());
        let base = dropped_as
            .clone()
            .unwrap_or_else(|| format!("{unit}@g{}", source.manifest.as_ref().map_or(0, |m| m.generation)));
        let text = match dropped_as {
            Some(state) if fresh.is_empty() => state,
            _ => format!("{base}+{}", fresh.join(",")),
        };
        SourceState { base, fresh, text }
    }

    /// The fresh files that a coarse hour made from the state `derived_from` has not
    /// counted: all of them unless it was made from this base.
    fn uncounted(&self, derived_from: Option<&str>) -> BTreeSet<String> {
        let counted: BTreeSet<&str> = derived_from
            .and_then(|d| d.strip_prefix(self.base.as_str()))
            .and_then(|rest| rest.strip_prefix('+'))
            .map(|list| list.split(',').collect())
            .unwrap_or_default();
        self.fresh.iter().filter(|f| !counted.contains(f.as_str())).cloned().collect()
    }
}

/// The rows to downsample into `target` when the source no longer holds all of them (it
/// was deleted, or names were dropped from it): the source's rows of the names it still
/// holds; the rows of the others that arrived since `target` was made (fresh files it has
/// not counted); and `target`'s own rows of those names. Exact however often it runs.
async fn rows_beside_target(
    catalog: &FileCatalog,
    source: &UnitSnapshot,
    state: &SourceState,
    dropped: Option<&BTreeSet<String>>,
    target: UnitSnapshot,
    memory_limit: usize,
) -> Result<Vec<RecordBatch>> {
    let in_dropped = |df: DataFrame, negated: bool| match dropped {
        Some(names) => df.filter(col("name").in_list(names.iter().map(|n| lit(n.clone())).collect(), negated)),
        None if negated => df.filter(lit(false)),
        None => Ok(df),
    };
    let uncounted = state.uncounted(target.manifest.as_ref().and_then(|m| m.derived_from.as_deref()));
    let arrived = UnitSnapshot {
        manifest: None,
        fresh_hot: source
            .fresh_hot
            .iter()
            .filter(|o| uncounted.iter().any(|f| o.key.ends_with(f.as_str())))
            .cloned()
            .collect(),
        ..source.clone()
    };
    let mut rows = Vec::new();
    for (unit, negated) in [(source.clone(), true), (arrived, false), (target, false)] {
        let df = units_rows(catalog, DataTable::Rollups, vec![unit], memory_limit)?;
        rows.extend(in_dropped(df, negated).map_err(df_error)?.collect().await.map_err(df_error)?);
    }
    Ok(rows)
}

/// Downsamples one roll-up unit into each of `to_ms` (see the module docs). Returns also
/// the source's state that its coarse hours are now made from (`None` when it is not a
/// source hour, or has no rows).
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
) -> Result<(StepResult, Option<String>)> {
    let from_label = resolution_label(from_ms);
    let mut result = StepResult::nothing();
    if at_resolution(unit, &from_label, &from_label).is_none() {
        return Ok((result, None));
    }
    let source = catalog.unit_snapshot(unit).await?;
    let files = source.files();
    if files.is_empty() {
        return Ok((result, None));
    }
    let state = SourceState::of(unit, &source);
    // The source's rows were deleted after an earlier downsampling (what it shows now is
    // late, to be added to the coarse hours), or some names were dropped from it: `None`
    // stands for every name.
    let source_deleted = source.manifest.as_ref().is_some_and(|m| m.step == "delete");
    let dropped = source.manifest.as_ref().map(|m| m.dropped_names.clone()).unwrap_or_default();
    let partial = source_deleted || !dropped.is_empty();
    let mut batches = None;
    for &to in to_ms {
        let Some(target_unit) = at_resolution(unit, &from_label, &resolution_label(to)) else { continue };
        let target = catalog.unit_snapshot(&target_unit).await?;
        let previous = target.manifest.clone();
        let written_by_workers =
            !target.fresh_hot.is_empty() || previous.as_ref().is_some_and(|m| m.derived_from.is_none());
        if written_by_workers || previous.as_ref().and_then(|m| m.derived_from.as_deref()) == Some(state.text.as_str())
        {
            continue;
        }
        if previous.is_none() && partial {
            // Made from what is left, it would lack what the source no longer holds; the
            // finer data answers instead.
            tracing::warn!(unit, target = target_unit, "not downsampled: the source no longer holds all its rows");
            continue;
        }
        result.outcome = Outcome::Changed;
        if dry_run {
            continue;
        }
        result.bytes_read += files.iter().map(|f| f.size).sum::<u64>();
        if partial {
            let names = (!source_deleted).then_some(&dropped);
            batches = Some(rows_beside_target(catalog, &source, &state, names, target, options.memory_limit).await?);
        } else if batches.is_none() {
            // The source's rows, read once for every target.
            let rows = units_rows(catalog, DataTable::Rollups, vec![source.clone()], options.memory_limit)?;
            batches = Some(rows.collect().await.map_err(df_error)?);
        }
        let (merged, _) = merge_rollups(batches.as_deref().unwrap_or_default(), Some(to))?;
        let generation = previous.as_ref().map_or(1, |m| m.generation + 1);
        if let Some(merged) = &merged {
            result.rows += merged.num_rows() as u64;
        }
        let written =
            write_rollups(catalog, TierName::Cold, &target_unit, generation, job, options, merged.as_ref()).await?;
        result.bytes_written += written.iter().map(|f| f.bytes).sum::<u64>();
        // A coarse hour is made whole from its source: it carries nothing of its previous
        // generations but their files, superseded.
        let manifest = Manifest {
            generation,
            files: written,
            superseded: previous.as_ref().map(|m| m.files.clone()).unwrap_or_default(),
            derived_from: Some(state.text.clone()),
            ..Manifest::next(None, &target_unit, &[], job, "downsample", now_ms)
        };
        if !catalog.commit(&manifest).await? {
            result.outcome = Outcome::LostRace;
        }
    }
    Ok((result, Some(state.text)))
}
