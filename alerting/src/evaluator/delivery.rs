//! How the leader gets notifications delivered, and when it may send at all.
//!
//! **Delivered, not queued.** A flush enters each notification in the log and in the outbox
//! ([`crate::notify::outbox`]) in one step; the channels report every delivery and failure,
//! and the outbox keeps the notification until each channel delivered it. Both are saved
//! in the same state object, so whatever the log says was sent either was delivered or is
//! still in the saved outbox, and the next leader sends it.
//!
//! **A lease in storage, not only in the group.** Kafka's lease group decides who leads;
//! storage decides whether the leader may still send. A leader sends only within
//! [`LEASE_MS`] of storage confirming that no newer leader took the state (a save, or a
//! read of the state every slow tick), so a leader cut off from the group and from storage
//! stops sending within [`LEASE_MS`] instead of when its session times out. A new leader
//! that takes over from another instance saves its claim of the next term at once and
//! sends nothing until [`LEASE_MS`] after that save, the longest the old one may still
//! send; the old one learns of the claim at its next read and stops.

use std::collections::BTreeSet;

use super::Evaluator;
use crate::metrics::AlertingMetrics;
use crate::notify::dispatch::Notification;
use crate::notify::notifier::{DeliveryReport, Notifier};
use crate::notify::outbox::{Outbox, Outcome};
use crate::state::read_state_checked;

/// How long a storage confirmation lets the leader send.
pub const LEASE_MS: i64 = 6_000;

impl Evaluator {
    /// Whether storage confirmed this leader recently enough for it to send.
    pub(super) fn lease_held(&self, wall: i64) -> bool {
        !self.claim_pending
            && wall >= self.hold_until_ms
            && self.confirmed_ms.is_some_and(|at| wall.saturating_sub(at) <= LEASE_MS)
    }

    /// A leader reads the state every slow tick: a newer leader's claim (say, this one is
    /// cut off from the group but not from storage) makes it stop notifying and publishing
    /// at once; no newer claim renews its lease.
    pub(super) async fn check_superseded(&mut self, wall: i64) {
        if !self.leader || self.superseded {
            return;
        }
        let stored = match read_state_checked(&self.tier).await {
            Ok(stored) => stored.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the alerting state to confirm leadership");
                return;
            }
        };
        if crate::state::is_superseded(&stored, self.term, &self.config.instance_id) {
            self.superseded = true;
            self.publisher.deactivate();
            tracing::warn!(
                term = self.term,
                newer_term = stored.term,
                newer_leader = %stored.leader,
                "a newer alerting leader took over; this process stops notifying"
            );
        } else {
            self.confirmed_ms = Some(wall);
        }
    }

    pub(super) fn flush(&mut self, wall: i64) {
        if !self.leader || self.superseded {
            // A standby sends nothing and keeps resolved alerts for an hour: if it takes over
            // before the leader notified a resolution, its first flush (with the leader's
            // log) sends it.
            self.dispatcher.forget_resolved_before(wall - 3_600_000);
            return;
        }
        if !self.lease_held(wall) {
            // The groups stay due: they are flushed once storage confirms this leader.
            AlertingMetrics::global().flushes_held.inc();
            return;
        }
        // What the outbox holds for a retry (everything, after a takeover) goes first, so
        // that what this flush adds is not queued twice.
        self.send_outbox(wall);
        let (notifier, outbox) = (&self.notifier, &mut self.state.outbox);
        let changed = self.dispatcher.flush_with(wall, |n| {
            if let Some(notifier) = notifier {
                let channels = notifier.channels_of(&n.receiver);
                let id = outbox.add(n.clone(), channels.clone(), wall);
                queue(notifier, outbox, id, n, &channels, wall);
            }
            // In the outbox (or nothing to deliver): the log may record it.
            true
        });
        if changed {
            self.state_dirty = true;
        }
        AlertingMetrics::global().outbox_pending.set(self.state.outbox.len() as i64);
    }

    /// Queues what the outbox holds for a retry (everything, after a takeover), and gives
    /// up what has waited too long.
    fn send_outbox(&mut self, wall: i64) {
        let metrics = AlertingMetrics::global();
        let all = std::mem::take(&mut self.requeue_outbox);
        let outbox = &mut self.state.outbox;
        if let Some(notifier) = &self.notifier {
            for (id, n, channels) in outbox.due(wall, all) {
                self.state_dirty = true;
                queue(notifier, outbox, id, &n, &channels, wall);
            }
        }
        for expired in outbox.expire(wall) {
            self.state_dirty = true;
            let Notification { receiver, group_key, .. } = &expired.notification;
            for channel in &expired.channels {
                metrics.notifications.with_label_values(&[receiver.as_str(), channel.as_str(), "expired"]).inc();
            }
            tracing::error!(receiver = %receiver, group = %group_key, channels = ?expired.channels, failures = expired.failures, "notification undelivered for an hour; given up");
        }
    }

    /// A channel reports what became of an outbox notification.
    pub(super) fn on_delivery(&mut self, report: DeliveryReport, wall: i64) {
        if self.state.outbox.report(report.id, &report.channel, report.outcome, wall) {
            self.state_dirty = true;
            AlertingMetrics::global().outbox_pending.set(self.state.outbox.len() as i64);
        }
    }

    /// Firing alerts are re-sent to Alertmanagers every minute so that they stay active
    /// there (not through the outbox: the next re-send repeats a lost one).
    pub(super) fn resend_to_alertmanagers(&self, wall: i64) {
        let Some(notifier) = &self.notifier else { return };
        if !self.lease_held(wall) {
            return;
        }
        for receiver in &notifier.alertmanager_receivers {
            let alerts: Vec<crate::notify::dispatch::RoutedAlert> =
                self.dispatcher.alerts().filter(|(r, _)| r == receiver).map(|(_, a)| a.clone()).collect();
            if alerts.is_empty() {
                continue;
            }
            notifier.enqueue_alertmanager(&Notification {
                receiver: receiver.clone(),
                group_key: "resend".into(),
                group_labels: Default::default(),
                alerts,
                at_ms: wall,
            });
        }
    }
}

/// Hands outbox notification `id` to those of `channels` the configuration still has (the
/// others are not waited for), and marks the ones whose queue was full as failed.
fn queue(notifier: &Notifier, outbox: &mut Outbox, id: u64, n: &Notification, channels: &BTreeSet<String>, wall: i64) {
    let known = notifier.channels_of(&n.receiver);
    for channel in channels.difference(&known) {
        outbox.report(id, channel, Outcome::Rejected, wall);
    }
    let wanted: BTreeSet<String> = channels.intersection(&known).cloned().collect();
    let took = notifier.enqueue(n, id, &wanted);
    for channel in wanted.difference(&took) {
        outbox.report(id, channel, Outcome::Failed, wall);
    }
}
