//! Typed keys of the catalog: every object callscope keeps under `_catalog/` in a tier, next
//! to the data. No other module builds a `_catalog/…` path by hand, so the layout below is
//! the whole of it:
//!
//! | key | object |
//! | --- | --- |
//! | `_catalog/commits/<topic>/p<partition>/<first offset>.json` | a batch record ([`crate::commit_log`]) |
//! | `_catalog/pending/<topic>/p<partition>/<first offset>-<writer>/<final key>` | a data file before its batch commits |
//! | `_catalog/epochs/<topic>/p<partition>/<epoch>.json` | a writer's ownership epoch ([`crate::epochs`]) |
//! | `_catalog/window_state/<topic>/p<partition>/<offset>.parquet` | a window-state checkpoint ([`crate::window_state`]) |
//! | `_catalog/workers/<worker id>.json` | a worker heartbeat ([`crate::workers`]) |
//! | `_catalog/manifests/<unit>/<generation>.json` | the files of one table-hour once the lifecycle touched it ([`crate::file_catalog`]) |
//! | `_catalog/lifecycle/jobs/<job id>.json` | a lifecycle job's progress and outcome ([`crate::lifecycle`]) |
//! | `_catalog/lifecycle/policies/<policy id>.json` | a lifecycle policy |
//! | `_catalog/lifecycle/holds/<hold id>.json` | a legal hold |
//! | `_catalog/lifecycle/deletions/date=YYYY-MM-DD/<ms>-<job id>.json` | what a job deleted and why |
//! | `_catalog/custom_metrics/<name>.json` | a custom metric definition |
//! | `_catalog/alerting/state.json` | the alerting leader's notification log |
//! | `_catalog/alerting/status.json` | rules, their state and the active alerts |
//! | `_catalog/alerting/failures/date=YYYY-MM-DD/<ms>-<receiver>-<channel>.json` | a failed delivery |
//! | `_catalog/alerting/{silences,smart_rules,acks}/<id>.json` | silences, smart rules, acknowledgements |
//!
//! Offsets are zero-padded to 20 digits so that names sort by offset.

use crate::layout::sanitize;

/// The prefix of every catalog object.
pub const CATALOG_ROOT: &str = "_catalog";

/// A directory of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogDir {
    /// Batch records of one topic partition.
    Commits {
        topic: String,
        partition: i32,
    },
    /// Data files of one topic partition waiting for their batch record (one directory per
    /// attempt: `<first offset>-<writer>`).
    Pending {
        topic: String,
        partition: i32,
    },
    /// Ownership epochs of one topic partition.
    Epochs {
        topic: String,
        partition: i32,
    },
    /// Window-state checkpoints of one topic partition.
    WindowState {
        topic: String,
        partition: i32,
    },
    /// Manifests of one unit (`<table>/[resolution=…/]date=…/hour=…`).
    Manifests {
        unit: String,
    },
    /// Worker heartbeats.
    Workers,
    /// Lifecycle jobs.
    LifecycleJobs,
    /// Lifecycle policies.
    Policies,
    /// Legal holds.
    LegalHolds,
    /// The deletion log of the lifecycle (all dates).
    Deletions,
    CustomMetrics,
    /// Dashboards (the current definition of each).
    Dashboards,
    /// Every saved version of every dashboard (`<id>/<version>.json`).
    DashboardVersions,
    Silences,
    SmartRules,
    Acks,
    /// Failed deliveries of notifications (all dates).
    AlertFailures,
}

impl CatalogDir {
    pub fn path(&self) -> String {
        match self {
            CatalogDir::Commits { topic, partition } => {
                format!("{CATALOG_ROOT}/commits/{}/p{partition}", sanitize(topic))
            }
            CatalogDir::Pending { topic, partition } => {
                format!("{CATALOG_ROOT}/pending/{}/p{partition}", sanitize(topic))
            }
            CatalogDir::Epochs { topic, partition } => {
                format!("{CATALOG_ROOT}/epochs/{}/p{partition}", sanitize(topic))
            }
            CatalogDir::WindowState { topic, partition } => {
                format!("{CATALOG_ROOT}/window_state/{}/p{partition}", sanitize(topic))
            }
            CatalogDir::Manifests { unit } => format!("{CATALOG_ROOT}/manifests/{}", unit.trim_matches('/')),
            CatalogDir::Workers => format!("{CATALOG_ROOT}/workers"),
            CatalogDir::LifecycleJobs => format!("{CATALOG_ROOT}/lifecycle/jobs"),
            CatalogDir::Policies => format!("{CATALOG_ROOT}/lifecycle/policies"),
            CatalogDir::LegalHolds => format!("{CATALOG_ROOT}/lifecycle/holds"),
            CatalogDir::Deletions => format!("{CATALOG_ROOT}/lifecycle/deletions"),
            CatalogDir::CustomMetrics => format!("{CATALOG_ROOT}/custom_metrics"),
            CatalogDir::Dashboards => format!("{CATALOG_ROOT}/dashboards"),
            CatalogDir::DashboardVersions => format!("{CATALOG_ROOT}/dashboard_versions"),
            CatalogDir::Silences => format!("{CATALOG_ROOT}/alerting/silences"),
            CatalogDir::SmartRules => format!("{CATALOG_ROOT}/alerting/smart_rules"),
            CatalogDir::Acks => format!("{CATALOG_ROOT}/alerting/acks"),
            CatalogDir::AlertFailures => format!("{CATALOG_ROOT}/alerting/failures"),
        }
    }

