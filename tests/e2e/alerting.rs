//! Alerting end to end: rules evaluated by the standalone binary over events produced to
//! the real broker, notifications received by local webhook, Slack-shaped and
//! DingTalk-shaped receivers (the DingTalk one checks the signature), resolution when the
//! data recovers, transitions stored as alert events, and a failing receiver that is
//! retried without stalling ingestion.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use base64::Engine as _;
use callscope_schemas::{Event, Metric, MetricKind};
use hmac::Mac;
use serde_json::Value;

use crate::support::*;

fn record(inbox: &Inbox, path: &str, query: BTreeMap<String, String>, body: Value) {
    inbox.lock().expect("inbox").push((path.to_string(), query, body));
}

/// What the local receivers got: (receiver path, query, body).
type Inbox = Arc<Mutex<Vec<(String, BTreeMap<String, String>, Value)>>>;

const DINGTALK_SECRET: &str = "SECtest-secret";

fn signature_ok(query: &BTreeMap<String, String>) -> bool {
    let (Some(ts), Some(sign)) = (query.get("timestamp"), query.get("sign")) else { return false };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(DINGTALK_SECRET.as_bytes()) else { return false };
    mac.update(format!("{ts}\n{DINGTALK_SECRET}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    // axum's Query has already URL-decoded `sign`.
    *sign == expected
}

type ReceiverState = (Inbox, Arc<Mutex<u32>>);

/// A receiver that records every body under `name` and answers 200.
fn recorder(name: &'static str) -> axum::routing::MethodRouter<ReceiverState> {
    axum::routing::post(
        move |State((inbox, _)): State<ReceiverState>, axum::Json(body): axum::Json<Value>| async move {
            record(&inbox, name, BTreeMap::new(), body);
            StatusCode::OK
        },
    )
}

struct Receivers {
    inbox: Inbox,
    /// Attempts seen by the flaky receiver.
    flaky_attempts: Arc<Mutex<u32>>,
    base: String,
    _runtime: tokio::runtime::Runtime,
}

impl Receivers {
    fn start() -> Receivers {
        let runtime = runtime();
        let inbox: Inbox = Arc::default();
        let flaky_attempts = Arc::new(Mutex::new(0u32));
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let router = axum::Router::new()
            .route("/hook", recorder("hook"))
            .route(
                "/slack/{*token}",
                axum::routing::post(
                    |State((inbox, _)): State<ReceiverState>,
                     UrlPath(_token): UrlPath<String>,
                     axum::Json(body): axum::Json<Value>| async move {
                        record(&inbox, "slack", BTreeMap::new(), body);
                        "ok"
                    },
                ),
            )
            .route(
                "/robot/send",
                axum::routing::post(
                    |State((inbox, _)): State<ReceiverState>,
                     Query(query): Query<BTreeMap<String, String>>,
                     axum::Json(body): axum::Json<Value>| async move {
                        if !signature_ok(&query) {
                            return axum::Json(serde_json::json!({"errcode": 310000, "errmsg": "sign not match"}));
                        }
                        record(&inbox, "dingtalk", query, body);
                        axum::Json(serde_json::json!({"errcode": 0, "errmsg": "ok"}))
                    },
                ),
            )
            .route("/sms", recorder("sms"))
            .route("/manager", recorder("manager"))
            .route(
                "/flaky",
                axum::routing::post(
                    |State((inbox, attempts)): State<ReceiverState>, axum::Json(body): axum::Json<Value>| async move {
                        let n = {
                            let mut a = attempts.lock().expect("attempts");
                            *a += 1;
                            *a
                        };
                        match n {
                            1 => StatusCode::INTERNAL_SERVER_ERROR,
                            2 => {
                                // Longer than the channel's timeout.
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                StatusCode::OK
                            }
                            _ => {
                                record(&inbox, "flaky", BTreeMap::new(), body);
                                StatusCode::OK
                            }
                        }
                    },
                ),
            )
            .with_state((inbox.clone(), flaky_attempts.clone()));
        runtime.spawn(async move { axum::serve(listener, router).await });
        Receivers { inbox, flaky_attempts, base, _runtime: runtime }
    }

    fn received(&self, path: &str) -> Vec<Value> {
        self.inbox.lock().expect("inbox").iter().filter(|(p, _, _)| p == path).map(|(_, _, b)| b.clone()).collect()
    }

    /// Waits until `path` holds `n` messages; returns them.
    fn wait_for(&self, path: &str, n: usize, timeout: Duration, node: &mut Standalone) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received(path);
            if got.len() >= n {
                return got;
            }
            node.proc.assert_running();
            assert!(
                Instant::now() < deadline,
                "{path}: {} of {n} notifications after {timeout:?}\n{}",
                got.len(),
                node.proc.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

const RULES: &str = r#"
groups:
  - name: e2e
    rules:
      - alert: CallsFailing
        expr: sum by (service) (increase(e2e_calls_failed_total[20s])) > 5
        for: 1s
        labels: {severity: critical}
        annotations:
          summary: "{{ $labels.service }} failed {{ $value }} calls"
      - alert: CallsSlow
        expr: sum by (service) (increase(e2e_calls_slow_total[20s])) > 5
        for: 1s
        labels: {severity: warning}
"#;

fn notify_config(base: &str) -> String {
    format!(
        r#"
route:
  receiver: team
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - matchers: ['service="flaky-svc"']
      receiver: flaky
receivers:
  - name: team
    webhook_configs: [{{url: "{base}/hook"}}]
    slack_configs: [{{api_url: "{base}/slack/${{CALLSCOPE_E2E_SLACK_TOKEN}}"}}]
    dingtalk_configs: [{{url: "{base}/robot/send?access_token=abc", secret: "{DINGTALK_SECRET}"}}]
  - name: flaky
    webhook_configs: [{{url: "{base}/flaky", timeout: 1s, max_attempts: 5}}, {{url: "{base}/no-such-hook?token=s3cret"}}]
inhibit_rules:
  - source_matchers: ['alertname="CallsFailing"']
    target_matchers: ['alertname="CallsSlow"']
    equal: [service]
"#
    )
}

fn failed_call(service: &str, t: i64) -> (String, Vec<u8>) {
    counter_event("e2e_calls_failed_total", service, t)
}

fn counter_event(name: &str, service: &str, t: i64) -> (String, Vec<u8>) {
    let m = Metric {
        name: name.into(),
        kind: MetricKind::Counter,
        value: 1.0,
        timestamp_ms: t,
        service: service.into(),
        labels: Default::default(),
        unit: None,
    };
    (format!("{service}/{}", m.name), callscope_schemas::json::encode(&Event::Metric(m)))
}

fn heartbeat(t: i64) -> (String, Vec<u8>) {
    let m = Metric {
        name: "e2e_heartbeat_total".into(),
        kind: MetricKind::Counter,
        value: 1.0,
        timestamp_ms: t,
        service: "gw".into(),
        labels: Default::default(),
        unit: None,
    };
    ("gw/e2e_heartbeat_total".into(), callscope_schemas::json::encode(&Event::Metric(m)))
}

fn start(dir: &std::path::Path, receivers: &Receivers) -> Standalone {
    start_with(dir, &notify_config(&receivers.base), free_port(), free_port())
}

fn start_with(dir: &std::path::Path, notify_yaml: &str, kafka_port: u16, http_port: u16) -> Standalone {
    let rules = dir.join("rules.yaml");
    let notify = dir.join("notify.yaml");
    std::fs::write(&rules, RULES).expect("rules");
    std::fs::write(&notify, notify_yaml).expect("notify");
    let (rules, notify) = (rules.display().to_string(), notify.display().to_string());
    Standalone::start_on_with_env(
        dir,
        kafka_port,
        http_port,
        &[
            "--alert-rules",
            &rules,
            "--notify-config",
            &notify,
            "--no-default-rules",
            "--alert-idle-after",
            "3s",
            "--flush-interval",
            "200ms",
        ],
        &[("CALLSCOPE_E2E_SLACK_TOKEN", "T000/B000/XXXX")],
    )
}

#[test]
fn a_breach_notifies_each_channel_once_and_resolves_when_the_data_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receivers = Receivers::start();
    let mut node = start(dir.path(), &receivers);
    let rt = runtime();
    let producer = producer(&node.brokers);
    let t0 = now_ms();
    // Two services fail 10 calls each: one alert group (by alertname), two alerts.
    let mut batch: Vec<(String, Vec<u8>)> = (0..10).map(|i| failed_call("gw", t0 + i)).collect();
    batch.extend((0..10).map(|i| failed_call("billing", t0 + i)));
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
    let recovery: Vec<(String, Vec<u8>)> = (1..=30).map(|s| heartbeat(t0 + s * 1000 + 1500)).collect();
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
    let batch: Vec<(String, Vec<u8>)> = (0..10).map(|i| failed_call("flaky-svc", t0 + i)).collect();
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

fn services_of(notification: &Value) -> Vec<String> {
    let mut s: Vec<String> = notification["alerts"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["labels"]["service"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    s.sort();
    s
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
    // Workers pick silences up within 2 s.
    std::thread::sleep(Duration::from_secs(3));

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

fn chrono_like_rfc3339(ms: i64) -> String {
    // Unix milliseconds are accepted as well as RFC 3339.
    ms.to_string()
}

#[test]
fn alert_state_survives_kill_9_without_renotifying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receivers = Receivers::start();
    let (kafka_port, http_port) = (free_port(), free_port());
    let config = notify_config(&receivers.base);
    let mut node = start_with(dir.path(), &config, kafka_port, http_port);
    let rt = runtime();
    let t0 = now_ms();
    {
        let producer = producer(&node.brokers);
        let batch: Vec<(String, Vec<u8>)> = (0..10).map(|i| failed_call("gw", t0 + i)).collect();
        assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &batch)), batch.len());
    }
    let hooks = receivers.wait_for("hook", 1, Duration::from_secs(60), &mut node);
    assert_eq!(hooks[0]["status"], "firing");
    // Let the notification log reach storage, then kill every process.
    std::thread::sleep(Duration::from_secs(1));
    node.proc.kill9();
    let mut node = start_with(dir.path(), &config, kafka_port, http_port);
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
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receivers.received("hook").len(), 1, "no re-notification after the restart");
    // Recovery after the restart resolves it, once.
    let producer = producer(&node.brokers);
    let recovery: Vec<(String, Vec<u8>)> = (1..=30).map(|s| heartbeat(t0 + s * 1000 + 1500)).collect();
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &recovery)), recovery.len());
    let hooks = receivers.wait_for("hook", 2, Duration::from_secs(60), &mut node);
    assert_eq!(hooks[1]["status"], "resolved");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receivers.received("hook").len(), 2);
    node.proc.terminate();
}

