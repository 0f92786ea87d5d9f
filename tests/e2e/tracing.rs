//! Trace analysis over the real binary: a call's spans posted to the API come back from
//! `/monitoring/tracing/traces/{id}/analyze` with the critical path and self times that a
//! hand computation gives (the same algorithm as Jaeger UI), and the error chain; trace
//! search by service, attributes, errors, duration and order.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

#[test]
fn a_call_is_analysed_as_computed_by_hand_and_found_by_search() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(dir.path()).args(["--flush-interval", "200ms"]).spawn();
    let client = http();
    let trace_id = "5eed".repeat(8);
    let t0 = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_micros() as i64)
        - 60_000_000;
    // gateway 0–100 ms calls asr 10–40 and ai 30–90; ai calls the whitelist 35–49 and the
    // LLM 50–85, which fails, and so does ai.
    let spans: Vec<Value> = [
        ("0000000000000001", None, "call-gateway", "POST /call", 0, 100, "ok"),
        ("0000000000000002", Some("0000000000000001"), "asr", "recognize", 10, 30, "ok"),
        ("0000000000000003", Some("0000000000000001"), "ai-engine", "dialogue.turn", 30, 60, "error"),
        ("0000000000000004", Some("0000000000000003"), "whitelist", "check", 35, 14, "ok"),
        ("0000000000000005", Some("0000000000000003"), "llm", "generate", 50, 35, "error"),
    ]
    .iter()
    .map(|(id, parent, service, operation, start_ms, duration_ms, status)| {
        json!({"trace_id": trace_id, "span_id": id, "parent_span_id": parent, "service": service,
               "operation": operation, "kind": "server", "start_time_us": t0 + start_ms * 1000,
               "duration_us": duration_ms * 1000, "status": status})
    })
    .collect();
    let reply = client.call("POST", &format!("{}/monitoring/tracing/traces", node.http), Some(&json!(spans)));
    assert_eq!(reply.status, 202, "{}", reply.body);

    let url = format!("{}/monitoring/tracing/traces/{trace_id}/analyze", node.http);
    let deadline = Instant::now() + Duration::from_secs(60);
    let analysis = loop {
        let reply = client.call("GET", &url, None);
        if reply.status == 200 && reply.json()["span_count"] == 5 {
            break reply.json();
        }
        assert!(Instant::now() < deadline, "trace never complete: {} {}", reply.status, reply.body);
        std::thread::sleep(Duration::from_millis(300));
    };
    let ms = |v: &Value| (v.as_i64().expect("µs") - t0) / 1000;
    let path: Vec<(String, i64, i64)> = analysis["critical_path"]
        .as_array()
        .expect("critical path")
        .iter()
        .map(|s| (s["spanID"].as_str().expect("id")[15..].to_string(), ms(&s["sectionStart"]), ms(&s["sectionEnd"])))
        .collect();
    let expected: Vec<(String, i64, i64)> =
        [("1", 90, 100), ("3", 85, 90), ("5", 50, 85), ("3", 49, 50), ("4", 35, 49), ("3", 30, 35), ("1", 0, 30)]
            .iter()
            .map(|(id, a, b)| (id.to_string(), *a, *b))
            .collect();
    assert_eq!(path, expected);
    let self_ms = |id: &str| {
        analysis["self_times"].as_array().expect("self times").iter().find(|s| s["span_id"] == id).expect("span")
            ["self_time_us"]
            .as_i64()
            .expect("self time")
            / 1000
    };
    assert_eq!(self_ms("0000000000000001"), 20);
    assert_eq!(self_ms("0000000000000003"), 11);
    assert_eq!(self_ms("0000000000000005"), 35);
    assert_eq!(analysis["bottlenecks"][0]["service"], "call-gateway");
    assert_eq!(analysis["bottlenecks"][1]["service"], "llm");
    assert_eq!(analysis["error_services"], json!(["llm", "ai-engine", "call-gateway"]));
    assert_eq!(analysis["duration_us"], 100_000);
    assert_eq!(analysis["anomalies"], json!([]), "no history: nothing is unusual");
    let unknown =
        client.call("GET", &format!("{}/monitoring/tracing/traces/{}/analyze", node.http, "ab".repeat(16)), None);
    assert_eq!(unknown.status, 404);

    // Search: two more calls, one slow in the north, one failing in the south.
    let more: Vec<Value> = [
        ("2".repeat(32), "0000000000000001", None, "call-gateway", 1_000, 200, "ok", "north"),
        ("2".repeat(32), "0000000000000002", Some("0000000000000001"), "asr", 1_010, 150, "ok", "north"),
        ("3".repeat(32), "0000000000000001", None, "call-gateway", 2_000, 50, "ok", "south"),
        ("3".repeat(32), "0000000000000002", Some("0000000000000001"), "asr", 2_010, 20, "error", "south"),
    ]
    .iter()
    .map(|(trace, id, parent, service, start_ms, duration_ms, status, region)| {
        json!({"trace_id": trace, "span_id": id, "parent_span_id": parent, "service": service,
               "operation": "op", "kind": "server", "start_time_us": t0 + start_ms * 1000,
               "duration_us": duration_ms * 1000, "status": status, "attributes": {"region": region}})
    })
    .collect();
    let reply = client.call("POST", &format!("{}/monitoring/tracing/traces", node.http), Some(&json!(more)));
    assert_eq!(reply.status, 202, "{}", reply.body);
    let range = format!("start={}&end={}", t0 / 1000 - 1000, t0 / 1000 + 10_000);
    let search = |query: &str| -> Vec<String> {
        let reply = client.call("GET", &format!("{}/monitoring/tracing/traces?{range}&{query}", node.http), None);
        assert_eq!(reply.status, 200, "{query}: {}", reply.body);
        reply.json()["traces"]
            .as_array()
            .expect("traces")
            .iter()
            .map(|t| t["trace_id"].as_str().expect("id")[..1].to_string())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while search("service=asr").len() < 3 {
        assert!(Instant::now() < deadline, "the new spans never arrived");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(search("service=asr&attr=region=north"), ["2"]);
    assert_eq!(search("service=asr&errors=true"), ["3"]);
    assert_eq!(search("service=asr&min_duration=120ms"), ["2"]);
    assert_eq!(search("service=asr&max_duration=25ms"), ["3"]);
    assert_eq!(search("service=call-gateway&order=longest"), ["2", "5", "3"]);
    assert_eq!(search("order=oldest&limit=1"), ["5"]);
    assert_eq!(search("service=nobody"), Vec::<String>::new());
    let reply = client.call("GET", &format!("{}/monitoring/tracing/traces?{range}&errors=true", node.http), None);
    let traces = reply.json()["traces"].clone();
    // Newest first: trace 3 (its asr span failed), then trace 5 (ai and llm failed).
    assert_eq!(traces[0]["trace_id"], "3".repeat(32));
    assert_eq!(
        (traces[0]["root_service"].as_str(), traces[0]["root_operation"].as_str()),
        (Some("call-gateway"), Some("op"))
    );
    assert_eq!(
        (traces[0]["span_count"].as_i64(), traces[0]["error_count"].as_i64(), traces[0]["duration_us"].as_i64()),
        (Some(2), Some(1), Some(50_000))
    );
    assert_eq!(
        traces[0]["services"],
        json!([{"name": "asr", "span_count": 1, "error_count": 1}, {"name": "call-gateway", "span_count": 1, "error_count": 0}])
    );
    assert_eq!(traces[1]["error_count"], 2);
    let bad = client.call("GET", &format!("{}/monitoring/tracing/traces?min_duration=fast", node.http), None);
    assert_eq!(bad.status, 400, "{}", bad.body);
}
