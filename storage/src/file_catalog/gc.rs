//! Garbage collection: the files and manifests a unit's newer generations made garbage,
//! and the shared day files no hour names any more.

use std::collections::{BTreeMap, BTreeSet};

use super::{FileCatalog, GC_GRACE_MS, GcReport, TimeRange, generation_of, shared_day_dir};
use crate::Result;
use crate::catalog::{CATALOG_ROOT, CatalogDir, CatalogKey};
use crate::layout::HourPartition;
use crate::tiers::TierName;

impl FileCatalog {
    /// Deletes what the newest manifest of a unit made garbage, once that manifest is
    /// [`GC_GRACE_MS`] old: replaced hot files, superseded files of older generations,
    /// files of jobs that never committed, and the older manifests. Idempotent.
    pub async fn collect_garbage(&self, unit: &str, now_ms: i64) -> Result<GcReport> {
        let mut report = GcReport::default();
        let dir = CatalogDir::Manifests { unit: unit.to_string() }.path();
        let mut generations: Vec<u64> = self
            .hot()
            .list(&format!("{dir}/"))
            .await?
            .iter()
            .filter_map(|k| CatalogKey::offset_of(k))
            .map(|g| g as u64)
            .collect();
        generations.sort_unstable();
        let Some(&newest) = generations.last() else { return Ok(report) };
        let latest = self.manifest(unit, newest).await?;
        if now_ms - latest.created_at_ms < GC_GRACE_MS {
            return Ok(report);
        }
        let keep: BTreeSet<(TierName, &str)> = latest.files.iter().map(|f| (f.tier, f.key.as_str())).collect();
        let mut doomed: BTreeMap<(TierName, String), u64> = BTreeMap::new();
        // Replaced hot files still present.
        for object in self.hot().list_meta(&format!("{unit}/")).await? {
            if latest.replaced_hot.contains(&object.key) {
                doomed.insert((TierName::Hot, object.key), object.size);
            }
        }
        // Files of colder tiers that the newest generation does not name: superseded by it
        // or an earlier one, or written by a job that never committed (decided by a
        // generation at or below the newest, or older than the grace).
        for (name, tier) in self.tiers.iter().filter(|(name, _)| *name != TierName::Hot) {
            for object in tier.list_meta(&format!("{unit}/")).await? {
                if keep.contains(&(name, object.key.as_str())) {
                    continue;
                }
                let decided = generation_of(&object.key).is_some_and(|g| g <= newest);
                if decided || now_ms - object.modified_ms > GC_GRACE_MS {
                    doomed.insert((name, object.key), object.size);
                }
            }
        }
        for ((tier, key), bytes) in doomed {
            self.tiers.get(tier).delete(&key).await?;
            report.files_deleted += 1;
            report.bytes_deleted += bytes;
        }
        for &generation in generations.iter().filter(|g| **g < newest) {
            self.hot().delete(&CatalogKey::Manifest { unit: unit.to_string(), generation }.path()).await?;
            report.manifests_deleted += 1;
        }
        let shared = self.collect_shared_garbage(unit, now_ms).await?;
        report.files_deleted += shared.files_deleted;
        report.bytes_deleted += shared.bytes_deleted;
        Ok(report)
    }

    /// Shared files of the day of `unit` ([`shared_day_dir`]) that no table-hour of that day
    /// names any more. One is deleted once the newest generation of every hour of the day is
    /// older than the grace (a query that read an older one is done), and the file was
    /// written longer than the grace ago (so that it is not a running job's file, about to
    /// be named; a job that died before naming it left it behind).
    pub async fn collect_shared_garbage(&self, unit: &str, now_ms: i64) -> Result<GcReport> {
        let mut report = GcReport::default();
        let (Some(day_dir), Some(hour), Some((table_dir, _))) =
            (shared_day_dir(unit), HourPartition::parse_dir(unit), unit.split_once("/date="))
        else {
            return Ok(report);
        };
        let mut objects = Vec::new();
        for (name, tier) in self.tiers.iter().filter(|(name, _)| *name != TierName::Hot) {
            objects.extend(tier.list_meta(&format!("{day_dir}/")).await?.into_iter().map(|o| (name, o)));
        }
        if objects.is_empty() {
            return Ok(report);
        }
        let day_start = hour.start_ms() - i64::from(hour.hour) * 3_600_000;
        let day = TimeRange::new(day_start, day_start + 24 * 3_600_000);
        let latest = self.latest_manifests(&format!("{CATALOG_ROOT}/manifests/{table_dir}"), day).await?;
        if latest.iter().any(|(_, m)| now_ms - m.created_at_ms < GC_GRACE_MS) {
            return Ok(report);
        }
        let named: BTreeSet<(TierName, &str)> =
            latest.iter().flat_map(|(_, m)| m.files.iter().map(|f| (f.tier, f.key.as_str()))).collect();
        for (tier, object) in objects {
            // A shared file's "generation" is when its job wrote it (see `day_files`).
            let written_at = generation_of(&object.key).map_or(object.modified_ms, |g| g as i64);
            if named.contains(&(tier, object.key.as_str())) || now_ms - written_at <= GC_GRACE_MS {
                continue;
            }
            self.tiers.get(tier).delete(&object.key).await?;
            report.files_deleted += 1;
            report.bytes_deleted += object.size;
        }
        Ok(report)
    }
}
