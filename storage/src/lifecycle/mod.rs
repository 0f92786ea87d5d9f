//! The storage lifecycle: policies (steps with ages), the jobs that run them, legal holds
//! and the deletion log.
//!
//! A job runs one policy over every table it names. Each table-hour goes to the last step
//! whose age it has passed (an hour due for deletion is not compacted first). Every step on
//! a unit is one atomic manifest commit ([`crate::file_catalog`]), so a job is idempotent
//! and resumable: after `kill -9`, the next run finds the units already done (nothing to
//! do) and does the rest; the files of a step that died before its commit are garbage that
//! the next run's collection removes. Two runners at once are safe too (one wins each unit;
//! the other's outcome is `lost_race`). Garbage collection (replaced files, once
//! [`crate::file_catalog::GC_GRACE_MS`] old) closes every job.
//!
//! A job works on one unit at a time, with a bounded sort memory; the schedule and the API
//! run jobs on a thread and current-thread runtime of their own, so a job never takes more
//! than one core and a few hundred MB from ingestion.

pub mod day_files;
pub mod dense;
pub mod downsample;
pub mod holds;
pub mod jobs;
pub mod metrics;
pub mod policy;
pub mod retention;
pub mod rewrite;
pub mod rollup_merge;
pub mod sorted_files;
pub mod sparse;
pub mod stores;

use std::time::Instant;

use crate::Result;
use crate::file_catalog::{DataTable, FileCatalog, UnitSnapshot, shared_day_dir};
use jobs::{JobRecord, JobState};
use metrics::LifecycleMetrics;
use policy::{Downsampling, Policy, PolicyStep};
use retention::expire_unit;
use rewrite::{Rewrite, RewriteOptions, rewrite_unit};
use stores::{HoldStore, JobStore};

/// What one step did to one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Compacted, or deleted (or, in a dry run, would have been).
    Changed,
    NothingToDo,
    /// Another job committed this unit's next generation first.
    LostRace,
    /// A legal hold kept it.
    Held,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Changed => "done",
            Outcome::NothingToDo => "nothing_to_do",
            Outcome::LostRace => "lost_race",
            Outcome::Held => "held",
        }
    }
}

/// The figures of one step on one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepResult {
    pub outcome: Outcome,
    pub rows: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub files_replaced: u64,
    pub files_deleted: u64,
}

impl StepResult {
    pub fn nothing() -> StepResult {
        StepResult {
            outcome: Outcome::NothingToDo,
            rows: 0,
            bytes_read: 0,
            bytes_written: 0,
            files_replaced: 0,
            files_deleted: 0,
        }
    }
}

/// One unit of a job's plan: its step (the last whose age it has passed), whether it is
/// downsampled, and whether it is a downsampled source hour to delete.
struct Planned {
    table: DataTable,
    unit: UnitSnapshot,
    step: Option<PolicyStep>,
    down: bool,
    /// For a source hour to delete: the age it was kept for and why it goes.
    drop_source: Option<(String, String)>,
}

/// Runs lifecycle jobs over a catalog.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    catalog: FileCatalog,
    runner: String,
    options: RewriteOptions,
}