fn alertmanager(dir: &std::path::Path) -> (Proc, String) {
    let program = ["/usr/bin/prometheus-alertmanager", "/usr/local/bin/alertmanager", "/usr/bin/alertmanager"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("Alertmanager is missing: apt-get install prometheus-alertmanager (as .ci/run does)")
        });
    let config = dir.join("alertmanager.yml");
    std::fs::write(&config, "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n")
        .expect("config");
    let port = free_port();
    let args = [
        format!("--config.file={}", config.display()),
        format!("--storage.path={}", dir.join("am-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut proc = Proc::spawn_program("alertmanager", dir, program, &args);
    let base = format!("http://127.0.0.1:{port}");
    wait_for_http(&mut proc, &format!("{base}/-/ready"), Duration::from_secs(30));
    (proc, base)
}

#[test]
fn a_real_alertmanager_receives_the_alert_and_its_resolution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut am, am_url) = alertmanager(dir.path());
    let config = format!(
        "route:\n  receiver: am\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: am\n    alertmanager_configs: [{{url: \"{am_url}\"}}]\n"
    );
    let mut node = start_with(dir.path(), &config, free_port(), free_port());
    let rt = runtime();
    let producer = producer(&node.brokers);
    let t0 = now_ms();
    let batch: Vec<(String, Vec<u8>)> = (0..10).map(|i| failed_call("gw", t0 + i)).collect();
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
    let recovery: Vec<(String, Vec<u8>)> = (1..=30).map(|s| heartbeat(t0 + s * 1000 + 1500)).collect();
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &recovery)), recovery.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !in_am(&client).is_empty() {
        assert!(Instant::now() < deadline, "Alertmanager still shows the alert\n{}", node.proc.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
    node.proc.terminate();
    am.terminate();
}

/// Messages the local SMTP sink (aiosmtpd, Mailbox handler) stored, as text.
fn mailbox(dir: &std::path::Path) -> Vec<String> {
    let new = dir.join("new");
    let mut files: Vec<_> =
        std::fs::read_dir(&new).map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect()
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
    let mut node = start_with(dir.path(), &config, free_port(), free_port());
    let rt = runtime();
    let producer = producer(&node.brokers);
    let t0 = now_ms();
    let batch: Vec<(String, Vec<u8>)> = (0..10).map(|i| failed_call("gw", t0 + i)).collect();
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
    let recovery: Vec<(String, Vec<u8>)> = (1..=30).map(|s| heartbeat(t0 + s * 1000 + 1500)).collect();
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
fn unacknowledged_alerts_escalate_and_acknowledged_ones_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receivers = Receivers::start();
    let base = &receivers.base;
    let config = format!(
        "route:\n  receiver: team\n  group_by: [alertname, service]\n  group_wait: 0s\n  group_interval: 1s\n  escalate_after: 10s\n  escalate_to: manager\nreceivers:\n  - name: team\n    webhook_configs: [{{url: \"{base}/hook\"}}]\n  - name: manager\n    webhook_configs: [{{url: \"{base}/manager\"}}]\n"
    );
    let mut node = start_with(dir.path(), &config, free_port(), free_port());
    let rt = runtime();
    let producer = producer(&node.brokers);
    let t0 = now_ms();
    let mut batch: Vec<(String, Vec<u8>)> = (0..10).map(|i| failed_call("gw", t0 + i)).collect();
    batch.extend((0..10).map(|i| failed_call("billing", t0 + i)));
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &batch)), batch.len());
    receivers.wait_for("hook", 2, Duration::from_secs(60), &mut node);
    // Acknowledge gw's alert through the API.
    let client = http();
    let deadline = Instant::now() + Duration::from_secs(10);
    let fingerprint = loop {
        let active = client.call("GET", &format!("{}/monitoring/alerts", node.http), None).json();
        let fp = active["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["labels"]["service"] == "gw")
            .and_then(|a| a["fingerprint"].as_str().map(str::to_string));
        if let Some(fp) = fp {
            break fp;
        }
        assert!(Instant::now() < deadline, "gw alert not listed: {active}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let ack = client.call(
        "POST",
        &format!("{}/monitoring/alerts/{fingerprint}/ack", node.http),
        Some(&serde_json::json!({"by": "oncall", "comment": "looking"})),
    );
    assert_eq!(ack.status, 200, "{}", ack.body);
    let missing = client.call(
        "POST",
        &format!("{}/monitoring/alerts/0000/ack", node.http),
        Some(&serde_json::json!({"by": "oncall"})),
    );
    assert_eq!(missing.status, 404);
    let escalated = receivers.wait_for("manager", 1, Duration::from_secs(60), &mut node);
    assert_eq!(services_of(&escalated[0]), ["billing"], "only the unacknowledged alert escalates");
    assert_eq!(escalated[0]["groupLabels"]["escalated"], "true");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receivers.received("manager").len(), 1, "escalated once");
    node.proc.terminate();
}