    /// The JSON object `<dir>/<id>.json` (ids of records the catalog names by id).
    pub fn json_object(&self, id: &str) -> String {
        format!("{}/{id}.json", self.path())
    }
}

fn date_of(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "invalid-date".into())
}

/// One object of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogKey {
    BatchRecord { topic: String, partition: i32, first_offset: i64 },
    Epoch { topic: String, partition: i32, epoch: u64 },
    Manifest { unit: String, generation: u64 },
    Deletion { at_ms: i64, job: String },
    WorkerHeartbeat { worker_id: String },
    AlertingState,
    AlertingStatus,
    AlertFailure { at_ms: i64, receiver: String, channel: String },
}

impl CatalogKey {
    pub fn path(&self) -> String {
        match self {
            CatalogKey::BatchRecord { topic, partition, first_offset } => format!(
                "{}/{first_offset:020}.json",
                CatalogDir::Commits { topic: topic.clone(), partition: *partition }.path()
            ),
            CatalogKey::Epoch { topic, partition, epoch } => format!(
                "{}/{epoch:020}.json",
                CatalogDir::Epochs { topic: topic.clone(), partition: *partition }.path()
            ),
            CatalogKey::Manifest { unit, generation } => {
                format!("{}/{generation:020}.json", CatalogDir::Manifests { unit: unit.clone() }.path())
            }
            CatalogKey::Deletion { at_ms, job } => {
                format!("{}/date={}/{at_ms}-{}.json", CatalogDir::Deletions.path(), date_of(*at_ms), sanitize(job))
            }
            CatalogKey::WorkerHeartbeat { worker_id } => CatalogDir::Workers.json_object(worker_id),
            CatalogKey::AlertingState => format!("{CATALOG_ROOT}/alerting/state.json"),
            CatalogKey::AlertingStatus => format!("{CATALOG_ROOT}/alerting/status.json"),
            CatalogKey::AlertFailure { at_ms, receiver, channel } => {
                format!(
                    "{}/date={}/{at_ms}-{}-{}.json",
                    CatalogDir::AlertFailures.path(),
                    date_of(*at_ms),
                    sanitize(receiver),
                    sanitize(channel)
                )
            }
        }
    }

    /// The offset a batch record or checkpoint path names (the inverse of [`CatalogKey::path`]
    /// for those two).
    pub fn offset_of(path: &str) -> Option<i64> {
        let name = path.rsplit('/').next()?;
        name.strip_suffix(".json").or_else(|| name.strip_suffix(".parquet"))?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_one_documented_shape() {
        let t = || "callscope.metrics".to_string();
        assert_eq!(
            CatalogKey::BatchRecord { topic: t(), partition: 3, first_offset: 42 }.path(),
            "_catalog/commits/callscope.metrics/p3/00000000000000000042.json"
        );
        assert_eq!(CatalogKey::WorkerHeartbeat { worker_id: "w-1".into() }.path(), "_catalog/workers/w-1.json");
        assert_eq!(CatalogKey::AlertingState.path(), "_catalog/alerting/state.json");
        assert_eq!(CatalogKey::AlertingStatus.path(), "_catalog/alerting/status.json");
        assert_eq!(
            CatalogKey::AlertFailure { at_ms: 0, receiver: "on call".into(), channel: "slack".into() }.path(),
            "_catalog/alerting/failures/date=1970-01-01/0-on_call-slack.json"
        );
        assert_eq!(CatalogDir::Silences.json_object("s1"), "_catalog/alerting/silences/s1.json");
        assert_eq!(CatalogDir::CustomMetrics.path(), "_catalog/custom_metrics");
        assert_eq!(CatalogKey::offset_of("_catalog/commits/t/p0/00000000000000000042.json"), Some(42));
        assert_eq!(CatalogKey::offset_of("_catalog/window_state/t/p0/00000000000000000007.parquet"), Some(7));
        assert_eq!(CatalogKey::offset_of("_catalog/window_state/t/p0/x.parquet"), None);
        assert_eq!(
            CatalogKey::Manifest { unit: "metrics/date=2026-12-01/hour=05".into(), generation: 3 }.path(),
            "_catalog/manifests/metrics/date=2026-12-01/hour=05/00000000000000000003.json"
        );
        assert_eq!(
            CatalogKey::Deletion { at_ms: 0, job: "j 1".into() }.path(),
            "_catalog/lifecycle/deletions/date=1970-01-01/0-j_1.json"
        );
    }
}