/// How often a running job's record is rewritten.
const RECORD_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl Lifecycle {
    pub fn new(catalog: FileCatalog, runner: impl Into<String>) -> Lifecycle {
        Lifecycle { catalog, runner: runner.into(), options: RewriteOptions::default() }
    }

    pub fn with_options(mut self, options: RewriteOptions) -> Lifecycle {
        self.options = options;
        self
    }

    pub fn catalog(&self) -> &FileCatalog {
        &self.catalog
    }

    pub fn jobs(&self) -> JobStore {
        JobStore::new(self.catalog.tiers().hot.clone())
    }

    pub fn holds(&self) -> HoldStore {
        HoldStore::new(self.catalog.tiers().hot.clone())
    }

    /// A new job id for `policy`.
    pub fn new_job_id(policy: &str, now_ms: i64) -> String {
        format!("{policy}-{now_ms}-{:04x}", rand::random::<u16>())
    }

    /// Runs `policy` once as job `job_id` (see the module docs); `progress` sees the job's
    /// record after every unit. Errors of single units are counted in the record and do not
    /// stop the job; an error reading the catalog or the holds does.
    pub async fn run(
        &self,
        policy: &Policy,
        job_id: &str,
        dry_run: bool,
        now_ms: i64,
        progress: &mut (dyn FnMut(&JobRecord) + Send),
    ) -> Result<JobRecord> {
        policy.validate()?;
        let metrics = LifecycleMetrics::global();
        let started = Instant::now();
        let jobs = self.jobs();
        let mut record = JobRecord::new(job_id.to_string(), policy.id.clone(), dry_run, self.runner.clone(), now_ms);
        record.step = "plan".into();
        jobs.put(&record).await?;
        let holds: Vec<_> = self.holds().list().await?.into_iter().filter(|h| h.is_active()).collect();
        // Steps that move a table-hour (one of them per hour and run), and downsampling,
        // which adds roll-ups beside whatever else an hour is due for.
        let mut steps: Vec<(PolicyStep, i64)> = Vec::new();
        for step in policy.steps.iter().filter(|s| !matches!(s, PolicyStep::Downsample { .. })) {
            steps.push((step.clone(), step.after_ms()?));
        }
        let downsampling = policy.downsampling()?;

        // Plan: every unit of every table, with the last step whose age it has passed.
        let mut plan: Vec<Planned> = Vec::new();
        for table in policy.tables() {
            for unit in self.catalog.snapshot(table, None).await? {
                let age = now_ms - unit.hour.end_ms();
                let step = steps.iter().rev().find(|(_, after)| age >= *after).map(|(s, _)| s.clone());
                let down = table == DataTable::Rollups && downsampling.as_ref().is_some_and(|d| age >= d.after);
                let drop_source = match &downsampling {
                    Some(d) if down => d.drops(&unit.unit, age).map(|keep| (keep, d.reason(&policy.id))),
                    _ => None,
                };
                if step.is_some() || down || unit.has_garbage() {
                    plan.push(Planned { table, unit, step, down, drop_source });
                }
            }
        }
        record.units_total = plan.len() as u64;
        jobs.put(&record).await?;
        progress(&record);

        let mut last_saved = Instant::now();
        // Days whose roll-up hours this run packs (`day_files`), and one hour of each.
        let mut days_to_pack = std::collections::BTreeMap::new();
        for Planned { table, unit, mut step, down, drop_source } in plan {
            // Downsampling reads the hour after its own step (a compaction changes the
            // source's generation, not its rows), or before it when that step deletes it.
            // A source hour past `delete_source_after` is deleted instead of its own step,
            // and only once its downsampled hours are written.
            // A source hour that names were dropped from is downsampled, and its sparse names
            // dropped, before its own step, so that no step folds late rows of a dropped
            // name into it between the two (see `sparse`).
            let deletes = matches!(step, Some(PolicyStep::Delete { .. })) || drop_source.is_some();
            let dropped_before = unit.manifest.as_ref().is_some_and(|m| !m.dropped_names.is_empty());
            let early = down && (deletes || dropped_before);
            let mut downsampled = true;
            if early {
                let made_from =
                    self.downsample(metrics, &mut record, &downsampling, &unit.unit, job_id, now_ms, dry_run).await;
                downsampled = made_from.is_some();
                if let Some(made_from) = made_from.filter(|_| !deletes) {
                    let sparse = (unit.unit.as_str(), made_from.as_str(), holds.as_slice());
                    self.drop_sparse(metrics, &mut record, &downsampling, sparse, job_id, now_ms, dry_run).await;
                }
                if !downsampled && !deletes {
                    // Its step would fold late rows of dropped names that the coarse hours
                    // have not counted yet: both wait for the next run.
                    step = None;
                }
            }
            let mut reason = None;
            if let Some((after, why)) = drop_source
                && !matches!(step, Some(PolicyStep::Delete { .. }))
            {
                step = downsampled.then_some(PolicyStep::Delete { after });
                reason = Some(why);
            }
            if let Some(step) = step {
                record.step = step.name().into();
                let result = match &step {
                    PolicyStep::Compact { .. } | PolicyStep::Cold { .. } | PolicyStep::Archive { .. } => {
                        let rewrite = match step {
                            PolicyStep::Cold { .. } => Rewrite::Cold,
                            PolicyStep::Archive { .. } => Rewrite::Archive,
                            _ => Rewrite::Compact,
                        };
                        let (catalog, options) = (&self.catalog, &self.options);
                        rewrite_unit(catalog, table, &unit.unit, job_id, rewrite, options, now_ms, dry_run).await
                    }
                    PolicyStep::Delete { after } => {
                        let reason = reason
                            .unwrap_or_else(|| format!("policy {}: delete {} after {after}", policy.id, table.name()));
                        expire_unit(
                            &self.catalog,
                            table,
                            &unit.unit,
                            &holds,
                            &policy.id,
                            &reason,
                            job_id,
                            now_ms,
                            dry_run,
                        )
                        .await
                    }
                    // Planned beside the moving steps, above.
                    PolicyStep::Downsample { .. } => Ok(StepResult::nothing()),
                };
                self.count(metrics, &mut record, step.name(), &unit.unit, result);
                // A roll-up hour due for `cold`, of a day due whole: the day's hours go into
                // shared day files (`day_files`), once every unit has had its steps (a source
                // hour's own step may make its coarse hours again). Not the downsampling
                // source's hours: packing them would make their coarse hours again.
                let day_due = |after: i64| {
                    let day_end = unit.hour.start_ms() + (24 - i64::from(unit.hour.hour)) * 3_600_000;
                    now_ms - day_end >= after
                };
                if let PolicyStep::Cold { .. } = &step
                    && table == DataTable::Rollups
                    && crate::layout::rollup_resolution_ms(&unit.unit) != downsampling.as_ref().map(|d| d.from)
                    && step.after_ms().is_ok_and(day_due)
                    && let Some(day) = shared_day_dir(&unit.unit)
                {
                    days_to_pack.entry(day).or_insert_with(|| unit.unit.clone());
                }
            }
            if down
                && !early
                && let Some(made_from) =
                    self.downsample(metrics, &mut record, &downsampling, &unit.unit, job_id, now_ms, dry_run).await
            {
                let sparse = (unit.unit.as_str(), made_from.as_str(), holds.as_slice());
                self.drop_sparse(metrics, &mut record, &downsampling, sparse, job_id, now_ms, dry_run).await;
            }
            if !dry_run {
                match self.catalog.collect_garbage(&unit.unit, now_ms).await {
                    Ok(gc) => {
                        metrics.files_deleted.with_label_values(&["gc"]).inc_by(gc.files_deleted);
                        record.files_deleted += gc.files_deleted;
                        record.bytes_deleted += gc.bytes_deleted;
                    }
                    Err(e) => record.errors.push(format!("gc {}: {e}", unit.unit)),
                }
            }
            record.units_done += 1;
            record.updated_at_ms = now_ms + started.elapsed().as_millis() as i64;
            progress(&record);
            if last_saved.elapsed() >= RECORD_EVERY {
                jobs.put(&record).await?;
                last_saved = Instant::now();
            }
        }
        for unit in days_to_pack.into_values() {
            record.step = day_files::STEP.into();
            let (catalog, options) = (&self.catalog, &self.options);
            let result = day_files::pack_day(catalog, &unit, job_id, options, now_ms, dry_run).await;
            self.count(metrics, &mut record, day_files::STEP, &unit, result);
            progress(&record);
        }
        record.step = "done".into();
        record.state = if record.errors.is_empty() { JobState::Finished } else { JobState::FinishedWithErrors };
        record.finished_at_ms = Some(record.updated_at_ms.max(now_ms));
        jobs.put(&record).await?;
        let outcome = if record.errors.is_empty() { "ok" } else { "errors" };
        metrics.job_seconds.with_label_values(&[&policy.id, outcome]).observe(started.elapsed().as_secs_f64());
        progress(&record);
        Ok(record)
    }
}

