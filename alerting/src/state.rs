//! What the leading evaluator persists: the notification log and how far transitions have
//! been published, in one object of the hot tier.
//!
//! Every instance reads it at start (to restore the notification log before replaying
//! history); only the leader writes it. rdkafka does not expose the lease group's
//! generation, so the state carries a *leader term* instead: a new leader takes the stored
//! term + 1, and [`save`] writes only while the stored term is not newer than the writer's
//! (nor equal and claimed by another instance), with a conditional PUT on the object's
//! e-tag/version so that a write in between makes the save fail and be retried (see
//! [`Tier::put_if_match`] for local tiers, which have no conditional update). A writer
//! that finds a newer term is no longer the leader and stops saving.
//!
//! How far is a [`TransitionKey`] (`published_through`). Older versions kept an event time
//! (`published_through_ms`): a file that only has that still reads, as the key that covers
//! its whole millisecond, and the field is still written (every transition before the
//! key's millisecond is published) so that an older version can read a newer file.

use std::collections::BTreeMap;

use bytes::Bytes;
use callscope_storage::{CatalogKey, Tier};
use serde::{Deserialize, Serialize};

use crate::notify::dispatch::SentEntry;
use crate::notify::outbox::Outbox;
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
    /// The leader term of the writer (0 in files of older versions).
    #[serde(default)]
    pub term: u64,
    /// Notifications in the log that some channel has not delivered yet.
    #[serde(default)]
    pub outbox: Outbox,
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

/// What became of a [`save`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    Written,
    /// The object changed between the read and the write: try again.
    Conflict,
    /// A newer leader (this term, or the same term claimed by another instance) owns the
    /// state: the writer is no longer the leader.
    Superseded {
        term: u64,
    },
}

/// Whether the stored state belongs to a leader that supersedes `ours`.
fn superseded_by(stored: &DurableState, ours: &DurableState) -> bool {
    is_superseded(stored, ours.term, &ours.leader)
}

/// Whether the stored state belongs to a leader that supersedes the leader `leader` of
/// `term`: a higher term, or the same term claimed by another instance.
pub fn is_superseded(stored: &DurableState, term: u64, leader: &str) -> bool {
    stored.term > term || (stored.term == term && !stored.leader.is_empty() && stored.leader != leader)
}

/// Writes `state` (with its `term` and `leader` set by the caller) unless a newer leader
/// wrote the stored one.
pub async fn save(tier: &Tier, state: &DurableState) -> callscope_storage::Result<Saved> {
    let bytes = Bytes::from(serde_json::to_vec(state).unwrap_or_default());
    let mut newer = None;
    let written = tier
        .put_if_match(&CatalogKey::AlertingState.path(), |current| {
            // An unreadable state file is replaced.
            if let Some(stored) = current.and_then(|c| DurableState::from_json(c).ok())
                && superseded_by(&stored, state)
            {
                newer = Some(stored.term);
                return None;
            }
            Some(bytes)
        })
        .await?;
    Ok(match (written, newer) {
        (true, _) => Saved::Written,
        (false, Some(term)) => Saved::Superseded { term },
        (false, None) => Saved::Conflict,
    })
}

/// Reads the state: `None` when there is none yet, an error when storage cannot say.
pub async fn read_state_checked(tier: &Tier) -> callscope_storage::Result<Option<DurableState>> {
    let path = CatalogKey::AlertingState.path();
    let Some((bytes, _)) = tier.get_versioned(&path).await? else { return Ok(None) };
    Ok(Some(DurableState::from_json(&bytes).unwrap_or_else(|e| {
        tracing::warn!(error = %e, %path, "alerting state unreadable; starting with an empty notification log");
        DurableState::default()
    })))
}

/// Reads the state; absent or unreachable state reads as empty.
pub async fn read_state(tier: &Tier) -> DurableState {
    read_state_checked(tier).await.ok().flatten().unwrap_or_default()
}

#[cfg(test)]
mod tests;
