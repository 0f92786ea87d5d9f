//! The lifecycle of alert instances: inactive → pending (while
//! `for` runs) → firing → resolved, per instance identified by a fingerprint of its labels,
//! with `keep_firing_for`, hysteresis (a separate resolve condition) and flapping
//! detection. Pure event-time logic: the caller passes the event time of every evaluation,
//! so tests need no clock and a replay gives the same transitions.

pub use callscope_schemas::alerting_status::{AlertState, label_fingerprint};
use std::collections::{BTreeMap, VecDeque};

/// A state change to record and route.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub fingerprint: u64,
    pub labels: BTreeMap<String, String>,
    pub from: AlertState,
    pub to: AlertState,
    pub at_ms: i64,
    /// Since when the condition held (firing) / the alert fired (resolved).
    pub active_since_ms: i64,
    pub value: f64,
    pub flapping: bool,
}

/// Timing of one rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    /// State changes within `flap_window_ms` that mark an instance as flapping.
    pub flap_changes: usize,
    pub flap_window_ms: i64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { for_ms: 0, keep_firing_for_ms: 0, flap_changes: 4, flap_window_ms: 600_000 }
    }
}

/// What one evaluation says about an instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The firing condition holds.
    Breach(f64),
    /// Neither condition holds (between the fire and resolve levels: hysteresis).
    Hold(f64),
    /// The resolve condition holds.
    Clear(f64),
}

#[derive(Debug, Clone)]
struct Instance {
    labels: BTreeMap<String, String>,
    state: AlertState,
    /// When the condition started to hold (pending/firing).
    since_ms: i64,
    /// Last time the condition held (for keep_firing_for).
    last_breach_ms: i64,
    changes: VecDeque<i64>,
}

/// The instances of one rule.
#[derive(Debug, Clone, Default)]
pub struct RuleInstances {
    instances: BTreeMap<u64, Instance>,
}

impl RuleInstances {
    /// Label sets of the instances that are pending or firing.
    pub fn active(&self) -> Vec<BTreeMap<String, String>> {
        self.instances
            .values()
            .filter(|i| matches!(i.state, AlertState::Pending | AlertState::Firing))
            .map(|i| i.labels.clone())
            .collect()
    }

    /// Pending and firing instances: labels, state, and since when.
    pub fn snapshot(&self) -> Vec<(BTreeMap<String, String>, AlertState, i64)> {
        self.instances
            .values()
            .filter(|i| matches!(i.state, AlertState::Pending | AlertState::Firing))
            .map(|i| (i.labels.clone(), i.state, i.since_ms))
            .collect()
    }

    /// Ends every instance (the rule went away): firing ones resolve at `now_ms`.
    pub fn resolve_all(&mut self, now_ms: i64) -> Vec<Transition> {
        let out = self
            .instances
            .iter()
            .filter(|(_, i)| i.state == AlertState::Firing)
            .map(|(fp, i)| Transition {
                fingerprint: *fp,
                labels: i.labels.clone(),
                from: AlertState::Firing,
                to: AlertState::Resolved,
                at_ms: now_ms,
                active_since_ms: i.since_ms,
                value: f64::NAN,
                flapping: false,
            })
            .collect();
        self.instances.clear();
        out
    }

    /// Forgets resolved instances whose flapping history has expired at `now_ms`.
    pub fn prune(&mut self, timing: &Timing, now_ms: i64) {
        self.instances.retain(|_, i| {
            i.state != AlertState::Resolved || i.changes.back().is_some_and(|t| now_ms - t <= timing.flap_window_ms)
        });
    }

    pub fn state(&self, labels: &BTreeMap<String, String>) -> AlertState {
        self.instances.get(&label_fingerprint(labels)).map_or(AlertState::Inactive, |i| i.state)
    }

