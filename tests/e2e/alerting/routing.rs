//! Routing beyond the first notification: unacknowledged alerts escalate to another
//! receiver (acknowledged ones do not), and alerts the services send themselves are routed
//! like rule alerts, here to SMS.

use std::time::{Duration, Instant};

use callscope_schemas::Event;

use super::fixture::*;
use super::peers::Receivers;
use crate::support::*;

#[test]
fn unacknowledged_alerts_escalate_and_acknowledged_ones_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receivers = Receivers::start();
    let base = &receivers.base;
    let config = format!(
        "route:\n  receiver: team\n  group_by: [alertname, service]\n  group_wait: 0s\n  group_interval: 1s\n  escalate_after: 10s\n  escalate_to: manager\nreceivers:\n  - name: team\n    webhook_configs: [{{url: \"{base}/hook\"}}]\n  - name: manager\n    webhook_configs: [{{url: \"{base}/manager\"}}]\n"
    );
    let mut node = standalone(dir.path(), &config).spawn();
    let rt = runtime();
    let producer = producer(&node.brokers);
    let t0 = now_ms();
    let mut batch = failed_calls("gw", t0);
    batch.extend(failed_calls("billing", t0));
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
    // The failures go on until the escalation arrives: the rule looks at 20 s of event time,
    // so on a slow machine a single burst could resolve before the 10 s escalation is due.
    let deadline = Instant::now() + Duration::from_secs(60);
    let escalated = loop {
        let got = receivers.received("manager");
        if !got.is_empty() {
            break got;
        }
        node.proc.assert_running();
        assert!(Instant::now() < deadline, "manager: no escalation after 60s\n{}", node.proc.log_tail());
        let now = now_ms();
        let mut more = failed_calls("gw", now);
        more.extend(failed_calls("billing", now));
        assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &more)), more.len());
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(services_of(&escalated[0]), ["billing"], "only the unacknowledged alert escalates");
    assert_eq!(escalated[0]["groupLabels"]["escalated"], "true");
    // Deliberate quiet window: a second escalation would arrive in it.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receivers.received("manager").len(), 1, "escalated once");
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
    let mut node = standalone(dir.path(), &config).spawn();
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