#[test]
fn smart_rules_are_validated_hot_loaded_fired_and_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receivers = Receivers::start();
    let mut node = start(dir.path(), &receivers);
    let client = http();
    let url = format!("{}/monitoring/alerts/smart", node.http);
    let rule = serde_json::json!({
        "id": "queue-long",
        "name": "QueueLong",
        "query": {"metric": "e2e_queue_length", "aggregate": "max", "by": ["service"], "window": "20s"},
        "condition": {"type": "threshold", "op": ">", "value": 50, "resolve_value": 30},
        "severity": "critical",
        "annotations": {"summary": "queue {{ $value }} on {{ $labels.service }}"}
    });
    let bad = client.call(
        "POST",
        &url,
        Some(&serde_json::json!({"name": "x y", "query": rule["query"], "condition": rule["condition"]})),
    );
    assert_eq!((bad.status, bad.json()["field"].as_str()), (400, Some("name")));
    let created = client.call("POST", &url, Some(&rule));
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(client.call("POST", &url, Some(&rule)).status, 409);
    // Loaded by the evaluator within 2 s (it shows in the rule list with a state).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = client.call("GET", &format!("{url}/queue-long"), None).json();
        if got["state"] == "inactive" {
            break;
        }
        assert!(Instant::now() < deadline, "smart rule not loaded: {got}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rt = runtime();
    let producer = producer(&node.brokers);
    let t0 = now_ms();
    let gauge = |v: f64, t: i64| {
        let m = Metric {
            name: "e2e_queue_length".into(),
            kind: MetricKind::Gauge,
            value: v,
            timestamp_ms: t,
            service: "gw".into(),
            labels: Default::default(),
            unit: None,
        };
        ("gw/e2e_queue_length".to_string(), callscope_schemas::json::encode(&Event::Metric(m)))
    };
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &[gauge(80.0, t0)])), 1);
    let hooks = receivers.wait_for("hook", 1, Duration::from_secs(60), &mut node);
    assert_eq!(hooks[0]["groupLabels"]["alertname"], "QueueLong");
    assert_eq!(hooks[0]["alerts"][0]["labels"]["rule_id"], "queue-long");
    assert_eq!(hooks[0]["alerts"][0]["annotations"]["summary"], "queue 80 on gw");
    // Replace it (a higher threshold): the alert resolves once the rule reloads.
    let mut raised = rule.clone();
    raised["condition"]["value"] = 100.into();
    raised["condition"]["resolve_value"] = 90.into();
    assert_eq!(client.call("PUT", &format!("{url}/queue-long"), Some(&raised)).status, 200);
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &[gauge(40.0, t0 + 25_000)])), 1);
    let hooks = receivers.wait_for("hook", 2, Duration::from_secs(60), &mut node);
    assert_eq!(hooks[1]["status"], "resolved");
    // Insights from the stored history.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let insights = client.call("GET", &format!("{url}/queue-long/insights?window=1h"), None).json();
        if insights["fired"] == 1 && insights["resolved"] == 1 {
            assert!(insights["time_to_resolve_seconds"]["median"].as_f64().is_some_and(|s| s >= 0.0), "{insights}");
            assert_eq!(insights["noise_estimate"], 1.0, "resolved within 5 minutes: {insights}");
            break;
        }
        assert!(Instant::now() < deadline, "insights: {insights}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(client.call("DELETE", &format!("{url}/queue-long"), None).status, 204);
    assert_eq!(client.call("GET", &format!("{url}/queue-long"), None).status, 404);
    node.proc.terminate();
}

