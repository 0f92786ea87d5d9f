use std::future::Future;

use callscope_runtime::KafkaConnection;
use callscope_schemas::events::{Alert, AlertStatus, Severity};
use callscope_schemas::{Metric, MetricKind};
use callscope_storage::TierConfig;

use super::*;
use crate::engine::EngineConfig;
use crate::notify::config::NotifyConfig;
use crate::publisher::{Backoff, TransitionSink};
use crate::rules::load_rule_file;
use crate::state::{read_state, save};

const T0: i64 = 1_800_000_000_000;

const RULE: &str = r#"
groups:
  - name: calls
    rules:
      - alert: CallFailureRateHigh
        expr: sum(increase(calls_failed_total[30s])) / sum(increase(calls_total[30s])) > 0.1
"#;

const ROUTE: &str = r#"
route: {receiver: oncall, group_by: [alertname], group_wait: 0s, group_interval: 1m}
receivers: [{name: oncall}]
"#;

/// A sink that keeps what it was sent.
#[derive(Clone, Default)]
struct RecordingSink(std::sync::Arc<std::sync::Mutex<Vec<Alert>>>);

impl RecordingSink {
    fn sent(&self) -> Vec<Alert> {
        self.0.lock().expect("lock").clone()
    }
}

impl TransitionSink for RecordingSink {
    fn send(&self, alert: &Alert) -> impl Future<Output = crate::publisher::Result<()>> + Send {
        self.0.lock().expect("lock").push(alert.clone());
        async { Ok(()) }
    }
}

fn dispatcher() -> Dispatcher {
    Dispatcher::new(NotifyConfig::parse(ROUTE).expect("route").1)
}

fn counter(name: &str, t: i64) -> Vec<u8> {
    let m = Metric {
        name: name.into(),
        kind: MetricKind::Counter,
        value: 1.0,
        timestamp_ms: t,
        service: "gw".into(),
        labels: Default::default(),
        unit: None,
    };
    callscope_schemas::json::encode(&Event::Metric(m))
}

fn old_alert(status: AlertStatus) -> RoutedAlert {
    RoutedAlert::from_event(&Alert {
        alert_name: "QueueLong".into(),
        severity: Severity::Warning,
        status,
        service: "dialogue".into(),
        labels: Default::default(),
        annotations: Default::default(),
        starts_at_ms: T0 - 3_600_000,
        ends_at_ms: None,
        value: Some(1.0),
        source: ALERT_SOURCE.into(),
    })
}

