//! The outbox: notifications the dispatcher decided to send that some channel has not
//! delivered yet, saved with the notification log in the leader's durable state.
//!
//! The log says what each group was last told; the outbox makes that true. A notification
//! enters the outbox in the same step that enters it in the log, and leaves it channel by
//! channel as each channel reports delivery. So a crash, a failover or a channel outage
//! between the decision and the delivery loses nothing: the next leader finds the
//! notification in the saved outbox and sends it again (at least once: a channel that
//! delivered just before a crash, before the state was saved, delivers twice). A channel
//! that failed after its retries is tried again every [`RETRY_AFTER_MS`] until the
//! notification is [`MAX_AGE_MS`] old; one that refused it for good (a 4xx) is not.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::dispatch::Notification;

/// A failed channel is tried again after this long.
pub const RETRY_AFTER_MS: i64 = 60_000;
/// A notification still undelivered after this long is given up (and counted).
pub const MAX_AGE_MS: i64 = 3_600_000;

/// One notification and the channels still to deliver it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub notification: Notification,
    /// The receiver's channels (see [`super::notifier::Notifier::channels_of`]) that have
    /// not delivered it.
    pub channels: BTreeSet<String>,
    pub created_ms: i64,
    /// When the channels left are tried again; `None` while they hold it in their queues.
    #[serde(default)]
    pub retry_at_ms: Option<i64>,
    #[serde(default)]
    pub failures: u32,
}

/// What a channel did with a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Failed after its retries, or could not be queued: try again later.
    Failed,
    /// Refused for good (the receiver rejected the request): do not try again.
    Rejected,
}

/// Notifications on their way, by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    pub next_id: u64,
    pub pending: BTreeMap<u64, Pending>,
}

impl Outbox {
    /// Adds a notification for `channels` (none: nothing to deliver) and returns its id.
    pub fn add(&mut self, notification: Notification, channels: BTreeSet<String>, now_ms: i64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if !channels.is_empty() {
            self.pending
                .insert(id, Pending { notification, channels, created_ms: now_ms, retry_at_ms: None, failures: 0 });
        }
        id
    }

    /// Records what `channel` did with notification `id`; returns whether anything changed.
    pub fn report(&mut self, id: u64, channel: &str, outcome: Outcome, now_ms: i64) -> bool {
        let Some(pending) = self.pending.get_mut(&id) else { return false };
        if !pending.channels.contains(channel) {
            return false;
        }
        match outcome {
            Outcome::Delivered | Outcome::Rejected => {
                pending.channels.remove(channel);
            }
            Outcome::Failed => {
                pending.failures += 1;
                let retry = now_ms.saturating_add(RETRY_AFTER_MS);
                pending.retry_at_ms = Some(pending.retry_at_ms.map_or(retry, |r| r.min(retry)));
            }
        }
        if pending.channels.is_empty() {
            self.pending.remove(&id);
        }
        true
    }

    /// The notifications whose retry is due (or, with `all`, every one: after a takeover
    /// nothing is in a queue any more), marked as queued again.
    pub fn due(&mut self, now_ms: i64, all: bool) -> Vec<(u64, Notification, BTreeSet<String>)> {
        let mut due = Vec::new();
        for (id, pending) in &mut self.pending {
            if all || pending.retry_at_ms.is_some_and(|at| at <= now_ms) {
                pending.retry_at_ms = None;
                due.push((*id, pending.notification.clone(), pending.channels.clone()));
            }
        }
        due
    }

    /// Removes and returns the notifications older than [`MAX_AGE_MS`].
    pub fn expire(&mut self, now_ms: i64) -> Vec<Pending> {
        let old: Vec<u64> =
            self.pending.iter().filter(|(_, p)| now_ms - p.created_ms > MAX_AGE_MS).map(|(id, _)| *id).collect();
        old.into_iter().filter_map(|id| self.pending.remove(&id)).collect()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(at_ms: i64) -> Notification {
        Notification {
            receiver: "oncall".into(),
            group_key: "{0}:".into(),
            group_labels: Default::default(),
            alerts: Vec::new(),
            at_ms,
        }
    }

    fn channels(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_notification_leaves_once_every_channel_delivered_or_rejected_it() {
        let mut outbox = Outbox::default();
        let id = outbox.add(notification(0), channels(&["webhook#0", "slack#0", "email#0"]), 0);
        assert!(outbox.report(id, "webhook#0", Outcome::Delivered, 1));
        assert!(!outbox.report(id, "webhook#0", Outcome::Delivered, 1), "reported twice");
        assert!(outbox.report(id, "email#0", Outcome::Rejected, 1));
        assert_eq!(outbox.len(), 1);
        assert!(outbox.report(id, "slack#0", Outcome::Delivered, 2));
        assert!(outbox.is_empty());
        assert!(outbox.add(notification(3), BTreeSet::new(), 3) > id, "ids are not reused");
        assert!(outbox.is_empty(), "nothing to deliver is not kept");
    }

    #[test]
    fn a_failed_channel_is_tried_again_later_and_given_up_after_an_hour() {
        let mut outbox = Outbox::default();
        let id = outbox.add(notification(0), channels(&["webhook#0", "slack#0"]), 0);
        assert!(outbox.report(id, "slack#0", Outcome::Delivered, 10));
        assert!(outbox.report(id, "webhook#0", Outcome::Failed, 10));
        assert!(outbox.due(10 + RETRY_AFTER_MS - 1, false).is_empty(), "not before the retry time");
        let due = outbox.due(10 + RETRY_AFTER_MS, false);
        assert_eq!(due, vec![(id, notification(0), channels(&["webhook#0"]))], "only the channel that failed");
        assert!(outbox.due(10 + RETRY_AFTER_MS, false).is_empty(), "queued again, not due twice");
        assert_eq!(outbox.due(20, true).len(), 1, "after a takeover everything is due");
        assert!(outbox.expire(MAX_AGE_MS).is_empty());
        assert_eq!(outbox.expire(MAX_AGE_MS + 1).len(), 1);
        assert!(outbox.is_empty());
    }

    #[test]
    fn the_outbox_survives_a_save() {
        let mut outbox = Outbox::default();
        outbox.add(notification(5), channels(&["webhook#0"]), 5);
        let json = serde_json::to_string(&outbox).expect("json");
        assert_eq!(serde_json::from_str::<Outbox>(&json).expect("read"), outbox);
    }
}