#[test]
fn alerts_the_services_send_are_routed_like_rule_alerts_here_by_sms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receivers = Receivers::start();
    let base = &receivers.base;
    let config = format!(
        r#"route:
  receiver: team
  group_wait: 0s
  group_interval: 1s
  routes:
    - matchers: ['alertname="ASRLatencyHigh"']
      receiver: sms
receivers:
  - name: team
    webhook_configs: [{{url: "{base}/hook"}}]
  - name: sms
    sms_configs:
      - url: "{base}/sms"
        to: ["+8613800000001", "+8613800000002"]
        body: '{{"to": "{{{{ to }}}}", "text": "{{{{ message }}}}"}}'
        send_resolved: true
"#
    );
    let mut node = start_with(dir.path(), &config, free_port(), free_port());
    let rt = runtime();
    let producer = producer(&node.brokers);
    let t0 = now_ms();
    let alert = |status: callscope_schemas::AlertStatus, ends: Option<i64>| {
        let a = callscope_schemas::Alert {
            alert_name: "ASRLatencyHigh".into(),
            severity: callscope_schemas::Severity::Warning,
            status,
            service: "asr".into(),
            labels: [("region".to_string(), "cn-east".to_string())].into(),
            annotations: [("summary".to_string(), "ASR p95 above 800 ms".to_string())].into(),
            starts_at_ms: t0,
            ends_at_ms: ends,
            value: Some(950.0),
            source: "asr-service".into(),
        };
        ("asr/ASRLatencyHigh".to_string(), callscope_schemas::json::encode(&Event::Alert(a)))
    };
    assert_eq!(
        rt.block_on(produce_all(&producer, "callscope.alerts", &[alert(callscope_schemas::AlertStatus::Firing, None)])),
        1
    );
    let sms = receivers.wait_for("sms", 2, Duration::from_secs(60), &mut node);
    let mut to: Vec<&str> = sms.iter().filter_map(|m| m["to"].as_str()).collect();
    to.sort();
    assert_eq!(to, ["+8613800000001", "+8613800000002"]);
    assert!(
        sms.iter().all(|m| m["text"]
            .as_str()
            .is_some_and(|t| t.contains("[FIRING:1] ASRLatencyHigh") && t.contains("ASR p95 above 800 ms"))),
        "{sms:?}"
    );
    let resolved = alert(callscope_schemas::AlertStatus::Resolved, Some(t0 + 60_000));
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.alerts", &[resolved])), 1);
    let sms = receivers.wait_for("sms", 4, Duration::from_secs(60), &mut node);
    assert!(
        sms[2..].iter().all(|m| m["text"].as_str().is_some_and(|t| t.contains("[RESOLVED] ASRLatencyHigh"))),
        "{sms:?}"
    );
    assert!(receivers.received("hook").is_empty(), "routed to sms only");
    node.proc.terminate();
}

