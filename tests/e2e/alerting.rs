//! Alerting end to end: rules evaluated by the binary over events produced to the real
//! broker, notifications received by local webhook, Slack-shaped, DingTalk-shaped (the
//! signature checked) and SMS receivers, a real Alertmanager and an SMTP sink; resolution
//! when the data recovers, transitions stored as alert events, a failing receiver retried
//! without stalling ingestion, silences and inhibition, escalation of unacknowledged
//! alerts, smart rules through the API ([`smart_rules`]), alert state across `kill -9`, and one notifying
//! leader among two pipelines.

pub(crate) mod fixture;
pub(crate) mod peers;
mod routing;
mod smart_rules;

use std::time::{Duration, Instant};

use serde_json::Value;

use self::fixture::*;
use self::peers::{Receivers, alertmanager, mailbox};
use crate::support::*;

#[test]
fn a_breach_notifies_each_channel_once_and_resolves_when_the_data_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receivers = Receivers::start();
    let mut node = start(dir.path(), &receivers);
    let rt = runtime();
    let producer = producer(&node.brokers);
    let t0 = now_ms();
    // Two services fail 10 calls each: one alert group (by alertname), two alerts.
    let mut batch = failed_calls("gw", t0);
    batch.extend(failed_calls("billing", t0));
    batch.push(heartbeat(t0 + 1500));
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &batch)), batch.len());

    let hooks = receivers.wait_for("hook", 1, Duration::from_secs(60), &mut node);
    let first = &hooks[0];
    assert_eq!(first["version"], "4");
    assert_eq!(first["status"], "firing");
    assert_eq!(first["groupLabels"]["alertname"], "CallsFailing");
    let alerts = first["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 2, "one grouped notification with both services: {first}");
    let mut services: Vec<&str> = alerts.iter().filter_map(|a| a["labels"]["service"].as_str()).collect();
    services.sort();
    assert_eq!(services, ["billing", "gw"]);
    assert!(
        alerts.iter().all(|a| a["annotations"]["summary"].as_str().is_some_and(|s| s.contains("failed 10 calls"))),
        "{first}"
    );
    let slack = receivers.wait_for("slack", 1, Duration::from_secs(30), &mut node);
    assert!(slack[0]["text"].as_str().is_some_and(|t| t.contains("[FIRING:2] CallsFailing")), "{}", slack[0]);
    let ding = receivers.wait_for("dingtalk", 1, Duration::from_secs(30), &mut node);
    assert_eq!(ding[0]["msgtype"], "markdown");
    assert!(ding[0]["markdown"]["text"].as_str().is_some_and(|t| t.contains("CallsFailing")));

    // The data recovers: event time moves 30 s on without failures.
    let recovery = recovery_after(t0);
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &recovery)), recovery.len());
    let hooks = receivers.wait_for("hook", 2, Duration::from_secs(60), &mut node);
    assert_eq!(hooks[1]["status"], "resolved", "{}", hooks[1]);
    assert!(
        hooks[1]["alerts"]
            .as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|x| x["endsAt"] != "0001-01-01T00:00:00Z"))
    );
    receivers.wait_for("slack", 2, Duration::from_secs(30), &mut node);
    receivers.wait_for("dingtalk", 2, Duration::from_secs(30), &mut node);

    // Exactly one notification per state and channel: nothing more arrives.
    std::thread::sleep(Duration::from_secs(3));
    for path in ["hook", "slack", "dingtalk"] {
        assert_eq!(receivers.received(path).len(), 2, "{path} got duplicates");
    }
    // Every transition is an alert event on callscope.alerts, stored in the alerts table.
    let client = http();
    let stored = wait_for_count(
        &client,
        &node.http,
        "SELECT count(*) FROM alerts WHERE source = 'callscope' AND alert_name = 'CallsFailing'",
        4,
        Duration::from_secs(60),
    );
    assert_eq!(stored, 4, "2 firing + 2 resolved transitions stored");
    // The Slack token came from the environment and never reaches the log.
    assert!(!node.proc.log_tail().contains("XXXX"), "secret in the log");
    node.proc.terminate();
}

