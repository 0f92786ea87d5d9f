//! What the leading evaluator persists: the notification log and how far transitions have
//! been published, in one object of the hot tier.

use std::collections::BTreeMap;

use callscope_storage::{CatalogKey, Tier};
use serde::{Deserialize, Serialize};

use crate::notify::dispatch::SentEntry;

/// What the leader persists.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DurableState {
    pub nflog: BTreeMap<String, SentEntry>,
    /// Transitions at or before this event time are already on the alerts topic.
    pub published_through_ms: i64,
    pub leader: String,
    pub saved_at_ms: i64,
}

pub async fn read_state(tier: &Tier) -> DurableState {
    let path = CatalogKey::AlertingState.path();
    match tier.get(&path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(error = %e, %path, "alerting state unreadable; starting with an empty notification log");
            DurableState::default()
        }),
        Err(_) => DurableState::default(),
    }
}
