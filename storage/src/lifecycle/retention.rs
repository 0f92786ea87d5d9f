//! Retention: deleting a whole table-hour once a policy's `delete` age has passed, unless
//! a legal hold covers it. The deletion is one manifest commit (the unit's next generation
//! names no files and replaces every hot file), recorded in the deletion log; the files
//! themselves go with the unit's garbage once the grace has passed.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::holds::{LegalHold, any_blocks};
use super::{Outcome, StepResult};
use crate::catalog::CatalogKey;
use crate::file_catalog::{DataTable, FileCatalog, GC_GRACE_MS, Manifest};
use crate::{Result, StorageError};

/// One entry of the deletion log: what was deleted, why, by which policy and job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionRecord {
    pub at_ms: i64,
    pub table: String,
    pub unit: String,
    /// The manifest generation that deleted it.
    pub generation: u64,
    pub policy: String,
    pub job: String,
    pub reason: String,
    /// `<tier>:<key>` of every file deleted.
    pub files: Vec<String>,
    /// Rows of the files the catalog had counted (fresh hot files are not counted).
    pub rows_counted: u64,
    pub bytes: u64,
}

/// Expires one unit. `holds` are the legal holds in force.
#[allow(clippy::too_many_arguments)]
pub async fn expire_unit(
    catalog: &FileCatalog,
    table: DataTable,
    unit: &str,
    holds: &[LegalHold],
    policy: &str,
    reason: &str,
    job: &str,
    now_ms: i64,
    dry_run: bool,
) -> Result<StepResult> {
    let snapshot = catalog.unit_snapshot(unit).await?;
    if any_blocks(holds, table, &snapshot.hour) {
        return Ok(StepResult { outcome: Outcome::Held, ..StepResult::nothing() });
    }
    let previous = snapshot.manifest.clone();
    let previous_files = previous.as_ref().map(|m| m.files.clone()).unwrap_or_default();
    if previous_files.is_empty() && snapshot.fresh_hot.is_empty() {
        // A deletion committed by a run that died before logging it is logged now.
        if let Some(m) = previous.as_ref().filter(|m| m.step == "delete" && now_ms - m.created_at_ms < GC_GRACE_MS)
            && !dry_run
            && !catalog.tiers().hot.exists(&deletion_key(m)).await?
        {
            let files = m.superseded.iter().map(|f| format!("{}:{}", f.tier, f.key)).collect();
            let rows = m.superseded.iter().map(|f| f.rows).sum();
            let bytes = m.superseded.iter().map(|f| f.bytes).sum();
            record_deletion(catalog, table, m, policy, reason, files, rows, bytes).await?;
        }
        return Ok(StepResult::nothing());
    }
    let mut files: Vec<String> = previous_files.iter().map(|f| format!("{}:{}", f.tier, f.key)).collect();
    files.extend(snapshot.fresh_hot.iter().map(|o| format!("hot:{}", o.key)));
    let bytes =
        previous_files.iter().map(|f| f.bytes).sum::<u64>() + snapshot.fresh_hot.iter().map(|o| o.size).sum::<u64>();
    let rows_counted = previous_files.iter().map(|f| f.rows).sum::<u64>();
    let files_replaced = files.len() as u64;
    if dry_run {
        return Ok(StepResult {
            outcome: Outcome::Changed,
            rows: rows_counted,
            files_replaced,
            ..StepResult::nothing()
        });
    }
    // A deleted hour keeps no trace of what it was made from or dropped.
    let manifest = Manifest {
        superseded: previous_files,
        raw_bytes: previous.as_ref().map_or(0, |m| m.raw_bytes),
        derived_from: None,
        dropped_names: Default::default(),
        ..Manifest::next(previous.as_deref(), unit, &snapshot.fresh_hot, job, "delete", now_ms)
    };
    if !catalog.commit(&manifest).await? {
        return Ok(StepResult { outcome: Outcome::LostRace, ..StepResult::nothing() });
    }
    record_deletion(catalog, table, &manifest, policy, reason, files, rows_counted, bytes).await?;
    Ok(StepResult { outcome: Outcome::Changed, rows: rows_counted, files_replaced, ..StepResult::nothing() })
}

/// The deletion log entry of a delete manifest (its key follows from the manifest, so a
/// rerun finds whether it was written).
fn deletion_key(manifest: &Manifest) -> String {
    CatalogKey::Deletion { at_ms: manifest.created_at_ms, job: format!("{}-g{}", manifest.unit, manifest.generation) }
        .path()
}

#[allow(clippy::too_many_arguments)]
async fn record_deletion(
    catalog: &FileCatalog,
    table: DataTable,
    manifest: &Manifest,
    policy: &str,
    reason: &str,
    files: Vec<String>,
    rows_counted: u64,
    bytes: u64,
) -> Result<()> {
    let record = DeletionRecord {
        at_ms: manifest.created_at_ms,
        table: table.name().to_string(),
        unit: manifest.unit.clone(),
        generation: manifest.generation,
        policy: policy.to_string(),
        job: manifest.job.clone(),
        reason: reason.to_string(),
        files,
        rows_counted,
        bytes,
    };
    let key = deletion_key(manifest);
    let body = serde_json::to_vec_pretty(&record)
        .map_err(|e| StorageError::CorruptRecord { path: key.clone(), reason: e.to_string() })?;
    catalog.tiers().hot.put_durable(&key, Bytes::from(body), false).await
}