    /// Applies one evaluation of one instance at event time `now_ms`; returns the
    /// transition it causes, if any.
    pub fn observe(
        &mut self,
        timing: &Timing,
        labels: &BTreeMap<String, String>,
        verdict: Verdict,
        now_ms: i64,
    ) -> Option<Transition> {
        let fp = label_fingerprint(labels);
        let instance = self.instances.entry(fp).or_insert_with(|| Instance {
            labels: labels.clone(),
            state: AlertState::Inactive,
            since_ms: now_ms,
            last_breach_ms: i64::MIN,
            changes: VecDeque::new(),
        });
        let from = instance.state;
        let value = match verdict {
            Verdict::Breach(v) | Verdict::Hold(v) | Verdict::Clear(v) => v,
        };
        let to = match (from, verdict) {
            (AlertState::Inactive | AlertState::Resolved, Verdict::Breach(_)) => {
                instance.since_ms = now_ms;
                instance.last_breach_ms = now_ms;
                if timing.for_ms == 0 { AlertState::Firing } else { AlertState::Pending }
            }
            (AlertState::Pending, Verdict::Breach(_)) => {
                instance.last_breach_ms = now_ms;
                if now_ms - instance.since_ms >= timing.for_ms { AlertState::Firing } else { AlertState::Pending }
            }
            // A pending alert whose condition stops holding never fired: back to inactive.
            (AlertState::Pending, _) => AlertState::Inactive,
            (AlertState::Firing, Verdict::Breach(_)) => {
                instance.last_breach_ms = now_ms;
                AlertState::Firing
            }
            (AlertState::Firing, Verdict::Hold(_)) => AlertState::Firing,
            (AlertState::Firing, Verdict::Clear(_)) => {
                if now_ms - instance.last_breach_ms >= timing.keep_firing_for_ms {
                    AlertState::Resolved
                } else {
                    AlertState::Firing
                }
            }
            (state, _) => state,
        };
        if to == from {
            return None;
        }
        instance.state = to;
        if matches!(to, AlertState::Firing | AlertState::Resolved) {
            instance.changes.push_back(now_ms);
            while instance.changes.front().is_some_and(|t| now_ms - t > timing.flap_window_ms) {
                instance.changes.pop_front();
            }
        }
        let flapping = instance.changes.len() >= timing.flap_changes;
        let active_since_ms = instance.since_ms;
        let labels = instance.labels.clone();
        if to == AlertState::Inactive {
            self.instances.remove(&fp);
        }
        // Pending ↔ inactive are internal; only firing and resolved are notified, but all
        // are returned for the history.
        Some(Transition { fingerprint: fp, labels, from, to, at_ms: now_ms, active_since_ms, value, flapping })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(service: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("alertname".to_string(), "CallFailureRateHigh".to_string()),
            ("service".to_string(), service.to_string()),
        ])
    }

    /// Threshold 5 % with a resolve level of 3 %: the verdict of a failure rate.
    fn verdict(rate: f64) -> Verdict {
        if rate > 0.05 {
            Verdict::Breach(rate)
        } else if rate < 0.03 {
            Verdict::Clear(rate)
        } else {
            Verdict::Hold(rate)
        }
    }

    #[test]
    fn pending_for_then_firing_then_resolved_with_hysteresis() {
        let timing = Timing { for_ms: 60_000, keep_firing_for_ms: 0, ..Default::default() };
        let mut rule = RuleInstances::default();
        let gw = labels("gw");
        let t = |s: i64| s * 1000;
        assert_eq!(rule.observe(&timing, &gw, verdict(0.01), t(0)), None);
        assert_eq!(rule.observe(&timing, &gw, verdict(0.08), t(10)).map(|x| x.to), Some(AlertState::Pending));
        assert_eq!(rule.observe(&timing, &gw, verdict(0.09), t(40)), None);
        let fired = rule.observe(&timing, &gw, verdict(0.09), t(70)).expect("fires");
        assert_eq!((fired.from, fired.to, fired.active_since_ms), (AlertState::Pending, AlertState::Firing, t(10)));
        // 4 % is between the levels: still firing (hysteresis).
        assert_eq!(rule.observe(&timing, &gw, verdict(0.04), t(80)), None);
        assert_eq!(rule.state(&gw), AlertState::Firing);
        assert_eq!(rule.observe(&timing, &gw, verdict(0.02), t(90)).map(|x| x.to), Some(AlertState::Resolved));
    }

    #[test]
    fn a_short_breach_never_fires() {
        let timing = Timing { for_ms: 60_000, ..Default::default() };
        let mut rule = RuleInstances::default();
        let gw = labels("gw");
        assert_eq!(rule.observe(&timing, &gw, verdict(0.2), 0).map(|x| x.to), Some(AlertState::Pending));
        assert_eq!(rule.observe(&timing, &gw, verdict(0.04), 30_000).map(|x| x.to), Some(AlertState::Inactive));
        assert_eq!(rule.state(&gw), AlertState::Inactive);
    }

    #[test]
    fn keep_firing_for_holds_a_recovered_alert() {
        let timing = Timing { keep_firing_for_ms: 120_000, ..Default::default() };
        let mut rule = RuleInstances::default();
        let gw = labels("gw");
        assert_eq!(rule.observe(&timing, &gw, verdict(0.2), 0).map(|x| x.to), Some(AlertState::Firing));
        assert_eq!(rule.observe(&timing, &gw, verdict(0.0), 60_000), None);
        assert_eq!(rule.observe(&timing, &gw, verdict(0.0), 120_000).map(|x| x.to), Some(AlertState::Resolved));
    }

    #[test]
    fn instances_are_separate_and_flapping_is_detected() {
        let timing = Timing { flap_changes: 4, flap_window_ms: 600_000, ..Default::default() };
        let mut rule = RuleInstances::default();
        let (a, b) = (labels("a"), labels("b"));
        assert_ne!(label_fingerprint(&a), label_fingerprint(&b));
        let mut last = None;
        for i in 0..4 {
            let v = if i % 2 == 0 { 0.2 } else { 0.0 };
            last = rule.observe(&timing, &a, verdict(v), i * 60_000);
        }
        assert!(last.expect("transition").flapping, "fired/resolved 4 times in 10 minutes");
        assert_eq!(rule.state(&b), AlertState::Inactive);
        assert_eq!(label_fingerprint(&a), label_fingerprint(&labels("a")), "stable fingerprint");
    }
}
