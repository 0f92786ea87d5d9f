//! Custom metrics through the API (CRUD, validation, persistence across a restart, values
//! of source and expression definitions) and the Prometheus export, checked by the real
//! `promtool` and scraped by a real Prometheus server (Debian package `prometheus`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use callscope_schemas::{Event, Metric, MetricKind};
use serde_json::{Value, json};

use crate::support::*;

/// callscope's own metrics the export must carry (lag comes with librdkafka's statistics,
/// every 5 s).
const OWN: [&str; 7] = [
    "callscope_pipeline_events_consumed_total",
    "callscope_pipeline_events_stored_total",
    "callscope_pipeline_windows_closed_total",
    "callscope_pipeline_late_events_total",
    "callscope_pipeline_active_series",
    "callscope_pipeline_batch_write_seconds_bucket",
    "callscope_pipeline_consumer_lag_messages",
];

const FLAGS: [&str; 6] = ["--allowed-lateness", "2s", "--idle-timeout", "1s", "--flush-interval", "200ms"];

fn counter(name: &str, region: &str, t: i64) -> Metric {
    Metric {
        name: name.into(),
        kind: MetricKind::Counter,
        value: 1.0,
        timestamp_ms: t,
        service: "call-gateway".into(),
        labels: BTreeMap::from([("region".to_string(), region.to_string())]),
        unit: None,
    }
}

