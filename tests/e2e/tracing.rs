//! Trace analysis over the real binary: a call's spans posted to the API come back from
//! `/monitoring/tracing/traces/{id}/analyze` with the critical path and self times that a
//! hand computation gives (the same algorithm as Jaeger UI), and the error chain; trace
//! search by service, attributes, errors, duration and order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

#[test]
fn a_call_is_analysed_as_computed_by_hand_and_found_by_search() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A short lifecycle interval merges the trace-id index while the test runs.
    let node = Node::standalone(dir.path()).args(["--flush-interval", "200ms", "--lifecycle-interval", "1s"]).spawn();
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

    // Health: the 9 spans of the last minutes, Kafka and every tier answering.
    let reply = client.call("GET", &format!("{}/monitoring/tracing/health", node.http), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let health = reply.json();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["ingest"]["spans"], 9);
    assert_eq!(health["lag"]["connected"], true);
    assert_eq!(health["tiers"].as_array().map(Vec::len), Some(4));
    assert_eq!(health["newest_span_ms"].as_i64().map(|ms| ms >= t0 / 1000 + 2_000), Some(true), "{health}");

    // The trace-id index: the workers wrote a segment per span batch, the lifecycle schedule
    // merges them, and a lookup by id goes through it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let index = loop {
        let health = client.call("GET", &format!("{}/monitoring/tracing/health", node.http), None).json();
        let index = health["index"].clone();
        if index["generation"].as_u64() >= Some(1) && index["unmerged_segments"] == 0 {
            break index;
        }
        assert!(Instant::now() < deadline, "the trace-id index was never merged: {health}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(index["readable"], true, "{index}");
    assert!(index["entries"].as_u64() >= Some(3), "three traces at least: {index}");
    let hits = || -> f64 {
        let metrics = client.call("GET", &format!("{}/metrics", node.http), None).body;
        let prefix = "callscope_trace_index_lookups_total{result=\"hit\"} ";
        metrics.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
    };
    let before = hits();
    let reply = client.call("GET", &format!("{}/monitoring/tracing/traces/{trace_id}", node.http), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["spans"].as_array().map(Vec::len), Some(5), "{}", reply.body);
    assert_eq!(hits(), before + 1.0, "the lookup went through the merged index");
}

/// Posts `spans` (id, parent, service, operation, kind, start ms after `t0`, duration ms,
/// status) of trace `trace_id`.
fn post_trace(
    client: &Http,
    node: &Node,
    trace_id: &str,
    t0: i64,
    spans: &[(&str, Option<&str>, &str, &str, &str, i64, i64, &str)],
) {
    let body: Vec<Value> = spans
        .iter()
        .map(|(id, parent, service, operation, kind, start_ms, duration_ms, status)| {
            json!({"trace_id": trace_id, "span_id": id, "parent_span_id": parent, "service": service,
                   "operation": operation, "kind": kind, "start_time_us": t0 + start_ms * 1000,
                   "duration_us": duration_ms * 1000, "status": status, "attributes": {"region": "north"}})
        })
        .collect();
    let reply = client.call("POST", &format!("{}/monitoring/tracing/traces", node.http), Some(&json!(body)));
    assert_eq!(reply.status, 202, "{}", reply.body);
}