#[test]
fn a_failing_receiver_is_retried_without_stalling_ingestion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receivers = Receivers::start();
    let mut node = start(dir.path(), &receivers);
    let rt = runtime();
    let producer = producer(&node.brokers);
    let t0 = now_ms();
    let batch = failed_calls("flaky-svc", t0);
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &batch)), batch.len());
    // While the receiver fails (500, then a timeout), ingestion goes on.
    let client = http();
    let more: Vec<(String, Vec<u8>)> = (0..200).map(|i| heartbeat(t0 + 100 + i)).collect();
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &more)), more.len());
    let stored = wait_for_count(
        &client,
        &node.http,
        "SELECT count(*) FROM metrics WHERE name = 'e2e_heartbeat_total'",
        200,
        Duration::from_secs(60),
    );
    assert_eq!(stored, 200);
    let delivered = receivers.wait_for("flaky", 1, Duration::from_secs(60), &mut node);
    assert_eq!(delivered[0]["status"], "firing");
    assert!(*receivers.flaky_attempts.lock().expect("attempts") >= 3, "500 and timeout were retried");
    let metrics = client.call("GET", &format!("{}/monitoring/metrics/prometheus", node.http), None).body;
    let retries: f64 = metrics
        .lines()
        .find(|l| l.starts_with("callscope_notification_attempts_total{channel=\"webhook\",result=\"retry\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        retries >= 2.0,
        "retries counted:\n{}",
        metrics.lines().filter(|l| l.contains("notification")).collect::<Vec<_>>().join("\n")
    );
    // The hook that answers 404 is a permanent failure: recorded, without its URL.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let failures = client.call("GET", &format!("{}/monitoring/alerts/failures", node.http), None).json();
        if let Some(f) = failures.as_array().and_then(|a| a.first()) {
            assert_eq!((f["receiver"].as_str(), f["channel"].as_str()), (Some("flaky"), Some("webhook")), "{f}");
            assert!(f["error"].as_str().is_some_and(|e| e.contains("404")), "{f}");
            let text = failures.to_string();
            assert!(!text.contains("s3cret") && !text.contains("no-such-hook"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no failure recorded");
        std::thread::sleep(Duration::from_millis(200));
    }
    node.proc.terminate();
}

#[test]
fn silences_and_inhibition_mute_notifications() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receivers = Receivers::start();
    let mut node = start(dir.path(), &receivers);
    let client = http();
    let silences = format!("{}/monitoring/alerts/silences", node.http);
    let ends = chrono_like_rfc3339(now_ms() + 3_600_000);
    let body = serde_json::json!({
        "matchers": [{"name": "service", "value": "silenced-svc", "isRegex": false, "isEqual": true}],
        "endsAt": ends, "createdBy": "e2e", "comment": "maintenance window"
    });
    let created = client.call("POST", &silences, Some(&body));
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.json()["silenceID"].as_str().expect("id").to_string();
    let listed = client.call("GET", &silences, None).json();
    assert_eq!(listed[0]["status"]["state"], "active");
    let bad = client.call(
        "POST",
        &silences,
        Some(&serde_json::json!({"matchers": [], "endsAt": ends, "createdBy": "e2e", "comment": "x"})),
    );
    assert_eq!((bad.status, bad.json()["field"].as_str()), (400, Some("matchers")));
    // Workers pick silences up on their 2 s status tick: wait for two status publications
    // after the silence was stored (the second one's tick began after it).
    wait_for_status_ticks(&node, now_ms(), 2);

    let rt = runtime();
    let producer = producer(&node.brokers);
    let t0 = now_ms();
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.push(failed_call("svc-a", t0 + i));
        batch.push(failed_call("silenced-svc", t0 + i));
        batch.push(counter_event("e2e_calls_slow_total", "svc-a", t0 + i));
        batch.push(counter_event("e2e_calls_slow_total", "svc-b", t0 + i));
    }
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &batch)), batch.len());
    let hooks = receivers.wait_for("hook", 2, Duration::from_secs(60), &mut node);
    // Deliberate quiet window: a muted alert sent anyway would arrive in it.
    std::thread::sleep(Duration::from_secs(3));
    let hooks_now = receivers.received("hook");
    assert_eq!(hooks_now.len(), 2, "{hooks_now:?}");
    let by_name = |name: &str| hooks.iter().find(|h| h["groupLabels"]["alertname"] == name).cloned().expect(name);
    assert_eq!(services_of(&by_name("CallsFailing")), ["svc-a"], "silenced-svc is silenced");
    assert_eq!(services_of(&by_name("CallsSlow")), ["svc-b"], "svc-a's slowness is inhibited by its failures");
    let active = client.call("GET", &format!("{}/monitoring/alerts", node.http), None).json();
    let muted: Vec<String> = active["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|a| {
            a["muted"].as_str().map(|m| {
                format!(
                    "{} {} {m}",
                    a["labels"]["alertname"].as_str().unwrap_or(""),
                    a["labels"]["service"].as_str().unwrap_or("")
                )
            })
        })
        .collect();
    assert!(muted.iter().any(|m| m.starts_with("CallsFailing silenced-svc silenced by")), "{active}");
    assert!(muted.iter().any(|m| m.starts_with("CallsSlow svc-a inhibited by")), "{active}");

    // Expiring the silence lets the muted alert through.
    assert_eq!(client.call("DELETE", &format!("{silences}/{id}"), None).status, 200);
    assert_eq!(client.call("GET", &format!("{silences}/{id}"), None).json()["status"]["state"], "expired");
    let hooks = receivers.wait_for("hook", 3, Duration::from_secs(30), &mut node);
    assert_eq!(services_of(&hooks[2]), ["silenced-svc", "svc-a"]);
    let rules = client.call("GET", &format!("{}/monitoring/alertmanager/rules", node.http), None).json();
    let failing =
        rules["rules"].as_array().expect("rules").iter().find(|r| r["name"] == "CallsFailing").cloned().expect("rule");
    assert_eq!(failing["state"], "firing");
    node.proc.terminate();
}