#[test]
fn custom_metric_crud_values_and_prometheus_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = Node::standalone(dir.path()).args(FLAGS);
    let mut node = start.spawn();
    let base = node.http.clone();
    let client = http();
    let url = |path: &str| format!("{base}/monitoring/metrics/custom{path}");

    // Built-ins are listed.
    let list = client.call("GET", &url(""), None).json();
    let names: Vec<&str> = list.as_array().expect("list").iter().filter_map(|d| d["name"].as_str()).collect();
    for builtin in [
        "call_volume",
        "call_success_ratio",
        "ai_response_latency",
        "whitelist_hit_ratio",
        "spam_block_ratio",
        "cost_per_call",
    ] {
        assert!(names.contains(&builtin), "{builtin} in {names:?}");
    }

    // Create, conflict, validation errors naming the field.
    let def = json!({"name": "north_answer_ratio", "type": "gauge", "help": "Answered share in the north",
        "labels": ["region"], "rule": {"expr": "calls_answered_total / calls_total"}});
    let reply = client.call("POST", &url(""), Some(&def));
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(client.call("POST", &url(""), Some(&def)).status, 409);
    for (bad, field) in [
        (json!({"name": "x", "type": "gauge", "rule": {"expr": "calls_total /"}}), "rule.expr"),
        (json!({"name": "x", "type": "gauge", "rule": {"source": "a"}, "colour": 1}), "colour"),
        (json!({"name": "x", "type": "meter", "rule": {"source": "a"}}), "type"),
        (json!({"name": "x_total", "type": "gauge", "rule": {"source": "a"}}), "name"),
        (json!({"type": "gauge", "rule": {"source": "a"}}), "name"),
        (json!({"name": "x", "type": "gauge", "rule": {"source": "a", "aggregate": "p99"}}), "rule.aggregate"),
        (json!({"name": "x", "type": "gauge", "labels": ["model"], "rule": {"expr": "call_volume * 2"}}), "labels"),
    ] {
        let reply = client.call("POST", &url(""), Some(&bad));
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        assert_eq!(reply.json()["field"], field, "{bad}: {}", reply.body);
    }
    let mut changed = def.clone();
    changed["help"] = json!("changed");
    let reply = client.call("PUT", &url("/other_name"), Some(&changed));
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.json()["field"], "name", "the body's name must match the path: {}", reply.body);
    assert_eq!(client.call("PUT", &url("/north_answer_ratio"), Some(&changed)).status, 200);
    let reply = client.call("DELETE", &url("/call_volume"), None);
    assert_eq!(reply.status, 409, "built-ins are not deleted: {}", reply.body);
    assert!(reply.json()["error"].as_str().is_some_and(|e| e.contains("is built in")), "{}", reply.body);
    let temp = json!({"name": "temp_metric", "type": "counter", "rule": {"source": "calls_total"}});
    assert_eq!(client.call("POST", &url(""), Some(&temp)).status, 201);
    assert_eq!(client.call("DELETE", &url("/temp_metric"), None).status, 204);
    assert_eq!(client.call("GET", &url("/temp_metric"), None).status, 404);

    // Definitions survive a restart.
    node.proc.terminate();
    node = start.spawn();
    let got = client.call("GET", &url("/north_answer_ratio"), None);
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json()["help"], "changed");

    // Values: 20 calls per region, 15 answered in the north and 5 in the south, with
    // current timestamps so that the export sees closed windows soon.
    let t0 = (now_ms() / 60_000 - 1) * 60_000;
    let mut events = Vec::new();
    for i in 0..40 {
        let region = if i % 2 == 0 { "north" } else { "south" };
        let t = t0 + i as i64 * 100;
        events.push(counter("calls_total", region, t));
        if (region == "north" && i < 30) || (region == "south" && i < 10) {
            events.push(counter("calls_answered_total", region, t));
        }
    }
    let rt = runtime();
    let producer = rt.block_on(async { producer(&node.brokers) });
    let payloads: Vec<(String, Vec<u8>)> =
        events.iter().enumerate().map(|(i, m)| (format!("k{i}"), encode_mixed(i, &Event::Metric(m.clone())))).collect();
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &payloads)), events.len());
    let n = events.len() as i64;
    assert_eq!(wait_for_count(&client, &base, "SELECT COUNT(*) FROM metrics", n, Duration::from_secs(60)), n);

    let series = |name: &str| -> BTreeMap<String, f64> {
        let reply = client.call(
            "GET",
            &format!("{base}/monitoring/metrics?name={name}&start={t0}&end={}&step=1m", t0 + 60_000),
            None,
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply
            .json()
            .as_array()
            .expect("series")
            .iter()
            .map(|s| {
                (
                    s["labels"]["region"].as_str().unwrap_or_default().to_string(),
                    s["points"][0][1].as_f64().expect("value"),
                )
            })
            .collect()
    };
    let ratio = series("call_success_ratio");
    assert_eq!(ratio, BTreeMap::from([("north".to_string(), 0.75), ("south".to_string(), 0.25)]));
    assert_eq!(series("north_answer_ratio"), ratio);
    assert_eq!(series("call_volume"), BTreeMap::from([("north".to_string(), 20.0), ("south".to_string(), 20.0)]));

    // The export: business metrics of the newest closed window, then callscope's own.
    let deadline = Instant::now() + Duration::from_secs(60);
    let exposition = loop {
        let reply = client.call("GET", &format!("{base}/monitoring/metrics/prometheus"), None);
        assert_eq!(reply.status, 200, "{}", reply.body);
        // Windows close once the partitions are idle (1 s here).
        if reply.body.contains("call_success_ratio{region=\"north\"} 0.75")
            && OWN.iter().all(|m| reply.body.contains(m))
        {
            break reply.body;
        }
        assert!(Instant::now() < deadline, "the export never showed the closed window:\n{}", reply.body);
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(exposition.contains("# TYPE call_success_ratio gauge"), "{exposition}");
    assert!(exposition.contains("# TYPE ai_response_latency summary"), "{exposition}");

    // promtool accepts it.
    let file = dir.path().join("exposition.txt");
    std::fs::write(&file, &exposition).expect("write");
    let check = std::process::Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("open"))
        .output()
        .expect("run promtool");
    assert!(
        check.status.success(),
        "promtool check metrics failed ({}):\n{}{}",
        check.status,
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // A real Prometheus scrapes it.
    let prom_port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: callscope\n    metrics_path: /monitoring/metrics/prometheus\n    static_configs:\n      - targets: ['{}']\n",
            node.http_addr()
        ),
    )
    .expect("config");
    let tsdb = dir.path().join("tsdb");
    let prometheus = tool("prometheus");
    let _prometheus = Proc::spawn_program(
        "prometheus",
        dir.path(),
        &prometheus,
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", tsdb.display()),
            &format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let q = format!("http://127.0.0.1:{prom_port}/api/v1/query?query=call_success_ratio%7Bregion%3D%22north%22%7D");
        if let Some(reply) = client.try_call("GET", &q, None)
            && reply.status == 200
        {
            let v: Value = reply.json();
            if let Some(value) = v["data"]["result"][0]["value"][1].as_str() {
                assert_eq!(value, "0.75");
                let up = client
                    .call(
                        "GET",
                        &format!("http://127.0.0.1:{prom_port}/api/v1/query?query=up%7Bjob%3D%22callscope%22%7D"),
                        None,
                    )
                    .json();
                assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "Prometheus never stored a scraped sample");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(node.proc.terminate().is_some_and(|s| s.success()));
}
