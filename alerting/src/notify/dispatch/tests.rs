use super::*;
use crate::notify::config::NotifyConfig;
use callscope_schemas::events::{Alert, Severity};

const CONFIG: &str = r#"
route:
  receiver: oncall
  group_by: [alertname]
  group_wait: 10s
  group_interval: 1m
  repeat_interval: 1h
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      group_by: [alertname, service]
      group_wait: 0s
receivers: [{name: oncall}, {name: pager}]
"#;

fn dispatcher() -> Dispatcher {
    Dispatcher::new(NotifyConfig::parse(CONFIG).expect("config").1)
}

fn alert(name: &str, service: &str, severity: Severity, status: AlertStatus) -> RoutedAlert {
    RoutedAlert::from_event(&Alert {
        alert_name: name.into(),
        severity,
        status,
        service: service.into(),
        labels: Default::default(),
        annotations: Default::default(),
        starts_at_ms: 0,
        ends_at_ms: None,
        value: Some(1.0),
        source: "test".into(),
    })
}

fn summary(ns: &[Notification]) -> Vec<(String, AlertStatus, usize)> {
    ns.iter().map(|n| (n.receiver.clone(), n.status(), n.alerts.len())).collect()
}

#[test]
fn a_group_waits_then_notifies_once_with_all_its_alerts() {
    let mut d = dispatcher();
    d.receive(alert("HighLatency", "asr", Severity::Warning, AlertStatus::Firing), 0);
    d.receive(alert("HighLatency", "tts", Severity::Warning, AlertStatus::Firing), 3_000);
    assert!(d.flush(9_999).is_empty(), "group_wait not over");
    let sent = d.flush(10_000);
    assert_eq!(summary(&sent), [("oncall".to_string(), AlertStatus::Firing, 2)]);
    assert_eq!(sent[0].group_labels, LabelSet::from([("alertname".into(), "HighLatency".into())]));
    assert_eq!(sent[0].common_labels().get("severity").map(String::as_str), Some("warning"));
    // The same alerts again: nothing new until the repeat interval.
    d.receive(alert("HighLatency", "asr", Severity::Warning, AlertStatus::Firing), 20_000);
    assert!(d.flush(70_000).is_empty());
    assert_eq!(d.next_due_ms(), Some(130_000));
    assert_eq!(summary(&d.flush(3_610_000)), [("oncall".to_string(), AlertStatus::Firing, 2)], "repeat_interval");
}

#[test]
fn new_alerts_wait_for_the_group_interval_and_resolution_is_notified() {
    let mut d = dispatcher();
    d.receive(alert("HighLatency", "asr", Severity::Warning, AlertStatus::Firing), 0);
    assert_eq!(d.flush(10_000).len(), 1);
    d.receive(alert("HighLatency", "tts", Severity::Warning, AlertStatus::Firing), 15_000);
    assert!(d.flush(60_000).is_empty(), "next flush is a group_interval after the last");
    assert_eq!(summary(&d.flush(70_000)), [("oncall".to_string(), AlertStatus::Firing, 2)]);
    d.receive(alert("HighLatency", "asr", Severity::Warning, AlertStatus::Resolved), 80_000);
    let partly = d.flush(130_000);
    assert_eq!(partly.len(), 1, "a newly resolved alert is news");
    assert_eq!(partly[0].alerts.iter().filter(|a| a.status == AlertStatus::Resolved).count(), 1);
    d.receive(alert("HighLatency", "tts", Severity::Warning, AlertStatus::Resolved), 140_000);
    assert_eq!(summary(&d.flush(190_000)), [("oncall".to_string(), AlertStatus::Resolved, 1)]);
    assert_eq!(d.group_count(), 0);
    assert!(d.log().is_empty(), "a resolved group leaves the log");
}

#[test]
fn critical_alerts_route_to_the_pager_without_waiting() {
    let mut d = dispatcher();
    d.receive(alert("CallFailureRateHigh", "gw", Severity::Critical, AlertStatus::Firing), 0);
    d.receive(alert("CallFailureRateHigh", "billing", Severity::Critical, AlertStatus::Firing), 0);
    let sent = d.flush(0);
    assert_eq!(summary(&sent).len(), 2, "grouped by alertname and service: {:?}", summary(&sent));
    assert!(sent.iter().all(|n| n.receiver == "pager"));
}

