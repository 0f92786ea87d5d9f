use std::sync::atomic::{AtomicUsize, Ordering};

use callscope_schemas::events::Severity;

use super::*;

/// A sink that fails while `failures_left` is above zero, then records what it gets.
#[derive(Clone, Default)]
struct FlakySink {
    failures_left: Arc<AtomicUsize>,
    attempts: Arc<AtomicUsize>,
    sent: Arc<Mutex<Vec<Alert>>>,
}

impl FlakySink {
    fn failing(n: usize) -> FlakySink {
        let sink = FlakySink::default();
        sink.failures_left.store(n, Ordering::SeqCst);
        sink
    }

    fn sent(&self) -> Vec<Alert> {
        self.sent.lock().expect("lock").clone()
    }
}

impl TransitionSink for FlakySink {
    fn send(&self, alert: &Alert) -> impl Future<Output = Result<()>> + Send {
        let alert = alert.clone();
        async move {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            if self.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(PublishError::Other("broker unreachable".into()));
            }
            self.sent.lock().expect("lock").push(alert);
            Ok(())
        }
    }
}

/// A sink whose deliveries never finish (a broker that accepts connections and hangs).
struct HangingSink;

impl TransitionSink for HangingSink {
    fn send(&self, _: &Alert) -> impl Future<Output = Result<()>> + Send {
        std::future::pending()
    }
}

const FAST: Backoff = Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(4) };

/// A transition whose alert name is its key, so that what was sent shows its key.
fn transition(at_ms: i64, fingerprint: &str, status: AlertStatus) -> (TransitionKey, Alert) {
    let key = TransitionKey::new(at_ms, fingerprint, status);
    let alert = Alert {
        alert_name: format!("{at_ms}/{fingerprint}/{status}"),
        severity: Severity::Warning,
        status,
        service: "asr".into(),
        labels: Default::default(),
        annotations: Default::default(),
        starts_at_ms: at_ms,
        ends_at_ms: None,
        value: None,
        source: "test".into(),
    };
    (key, alert)
}

fn names(alerts: &[Alert]) -> Vec<String> {
    alerts.iter().map(|a| a.alert_name.clone()).collect()
}

fn name_of(key: &TransitionKey) -> String {
    format!("{}/{}/{}", key.at_ms, key.fingerprint, key.status)
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

#[tokio::test]
async fn transitions_are_published_in_key_order_and_none_is_lost_or_repeated_after_failures() {
    use AlertStatus::{Firing, Resolved};
    let sink = FlakySink::failing(3);
    let publisher = Publisher::start(sink.clone(), 100, FAST);
    let scrambled = [
        transition(2_000, "aa", Resolved),
        transition(1_000, "bb", Firing),
        transition(3_000, "aa", Firing),
        transition(1_000, "aa", Firing),
        transition(2_000, "aa", Firing),
        transition(1_000, "bb", Resolved),
    ];
    for (key, alert) in scrambled.clone() {
        publisher.submit(key, alert);
    }
    publisher.activate(None);
    wait_until("all six are published", || sink.sent().len() >= 6).await;
    let mut keys: Vec<TransitionKey> = scrambled.iter().map(|(k, _)| k.clone()).collect();
    keys.sort();
    assert_eq!(names(&sink.sent()), keys.iter().map(name_of).collect::<Vec<_>>(), "in key order, each once");
    assert_eq!(sink.attempts.load(Ordering::SeqCst), 6 + 3, "the first one was retried until it went through");
    assert_eq!(publisher.through(), keys.last().cloned());
    assert_eq!(publisher.backlog(), 0);

    // The broker fails again in the middle of the next ones: they wait, then follow in order.
    sink.failures_left.store(2, Ordering::SeqCst);
    let later = [transition(4_000, "cc", Firing), transition(4_000, "bb", Firing), transition(5_000, "aa", Resolved)];
    for (key, alert) in later.clone() {
        publisher.submit(key, alert);
    }
    wait_until("all nine are published", || sink.sent().len() >= 9).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let sent = names(&sink.sent());
    assert_eq!(sent.len(), 9, "nothing twice: {sent:?}");
    let mut unique = sent.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 9, "nothing twice: {sent:?}");
    assert_eq!(publisher.through(), Some(TransitionKey::new(5_000, "aa", Resolved)));
}

