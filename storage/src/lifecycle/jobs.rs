//! Lifecycle jobs as records in the catalog, so that any process (and the API) can show
//! what ran, what is running and how far it got.

use serde::{Deserialize, Serialize};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Finished,
    /// Finished, but some table-hours failed (see `errors`); a rerun retries them.
    FinishedWithErrors,
}

/// One run of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub policy: String,
    pub dry_run: bool,
    pub state: JobState,
    /// The process that runs it.
    pub runner: String,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// The step being worked on (`compact`, `delete`, `gc`).
    pub step: String,
    /// Table-hours the job has to look at, and has looked at.
    pub units_total: u64,
    pub units_done: u64,
    /// Table-hours changed (compacted, deleted), skipped because held, lost to another job.
    pub units_changed: u64,
    pub units_held: u64,
    pub units_lost_race: u64,
    pub rows: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub files_replaced: u64,
    pub files_deleted: u64,
    pub bytes_deleted: u64,
    /// One line per table-hour that failed.
    pub errors: Vec<String>,
}

impl JobRecord {
    pub fn new(id: String, policy: String, dry_run: bool, runner: String, now_ms: i64) -> JobRecord {
        JobRecord {
            id,
            policy,
            dry_run,
            state: JobState::Running,
            runner,
            started_at_ms: now_ms,
            updated_at_ms: now_ms,
            finished_at_ms: None,
            step: String::new(),
            units_total: 0,
            units_done: 0,
            units_changed: 0,
            units_held: 0,
            units_lost_race: 0,
            rows: 0,
            bytes_read: 0,
            bytes_written: 0,
            files_replaced: 0,
            files_deleted: 0,
            bytes_deleted: 0,
            errors: Vec::new(),
        }
    }

    /// Progress in `[0, 1]`.
    pub fn progress(&self) -> f64 {
        if self.units_total == 0 { 1.0 } else { self.units_done as f64 / self.units_total as f64 }
    }
}