#[test]
fn resolved_alerts_never_notified_as_firing_are_dropped() {
    let mut d = dispatcher();
    d.receive(alert("HighLatency", "asr", Severity::Warning, AlertStatus::Firing), 0);
    d.receive(alert("HighLatency", "asr", Severity::Warning, AlertStatus::Resolved), 5_000);
    assert!(d.flush(10_000).is_empty(), "fired and resolved within group_wait: nobody knew");
    d.receive(alert("Other", "asr", Severity::Warning, AlertStatus::Resolved), 20_000);
    assert_eq!(d.group_count(), 0);
}

#[test]
fn a_restored_log_prevents_renotification_after_restart() {
    let mut d = dispatcher();
    d.receive(alert("HighLatency", "asr", Severity::Warning, AlertStatus::Firing), 0);
    assert_eq!(d.flush(10_000).len(), 1);
    let log = d.log().clone();
    let mut restarted = dispatcher();
    restarted.restore_log(log);
    restarted.receive(alert("HighLatency", "asr", Severity::Warning, AlertStatus::Firing), 20_000);
    assert!(restarted.flush(30_000).is_empty(), "still firing: already notified");
    restarted.receive(alert("HighLatency", "asr", Severity::Warning, AlertStatus::Resolved), 40_000);
    assert_eq!(summary(&restarted.flush(90_000)), [("oncall".to_string(), AlertStatus::Resolved, 1)]);
}