#[test]
fn alert_state_survives_kill_9_without_renotifying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receivers = Receivers::start();
    let start = standalone(dir.path(), &notify_config(&receivers.base));
    let mut node = start.spawn();
    let rt = runtime();
    let t0 = now_ms();
    {
        let producer = producer(&node.brokers);
        let batch = failed_calls("gw", t0);
        assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &batch)), batch.len());
    }
    let hooks = receivers.wait_for("hook", 1, Duration::from_secs(60), &mut node);
    assert_eq!(hooks[0]["status"], "firing");
    // Once the stored state records it as notified and delivered, kill every process.
    wait_for_notification_logged(&node.data_dir, "gw");
    node.proc.kill9();
    let mut node = start.spawn();
    // The failures go on while the restart is checked: the rule looks at 20 s of event
    // time, so a single burst could resolve on its own during the check on a slow machine,
    // and a resolution is not what this test looks for.
    let feeding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feeder = {
        let (feeding, brokers) = (feeding.clone(), node.brokers.clone());
        std::thread::spawn(move || {
            let rt = runtime();
            let producer = rt.block_on(async { producer(&brokers) });
            let mut last = 0;
            while feeding.load(std::sync::atomic::Ordering::Relaxed) {
                last = now_ms();
                let batch = failed_calls("gw", last);
                assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &batch)), batch.len());
                // The pace of the failures, not a wait for something.
                std::thread::sleep(Duration::from_millis(500));
            }
            last
        })
    };
    // The restarted evaluator rebuilds the firing alert from history and knows it was sent.
    let client = http();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let active = client.call("GET", &format!("{}/monitoring/alerts", node.http), None).json();
        let firing = active["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["labels"]["service"] == "gw" && x["status"] == "firing"));
        if firing && active["stale"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "firing alert not restored: {active}\n{}", node.proc.log_tail());
        std::thread::sleep(Duration::from_millis(250));
    }
    // Deliberate quiet window: a re-notification would arrive in it.
    std::thread::sleep(Duration::from_secs(3));
    let hooks = receivers.received("hook");
    assert_eq!(
        hooks.len(),
        1,
        "no re-notification after the restart: {}\n{}",
        serde_json::to_string_pretty(&hooks).unwrap_or_default(),
        node.proc.log_tail()
    );
    feeding.store(false, std::sync::atomic::Ordering::Relaxed);
    let last_failure = feeder.join().expect("feeder");
    // Recovery after the restart resolves it, once.
    let producer = producer(&node.brokers);
    let recovery = recovery_after(last_failure);
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &recovery)), recovery.len());
    let hooks = receivers.wait_for("hook", 2, Duration::from_secs(60), &mut node);
    assert_eq!(hooks[1]["status"], "resolved");
    // Deliberate quiet window: a duplicate resolution would arrive in it.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receivers.received("hook").len(), 2);
    node.proc.terminate();
}

