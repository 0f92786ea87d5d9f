//! The HTTP surface: schema registry, HTTP ingestion, SQL guard, health, errors.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[test]
fn http_api_contracts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(dir.path()).args(["--flush-interval", "200ms"]).spawn();
    let client = http();
    let base = &node.http;

    // Schema registry (read side) with the built-in subjects and stable ids.
    let subjects = client.call("GET", &format!("{base}/subjects"), None).json();
    assert_eq!(subjects, json!(["callscope.metrics-value", "callscope.spans-value", "callscope.alerts-value"]));
    // Spans have two versions: 1 (id 2) and 2 (id 4, with status message, resource
    // attributes and events), the latest.
    let versions = client.call("GET", &format!("{base}/subjects/callscope.spans-value/versions"), None).json();
    assert_eq!(versions, json!([1, 2]));
    let latest = client.call("GET", &format!("{base}/subjects/callscope.spans-value/versions/latest"), None).json();
    assert_eq!((latest["id"].as_i64(), latest["version"].as_i64()), (Some(4), Some(2)));
    assert!(latest["schema"].as_str().expect("schema").contains("resource_attributes"));
    let first = client.call("GET", &format!("{base}/subjects/callscope.spans-value/versions/1"), None).json();
    assert_eq!((first["id"].as_i64(), first["version"].as_i64()), (Some(2), Some(1)));
    let schema_text = first["schema"].as_str().expect("schema string").to_string();
    let by_id = client.call("GET", &format!("{base}/schemas/ids/2"), None).json();
    assert_eq!(by_id["schema"], json!(schema_text));
    // Registering the same schema again (what serializers with auto-register do) returns its id.
    let registered = client.call(
        "POST",
        &format!("{base}/subjects/callscope.spans-value/versions"),
        Some(&json!({ "schema": schema_text })),
    );
    assert_eq!(registered.status, 200, "{}", registered.body);
    assert_eq!((registered.json()["id"].as_i64(), registered.json()["version"].as_i64()), (Some(2), Some(1)));
    let other = client.call(
        "POST",
        &format!("{base}/subjects/callscope.spans-value/versions"),
        Some(&json!({ "schema": "\"string\"" })),
    );
    assert_eq!(other.status, 409);
    let missing = client.call("GET", &format!("{base}/subjects/nope-value/versions/latest"), None);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error_code"], 40401);

    // HTTP ingestion: validated, produced, then queryable.
    let now = now_ms();
    let batch = json!([
        {"name": "calls_total", "kind": "counter", "value": 1, "timestamp_ms": now, "service": "call-gateway", "labels": {"outcome": "answered", "probe": "http"}},
        {"name": "calls_total", "kind": "counter", "value": 2, "timestamp_ms": now, "service": "call-gateway", "labels": {"outcome": "failed", "probe": "http"}}
    ]);
    let reply = client.call("POST", &format!("{base}/monitoring/metrics"), Some(&batch));
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.json()["accepted"], 2);
    let bad = json!([{"name": "calls_total", "kind": "counter", "value": 1, "timestamp_ms": now, "service": "gw"}, {"name": "x", "kind": "counter", "timestamp_ms": now, "service": "gw"}]);
    let reply = client.call("POST", &format!("{base}/monitoring/metrics"), Some(&bad));
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["field"], "[1].value");
    let nan_like = json!({"name": "x", "kind": "gauge", "value": "NaN", "timestamp_ms": now, "service": "gw"});
    let reply = client.call("POST", &format!("{base}/monitoring/metrics"), Some(&nan_like));
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["field"], "value");

    let span = json!({"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "service": "tts",
        "operation": "synthesize", "kind": "server", "start_time_us": now * 1000, "duration_us": 1500, "status": "ok",
        "attributes": {"voice": "female-1"}});
    let reply = client.call("POST", &format!("{base}/monitoring/tracing/traces"), Some(&span));
    assert_eq!(reply.status, 202, "{}", reply.body);

    let q = "SELECT COUNT(*) FROM metrics WHERE labels['probe'] = 'http'";
    assert_eq!(wait_for_count(&client, base, q, 2, Duration::from_secs(30)), 2);
    let trace = loop_until_ok(&client, &format!("{base}/monitoring/tracing/traces/4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(trace["spans"][0]["attributes"]["voice"], "female-1");

    // The SQL endpoint answers queries only.
    let reply = client.call("POST", &format!("{base}/monitoring/sql"), Some(&json!({"sql": "SELECT name, SUM(value) AS total FROM metrics WHERE labels['probe'] = 'http' GROUP BY name"})));
    assert_eq!(reply.status, 200);
    let result = reply.json();
    assert_eq!(result["columns"], json!([{"name": "name", "type": "string"}, {"name": "total", "type": "number"}]));
    assert_eq!(result["rows"], json!([["calls_total", 3.0]]));
    assert_eq!(result["row_count"], 1);
    // Each refusal names the `sql` field and says why.
    for (forbidden, reason) in [
        ("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'", "DDL not supported"),
        ("COPY (SELECT 1) TO '/tmp/x.parquet'", "DML not supported"),
        ("INSERT INTO metrics SELECT * FROM metrics", "DML not supported"),
        ("DROP TABLE metrics", "DDL not supported"),
        ("SELECT * FROM '/etc/passwd'", "not found"),
        ("SELEC nonsense", "Expected: an SQL statement"),
    ] {
        let reply = client.call("POST", &format!("{base}/monitoring/sql"), Some(&json!({ "sql": forbidden })));
        assert_eq!(reply.status, 400, "{forbidden}: {}", reply.body);
        let v = reply.json();
        assert_eq!(v["field"], "sql", "{forbidden}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| e.contains(reason)), "{forbidden}: {v} does not say {reason:?}");
    }
    let reply = client.call(
        "POST",
        &format!("{base}/monitoring/sql"),
        Some(&json!({"sql": "SELECT * FROM metrics", "max_rows": 1})),
    );
    assert_eq!(reply.json()["row_count"], 1);
    assert_eq!(reply.json()["truncated"], true);

    // Bad parameters get JSON errors naming the parameter.
    let reply = client.call("GET", &format!("{base}/monitoring/metrics?name=calls_total&step=soon"), None);
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["field"], "step");
    let reply = client.call("GET", &format!("{base}/monitoring/metrics?name=calls_total&agg=mode"), None);
    assert_eq!(reply.json()["field"], "agg");
    let reply = client.call(
        "GET",
        &format!(
            "{base}/monitoring/metrics?name=calls_total&start=2026-01-01T00:00:00Z&end=2026-01-01T01:00:00Z&step=1m"
        ),
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = client.call("GET", &format!("{base}/no/such/endpoint"), None);
    assert_eq!(reply.status, 404);
    assert!(reply.json()["error"].is_string());

    // Health: Kafka connected with per-partition lag, storage reachable, the worker alive.
    let health = loop_until(&client, &format!("{base}/monitoring/health"), |h| h["status"] == "ok");
    assert_eq!(health["kafka"]["connected"], true);
    assert!(health["kafka"]["partitions"].as_array().is_some_and(|p| p.len() >= 12), "{health}");
    assert_eq!(health["storage"]["reachable"], true);
    assert_eq!(health["workers"].as_array().map(Vec::len), Some(1));
}

fn loop_until_ok(client: &Http, url: &str) -> serde_json::Value {
    for _ in 0..200 {
        let r = client.call("GET", url, None);
        if r.status == 200 {
            return r.json();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} never answered 200");
}

fn loop_until(client: &Http, url: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..200 {
        last = client.call("GET", url, None).json();
        if ok(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} never became healthy: {last}");
}