/// A restarted standby: restores the log before replay, ingests only while replaying,
/// evaluates once caught up, resolves what the log says fires and fires nowhere, sends
/// nothing; the leader it becomes sends that resolution and saves the next term.
#[tokio::test]
async fn a_restart_replays_without_evaluating_then_resolves_what_the_log_says_fires() {
    let tier = Tier::open(&TierConfig::new("memory:///")).expect("memory tier");
    // Before the restart, `QueueLong` was notified firing (it resolves before the history
    // that is read back: nothing of it is read back).
    let mut before = dispatcher();
    before.receive(old_alert(AlertStatus::Firing), T0 - 3_600_000);
    assert_eq!(before.flush(T0 - 3_600_000).len(), 1);
    let mut old = DurableState::default();
    (old.nflog, old.leader, old.term) = (before.log().clone(), "old".into(), 3);
    assert_eq!(save(&tier, &old).await.expect("save"), Saved::Written);

    let config =
        AlertingConfig::new(KafkaConnection { brokers: "unused:9092".into(), properties: Default::default() }, "b");
    let topic = config.metric_topics[0].clone();
    let engine = AlertEngine::new(EngineConfig::default(), load_rule_file(RULE).expect("rule"));
    let published = RecordingSink::default();
    let publisher = Publisher::start(published.clone(), 100, Backoff::default());
    let state = read_state(&tier).await;
    let mut ev = Evaluator::new(config, tier.clone(), engine, dispatcher(), None, publisher, state);
    assert_eq!(ev.dispatcher.log(), &old.nflog, "the log is restored before replay");

    ev.engine.begin_replay([(topic.clone(), 0), (topic.clone(), 1)]);
    let wall = T0 + 60_000;
    for s in 0..60 {
        ev.on_message(&topic, 0, Some(b"gw/calls_total"), &counter("calls_total", T0 + s * 1000), wall);
        ev.on_message(&topic, 1, Some(b"gw/calls_failed_total"), &counter("calls_failed_total", T0 + s * 1000), wall);
        ev.after_batch(wall);
        assert_eq!(ev.dispatcher.alerts().count(), 0, "nothing is evaluated while replaying");
    }
    assert_eq!(ev.engine.event_time(wall), T0 + 59_000);

    ev.catch_up(wall);
    let held = |ev: &Evaluator| {
        let mut held: Vec<(String, AlertStatus)> =
            ev.dispatcher.alerts().map(|(_, a)| (a.labels["alertname"].clone(), a.status)).collect();
        held.sort();
        held
    };
    // A condition that still holds may need its `for` (and an evaluation) to fire again:
    // the logged alert is resolved only after that.
    assert_eq!(held(&ev), [("CallFailureRateHigh".to_string(), AlertStatus::Firing)]);
    let due = wall + ev.engine.refire_within_ms() + 500;
    ev.resolve_missing_if_due(due - 1);
    assert_eq!(held(&ev).len(), 1, "not before the condition had time to fire again");
    ev.resolve_missing_if_due(due);
    assert_eq!(
        held(&ev),
        [("CallFailureRateHigh".to_string(), AlertStatus::Firing), ("QueueLong".to_string(), AlertStatus::Resolved)]
    );
    assert_eq!(ev.dispatcher.log(), &old.nflog, "a standby sends nothing");
    ev.save_state().await;
    assert_eq!(read_state(&tier).await, old, "nor saves");

    ev.take_over().await;
    assert_eq!(ev.term, 4, "the stored term + 1");
    ev.flush(due);
    let logged: Vec<&str> = ev.dispatcher.log().keys().map(String::as_str).collect();
    assert_eq!(logged, ["{0}:alertname=\"CallFailureRateHigh\""], "QueueLong's resolution was sent");
    // ...and published to the alerts topic, as every transition is.
    let deadline = Instant::now() + Duration::from_secs(10);
    let resolution = loop {
        let sent = published.sent();
        if let Some(a) = sent.iter().find(|a| a.alert_name == "QueueLong") {
            break a.clone();
        }
        assert!(Instant::now() < deadline, "the resolution was never published: {sent:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!((resolution.status, resolution.service.as_str()), (AlertStatus::Resolved, "dialogue"));
    assert_eq!(resolution.ends_at_ms, Some(due));
    ev.save_state().await;
    let stored = read_state(&tier).await;
    assert_eq!((stored.leader.as_str(), stored.term), ("b", 4));
    assert_eq!(&stored.nflog, ev.dispatcher.log());

    // The old leader, still believing it leads, can no longer save.
    assert_eq!(save(&tier, &old).await.expect("save"), Saved::Superseded { term: 4 });

    // A newer leader takes over while this one still holds its lease (cut off from the
    // group, not from storage): it notices within a slow tick and notifies nothing more.
    let mut newer = stored.clone();
    newer.term = 5;
    newer.leader = "c".into();
    assert_eq!(save(&tier, &newer).await.expect("save"), Saved::Written);
    ev.check_superseded().await;
    assert!(ev.superseded);
    let alert = Alert {
        alert_name: "SentByTheService".into(),
        severity: Severity::Critical,
        status: AlertStatus::Firing,
        service: "gw".into(),
        labels: Default::default(),
        annotations: Default::default(),
        starts_at_ms: wall,
        ends_at_ms: None,
        value: None,
        source: "gw".into(),
    };
    ev.dispatcher.receive(RoutedAlert::from_event(&alert), wall + 2);
    let logged = ev.dispatcher.log().clone();
    ev.flush(wall + 60_000);
    assert_eq!(ev.dispatcher.log(), &logged, "a superseded leader sends nothing");
    ev.save_state().await;
    assert_eq!(read_state(&tier).await.term, 5, "nor saves");
}