#[test]
fn a_real_alertmanager_receives_the_alert_and_its_resolution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut am, am_url) = alertmanager(dir.path());
    let config = format!(
        "route:\n  receiver: am\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: am\n    alertmanager_configs: [{{url: \"{am_url}\"}}]\n"
    );
    let mut node = standalone(dir.path(), &config).spawn();
    let rt = runtime();
    let producer = producer(&node.brokers);
    let t0 = now_ms();
    let batch = failed_calls("gw", t0);
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &batch)), batch.len());
    let client = http();
    let in_am = |client: &Http| -> Vec<Value> {
        client
            .call("GET", &format!("{am_url}/api/v2/alerts"), None)
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == "CallsFailing" && a["labels"]["service"] == "gw")
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while in_am(&client).is_empty() {
        node.proc.assert_running();
        am.assert_running();
        assert!(Instant::now() < deadline, "Alertmanager never got the alert\n{}", node.proc.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
    let alert = in_am(&client).remove(0);
    assert_eq!(alert["status"]["state"], "active");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert!(alert["generatorURL"].as_str().is_some_and(|u| u.contains("fingerprint=")));
    // The health endpoint reports the Alertmanager and its version.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = client.call("GET", &format!("{}/monitoring/alertmanager/health", node.http), None);
        let v = health.json();
        if health.status == 200 && v["status"] == "ok" {
            assert_eq!(v["alertmanagers"][0]["version"], "0.25.0");
            break;
        }
        assert!(Instant::now() < deadline, "health: {v}");
        std::thread::sleep(Duration::from_millis(250));
    }
    // Recovery resolves it there (endsAt in the past: it leaves the active list).
    let recovery = recovery_after(t0);
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &recovery)), recovery.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !in_am(&client).is_empty() {
        assert!(Instant::now() < deadline, "Alertmanager still shows the alert\n{}", node.proc.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
    node.proc.terminate();
    am.terminate();
}

#[test]
fn email_reaches_a_local_smtp_sink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let python = python_with("import aiosmtpd");
    let maildir = dir.path().join("maildir");
    let smtp_port = free_port();
    let listen = format!("127.0.0.1:{smtp_port}");
    let mut sink = Proc::spawn_program(
        "smtp-sink",
        dir.path(),
        python.to_str().expect("utf-8"),
        &["-m", "aiosmtpd", "-n", "-l", &listen, "-c", "aiosmtpd.handlers.Mailbox", maildir.to_str().expect("utf-8")],
    );
    let config = format!(
        "route:\n  receiver: mail\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: mail\n    email_configs: [{{smarthost: \"{listen}\", tls: none, from: \"callscope@example.com\", to: [\"oncall@example.com\"]}}]\n"
    );
    let mut node = standalone(dir.path(), &config).spawn();
    let rt = runtime();
    let producer = producer(&node.brokers);
    let t0 = now_ms();
    let batch = failed_calls("gw", t0);
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &batch)), batch.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    while mailbox(&maildir).is_empty() {
        sink.assert_running();
        assert!(Instant::now() < deadline, "no email\n{}", node.proc.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
    let mail = &mailbox(&maildir)[0];
    assert!(mail.contains("Subject: [FIRING:1] CallsFailing"), "{mail}");
    assert!(mail.contains("To: oncall@example.com"), "{mail}");
    assert!(mail.contains("gw failed 10 calls"), "{mail}");
    let recovery = recovery_after(t0);
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &recovery)), recovery.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    while mailbox(&maildir).len() < 2 {
        assert!(Instant::now() < deadline, "no resolved email\n{}", node.proc.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(mailbox(&maildir)[1].contains("Subject: [RESOLVED] CallsFailing"));
    node.proc.terminate();
    sink.terminate();
}

#[test]
fn two_pipelines_notify_once_and_the_survivor_takes_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receivers = Receivers::start();
    let shared = dir.path().join("shared");
    let mut broker = Node::broker(dir.path()).spawn();
    let pipeline = |name: &str| {
        let node = Node::pipeline(dir.path(), name)
            .broker(&broker)
            .data_dir(&shared)
            .args(["--group-id", "shared-group"])
            .metrics_endpoint();
        with_alerting(node, dir.path(), &notify_config(&receivers.base)).spawn()
    };
    let mut nodes = [pipeline("pipeline-a"), pipeline("pipeline-b")];
    let client = http();
    let metrics: Vec<String> = nodes.iter().map(|n| format!("{}/metrics", n.http)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        let leaders: Vec<usize> = (0..2).filter(|i| is_leader(&client, &metrics[*i])).collect();
        if leaders.len() == 1 {
            break leaders[0];
        }
        assert!(leaders.len() < 2, "two leaders");
        nodes.iter_mut().for_each(|n| n.proc.assert_running());
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(200));
    };
    let rt = runtime();
    let producer = producer(&broker.brokers);
    let t0 = now_ms();
    // The heartbeat moves event time past the rule's `for`.
    let mut batch = failed_calls("gw", t0);
    batch.push(heartbeat(t0 + 1500));
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &batch)), batch.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    while receivers.received("hook").is_empty() {
        assert!(Instant::now() < deadline, "no notification:\n{}", nodes[leader].proc.log_tail());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Deliberate quiet window: the second process's notification would arrive in it.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receivers.received("hook").len(), 1, "two processes evaluate, one notifies");
    // The leader dies once its notification log is in storage; the other takes the lease
    // and the notification log.
    wait_for_notification_logged(&shared, "gw");
    nodes[leader].proc.kill9();
    let survivor = 1 - leader;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !is_leader(&client, &metrics[survivor]) {
        nodes[survivor].proc.assert_running();
        assert!(Instant::now() < deadline, "the survivor never led:\n{}", nodes[survivor].proc.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Deliberate quiet window after the takeover: a re-notification would arrive in it.
    std::thread::sleep(Duration::from_secs(2));
    // Nothing fires again. (A takeover slower than the rule's range may already see the
    // alert resolved by the idle clock and send that resolution.)
    let after_takeover = receivers.received("hook");
    assert_eq!(
        after_takeover.iter().filter(|h| h["status"] == "firing").count(),
        1,
        "no re-notification by the new leader"
    );
    let recovery = recovery_after(t0);
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &recovery)), recovery.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    while receivers.received("hook").len() < 2 {
        assert!(Instant::now() < deadline, "no resolution from the new leader:\n{}", nodes[survivor].proc.log_tail());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(receivers.received("hook")[1]["status"], "resolved");
    // Deliberate quiet window: a duplicate resolution would arrive in it.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receivers.received("hook").len(), 2);
    nodes[survivor].proc.terminate();
    broker.proc.terminate();
}

/// Waits until the leader's notification log in storage (`data_dir`'s hot tier) records a
/// firing alert of `service`.
fn wait_for_notification_logged(data_dir: &std::path::Path, service: &str) {
    let needle = format!("\"{service}\"");
    wait_for_json_file(
        &data_dir.join("hot/_catalog/alerting/state.json"),
        Duration::from_secs(30),
        &format!("a firing alert of {service} in the stored notification log, delivered"),
        |state| {
            let logged = state["nflog"].as_object().is_some_and(|log| {
                // An entry with a firing alert, whose notified alerts carry the service label.
                log.values()
                    .any(|e| e["firing"].as_array().is_some_and(|f| !f.is_empty()) && e.to_string().contains(&needle))
            });
            // Delivered: no channel still owes it (the outbox would send it again after a
            // restart, at least once).
            let delivered = state["outbox"]["pending"].as_object().is_none_or(|p| p.is_empty());
            logged && delivered
        },
    );
}

/// Waits until the alerting leader of `node` has published its status `ticks` times after
/// `after_ms` (each publication ends a tick that reloaded silences, acks and smart rules).
fn wait_for_status_ticks(node: &Node, after_ms: i64, ticks: usize) {
    let path = node.data_dir.join("hot/_catalog/alerting/status.json");
    let mut since = after_ms;
    for tick in 1..=ticks {
        let status = wait_for_json_file(&path, Duration::from_secs(30), &format!("status publication {tick}"), |s| {
            s["updated_at_ms"].as_i64().is_some_and(|t| t > since)
        });
        since = status["updated_at_ms"].as_i64().expect("updated_at_ms");
    }
}