/// `callscope_alerting_leader` of a pipeline process's /metrics.
fn is_leader(client: &Http, metrics_url: &str) -> bool {
    client
        .try_call("GET", metrics_url, None)
        .is_some_and(|r| r.body.lines().any(|l| l.trim() == "callscope_alerting_leader 1"))
}

#[test]
fn two_pipelines_notify_once_and_the_survivor_takes_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receivers = Receivers::start();
    let shared = dir.path().join("shared");
    let (mut broker, kafka_addr) = spawn_broker(dir.path());
    std::fs::write(dir.path().join("rules.yaml"), RULES).expect("rules");
    std::fs::write(dir.path().join("notify.yaml"), notify_config(&receivers.base)).expect("notify");
    let rules = dir.path().join("rules.yaml").display().to_string();
    let notify = dir.path().join("notify.yaml").display().to_string();
    let pipeline = |name: &str, metrics_addr: &str| {
        Proc::spawn_with_env(
            name,
            dir.path(),
            BIN,
            &[
                "pipeline",
                "--brokers",
                &kafka_addr,
                "--data-dir",
                shared.to_str().expect("path"),
                "--group-id",
                "shared-group",
                "--flush-interval",
                "200ms",
                "--worker-id",
                name,
                "--metrics-addr",
                metrics_addr,
                "--alert-rules",
                &rules,
                "--notify-config",
                &notify,
                "--no-default-rules",
                "--alert-idle-after",
                "3s",
            ],
            &[("CALLSCOPE_E2E_SLACK_TOKEN", "T000/B000/XXXX")],
        )
    };
    let addrs = [format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port())];
    let mut procs = vec![pipeline("pipeline-a", &addrs[0]), pipeline("pipeline-b", &addrs[1])];
    let client = http();
    let metrics: Vec<String> = addrs.iter().map(|a| format!("http://{a}/metrics")).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        let leaders: Vec<usize> = (0..2).filter(|i| is_leader(&client, &metrics[*i])).collect();
        if leaders.len() == 1 {
            break leaders[0];
        }
        assert!(leaders.len() < 2, "two leaders");
        procs.iter_mut().for_each(Proc::assert_running);
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(200));
    };
    let rt = runtime();
    let producer = producer(&kafka_addr);
    let t0 = now_ms();
    // The heartbeat moves event time past the rule's `for`.
    let mut batch: Vec<(String, Vec<u8>)> = (0..10).map(|i| failed_call("gw", t0 + i)).collect();
    batch.push(heartbeat(t0 + 1500));
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &batch)), batch.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    while receivers.received("hook").is_empty() {
        assert!(Instant::now() < deadline, "no notification:\n{}", procs[leader].log_tail());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receivers.received("hook").len(), 1, "two processes evaluate, one notifies");
    // The leader dies; the other takes the lease and the notification log.
    std::thread::sleep(Duration::from_secs(1));
    procs[leader].kill9();
    let survivor = 1 - leader;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !is_leader(&client, &metrics[survivor]) {
        procs[survivor].assert_running();
        assert!(Instant::now() < deadline, "the survivor never led:\n{}", procs[survivor].log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    // Nothing fires again. (A takeover slower than the rule's range may already see the
    // alert resolved by the idle clock and send that resolution.)
    let after_takeover = receivers.received("hook");
    assert_eq!(
        after_takeover.iter().filter(|h| h["status"] == "firing").count(),
        1,
        "no re-notification by the new leader"
    );
    let recovery: Vec<(String, Vec<u8>)> = (1..=30).map(|s| heartbeat(t0 + s * 1000 + 1500)).collect();
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &recovery)), recovery.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    while receivers.received("hook").len() < 2 {
        assert!(Instant::now() < deadline, "no resolution from the new leader:\n{}", procs[survivor].log_tail());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(receivers.received("hook")[1]["status"], "resolved");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receivers.received("hook").len(), 2);
    procs[survivor].terminate();
    broker.terminate();
}