/// The request shapes Grafana's Jaeger datasources (the old core one and the Grafana 13
/// plugin) and Jaeger UI (v1 trace page, v3 search) send, answered in Jaeger's model.
#[test]
fn the_jaeger_api_answers_what_grafana_and_jaeger_ui_ask() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(dir.path()).args(["--flush-interval", "200ms"]).spawn();
    let client = http();
    let t0 = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_micros() as i64)
        - 120_000_000;
    let (a, b) = ("a1".repeat(16), "b2".repeat(16));
    post_trace(
        &client,
        &node,
        &a,
        t0,
        &[
            ("0000000000000001", None, "call-gateway", "POST /call", "server", 0, 100, "ok"),
            ("0000000000000002", Some("0000000000000001"), "asr", "recognize", "server", 10, 30, "error"),
            ("0000000000000003", Some("0000000000000001"), "ai-engine", "dialogue.turn", "server", 40, 50, "ok"),
        ],
    );
    post_trace(
        &client,
        &node,
        &b,
        t0 + 5_000_000,
        &[
            ("0000000000000001", None, "call-gateway", "POST /call", "server", 0, 20, "ok"),
            ("0000000000000002", Some("0000000000000001"), "asr", "recognize", "server", 5, 10, "ok"),
        ],
    );
    let base = format!("{}/jaeger", node.http);
    let get = |path: &str| {
        let reply = client.call("GET", &format!("{base}{path}"), None);
        (reply.status, reply.json())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while get("/api/services").1["data"].as_array().map_or(0, Vec::len) < 3 || get(&format!("/api/traces/{b}")).0 != 200
    {
        assert!(Instant::now() < deadline, "spans never arrived");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (status, services) = get("/api/services");
    assert_eq!(status, 200);
    assert_eq!(services["data"], json!(["ai-engine", "asr", "call-gateway"]));
    assert_eq!((services["total"].as_i64(), &services["errors"]), (Some(3), &Value::Null));
    assert_eq!(get("/api/services/asr/operations").1["data"], json!(["recognize"]));
    assert_eq!(
        get("/api/operations?service=asr&spanKind=server").1["data"],
        json!([{"name": "recognize", "spanKind": "server"}])
    );

    // Old Grafana: search by service, operation, tags (JSON), µs range, min duration.
    let range = format!("start={}&end={}", t0 - 1_000_000, t0 + 60_000_000);
    let (status, found) = get(&format!(
        "/api/traces?service=asr&operation=recognize&tags=%7B%22region%22%3A%22north%22%7D&minDuration=20ms&limit=20&{range}"
    ));
    assert_eq!(status, 200, "{found}");
    let ids: Vec<&str> =
        found["data"].as_array().expect("traces").iter().filter_map(|t| t["traceID"].as_str()).collect();
    assert_eq!(ids, [a.as_str()]);
    let trace = &found["data"][0];
    assert_eq!(trace["spans"].as_array().map(Vec::len), Some(3));
    let asr =
        trace["spans"].as_array().and_then(|s| s.iter().find(|s| s["operationName"] == "recognize")).expect("asr span");
    assert_eq!(asr["references"], json!([{"refType": "CHILD_OF", "traceID": a, "spanID": "0000000000000001"}]));
    assert_eq!((asr["startTime"].as_i64(), asr["duration"].as_i64()), (Some(t0 + 10_000), Some(30_000)));
    assert!(asr["tags"].as_array().expect("tags").contains(&json!({"key": "error", "type": "bool", "value": true})));
    let process = asr["processID"].as_str().expect("process id");
    assert_eq!(trace["processes"][process]["serviceName"], "asr");
    // `tag=error:true` finds the failed one only; multi-id lookup; the Grafana 13 plugin's
    // ms "hint" never hides a trace.
    let (_, errors) = get(&format!("/api/traces?service=asr&tag=error:true&{range}"));
    assert_eq!(errors["data"].as_array().map(Vec::len), Some(1));
    let (_, both) = get(&format!("/api/traces?traceID={a}&traceID={b}"));
    assert_eq!(both["data"].as_array().map(Vec::len), Some(2));
    let (status, hinted) = get(&format!("/api/traces/{b}?start={}&end={}", t0 / 1000, t0 / 1000 + 1));
    assert_eq!((status, hinted["data"][0]["traceID"].as_str()), (200, Some(b.as_str())));
    let (status, missing) = get(&format!("/api/traces/{}", "cd".repeat(16)));
    assert_eq!(status, 404);
    assert_eq!(missing["errors"][0]["code"], 404);
    assert_eq!(get("/api/traces?limit=5").0, 400, "service is required");

    // Dependencies: the edges the workers paired in the stream (roll-ups, there once the
    // windows close), equal to SQL over the spans.
    let expected = json!([{"parent": "call-gateway", "child": "ai-engine", "callCount": 1}, {"parent": "call-gateway", "child": "asr", "callCount": 2}]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, deps) = get(&format!("/api/dependencies?endTs={}&lookback=3600000", t0 / 1000 + 60_000));
        if deps["data"] == expected {
            break;
        }
        assert!(Instant::now() < deadline, "the stream's edges never matched: {deps}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let by_sql = sql(
        &client,
        &node.http,
        "SELECT p.service, c.service, COUNT(*) FROM spans c JOIN spans p ON c.trace_id = p.trace_id \
         AND c.parent_span_id = p.span_id WHERE p.service <> c.service GROUP BY 1, 2 ORDER BY 1, 2",
    );
    assert_eq!(
        by_sql,
        vec![
            vec![json!("call-gateway"), json!("ai-engine"), json!(1)],
            vec![json!("call-gateway"), json!("asr"), json!(2)]
        ]
    );

    // One service's upstream and downstream edges, with errors and latency.
    let window = format!("start={}&end={}", t0 / 1000 - 1000, t0 / 1000 + 60_000);
    let reply =
        client.call("GET", &format!("{}/monitoring/tracing/services/asr/dependencies?{window}", node.http), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let asr = reply.json();
    assert_eq!(asr["downstream"], json!([]));
    let up = &asr["upstream"][0];
    assert_eq!(
        (up["service"].as_str(), up["calls"].as_i64(), up["errors"].as_i64()),
        (Some("call-gateway"), Some(2), Some(1))
    );
    assert_eq!(up["error_rate"], 0.5);
    // Within the callee durations (10 and 30 ms), give or take the sketch's 1 % accuracy.
    assert!((9_800.0..=30_300.0).contains(&up["latency_p95_us"].as_f64().expect("p95")), "{up}");
    let reply = client.call(
        "GET",
        &format!("{}/monitoring/tracing/services/call-gateway/dependencies?{window}", node.http),
        None,
    );
    let downstream = reply.json()["downstream"].clone();
    let names: Vec<&str> =
        downstream.as_array().expect("downstream").iter().filter_map(|e| e["service"].as_str()).collect();
    assert_eq!(names, ["ai-engine", "asr"]);
    // The same edges joined from the spans at query time: equal calls and errors. With two
    // calls a p95 is a matter of definition (the sketch's nearest rank, the join's
    // interpolation): both lie within the callee durations (10 to 50 ms here).
    for service in ["asr", "call-gateway", "ai-engine"] {
        let url = |source: &str| {
            format!("{}/monitoring/tracing/services/{service}/dependencies?{window}&source={source}", node.http)
        };
        let (stream, spans) =
            (client.call("GET", &url("stream"), None).json(), client.call("GET", &url("spans"), None).json());
        for side in ["upstream", "downstream"] {
            let (a, b) = (stream[side].as_array().expect("edges"), spans[side].as_array().expect("edges"));
            assert_eq!(a.len(), b.len(), "{service} {side}: {stream} vs {spans}");
            for (x, y) in a.iter().zip(b) {
                assert_eq!((&x["service"], &x["calls"], &x["errors"]), (&y["service"], &y["calls"], &y["errors"]));
                let (px, py) = (x["latency_p95_us"].as_f64().expect("p95"), y["latency_p95_us"].as_f64().expect("p95"));
                for p in [px, py] {
                    assert!((9_800.0..=51_000.0).contains(&p), "{service} {side} p95: stream {px}, spans {py}");
                }
            }
        }
    }
    assert_eq!(
        client
            .call("GET", &format!("{}/monitoring/tracing/services/asr/dependencies?source=x", node.http), None)
            .status,
        400
    );
    // Span RED metrics from the stream, by service, operation and status (Tempo's names).
    let url = format!(
        "{}/monitoring/metrics?name=traces_spanmetrics_calls_total&service=asr&agg=sum&step=1h&start={}&end={}",
        node.http,
        t0 / 1000 - 3_600_000,
        t0 / 1000 + 3_600_000
    );
    let series = client.call("GET", &url, None).json();
    let calls: BTreeMap<String, f64> = series
        .as_array()
        .expect("series")
        .iter()
        .map(|s| {
            let points = s["points"].as_array().expect("points");
            (
                s["labels"]["status_code"].as_str().unwrap_or("").to_string(),
                points.iter().filter_map(|p| p[1].as_f64()).sum(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        BTreeMap::from([("STATUS_CODE_ERROR".to_string(), 1.0), ("STATUS_CODE_OK".to_string(), 1.0)]),
        "{series}"
    );

    // Jaeger UI v3.
    assert_eq!(get("/api/v3/services").1, json!({"services": ["ai-engine", "asr", "call-gateway"]}));
    assert_eq!(
        get("/api/v3/operations?service=call-gateway").1,
        json!({"operations": [{"name": "POST /call", "spanKind": "server"}]})
    );
    let rfc = |us: i64| chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us).expect("time").to_rfc3339();
    let (status, summaries) = get(&format!(
        "/api/v3/trace-summaries?query.serviceName=call-gateway&query.startTimeMin={}&query.startTimeMax={}&query.searchDepth=20",
        rfc(t0 - 1_000_000).replace('+', "%2B"),
        rfc(t0 + 60_000_000).replace('+', "%2B")
    ));
    assert_eq!(status, 200, "{summaries}");
    let first = &summaries["summaries"][0];
    assert_eq!(first["traceId"], b, "newest first");
    assert_eq!(
        (first["rootServiceName"].as_str(), first["rootOperationName"].as_str()),
        (Some("call-gateway"), Some("POST /call"))
    );
    assert_eq!((first["spanCount"].as_i64(), first["errorSpanCount"].as_i64()), (Some(2), Some(0)));
    assert_eq!(first["minStartTimeUnixNano"], ((t0 + 5_000_000) * 1000).to_string());
    assert_eq!(summaries["summaries"][1]["errorSpanCount"], 1);
    let (status, bad) = get("/api/v3/trace-summaries?query.serviceName=asr&query.startTimeMin=yesterday");
    assert_eq!((status, bad["error"]["httpCode"].as_i64()), (400, Some(400)));
}
