//! Worker status: kept in memory, and published every few seconds as a heartbeat object
//! `_catalog/workers/<worker id>.json` in the hot tier, so that any query-API replica can
//! report the health of every worker without talking to it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use callscope_storage::CatalogKey;
use callscope_storage::Tier;
use callscope_storage::workers::WorkerStatus;
use tokio_util::sync::CancellationToken;

/// Shared handle to a worker's status.
#[derive(Debug, Clone, Default)]
pub struct StatusHandle(Arc<Mutex<WorkerStatus>>);

impl StatusHandle {
    pub fn new(status: WorkerStatus) -> Self {
        StatusHandle(Arc::new(Mutex::new(status)))
    }

    pub fn update(&self, f: impl FnOnce(&mut WorkerStatus)) {
        if let Ok(mut status) = self.0.lock() {
            f(&mut status);
        }
    }

    pub fn snapshot(&self) -> WorkerStatus {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Writes the heartbeat object until cancelled, then removes it.
pub async fn publish_heartbeats(status: StatusHandle, tier: Tier, every: Duration, cancel: CancellationToken) {
    let id = status.snapshot().worker_id;
    let key = CatalogKey::WorkerHeartbeat { worker_id: id }.path();
    let mut last_progress = std::time::Instant::now();
    loop {
        status.update(|s| s.updated_at_ms = callscope_runtime::now_ms());
        if last_progress.elapsed() >= Duration::from_secs(30) {
            last_progress = std::time::Instant::now();
            let s = status.snapshot();
            let lag: i64 = s.lag.values().sum();
            tracing::info!(
                worker = %s.worker_id, partitions = s.assigned.len(), consumed = s.consumed, stored = s.stored,
                dead_lettered = s.dead_lettered, lag, "worker progress"
            );
        }
        match serde_json::to_vec(&status.snapshot()) {
            Ok(body) => {
                if let Err(e) = tier.put_durable(&key, Bytes::from(body), false).await {
                    tracing::warn!(error = %e, "could not publish worker heartbeat");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not serialize worker status"),
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    if let Err(e) = tier.delete(&key).await {
        tracing::warn!(error = %e, "could not remove worker heartbeat");
    }
}

#[cfg(test)]
mod tests {
    use callscope_storage::workers::WorkerState;

    use super::*;

    #[test]
    fn heartbeats_name_the_state_in_lowercase() {
        let status = StatusHandle::new(WorkerStatus { worker_id: "w1".into(), ..Default::default() });
        for (state, name) in [
            (WorkerState::Starting, "starting"),
            (WorkerState::Running, "running"),
            (WorkerState::Stopping, "stopping"),
        ] {
            status.update(|s| s.state = state);
            let json = serde_json::to_value(status.snapshot()).expect("serialize");
            assert_eq!(json["state"], name);
            assert_eq!(state.to_string(), name);
            let back: WorkerStatus = serde_json::from_value(json).expect("deserialize");
            assert_eq!(back.state, state);
        }
    }
}