impl Lifecycle {
    /// Downsamples one unit; the state of it that its downsampled hours are now made from,
    /// if they are (a failed step, or one that lost a race, is counted in the record and
    /// retried by the next run).
    #[allow(clippy::too_many_arguments)]
    async fn downsample(
        &self,
        metrics: &LifecycleMetrics,
        record: &mut JobRecord,
        downsampling: &Option<Downsampling>,
        unit: &str,
        job_id: &str,
        now_ms: i64,
        dry_run: bool,
    ) -> Option<String> {
        let Some(d) = downsampling else { return None };
        record.step = "downsample".into();
        let result =
            downsample::downsample_unit(&self.catalog, unit, d.from, &d.to, job_id, &self.options, now_ms, dry_run)
                .await;
        let made_from = match &result {
            Ok((r, made_from)) if r.outcome != Outcome::LostRace => Some(made_from.clone().unwrap_or_default()),
            _ => None,
        };
        self.count(metrics, record, "downsample", unit, result.map(|(r, _)| r));
        made_from
    }

    /// Drops the sparse names of a source hour whose downsampled hours were just made from
    /// its state `made_from`, when the policy says so. `sparse`: the unit, `made_from`, and
    /// the legal holds in force.
    #[allow(clippy::too_many_arguments)]
    async fn drop_sparse(
        &self,
        metrics: &LifecycleMetrics,
        record: &mut JobRecord,
        downsampling: &Option<Downsampling>,
        (unit, made_from, holds): (&str, &str, &[holds::LegalHold]),
        job_id: &str,
        now_ms: i64,
        dry_run: bool,
    ) {
        let Some((d, below)) = downsampling.as_ref().and_then(|d| Some((d, d.drop_sparse_below?))) else { return };
        if crate::layout::rollup_resolution_ms(unit) != Some(d.from) {
            return;
        }
        record.step = sparse::STEP.into();
        let result = sparse::drop_sparse_names(
            &self.catalog,
            unit,
            made_from,
            below,
            holds,
            job_id,
            &self.options,
            now_ms,
            dry_run,
        )
        .await;
        self.count(metrics, record, sparse::STEP, unit, result);
    }

    /// Adds one step's result on one unit to the job's record and the metrics.
    fn count(
        &self,
        metrics: &LifecycleMetrics,
        record: &mut JobRecord,
        step: &str,
        unit: &str,
        result: Result<StepResult>,
    ) {
        match result {
            Ok(r) => {
                metrics.units.with_label_values(&[step, r.outcome.name()]).inc();
                metrics.bytes_read.with_label_values(&[step]).inc_by(r.bytes_read);
                metrics.bytes_written.with_label_values(&[step]).inc_by(r.bytes_written);
                metrics.files_replaced.with_label_values(&[step]).inc_by(r.files_replaced);
                record.rows += r.rows;
                record.bytes_read += r.bytes_read;
                record.bytes_written += r.bytes_written;
                record.files_replaced += r.files_replaced;
                match r.outcome {
                    Outcome::Changed => record.units_changed += 1,
                    Outcome::Held => record.units_held += 1,
                    Outcome::LostRace => record.units_lost_race += 1,
                    Outcome::NothingToDo => {}
                }
            }
            Err(e) => {
                metrics.units.with_label_values(&[step, "failed"]).inc();
                tracing::warn!(unit, step, error = %e, "lifecycle step failed");
                record.errors.push(format!("{step} {unit}: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests;
