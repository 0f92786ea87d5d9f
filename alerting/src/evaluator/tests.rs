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
    let (reports, _delivered) = tokio::sync::mpsc::unbounded_channel();
    let mut ev = Evaluator::new(config, tier.clone(), engine, dispatcher(), None, reports, publisher, state);
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
    ev.save_state(due).await;
    assert_eq!(read_state(&tier).await, old, "nor saves");

    assert!(ev.take_over(due).await);
    assert_eq!(ev.term, 4, "the stored term + 1");
    ev.flush(due);
    assert_eq!(ev.dispatcher.log(), &old.nflog, "nothing is sent before the claim is saved");
    ev.save_state(due).await;
    assert_eq!(read_state(&tier).await.term, 4, "the claim of the next term is saved at once");
    ev.flush(due + delivery::LEASE_MS - 1);
    assert_eq!(ev.dispatcher.log(), &old.nflog, "nor while the old leader's lease may run");
    let due = due + delivery::LEASE_MS;
    ev.check_superseded(due).await;
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
    assert_eq!(resolution.ends_at_ms, Some(due - delivery::LEASE_MS));
    ev.save_state(due).await;
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
    ev.check_superseded(due + 1).await;
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
    ev.save_state(wall + 60_000).await;
    assert_eq!(read_state(&tier).await.term, 5, "nor saves");
}

fn alert(name: &str, at_ms: i64) -> RoutedAlert {
    RoutedAlert::from_event(&Alert {
        alert_name: name.into(),
        severity: Severity::Critical,
        status: AlertStatus::Firing,
        service: "gw".into(),
        labels: Default::default(),
        annotations: Default::default(),
        starts_at_ms: at_ms,
        ends_at_ms: None,
        value: None,
        source: "gw".into(),
    })
}

/// An evaluator named `instance` over `tier`, with `notify` (a notification config) or no
/// channels; the receiving end of its delivery reports.
fn evaluator(
    tier: &Tier,
    instance: &str,
    notify: Option<&str>,
    state: DurableState,
) -> (Evaluator, tokio::sync::mpsc::UnboundedReceiver<crate::notify::notifier::DeliveryReport>) {
    let config = AlertingConfig::new(
        KafkaConnection { brokers: "unused:9092".into(), properties: Default::default() },
        instance,
    );
    let engine = AlertEngine::new(EngineConfig::default(), Vec::new());
    let publisher = Publisher::start(RecordingSink::default(), 100, Backoff::default());
    let (reports, delivered) = tokio::sync::mpsc::unbounded_channel();
    let (dispatcher, notifier) = match notify {
        Some(text) => {
            let (config, route) = NotifyConfig::parse(text).expect("notify config");
            let notifier = Notifier::start(&config, failure_sink(tier.clone()), reports.clone()).expect("notifier");
            (Dispatcher::new(route), Some(notifier))
        }
        None => (dispatcher(), None),
    };
    (Evaluator::new(config, tier.clone(), engine, dispatcher, notifier, reports, publisher, state), delivered)
}

/// A leader that storage stops confirming (cut off from it, say, while the group still
/// counts it as leader) stops sending within the lease, and sends again once confirmed.
#[tokio::test]
async fn a_leader_that_storage_no_longer_confirms_holds_its_notifications() {
    use callscope_storage::{Fault, FaultRule, InjectedError, PathMatch, StoreOp};
    let (tier, faults) = Tier::open_with_faults(&TierConfig::new("memory:///")).expect("tier");
    let (mut ev, _delivered) = evaluator(&tier, "a", None, DurableState::default());
    let wall = T0;
    assert!(ev.take_over(wall).await);
    ev.dispatcher.receive(alert("First", wall), wall);
    ev.flush(wall);
    assert_eq!(ev.dispatcher.log().len(), 1, "no previous leader: the first leader sends at once");
    let cut_off = faults.add(FaultRule::new(
        Some(StoreOp::Get),
        PathMatch::contains("_catalog/alerting/"),
        Fault::Error(InjectedError::Transient),
    ));
    ev.check_superseded(wall + 2_000).await;
    ev.dispatcher.receive(alert("Second", wall + 3_000), wall + 3_000);
    let expired = wall + delivery::LEASE_MS + 1;
    ev.flush(expired);
    assert_eq!(ev.dispatcher.log().len(), 1, "unconfirmed for longer than the lease: nothing is sent");
    faults.remove(&cut_off);
    ev.check_superseded(expired + 1).await;
    ev.flush(expired + 1);
    assert_eq!(ev.dispatcher.log().len(), 2, "confirmed again: the held group is sent");
}

