//! What the leading evaluator persists: the notification log and how far transitions have
//! been published, in one object of the hot tier.
//!
//! How far is a [`TransitionKey`] (`published_through`). Older versions kept an event time
//! (`published_through_ms`): a file that only has that still reads, as the key that covers
//! its whole millisecond, and the field is still written (every transition before the
//! key's millisecond is published) so that an older version can read a newer file.

use std::collections::BTreeMap;

use callscope_storage::{CatalogKey, Tier};
use serde::{Deserialize, Serialize};

use crate::notify::dispatch::SentEntry;
use crate::publisher::TransitionKey;

/// What the leader persists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DurableState {
    pub nflog: BTreeMap<String, SentEntry>,
    /// Transitions whose key sorts at or before this one are on the alerts topic.
    #[serde(default)]
    pub published_through: Option<TransitionKey>,
    /// The event-time mark of older versions; kept in step by
    /// [`DurableState::set_published_through`].
    #[serde(default)]
    published_through_ms: i64,
    pub leader: String,
    pub saved_at_ms: i64,
}

impl DurableState {
    /// Reads a state file, of this version or an older one.
    pub fn from_json(bytes: &[u8]) -> serde_json::Result<DurableState> {
        let mut state: DurableState = serde_json::from_slice(bytes)?;
        if state.published_through.is_none() && state.published_through_ms != 0 {
            state.published_through = Some(TransitionKey::through_ms(state.published_through_ms));
        }
        Ok(state)
    }

    /// Records how far transitions are published.
    pub fn set_published_through(&mut self, through: Option<TransitionKey>) {
        self.published_through_ms = through.as_ref().map_or(0, |k| k.at_ms.saturating_sub(1));
        self.published_through = through;
    }
}

pub async fn read_state(tier: &Tier) -> DurableState {
    let path = CatalogKey::AlertingState.path();
    match tier.get(&path).await {
        Ok(bytes) => DurableState::from_json(&bytes).unwrap_or_else(|e| {
            tracing::warn!(error = %e, %path, "alerting state unreadable; starting with an empty notification log");
            DurableState::default()
        }),
        Err(_) => DurableState::default(),
    }
}

#[cfg(test)]
mod tests;