#[tokio::test]
async fn same_millisecond_transitions_are_all_published() {
    use AlertStatus::{Firing, Resolved};
    let sink = FlakySink::default();
    let publisher = Publisher::start(sink.clone(), 100, FAST);
    publisher.activate(None);
    let (key, alert) = transition(1_000, "bb", Firing);
    publisher.submit(key.clone(), alert);
    wait_until("the first is published", || publisher.through() == Some(key.clone())).await;
    // Evaluated later at the same event time: after, before and equal to the published one.
    let more = [transition(1_000, "cc", Firing), transition(1_000, "aa", Firing), transition(1_000, "bb", Resolved)];
    for (key, alert) in more.clone() {
        publisher.submit(key, alert);
    }
    wait_until("all four are published", || sink.sent().len() >= 4).await;
    let mut sent = names(&sink.sent());
    sent.sort();
    assert_eq!(sent, ["1000/aa/firing", "1000/bb/firing", "1000/bb/resolved", "1000/cc/firing"]);
    assert_eq!(publisher.through(), Some(TransitionKey::new(1_000, "cc", Firing)), "the mark never moves back");
}

#[tokio::test]
async fn a_new_leader_publishes_exactly_the_transitions_after_the_recorded_key() {
    use AlertStatus::{Firing, Resolved};
    let sink = FlakySink::default();
    let standby = Publisher::start(sink.clone(), 100, FAST);
    let all = [
        transition(1_000, "aa", Firing),
        transition(2_000, "aa", Firing),
        transition(2_000, "bb", Firing),
        transition(2_000, "bb", Resolved),
        transition(3_000, "aa", Resolved),
    ];
    for (key, alert) in all.clone() {
        standby.submit(key, alert);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(sink.sent().is_empty(), "a standby publishes nothing");
    assert_eq!(standby.backlog(), 0);
    // The old leader got as far as (2000, bb, firing).
    standby.activate(Some(TransitionKey::new(2_000, "bb", Firing)));
    wait_until("the rest is published", || sink.sent().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(names(&sink.sent()), ["2000/bb/resolved", "3000/aa/resolved"]);

    // A mark from an older version's event-time field covers its whole millisecond.
    let sink = FlakySink::default();
    let migrated = Publisher::start(sink.clone(), 100, FAST);
    for (key, alert) in all {
        migrated.submit(key, alert);
    }
    migrated.activate(Some(TransitionKey::through_ms(2_000)));
    wait_until("the rest is published", || !sink.sent().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(names(&sink.sent()), ["3000/aa/resolved"]);
}

#[tokio::test]
async fn a_failing_or_hanging_sink_does_not_block_the_caller() {
    let hanging = Publisher::start(HangingSink, 10_000, FAST);
    let failing = Publisher::start(FlakySink::failing(usize::MAX), 10_000, FAST);
    // The caller runs on a thread of its own: if it blocked, the timeout below would say so.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        for publisher in [&hanging, &failing] {
            publisher.activate(None);
            for i in 0..1_000 {
                let (key, alert) = transition(i, "aa", AlertStatus::Firing);
                publisher.submit(key, alert);
            }
            assert_eq!(publisher.through(), None);
            assert_eq!(publisher.backlog(), 1_000);
        }
        let _ = done_tx.send((hanging, failing));
    });
    match tokio::time::timeout(Duration::from_secs(10), done_rx).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => panic!("the caller failed (see its panic above)"),
        Err(_) => panic!("submitting waited on the sink"),
    }
}

#[tokio::test]
async fn beyond_its_capacity_the_oldest_transitions_are_dropped() {
    let sink = FlakySink::default();
    let publisher = Publisher::start(sink.clone(), 3, FAST);
    for i in 1..=5 {
        let (key, alert) = transition(i * 1_000, "aa", AlertStatus::Firing);
        publisher.submit(key, alert);
    }
    publisher.activate(None);
    wait_until("the kept ones are published", || sink.sent().len() >= 3).await;
    assert_eq!(names(&sink.sent()), ["3000/aa/firing", "4000/aa/firing", "5000/aa/firing"]);
}
