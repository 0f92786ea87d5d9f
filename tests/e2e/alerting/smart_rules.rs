//! Smart rules through the API, end to end: validation field by field, hot load into the
//! running evaluator, a firing alert, replacement and deletion, and the insights endpoint.

use std::time::{Duration, Instant};

use callscope_schemas::{Event, Metric, MetricKind};

use super::fixture::*;
use super::peers::Receivers;
use crate::support::*;

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
    // Loaded by the evaluator (it reloads every 2 s; it shows in the rule list with a
    // state). The deadline is generous: on a loaded 2-core machine 10 s was once too short.
    let deadline = Instant::now() + Duration::from_secs(30);
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

    // The built-in spam-spike rule is listed, marked, replaceable by a stored copy and
    // restored by deleting that copy; the built-in itself cannot be deleted.
    let spam = format!("{url}/default-spam-spike");
    let listed = client.call("GET", &url, None).json();
    let builtin = listed.as_array().expect("rules").iter().find(|r| r["id"] == "default-spam-spike").cloned();
    let builtin = builtin.unwrap_or_else(|| panic!("the built-in rule is listed: {listed}"));
    assert_eq!((builtin["builtin"].as_bool(), builtin["name"].as_str()), (Some(true), Some("SpamSpike")));
    let mut off = builtin.clone();
    for field in ["state", "active", "last_error", "builtin", "created_at_ms", "updated_at_ms"] {
        off.as_object_mut().expect("object").remove(field);
    }
    off["enabled"] = false.into();
    let replaced = client.call("PUT", &spam, Some(&off));
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    let got = client.call("GET", &spam, None).json();
    assert_eq!((got["builtin"].as_bool(), got["enabled"].as_bool()), (Some(false), Some(false)), "{got}");
    assert_eq!(client.call("DELETE", &spam, None).status, 204);
    let got = client.call("GET", &spam, None).json();
    assert_eq!((got["builtin"].as_bool(), got["enabled"].as_bool()), (Some(true), Some(true)), "{got}");
    let refused = client.call("DELETE", &spam, None);
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(client.call("POST", &url, Some(&off)).status, 409, "a built-in id is taken");
    node.proc.terminate();
}
