//! Alertmanager's dispatcher, in event order with an injected clock: each alert goes to
//! the routes that match it, into an aggregation group per route and `group_by` label
//! values; a group is flushed `group_wait` after it is created and then every
//! `group_interval`, and a flush notifies only when something changed (a new firing
//! alert, all alerts resolved, a newly resolved one) or `repeat_interval` passed — the
//! same rule as Alertmanager's notification log, so a group is never notified twice for
//! the same state. A notification goes in the log only once it is queued for delivery
//! ([`Dispatcher::flush_with`]): one that could not be queued is tried again at the group's
//! next flush. A group whose alerts are all muted sends nothing, never an empty message.

use std::collections::{BTreeMap, BTreeSet};

use callscope_schemas::events::AlertStatus;
use serde::{Deserialize, Serialize};

use super::config::{InhibitRule, Route, all_match};
use callscope_schemas::promql::eval::LabelSet;
use promql_parser::label::Matcher;

pub use callscope_schemas::alerting_status::RoutedAlert;

/// One message for one receiver: a group's alerts at a flush.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub receiver: String,
    pub group_key: String,
    pub group_labels: LabelSet,
    pub alerts: Vec<RoutedAlert>,
    pub at_ms: i64,
}

impl Notification {
    /// `firing` while any alert fires.
    pub fn status(&self) -> AlertStatus {
        if self.alerts.iter().any(|a| a.status == AlertStatus::Firing) {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        }
    }

    /// Labels every alert shares.
    pub fn common_labels(&self) -> LabelSet {
        common(self.alerts.iter().map(|a| &a.labels))
    }

    pub fn common_annotations(&self) -> LabelSet {
        common(self.alerts.iter().map(|a| &a.annotations))
    }
}

fn common<'a>(mut sets: impl Iterator<Item = &'a LabelSet>) -> LabelSet {
    let Some(first) = sets.next() else { return LabelSet::new() };
    let mut out = first.clone();
    for s in sets {
        out.retain(|k, v| s.get(k) == Some(v));
    }
    out
}

/// What a group's last notification said (the notification log entry).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SentEntry {
    pub at_ms: i64,
    pub firing: BTreeSet<String>,
    pub resolved: BTreeSet<String>,
    /// When each firing alert was first notified (for escalation).
    #[serde(default)]
    pub notified_at: BTreeMap<String, i64>,
    /// Alerts already escalated.
    #[serde(default)]
    pub escalated: BTreeSet<String>,
    /// The firing alerts as notified, to notify their resolution even when their source is
    /// gone (logs of older versions lack it).
    #[serde(default)]
    pub alerts: BTreeMap<String, RoutedAlert>,
}

#[derive(Debug, Clone)]
struct Group {
    receiver: String,
    escalation: Option<(i64, String)>,
    labels: LabelSet,
    group_interval_ms: i64,
    repeat_interval_ms: i64,
    alerts: BTreeMap<String, RoutedAlert>,
    next_flush_ms: i64,
}

/// An active-or-not silence, ready to match.
#[derive(Debug, Clone)]
pub struct SilenceRule {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
}

