//! Worker heartbeats: each stream worker publishes its status as
//! `_catalog/workers/<worker id>.json` in the hot tier every few seconds, so any query-API
//! replica can report every worker's health without talking to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::CatalogDir;
use crate::tier::Tier;

/// Where a worker is in its life; serialized in lowercase (`"running"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Created, not consuming yet.
    #[default]
    Starting,
    /// Consuming and writing.
    Running,
    /// Shutting down: flushing its buffers and committing offsets.
    Stopping,
}

impl WorkerState {
    /// The name used in heartbeats and the health report.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Running => "running",
            WorkerState::Stopping => "stopping",
        }
    }
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one worker reports about itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub worker_id: String,
    pub group_id: String,
    pub host: String,
    pub pid: u32,
    pub state: WorkerState,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
    /// `topic/partition` currently assigned.
    pub assigned: Vec<String>,
    pub consumed: u64,
    pub stored: u64,
    pub dead_lettered: u64,
    pub last_commit_at_ms: Option<i64>,
    /// When the worker's assignment last changed (its start time before the first change).
    #[serde(default)]
    pub last_rebalance_at_ms: Option<i64>,
    /// Consumer lag in messages by `topic/partition` (from librdkafka statistics).
    pub lag: BTreeMap<String, i64>,
    pub last_error: Option<String>,
    /// Partitions this worker stopped after a permanent write failure, by `topic/partition`,
    /// with the reason. Reading them is paused (nothing is skipped or acknowledged) until
    /// the partition is assigned again or the worker restarts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stopped: BTreeMap<String, String>,
}

/// Reads every worker's last heartbeat from a tier.
pub async fn read_all(tier: &Tier) -> crate::Result<Vec<WorkerStatus>> {
    let mut out = Vec::new();
    for key in tier.list(&CatalogDir::Workers.path()).await? {
        if let Ok(bytes) = tier.get(&key).await
            && let Ok(status) = serde_json::from_slice::<WorkerStatus>(&bytes)
        {
            out.push(status);
        }
    }
    Ok(out)
}
