//! What the alert evaluator publishes and the query API reads: the alerting status object
//! (rules, their state, the active alerts, Alertmanager health) and the alert as receivers
//! see it. One set of types on both sides, so a field renamed on one side fails to compile
//! instead of silently reading `null`.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::events::{Alert, AlertStatus, Severity};

/// Labels (or annotations) of an alert.
pub type LabelSet = BTreeMap<String, String>;

/// An alert instance's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
    Resolved,
}

/// Fingerprint of a label set (stable across processes and versions: sorted keys, FNV-1a).
pub fn label_fingerprint(labels: &LabelSet) -> u64 {
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    labels.hash(&mut h);
    h.finish()
}

/// An alert as receivers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutedAlert {
    /// All labels: `alertname`, `service`, `severity` and the event's labels.
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub status: AlertStatus,
    pub starts_at_ms: i64,
    pub ends_at_ms: Option<i64>,
    pub value: Option<f64>,
    pub source: String,
    /// Hex fingerprint of `labels` (without `flapping`).
    pub fingerprint: String,
}

impl RoutedAlert {
    pub fn from_event(a: &Alert) -> RoutedAlert {
        let mut labels: LabelSet = a.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.insert("alertname".into(), a.alert_name.clone());
        labels.insert("service".into(), a.service.clone());
        labels.insert("severity".into(), a.severity.as_str().into());
        labels.remove("flapping");
        let fp = format!("{:016x}", label_fingerprint(&labels));
        if a.labels.get("flapping").is_some_and(|f| f == "true") {
            labels.insert("flapping".into(), "true".into());
        }
        RoutedAlert {
            annotations: a.annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            status: a.status,
            starts_at_ms: a.starts_at_ms,
            ends_at_ms: a.ends_at_ms,
            value: a.value,
            source: a.source.clone(),
            fingerprint: fp,
            labels,
        }
    }

    /// The alert event this alert is (the inverse of [`from_event`](Self::from_event)), for a
    /// transition the notification side makes itself, such as a resolution after a restart.
    pub fn to_event(&self) -> Alert {
        let label = |name: &str| self.labels.get(name).cloned().unwrap_or_default();
        Alert {
            alert_name: label("alertname"),
            severity: self.labels.get("severity").and_then(|s| Severity::parse(s)).unwrap_or(Severity::Warning),
            status: self.status,
            service: label("service"),
            labels: self
                .labels
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "service" | "severity"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            annotations: self.annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            starts_at_ms: self.starts_at_ms,
            ends_at_ms: self.ends_at_ms,
            value: self.value,
            source: self.source.clone(),
        }
    }
}

#[cfg(test)]
mod routed_alert_tests {
    use super::*;

    #[test]
    fn an_alert_event_survives_routing_and_back() {
        let event = Alert {
            alert_name: "QueueLong".into(),
            severity: Severity::Critical,
            status: AlertStatus::Resolved,
            service: "dialogue".into(),
            labels: [("queue".to_string(), "asr".to_string()), ("flapping".to_string(), "true".to_string())].into(),
            annotations: [("summary".to_string(), "long".to_string())].into(),
            starts_at_ms: 10,
            ends_at_ms: Some(20),
            value: Some(3.5),
            source: "callscope".into(),
        };
        let routed = RoutedAlert::from_event(&event);
        assert_eq!(routed.to_event(), event);
        assert_eq!(RoutedAlert::from_event(&routed.to_event()), routed);
    }
}

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// A Prometheus rule file (or the default pack).
    Prometheus,
    /// A smart rule of the API.
    Smart,
}

/// One rule's current state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleStatus {
    pub kind: RuleKind,
    /// The smart rule's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub group: String,
    pub name: String,
    pub expr: String,
    pub for_seconds: f64,
    pub keep_firing_for_seconds: f64,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    /// The most severe state of its instances (`inactive`, `pending` or `firing`).
    pub state: AlertState,
    pub active: Vec<ActiveInstance>,
    pub last_error: Option<String>,
    pub last_sample_count: usize,
}

/// A pending or firing instance of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveInstance {
    pub labels: LabelSet,
    pub state: AlertState,
    pub active_since_ms: i64,
}

/// An alert the leader knows of (firing, or resolved and not yet notified).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlert {
    pub receiver: String,
    /// `silenced by <id>` or `inhibited by <fingerprint>` while muted.
    pub muted: Option<String>,
    /// Whether this firing episode is acknowledged (no escalation).
    pub acknowledged: bool,
    #[serde(flatten)]
    pub alert: RoutedAlert,
}

impl ActiveAlert {
    /// The fingerprint of the alert that inhibits this one, if one does.
    pub fn inhibited_by(&self) -> Option<&str> {
        self.muted.as_deref().and_then(|m| m.strip_prefix("inhibited by "))
    }
}

/// An Alertmanager's health as the leader last probed it (`GET /api/v2/status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertmanagerHealth {
    /// The base URL without credentials or query.
    pub url: String,
    pub reachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at_ms: Option<i64>,
}

/// What the leading evaluator publishes every 2 s for the query API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertingStatus {
    pub instance: String,
    pub updated_at_ms: i64,
    pub event_time_ms: i64,
    pub rules: Vec<RuleStatus>,
    pub alerts: Vec<ActiveAlert>,
    pub rule_errors: Vec<String>,
    /// Health of the configured Alertmanagers, probed every 10 s.
    pub alertmanagers: Vec<AlertmanagerHealth>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_with_lowercase_states() {
        let status = AlertingStatus {
            instance: "i".into(),
            updated_at_ms: 5,
            rules: vec![RuleStatus {
                kind: RuleKind::Smart,
                id: Some("r1".into()),
                group: "smart".into(),
                name: "n".into(),
                expr: "x > 1".into(),
                for_seconds: 0.0,
                keep_firing_for_seconds: 0.0,
                labels: LabelSet::new(),
                annotations: LabelSet::new(),
                state: AlertState::Pending,
                active: vec![ActiveInstance {
                    labels: LabelSet::new(),
                    state: AlertState::Pending,
                    active_since_ms: 1,
                }],
                last_error: None,
                last_sample_count: 3,
            }],
            alertmanagers: vec![AlertmanagerHealth {
                url: "http://127.0.0.1:9093".into(),
                reachable: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let json = serde_json::to_value(&status).expect("serialize");
        assert_eq!(json["rules"][0]["kind"], "smart");
        assert_eq!(json["rules"][0]["state"], "pending");
        assert!(json["alertmanagers"][0].get("error").is_none());
        let back: AlertingStatus = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, status);
    }

    #[test]
    fn fingerprints_ignore_flapping_and_are_stable() {
        let mut labels = LabelSet::new();
        labels.insert("alertname".into(), "A".into());
        // A fixed value: fingerprints are stored (acks, notification log) and must not move.
        assert_eq!(format!("{:016x}", label_fingerprint(&labels)), "90e62a94550e0412");
        let muted = ActiveAlert {
            receiver: "r".into(),
            muted: Some("inhibited by 00ff".into()),
            acknowledged: false,
            alert: RoutedAlert {
                labels,
                annotations: LabelSet::new(),
                status: AlertStatus::Firing,
                starts_at_ms: 0,
                ends_at_ms: None,
                value: None,
                source: "rule".into(),
                fingerprint: "x".into(),
            },
        };
        assert_eq!(muted.inhibited_by(), Some("00ff"));
    }
}
