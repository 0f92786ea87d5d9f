//! The Prometheus HTTP API over the real binary, asked by a real client of that API
//! (`promtool query instant|range|series|labels`, Debian package `prometheus`), the answers
//! compared with SQL over the same samples.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// Runs `promtool query <args>` with JSON output; returns the parsed answer, or the error
/// promtool printed.
fn promtool(args: &[&str]) -> Result<Value, String> {
    let out = Command::new(tool("promtool")).arg("query").args(args).output().expect("run promtool");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_str(&stdout).map_err(|e| format!("promtool printed no JSON ({e}): {stdout}"))
}

fn num(v: &Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

/// Stores 20 minutes of samples every 10 s ending now: a counter of answered and failed
/// calls (`calls_total`, service call-gateway) and a queue length gauge (`queue_length`,
/// ai-engine); returns the end (unix ms).
pub fn seed_calls(client: &Http, base: &str) -> i64 {
    let now = now_ms();
    let first = now - 20 * 60_000;
    let mut events = Vec::new();
    for i in 0..120i64 {
        let t = first + i * 10_000;
        for (outcome, value) in [("answered", 1 + i % 3), ("failed", i % 2)] {
            events.push(json!({"name": "calls_total", "kind": "counter", "value": value, "timestamp_ms": t,
                               "service": "call-gateway", "labels": {"outcome": outcome}}));
        }
        events.push(json!({"name": "queue_length", "kind": "gauge", "value": (i % 7) * 2, "timestamp_ms": t,
                           "service": "ai-engine", "labels": {"queue": "asr"}}));
    }
    let reply = client.call("POST", &format!("{base}/monitoring/metrics"), Some(&json!(events)));
    assert_eq!(reply.status, 202, "{}", reply.body);
    let stored = wait_for_count(client, base, "SELECT COUNT(*) FROM metrics", 360, Duration::from_secs(60));
    assert_eq!(stored, 360);
    now
}

#[test]
fn promtool_queries_agree_with_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(dir.path()).args(["--flush-interval", "200ms"]).spawn();
    let client = http();
    let base = &node.http;
    let now = seed_calls(&client, base);
    let sql_number = |query: &str| -> f64 {
        let rows = sql(&client, base, query);
        rows[0][0].as_f64().unwrap_or_else(|| panic!("{query}: {rows:?}"))
    };
    let at = format!("{}", now / 1000);
    let server = base.as_str();

    // Instant: the increase of each outcome over the whole hour equals the sum of its
    // increments; a gauge's sum over time equals the sum of its samples.
    let answer =
        promtool(&["instant", "-o", "json", "--time", &at, server, "sum by (outcome) (increase(calls_total[1h]))"])
            .expect("instant query");
    let by_outcome: std::collections::BTreeMap<String, f64> = answer
        .as_array()
        .expect("a vector")
        .iter()
        .map(|s| (s["metric"]["outcome"].as_str().expect("outcome").to_string(), num(&s["value"][1])))
        .collect();
    for outcome in ["answered", "failed"] {
        let expected = sql_number(&format!(
            "SELECT CAST(SUM(value) AS DOUBLE) FROM metrics WHERE name = 'calls_total' AND labels['outcome'] = '{outcome}'"
        ));
        assert_eq!(by_outcome.get(outcome).copied(), Some(expected), "{outcome}: {answer}");
    }
    let answer =
        promtool(&["instant", "-o", "json", "--time", &at, server, "sum_over_time(queue_length{queue=\"asr\"}[1h])"])
            .expect("instant query");
    let expected = sql_number("SELECT CAST(SUM(value) AS DOUBLE) FROM metrics WHERE name = 'queue_length'");
    assert_eq!(num(&answer[0]["value"][1]), expected, "{answer}");
    assert_eq!(answer[0]["metric"]["service"], "ai-engine");
    assert_eq!(answer[0]["metric"]["__name__"], Value::Null, "functions drop the metric name");

    // Range: the running increase never decreases and ends at the total.
    // Steps are counted from `start`: 25 whole minutes end at `at`.
    let start = format!("{}", now / 1000 - 25 * 60);
    let answer = promtool(&[
        "range",
        "-o",
        "json",
        "--start",
        &start,
        "--end",
        &at,
        "--step",
        "1m",
        server,
        "sum(increase(calls_total[1h]))",
    ])
    .expect("range query");
    let values: Vec<f64> = answer[0]["values"].as_array().expect("values").iter().map(|p| num(&p[1])).collect();
    assert!(values.len() >= 20, "{answer}");
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "non-decreasing: {values:?}");
    let total = sql_number("SELECT CAST(SUM(value) AS DOUBLE) FROM metrics WHERE name = 'calls_total'");
    assert_eq!(values.last().copied(), Some(total));

    // Series and labels.
    let series = promtool(&["series", "-o", "json", "--match", "calls_total", server]).expect("series");
    let mut outcomes: Vec<&str> =
        series.as_array().expect("series").iter().filter_map(|s| s["outcome"].as_str()).collect();
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["answered", "failed"], "{series}");
    assert!(
        series
            .as_array()
            .expect("series")
            .iter()
            .all(|s| s["__name__"] == "calls_total" && s["service"] == "call-gateway")
    );
    let labels = promtool(&["labels", "-o", "json", server, "service"]).expect("labels");
    assert_eq!(labels, json!(["ai-engine", "call-gateway"]));
    let names = client.call("GET", &format!("{base}/api/v1/labels"), None).json();
    assert_eq!(names["status"], "success");
    for name in ["__name__", "outcome", "queue", "service"] {
        assert!(names["data"].as_array().expect("names").iter().any(|n| n == name), "{name}: {names}");
    }

    // Grafana POSTs its queries as a form; metadata and build info answer too.
    let form = client.post_raw(
        &format!("{base}/api/v1/query"),
        "application/x-www-form-urlencoded",
        format!("query=count(calls_total)&time={at}"),
    );
    let body = form.json();
    assert_eq!(body["data"]["resultType"], "vector", "{body}");
    assert_eq!(num(&body["data"]["result"][0]["value"][1]), 2.0, "{body}");
    let meta = client.call("GET", &format!("{base}/api/v1/metadata"), None).json();
    assert_eq!(meta["data"]["calls_total"][0]["type"], "counter", "{meta}");
    assert_eq!(client.call("GET", &format!("{base}/api/v1/status/buildinfo"), None).json()["status"], "success");

    // Outside the subset, or not PromQL at all: Prometheus' error shape, named.
    let err = promtool(&["instant", server, "holt_winters(calls_total[5m], 0.5, 0.5)"]).expect_err("unsupported");
    assert!(err.contains("holt_winters"), "{err}");
    let reply = client.call("GET", &format!("{base}/api/v1/query?query=sum(("), None);
    assert_eq!(reply.status, 400);
    assert_eq!(
        (reply.json()["status"].as_str(), reply.json()["errorType"].as_str()),
        (Some("error"), Some("bad_data"))
    );
    let reply = client.call("GET", &format!("{base}/api/v1/query_range?query=up&start=1&end=100000&step=1"), None);
    assert_eq!(reply.status, 400, "too many points: {}", reply.body);
}