/// Answers every HTTP request on `listener` with 200 and keeps the requests.
fn webhook_server(listener: tokio::net::TcpListener) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    let Some(head_end) = text.find("\r\n\r\n") else { continue };
                    let length = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() < head_end + 4 + length {
                        continue;
                    }
                    counted.lock().expect("lock").push(text.to_string());
                    let _ =
                        socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                    return;
                }
            });
        }
    });
    hits
}

/// The log says a group was notified, its delivery failed, and the leader died: the next
/// leader finds the notification in the saved outbox and delivers it, once.
#[tokio::test]
async fn a_logged_notification_that_was_never_delivered_is_delivered_by_the_next_leader() {
    let tier = Tier::open(&TierConfig::new("memory:///")).expect("tier");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port()
    };
    let notify = format!(
        "route: {{receiver: oncall, group_by: [alertname], group_wait: 0s, group_interval: 1m}}\n\
         receivers: [{{name: oncall, webhook_configs: [{{url: 'http://127.0.0.1:{port}/hook', max_attempts: 1}}]}}]\n"
    );
    let notify: &'static str = Box::leak(notify.into_boxed_str());
    let wall = T0;
    let (mut first, mut reports) = evaluator(&tier, "first", Some(notify), DurableState::default());
    assert!(first.take_over(wall).await);
    first.dispatcher.receive(alert("GatewayDown", wall), wall);
    first.flush(wall);
    assert_eq!(first.dispatcher.log().len(), 1, "the log says the group was notified");
    let report = tokio::time::timeout(Duration::from_secs(30), reports.recv()).await.expect("a report").expect("open");
    assert_eq!(report.outcome, crate::notify::outbox::Outcome::Failed, "nothing listens: the delivery failed");
    first.on_delivery(report, wall + 1);
    first.save_state(wall + 1).await;
    drop(first);
    let saved = read_state(&tier).await;
    assert_eq!(saved.outbox.len(), 1, "the undelivered notification is saved with the log");

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the webhook port");
    let hits = webhook_server(listener);
    let (mut next, mut reports) = evaluator(&tier, "next", Some(notify), saved);
    let wall = wall + 10_000;
    assert!(next.take_over(wall).await);
    next.flush(wall);
    next.save_state(wall).await;
    let lease_over = wall + delivery::LEASE_MS;
    next.check_superseded(lease_over).await;
    // A new group flushed together with the re-send is queued once too.
    next.dispatcher.receive(alert("QueueLong", lease_over), lease_over);
    next.flush(lease_over);
    for _ in 0..2 {
        let report =
            tokio::time::timeout(Duration::from_secs(30), reports.recv()).await.expect("a report").expect("open");
        assert_eq!(report.outcome, crate::notify::outbox::Outcome::Delivered);
        next.on_delivery(report, lease_over + 1);
    }
    next.save_state(lease_over + 1).await;
    // The channel delivers in order: once a later notification arrived, a duplicate queued
    // before it would have too.
    next.dispatcher.receive(alert("Sentinel", lease_over + 2), lease_over + 2);
    next.flush(lease_over + 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !hits.lock().expect("lock").iter().any(|r| r.contains("Sentinel")) {
        assert!(Instant::now() < deadline, "the sentinel notification never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let received = hits.lock().expect("lock").clone();
    let count = |needle: &str| received.iter().filter(|r| r.contains(needle)).count();
    assert_eq!(count("GatewayDown"), 1, "delivered once, not notified anew: {received:?}");
    assert_eq!(count("QueueLong"), 1, "{received:?}");
    assert_eq!(received.len(), 3);
    assert!(read_state(&tier).await.outbox.is_empty(), "delivered: the saved outbox is empty");
}