/// Routes alerts into groups and decides when each group is notified.
pub struct Dispatcher {
    root: Route,
    silences: Vec<SilenceRule>,
    inhibit: Vec<InhibitRule>,
    /// Acknowledged alerts: fingerprint → the `starts_at_ms` of the episode acknowledged.
    acks: BTreeMap<String, i64>,
    groups: BTreeMap<String, Group>,
    /// Notification log: group key → what was last sent.
    sent: BTreeMap<String, SentEntry>,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Dispatcher {
    pub fn new(root: Route) -> Dispatcher {
        Dispatcher {
            root,
            silences: Vec::new(),
            inhibit: Vec::new(),
            acks: BTreeMap::new(),
            groups: BTreeMap::new(),
            sent: BTreeMap::new(),
        }
    }

    pub fn set_silences(&mut self, silences: Vec<SilenceRule>) {
        self.silences = silences;
    }

    pub fn set_acks(&mut self, acks: BTreeMap<String, i64>) {
        self.acks = acks;
    }

    /// Whether the alert's current episode is acknowledged.
    pub fn acked(&self, alert: &RoutedAlert) -> bool {
        self.acks.get(&alert.fingerprint).is_some_and(|s| *s == alert.starts_at_ms)
    }

    pub fn set_inhibit_rules(&mut self, rules: Vec<InhibitRule>) {
        self.inhibit = rules;
    }

    /// Why `alert` is muted at `now_ms`: `silenced by <id>` or `inhibited by <fingerprint>`.
    pub fn mute_reason(&self, alert: &RoutedAlert, now_ms: i64) -> Option<String> {
        if let Some(s) = self
            .silences
            .iter()
            .find(|s| s.starts_at_ms <= now_ms && now_ms < s.ends_at_ms && all_match(&s.matchers, &alert.labels))
        {
            return Some(format!("silenced by {}", s.id));
        }
        for rule in self.inhibit.iter().filter(|r| all_match(&r.target, &alert.labels)) {
            let source = self.groups.values().flat_map(|g| g.alerts.values()).find(|src| {
                src.status == AlertStatus::Firing
                    && src.fingerprint != alert.fingerprint
                    && all_match(&rule.source, &src.labels)
                    && rule.equal.iter().all(|l| src.labels.get(l) == alert.labels.get(l))
            });
            if let Some(src) = source {
                return Some(format!("inhibited by {}", src.fingerprint));
            }
        }
        None
    }

    /// Takes a new route tree; existing groups keep their alerts and timing.
    pub fn set_route(&mut self, root: Route) {
        self.root = root;
    }

    /// Restores the notification log (after a restart or a change of leader).
    pub fn restore_log(&mut self, sent: BTreeMap<String, SentEntry>) {
        self.sent = sent;
    }

    pub fn log(&self) -> &BTreeMap<String, SentEntry> {
        &self.sent
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Alerts currently held in groups (firing ones and resolved ones not yet notified).
    pub fn alerts(&self) -> impl Iterator<Item = (&str, &RoutedAlert)> {
        self.groups.values().flat_map(|g| g.alerts.values().map(move |a| (g.receiver.as_str(), a)))
    }

    /// Puts an alert into the groups of every route it matches.
    pub fn receive(&mut self, alert: RoutedAlert, now_ms: i64) {
        for route in self.root.matching(&alert.labels) {
            let group_labels: LabelSet = match &route.group_by {
                Some(keys) => keys.iter().filter_map(|k| alert.labels.get(k).map(|v| (k.clone(), v.clone()))).collect(),
                None => alert.labels.clone(),
            };
            let key = format!(
                "{{{}}}:{}",
                route.id,
                group_labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(",")
            );
            let known = self.sent.get(&key).is_some_and(|e| e.firing.contains(&alert.fingerprint));
            let group = self.groups.entry(key).or_insert_with(|| Group {
                receiver: route.receiver.clone(),
                escalation: route.escalation.as_ref().map(|(d, r)| (ms(*d), r.clone())),
                labels: group_labels,
                group_interval_ms: ms(route.group_interval),
                repeat_interval_ms: ms(route.repeat_interval),
                alerts: BTreeMap::new(),
                next_flush_ms: now_ms + ms(route.group_wait),
            });
            // A resolved alert this group never notified as firing is not news.
            if alert.status == AlertStatus::Resolved && !group.alerts.contains_key(&alert.fingerprint) && !known {
                continue;
            }
            group.alerts.insert(alert.fingerprint.clone(), alert.clone());
        }
        self.groups.retain(|_, g| !g.alerts.is_empty());
    }

    /// Resolves every alert the log says was notified firing and that fires nowhere now (no
    /// group holds it firing): after a restart has read back its history, an alert that
    /// fired before the history read and resolved during it (or whose rule is gone) is
    /// otherwise "firing" in the log forever. The resolutions go into the groups like any
    /// other, so only a flush (the leader's) notifies them. An alert the log has no record
    /// of (logs of older versions) cannot be notified: it leaves the log's firing set.
    /// Returns the fingerprints resolved.
    pub fn resolve_missing(&mut self, now_ms: i64) -> Vec<RoutedAlert> {
        let live: BTreeSet<String> = self
            .alerts()
            .filter(|(_, a)| a.status == AlertStatus::Firing)
            .map(|(_, a)| a.fingerprint.clone())
            .collect();
        let mut stale: BTreeMap<String, Option<RoutedAlert>> = BTreeMap::new();
        for entry in self.sent.values() {
            for fp in entry.firing.iter().filter(|fp| !live.contains(*fp)) {
                let record = entry.alerts.get(fp).cloned();
                let known = stale.entry(fp.clone()).or_default();
                if known.is_none() {
                    *known = record;
                }
            }
        }
        let mut resolved = Vec::new();
        for (fp, record) in &stale {
            match record {
                Some(alert) => {
                    let mut alert = alert.clone();
                    alert.status = AlertStatus::Resolved;
                    alert.ends_at_ms = Some(now_ms.max(alert.starts_at_ms));
                    self.receive(alert.clone(), now_ms);
                    resolved.push(alert);
                }
                None => {
                    tracing::info!(fingerprint = %fp, "a logged alert without a record (an older log) leaves the log unnotified");
                    for entry in self.sent.values_mut() {
                        entry.firing.remove(fp);
                        entry.notified_at.remove(fp);
                    }
                }
            }
        }
        self.sent.retain(|key, e| !e.firing.is_empty() || self.groups.contains_key(key));
        resolved
    }

    /// Drops resolved alerts that ended before `cutoff_ms` without being flushed (a
    /// standby's groups), and groups left empty.
    pub fn forget_resolved_before(&mut self, cutoff_ms: i64) {
        for g in self.groups.values_mut() {
            g.alerts.retain(|_, a| a.status == AlertStatus::Firing || a.ends_at_ms.is_none_or(|e| e >= cutoff_ms));
        }
        self.groups.retain(|_, g| !g.alerts.is_empty());
    }

    /// The earliest time a group is due, to sleep until then.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.groups.values().map(|g| g.next_flush_ms).min()
    }

    /// Flushes the groups that are due at `now_ms`; returns the notifications to send (all
    /// recorded as sent).
    pub fn flush(&mut self, now_ms: i64) -> Vec<Notification> {
        let mut out = Vec::new();
        let _ = self.flush_with(now_ms, |n| {
            out.push(n.clone());
            true
        });
        out
    }

    /// Flushes the groups that are due at `now_ms`, handing each notification to `queue`.
    /// One that `queue` refuses (returns `false`, say on a full channel queue) is not
    /// recorded: the log keeps what it said before and the group keeps its resolved alerts,
    /// so the group's next flush tries again. Returns whether the log changed.
    #[must_use]
    pub fn flush_with(&mut self, now_ms: i64, mut queue: impl FnMut(&Notification) -> bool) -> bool {
        let mut changed = false;
        let due: Vec<String> =
            self.groups.iter().filter(|(_, g)| g.next_flush_ms <= now_ms).map(|(k, _)| k.clone()).collect();
        for key in due {
            // Silenced and inhibited alerts are left out (and notified once unmuted).
            let unmuted: Vec<RoutedAlert> = match self.groups.get(&key) {
                Some(g) => g.alerts.values().filter(|a| self.mute_reason(a, now_ms).is_none()).cloned().collect(),
                None => continue,
            };
            let Some(group) = self.groups.get_mut(&key) else { continue };
            group.next_flush_ms = now_ms + group.group_interval_ms;
            let firing: BTreeSet<String> =
                unmuted.iter().filter(|a| a.status == AlertStatus::Firing).map(|a| a.fingerprint.clone()).collect();
            let resolved: BTreeSet<String> =
                unmuted.iter().filter(|a| a.status == AlertStatus::Resolved).map(|a| a.fingerprint.clone()).collect();
            let entry = self.sent.get(&key);
            let notify = match entry {
                None => !firing.is_empty(),
                Some(e) if !firing.is_subset(&e.firing) => true,
                Some(e) if firing.is_empty() => !e.firing.is_empty(),
                Some(e) if !resolved.is_subset(&e.resolved) => true,
                Some(e) => e.at_ms <= now_ms - group.repeat_interval_ms,
            };
            // Whether a notification of this group was refused (to be tried again).
            let mut refused = false;
            if notify {
                // All muted (say, silenced, then resolved): nothing is sent, but the log moves
                // on as before, so that alerts still firing are announced again once unmuted.
                if !unmuted.is_empty() {
                    let n = Notification {
                        receiver: group.receiver.clone(),
                        group_key: key.clone(),
                        group_labels: group.labels.clone(),
                        alerts: unmuted.clone(),
                        at_ms: now_ms,
                    };
                    refused = !queue(&n);
                }
            }
            if notify && !refused {
                changed = true;
                let previous = self.sent.remove(&key).unwrap_or_default();
                let mut notified_at = previous.notified_at;
                notified_at.retain(|fp, _| firing.contains(fp));
                for fp in &firing {
                    notified_at.entry(fp.clone()).or_insert(now_ms);
                }
                let entry = SentEntry {
                    at_ms: now_ms,
                    firing: firing.clone(),
                    resolved: resolved.clone(),
                    notified_at,
                    escalated: previous.escalated,
                    alerts: unmuted
                        .iter()
                        .filter(|a| a.status == AlertStatus::Firing)
                        .map(|a| (a.fingerprint.clone(), a.clone()))
                        .collect(),
                };
                self.sent.insert(key.clone(), entry);
            }
            // Escalation: firing alerts notified `after` ago and not acknowledged go to the
            // escalation receiver once; their resolution follows them there.
            if let (Some((after, to)), Some(entry)) = (group.escalation.clone(), self.sent.get_mut(&key)) {
                let acks = &self.acks;
                let due: Vec<RoutedAlert> = unmuted
                    .iter()
                    .filter(|a| {
                        let fp = &a.fingerprint;
                        match a.status {
                            AlertStatus::Firing => {
                                !entry.escalated.contains(fp)
                                    && entry.notified_at.get(fp).is_some_and(|t| now_ms - t >= after)
                                    && acks.get(fp).is_none_or(|s| *s != a.starts_at_ms)
                            }
                            AlertStatus::Resolved => entry.escalated.contains(fp),
                        }
                    })
                    .cloned()
                    .collect();
                if !due.is_empty() {
                    let mut labels = group.labels.clone();
                    labels.insert("escalated".into(), "true".into());
                    let n = Notification {
                        receiver: to,
                        group_key: format!("{key}:escalated"),
                        group_labels: labels,
                        alerts: due,
                        at_ms: now_ms,
                    };
                    if queue(&n) {
                        changed = true;
                        for a in &n.alerts {
                            match a.status {
                                AlertStatus::Firing => entry.escalated.insert(a.fingerprint.clone()),
                                AlertStatus::Resolved => entry.escalated.remove(&a.fingerprint),
                            };
                        }
                    } else {
                        refused = true;
                    }
                }
            }
            if refused {
                continue;
            }
            // Resolved alerts leave the group once their state is in the log.
            group.alerts.retain(|_, a| a.status == AlertStatus::Firing);
            if group.alerts.is_empty() {
                self.groups.remove(&key);
                if firing.is_empty() {
                    changed |= self.sent.remove(&key).is_some();
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests;
