//! Service health from the services' own telemetry, over the real binary: spans and metric
//! samples of four services in four states, judged by `/monitoring/services`,
//! `/monitoring/health/{service}` and `/monitoring/health/comprehensive`, and their figures
//! checked against SQL over the same data.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

#[test]
fn services_are_judged_from_their_own_telemetry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(dir.path()).args(["--flush-interval", "200ms"]).spawn();
    let client = http();
    let base = &node.http;
    let now = now_ms();
    // asr: healthy (1 failure in 40); billing: 12 of 20 fail (down); ai-engine: fine
    // requests but its CPU gauge at 95 % (degraded); tts: silent for 10 minutes (down).
    let mut spans = Vec::new();
    let mut span = |service: &str, i: usize, at_ms: i64, failed: bool| {
        spans.push(
            json!({"trace_id": format!("{:032x}", spans.len() + 1), "span_id": format!("{:016x}", spans.len() + 1),
            "service": service, "operation": "handle", "kind": "server", "start_time_us": at_ms * 1000,
            "duration_us": 1_000 + (i as i64) * 100, "status": if failed { "error" } else { "ok" }}),
        );
    };
    for i in 0..40 {
        span("asr", i, now - 60_000 + i as i64 * 1000, i == 7);
    }
    for i in 0..20 {
        span("billing", i, now - 30_000 + i as i64 * 1000, i < 12);
        span("ai-engine", i, now - 30_000 + i as i64 * 1000, false);
        span("tts", i, now - 600_000 + i as i64 * 1000, false);
    }
    let reply = client.call("POST", &format!("{base}/monitoring/tracing/traces"), Some(&json!(spans)));
    assert_eq!(reply.status, 202, "{}", reply.body);
    let gauge = |service: &str, name: &str, value: f64, t: i64| json!({"name": name, "kind": "gauge", "value": value, "timestamp_ms": t, "service": service, "labels": {"host": "h1"}});
    let metrics = json!([
        gauge("asr", "cpu_usage_percent", 40.0, now - 5_000),
        gauge("ai-engine", "cpu_usage_percent", 80.0, now - 20_000),
        gauge("ai-engine", "cpu_usage_percent", 95.0, now - 5_000),
        gauge("ai-engine", "inference_queue_length", 12.0, now - 5_000),
        gauge("tts", "cpu_usage_percent", 10.0, now - 600_000),
    ]);
    let reply = client.call("POST", &format!("{base}/monitoring/metrics"), Some(&metrics));
    assert_eq!(reply.status, 202, "{}", reply.body);
    wait_for_count(&client, base, "SELECT COUNT(*) FROM spans", 100, Duration::from_secs(60));
    wait_for_count(&client, base, "SELECT COUNT(*) FROM metrics", 5, Duration::from_secs(60));

    let list = client.call("GET", &format!("{base}/monitoring/services"), None);
    assert_eq!(list.status, 200, "{}", list.body);
    let list = list.json();
    let by_name = |name: &str| -> Value {
        list["services"]
            .as_array()
            .expect("services")
            .iter()
            .find(|s| s["service"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: {list}"))
    };
    let status = |s: &Value| s["status"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        ["asr", "billing", "ai-engine", "tts"].map(|n| status(&by_name(n))),
        ["healthy", "down", "degraded", "down"],
        "{list}"
    );
    // The figures are what SQL counts over the window.
    let asr = by_name("asr");
    let sql_count = |q: &str| sql(&client, base, q)[0][0].as_i64().expect("a count");
    let since_us = (now - 300_000) * 1000;
    assert_eq!(
        asr["requests"].as_i64(),
        Some(sql_count(&format!("SELECT COUNT(*) FROM spans WHERE service = 'asr' AND start_time_us >= {since_us}")))
    );
    assert_eq!(asr["errors"], 1);
    assert_eq!(asr["error_ratio"], 1.0 / 40.0);
    assert!(asr["latency_p95_ms"].as_f64().is_some_and(|p| (4.0..=5.0).contains(&p)), "{asr}");
    let ai = by_name("ai-engine");
    assert!(ai["reasons"][0].as_str().is_some_and(|r| r.contains("cpu_usage_percent at 95")), "the newest value: {ai}");
    let queue = ai["saturation"].as_array().expect("saturation").iter().find(|s| s["name"] == "inference_queue_length");
    assert_eq!(queue.map(|q| q["value"].clone()), Some(json!(12.0)), "{ai}");
    assert!(by_name("billing")["reasons"][0].as_str().is_some_and(|r| r.contains("60.0 % of 20 requests failed")));
    assert!(by_name("tts")["reasons"][0].as_str().is_some_and(|r| r.starts_with("no telemetry for")));

    // One service, with an objective; a service never seen; a bad parameter.
    let asr = client.call("GET", &format!("{base}/monitoring/health/asr?p95_slo_ms=2"), None).json();
    assert_eq!(asr["status"], "degraded", "{asr}");
    assert!(asr["reasons"][0].as_str().is_some_and(|r| r.contains("objective")), "{asr}");
    let unknown = client.call("GET", &format!("{base}/monitoring/health/never-seen"), None).json();
    assert_eq!(unknown["status"], "unknown", "{unknown}");
    let bad = client.call("GET", &format!("{base}/monitoring/services?window=soon"), None);
    assert_eq!((bad.status, bad.json()["field"].as_str()), (400, Some("window")), "{}", bad.body);

    // Everything: callscope's own parts and the services.
    let all = client.call("GET", &format!("{base}/monitoring/health/comprehensive"), None).json();
    assert_eq!(all["status"], "degraded", "{all}");
    let problems: Vec<&str> = all["problems"].as_array().expect("problems").iter().filter_map(Value::as_str).collect();
    assert!(problems.contains(&"service billing is down") && problems.contains(&"service tts is down"), "{problems:?}");
    assert_eq!(all["components"]["kafka"]["connected"], true, "{all}");
    let tiers: Vec<&str> = all["tiers"].as_array().expect("tiers").iter().filter_map(|t| t["tier"].as_str()).collect();
    assert_eq!(tiers, ["hot", "warm", "cold", "archive"]);
    assert!(all["tiers"].as_array().expect("tiers").iter().all(|t| t["reachable"] == true), "{all}");
    assert_eq!(all["services"].as_array().map(Vec::len), Some(4));
    assert_eq!(all["services_degraded"], 1);
}