#[test]
fn silences_mute_until_they_expire_and_inhibition_mutes_symptoms() {
    let config = format!(
        "{CONFIG}inhibit_rules:\n  - source_matchers: ['alertname=\"ServiceDown\"']\n    target_matchers: ['severity=\"warning\"']\n    equal: [service]\n"
    );
    let (config, route) = NotifyConfig::parse(&config).expect("config");
    let mut d = Dispatcher::new(route);
    d.set_inhibit_rules(config.inhibit_rules().expect("rules"));
    d.set_silences(vec![SilenceRule {
        id: "s1".into(),
        matchers: vec![crate::notify::config::parse_matcher(r#"service=~"bill.*""#).expect("matcher")],
        starts_at_ms: 0,
        ends_at_ms: 100_000,
    }]);
    d.receive(alert("HighLatency", "billing", Severity::Warning, AlertStatus::Firing), 0);
    assert!(d.flush(10_000).is_empty(), "silenced");
    let silenced = d.alerts().next().expect("held").1.clone();
    assert_eq!(d.mute_reason(&silenced, 10_000).as_deref(), Some("silenced by s1"));
    // The silence expires by itself: the next flush notifies.
    assert_eq!(summary(&d.flush(130_000)), [("oncall".to_string(), AlertStatus::Firing, 1)]);

    // A firing ServiceDown for asr mutes asr's warnings, not tts's.
    d.receive(alert("ServiceDown", "asr", Severity::Critical, AlertStatus::Firing), 200_000);
    d.receive(alert("QueueLong", "asr", Severity::Warning, AlertStatus::Firing), 200_000);
    d.receive(alert("QueueLong", "tts", Severity::Warning, AlertStatus::Firing), 200_000);
    let sent = d.flush(210_000);
    let queue = sent.iter().find(|n| n.group_labels.get("alertname").map(String::as_str) == Some("QueueLong"));
    let services: Vec<&str> = queue
        .expect("QueueLong notified")
        .alerts
        .iter()
        .filter_map(|a| a.labels.get("service").map(String::as_str))
        .collect();
    assert_eq!(services, ["tts"]);
    assert!(sent.iter().any(|n| n.receiver == "pager"), "the root cause itself is notified");
}

#[test]
fn unacknowledged_alerts_escalate_once_and_acknowledged_ones_do_not() {
    let config = r#"
route:
  receiver: oncall
  group_by: [alertname, service]
  group_wait: 0s
  group_interval: 1m
  escalate_after: 10m
  escalate_to: manager
receivers: [{name: oncall}, {name: manager}]
"#;
    let mut d = Dispatcher::new(NotifyConfig::parse(config).expect("config").1);
    let gw = alert("CallFailures", "gw", Severity::Critical, AlertStatus::Firing);
    let asr = alert("CallFailures", "asr", Severity::Critical, AlertStatus::Firing);
    d.receive(gw.clone(), 0);
    d.receive(asr.clone(), 0);
    assert_eq!(d.flush(0).len(), 2);
    // asr is acknowledged; gw is not.
    d.set_acks(BTreeMap::from([(asr.fingerprint.clone(), asr.starts_at_ms)]));
    assert!(d.flush(300_000).is_empty(), "not yet");
    let escalated = d.flush(660_000);
    assert_eq!(summary(&escalated), [("manager".to_string(), AlertStatus::Firing, 1)]);
    assert_eq!(escalated[0].alerts[0].labels["service"], "gw");
    assert_eq!(escalated[0].group_labels.get("escalated").map(String::as_str), Some("true"));
    assert!(d.flush(720_000).is_empty(), "escalated once");
    // The log survives a restart, escalation state included.
    let mut restarted = Dispatcher::new(NotifyConfig::parse(config).expect("config").1);
    restarted.restore_log(d.log().clone());
    restarted.receive(gw.clone(), 730_000);
    assert!(restarted.flush(730_000).is_empty());
    let mut resolved = gw.clone();
    resolved.status = AlertStatus::Resolved;
    restarted.receive(resolved, 740_000);
    let sent = restarted.flush(800_000);
    let mut receivers: Vec<String> = sent.iter().map(|n| n.receiver.clone()).collect();
    receivers.sort();
    assert_eq!(receivers, ["manager", "oncall"], "the resolution follows the escalation");
}

#[test]
fn a_group_whose_alerts_were_all_muted_sends_no_empty_notification() {
    let mut d = dispatcher();
    d.receive(alert("HighLatency", "billing", Severity::Warning, AlertStatus::Firing), 0);
    assert_eq!(summary(&d.flush(10_000)), [("oncall".to_string(), AlertStatus::Firing, 1)]);
    // Silenced while firing, then resolved while silenced: nothing to tell anybody.
    d.set_silences(vec![SilenceRule {
        id: "s1".into(),
        matchers: vec![crate::notify::config::parse_matcher(r#"service="billing""#).expect("matcher")],
        starts_at_ms: 20_000,
        ends_at_ms: 1_000_000,
    }]);
    let mut sent = d.flush(70_000);
    d.receive(alert("HighLatency", "billing", Severity::Warning, AlertStatus::Resolved), 80_000);
    sent.extend(d.flush(130_000));
    assert!(sent.is_empty(), "no notification without alerts: {:?}", summary(&sent));
    assert_eq!(d.group_count(), 0);
    assert!(d.log().is_empty(), "the resolved group leaves the log");
}

#[test]
fn a_muted_alert_still_firing_when_unmuted_is_announced_again() {
    let mut d = dispatcher();
    d.receive(alert("HighLatency", "billing", Severity::Warning, AlertStatus::Firing), 0);
    assert_eq!(d.flush(10_000).len(), 1);
    d.set_silences(vec![SilenceRule {
        id: "s1".into(),
        matchers: vec![crate::notify::config::parse_matcher(r#"service="billing""#).expect("matcher")],
        starts_at_ms: 20_000,
        ends_at_ms: 100_000,
    }]);
    let changed = d.flush_with(70_000, |n| panic!("silenced: nothing, not an empty message: {n:?}"));
    assert!(changed, "the log records that the receiver heard no more of it");
    assert_eq!(summary(&d.flush(130_000)), [("oncall".to_string(), AlertStatus::Firing, 1)], "silence over");
}

#[test]
fn a_notification_that_could_not_be_queued_is_tried_again() {
    let mut d = dispatcher();
    d.receive(alert("HighLatency", "asr", Severity::Warning, AlertStatus::Firing), 0);
    let mut offered = 0;
    let changed = d.flush_with(10_000, |_| {
        offered += 1;
        false
    });
    assert_eq!((offered, changed), (1, false));
    assert!(d.log().is_empty(), "a refused notification is not logged as sent");
    assert_eq!(summary(&d.flush(70_000)), [("oncall".to_string(), AlertStatus::Firing, 1)], "the next flush");
    assert!(d.flush(130_000).is_empty(), "once queued, it is sent once");

    // A refused resolution keeps the resolved alert in its group and the log as it was.
    d.receive(alert("HighLatency", "asr", Severity::Warning, AlertStatus::Resolved), 140_000);
    assert!(!d.flush_with(190_000, |_| false));
    assert_eq!(d.group_count(), 1);
    assert_eq!(d.log().values().map(|e| e.firing.len()).collect::<Vec<_>>(), [1]);
    assert_eq!(summary(&d.flush(250_000)), [("oncall".to_string(), AlertStatus::Resolved, 1)]);
    assert_eq!(d.group_count(), 0);
    assert!(d.log().is_empty());
}

#[test]
fn a_refused_escalation_is_tried_again_and_the_first_receiver_is_not_renotified() {
    let config = r#"
route:
  receiver: oncall
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1m
  escalate_after: 5m
  escalate_to: manager
receivers: [{name: oncall}, {name: manager}]
"#;
    let mut d = Dispatcher::new(NotifyConfig::parse(config).expect("config").1);
    d.receive(alert("CallFailures", "gw", Severity::Critical, AlertStatus::Firing), 0);
    assert_eq!(d.flush(0).len(), 1);
    let mut offered = Vec::new();
    let _ = d.flush_with(300_000, |n| {
        offered.push(n.receiver.clone());
        n.receiver != "manager"
    });
    assert_eq!(offered, ["manager"]);
    assert_eq!(summary(&d.flush(360_000)), [("manager".to_string(), AlertStatus::Firing, 1)], "tried again");
    assert!(d.flush(420_000).is_empty());
}

#[test]
fn a_logged_firing_alert_that_fires_nowhere_after_a_restart_is_resolved() {
    // Before the restart: two alerts notified firing.
    let mut before = dispatcher();
    before.receive(alert("HighLatency", "asr", Severity::Warning, AlertStatus::Firing), 0);
    before.receive(alert("HighLatency", "tts", Severity::Warning, AlertStatus::Firing), 0);
    assert_eq!(before.flush(10_000).len(), 1);
    let log = before.log().clone();

    // After it, read back history: only `tts` still fires; `asr` resolved before the history
    // read starts (nothing of it is read back).
    let mut after = dispatcher();
    after.restore_log(log);
    after.receive(alert("HighLatency", "tts", Severity::Warning, AlertStatus::Firing), 500_000);
    let resolved = after.resolve_missing(500_000);
    let fingerprints: Vec<&str> = resolved.iter().map(|a| a.fingerprint.as_str()).collect();
    assert_eq!(fingerprints, [alert("HighLatency", "asr", Severity::Warning, AlertStatus::Firing).fingerprint]);
    assert_eq!((resolved[0].status, resolved[0].ends_at_ms), (AlertStatus::Resolved, Some(500_000)));
    // Nothing is sent by resolving: a standby keeps the resolution for an hour, unsent...
    after.forget_resolved_before(500_000 - 3_600_000);
    assert_eq!(after.alerts().filter(|(_, a)| a.status == AlertStatus::Resolved).count(), 1);
    // ...and the leader's flush notifies it, with the alert's labels.
    let sent = after.flush(510_000);
    assert_eq!(sent.len(), 1);
    let gone: Vec<_> = sent[0].alerts.iter().filter(|a| a.status == AlertStatus::Resolved).collect();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].labels.get("service").map(String::as_str), Some("asr"));
    assert_eq!(gone[0].ends_at_ms, Some(500_000));
    let entry = after.log().values().next().expect("the group still fires");
    assert_eq!(entry.firing.len(), 1, "the log no longer says `asr` fires: {entry:?}");
    assert!(after.resolve_missing(520_000).is_empty(), "nothing left to resolve");
}

#[test]
fn a_log_of_an_older_version_drops_what_it_cannot_notify() {
    let mut d = dispatcher();
    let fp = alert("HighLatency", "asr", Severity::Warning, AlertStatus::Firing).fingerprint;
    let entry = SentEntry { at_ms: 1, firing: [fp.clone()].into(), ..SentEntry::default() };
    d.restore_log([("{}:alertname=\"HighLatency\"".to_string(), entry)].into());
    assert!(d.resolve_missing(10).is_empty(), "nothing to notify or publish without a record");
    assert!(d.log().is_empty(), "no record of the alert to notify: it leaves the log");
    assert!(d.flush(100_000).is_empty());
}
