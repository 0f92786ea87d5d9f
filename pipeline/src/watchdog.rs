//! Watches for input partitions that no live worker owns, and asks the consume loop to
//! rejoin the group when that lasts.
//!
//! Why: a group coordinator can hand a dead member's partitions to nobody. Tansu 0.6.0 does
//! so when the group's leader dies (`kill -9`): after the session timeout it drops the
//! member, but the survivors' next assignment still leaves its partitions unowned, and a
//! restarted worker is assigned nothing; and it keeps a *frozen* member (SIGSTOP, a hung
//! process) in the group, holding its partitions. Workers publish their assignments in
//! heartbeat objects (every 2 s); a worker whose heartbeat is older than the session
//! timeout ([`STALE_AFTER`]) is not a live owner, and a partition without a live owner for
//! two checks in a row (2 s apart) makes the survivors rejoin, which starts a new
//! generation whose leader is alive and assigns every partition. So a hung worker loses its
//! partitions about 15 s after it stops, as with Kafka's own session timeout. On a healthy
//! cluster this never fires.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use callscope_storage::Tier;
use callscope_storage::workers::WorkerState;
use tokio_util::sync::CancellationToken;

use crate::source::KafkaSource;
use crate::status::StatusHandle;

/// How often the watchdog looks.
const EVERY: Duration = Duration::from_secs(2);
/// A heartbeat older than this (the consumer's session timeout) is not a live owner's.
const STALE_AFTER: Duration = Duration::from_secs(10);
/// Checks in a row that must find a partition without a live owner before rejoining.
const STRIKES: u32 = 2;

/// The watchdog of one worker.
pub struct OrphanWatchdog {
    pub source: Arc<KafkaSource>,
    /// The tier holding the heartbeats of every worker.
    pub tier: Tier,
    pub group_id: String,
    /// The worker's input topics.
    pub topics: Vec<String>,
    /// The worker's own status (its assignment and last rebalance).
    pub status: StatusHandle,
    /// Set when the loop should rejoin the group.
    pub rejoin: Arc<AtomicBool>,
}

impl OrphanWatchdog {
    /// Runs until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let mut strikes = 0;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
            let own = self.status.snapshot();
            let settle_ms = 3 * EVERY.as_millis() as i64;
            let stale_ms = STALE_AFTER.as_millis() as i64;
            if own.last_rebalance_at_ms.is_some_and(|t| callscope_runtime::now_ms() - t < settle_ms) {
                // Assignments are still settling (and others' heartbeats may lag behind).
                strikes = 0;
                continue;
            }
            let source = self.source.clone();
            let topics = self.topics.clone();
            let metadata =
                tokio::task::spawn_blocking(move || source.partitions_of(&topics, Duration::from_secs(5))).await;
            let Ok(Ok(inputs)) = metadata else { continue };
            let Ok(heartbeats) = callscope_storage::workers::read_all(&self.tier).await else { continue };
            let now = callscope_runtime::now_ms();
            let mut owned: BTreeSet<String> = heartbeats
                .into_iter()
                .filter(|h| {
                    h.worker_id != own.worker_id
                        && h.group_id == self.group_id
                        && now - h.updated_at_ms < stale_ms
                        && h.state == WorkerState::Running
                })
                .flat_map(|h| h.assigned)
                .collect();
            owned.extend(own.assigned);
            let orphaned: Vec<&String> = inputs.iter().filter(|p| !owned.contains(*p)).collect();
            if orphaned.is_empty() {
                strikes = 0;
                continue;
            }
            strikes += 1;
            if strikes >= STRIKES {
                tracing::warn!(orphaned = ?orphaned, "partitions have no live owner (a dead or hung worker); rejoining the consumer group");
                self.rejoin.store(true, Ordering::Relaxed);
                strikes = 0;
            }
        }
    }
}
