//! Grafana's JSON data sources over the real binary: the requests `simpod-json-datasource`
//! sends (its `openapi.yaml` contract, as Grafana's proxy forwards them) and the flat arrays
//! the Infinity data source reads, answered with the numbers SQL gives over the same samples
//! and the Prometheus API gives for the same expression.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::prometheus_api::seed_calls;
use crate::support::*;

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).expect("time").to_rfc3339()
}

fn encode_query(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The last datapoint of each series of a `/query` answer, by its target (legend).
fn last_points(answer: &Value) -> BTreeMap<String, f64> {
    answer
        .as_array()
        .expect("an array of series")
        .iter()
        .map(|s| {
            let last = s["datapoints"].as_array().and_then(|d| d.last()).expect("datapoints");
            (s["target"].as_str().expect("target").to_string(), last[0].as_f64().expect("a value"))
        })
        .collect()
}

#[test]
fn json_datasource_and_infinity_answer_what_sql_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(dir.path()).args(["--flush-interval", "200ms"]).spawn();
    let client = http();
    let base = &node.http;
    let now = seed_calls(&client, base);
    let json_api = format!("{base}/grafana/json");
    let post = |route: &str, body: Value| client.call("POST", &format!("{json_api}/{route}"), Some(&body));
    let sql_total = |filter: &str| -> f64 {
        sql(
            &client,
            base,
            &format!("SELECT CAST(SUM(value) AS DOUBLE) FROM metrics WHERE name = 'calls_total'{filter}"),
        )[0][0]
            .as_f64()
            .expect("a sum")
    };

    // "Save & test", then the metric picker: the two query kinds and every metric, whose
    // group-by options are its labels.
    assert_eq!(client.call("GET", &json_api, None).status, 200);
    let metrics = post("metrics", json!({})).json();
    let values: Vec<&str> = metrics.as_array().expect("metrics").iter().filter_map(|m| m["value"].as_str()).collect();
    assert_eq!(values, ["promql", "sql", "alerts", "services", "pipeline", "calls_total", "queue_length"], "{metrics}");
    let calls = &metrics[5]["payloads"];
    let by = calls.as_array().expect("payloads").iter().find(|p| p["name"] == "by").expect("a by field");
    assert_eq!(by["type"], "multi-select");
    assert!(by["options"].as_array().expect("options").iter().any(|o| o["value"] == "outcome"), "{by}");
    let options = post("metric-payload-options", json!({"metric": "queue_length", "name": "by", "payload": {}})).json();
    assert_eq!(options, json!([{"label": "queue", "value": "queue"}, {"label": "service", "value": "service"}]));

    // A PromQL target, a metric-name target and an ad-hoc filter in one panel request.
    let (from, to) = (now - 25 * 60_000, now);
    let range = json!({"from": rfc3339(from), "to": rfc3339(to), "raw": {"from": "now-25m", "to": "now"}});
    let request = json!({
        "app": "dashboard", "range": range, "interval": "1m", "intervalMs": 60_000, "maxDataPoints": 1_000,
        "targets": [
            {"refId": "A", "target": "promql", "payload": {"expr": "sum by (outcome) (increase(calls_total[1h]))",
                                                           "legend": "{{outcome}}"}},
            {"refId": "B", "target": "calls_total",
             "payload": {"function": "increase", "aggregation": "sum", "by": ["outcome"]}},
            {"refId": "C", "target": "queue_length", "hide": true},
        ],
        "adhocFilters": [],
    });
    let reply = post("query", request.clone());
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    let series_a: Vec<&Value> = answer.as_array().expect("series").iter().filter(|s| s["refId"] == "A").collect();
    let totals: BTreeMap<String, f64> = last_points(&json!(series_a));
    for outcome in ["answered", "failed"] {
        assert_eq!(totals.get(outcome).copied(), Some(sql_total(&format!(" AND labels['outcome'] = '{outcome}'"))));
    }
    assert!(answer.as_array().expect("series").iter().all(|s| s["refId"] != "C"), "hidden targets are skipped");
    // The metric-name target is the expression its payload names, as the Prometheus API
    // evaluates it at the same steps (60 s, from the step before `from`).
    let series_b: Vec<&Value> = answer.as_array().expect("series").iter().filter(|s| s["refId"] == "B").collect();
    assert_eq!(series_b.len(), 2, "{answer}");
    let start = from.div_euclid(60_000) * 60_000;
    let prom = client
        .call(
            "GET",
            &format!(
                "{base}/api/v1/query_range?query={}&start={}&end={}&step=60",
                encode_query("sum by (outcome) (increase(calls_total[120s]))"),
                start / 1000,
                to as f64 / 1000.0
            ),
            None,
        )
        .json();
    for s in prom["data"]["result"].as_array().expect("matrix") {
        let legend = format!("{{outcome=\"{}\"}}", s["metric"]["outcome"].as_str().expect("outcome"));
        let ours = series_b.iter().find(|b| b["target"] == legend.as_str()).unwrap_or_else(|| panic!("{legend}"));
        let theirs: Vec<(f64, i64)> = s["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|p| {
                (
                    p[1].as_str().and_then(|v| v.parse().ok()).expect("value"),
                    (p[0].as_f64().expect("t") * 1000.0) as i64,
                )
            })
            .collect();
        let ours: Vec<(f64, i64)> = ours["datapoints"]
            .as_array()
            .expect("datapoints")
            .iter()
            .map(|p| (p[0].as_f64().expect("value"), p[1].as_i64().expect("t")))
            .collect();
        assert_eq!(ours, theirs, "{legend}");
    }
    let mut filtered = request.clone();
    filtered["targets"] =
        json!([{"refId": "A", "target": "promql", "payload": {"expr": "sum(increase(calls_total[1h]))"}}]);
    filtered["filters"] = json!([{"key": "outcome", "operator": "=", "value": "failed"}]);
    let answer = post("query", filtered).json();
    assert_eq!(
        last_points(&answer).into_values().collect::<Vec<_>>(),
        [sql_total(" AND labels['outcome'] = 'failed'")]
    );

    // A table from SQL, with the range's ends as $__from and $__to.
    let table = post(
        "query",
        json!({"range": range, "targets": [{"refId": "T", "target": "sql", "payload": {"sql":
            "SELECT labels['outcome'] AS outcome, CAST(SUM(value) AS DOUBLE) AS total FROM metrics \
             WHERE name = 'calls_total' AND timestamp_ms BETWEEN $__from AND $__to GROUP BY 1 ORDER BY 1"}}]}),
    )
    .json();
    assert_eq!(table[0]["type"], "table", "{table}");
    assert_eq!(
        table[0]["columns"],
        json!([{"text": "outcome", "type": "string"}, {"text": "total", "type": "number"}])
    );
    assert_eq!(
        table[0]["rows"],
        json!([
            ["answered", sql_total(" AND labels['outcome'] = 'answered'")],
            ["failed", sql_total(" AND labels['outcome'] = 'failed'")]
        ])
    );

    // The active alerts and the services' health as tables (what the Grafana templates'
    // alert and service lists read).
    let tables = post(
        "query",
        json!({"targets": [{"refId": "L", "target": "alerts"}, {"refId": "S", "target": "services"}, {"refId": "P", "target": "pipeline"}]}),
    )
    .json();
    let lag_rows = tables[2]["rows"].as_array().expect("rows");
    assert!(lag_rows.iter().any(|r| r[0] == "callscope.metrics" && r[4] == 0), "caught up: {tables}");
    assert_eq!(tables[0]["type"], "table", "{tables}");
    assert_eq!(tables[0]["columns"][1]["text"], "Alert");
    let services: Vec<&str> =
        tables[1]["rows"].as_array().expect("rows").iter().filter_map(|r| r[0].as_str()).collect();
    assert_eq!(services, ["ai-engine", "call-gateway"], "{tables}");

    // Variables and ad-hoc filter keys and values.
    let outcomes =
        post("variable", json!({"payload": {"target": "label_values(calls_total, outcome)"}, "range": range}));
    assert_eq!(
        outcomes.json(),
        json!([{"__text": "answered", "__value": "answered"}, {"__text": "failed", "__value": "failed"}])
    );
    let names = post("variable", json!({"payload": {"target": "metrics(queue.*)"}, "range": range})).json();
    assert_eq!(names, json!([{"__text": "queue_length", "__value": "queue_length"}]));
    let keys = post("tag-keys", json!({})).json();
    for key in ["outcome", "queue", "service"] {
        assert!(keys.as_array().expect("keys").contains(&json!({"type": "string", "text": key})), "{key}: {keys}");
    }
    assert_eq!(post("tag-values", json!({"key": "queue"})).json(), json!([{"text": "asr"}]));

    // Mistakes are 400s naming the field.
    let mut bad = request.clone();
    bad["targets"] =
        json!([{"refId": "A", "target": "promql", "payload": {"expr": "holt_winters(calls_total[5m], 0.5, 0.5)"}}]);
    let reply = post("query", bad);
    assert_eq!(
        (reply.status, reply.json()["field"].as_str()),
        (400, Some("targets[0].payload.expr")),
        "{}",
        reply.body
    );
    let mut bad = request;
    bad["targets"] = json!([{"refId": "A", "target": "no_such_metric"}]);
    let reply = post("query", bad);
    assert_eq!((reply.status, reply.json()["field"].as_str()), (400, Some("targets[0].target")), "{}", reply.body);

    // Infinity: one flat object per point or row.
    let points = client
        .call(
            "GET",
            &format!(
                "{base}/grafana/infinity/query?query={}&from={from}&to={to}&step=1m",
                encode_query("sum by (outcome) (increase(calls_total[1h]))")
            ),
            None,
        )
        .json();
    let rows = points.as_array().expect("rows");
    assert!(rows.iter().all(|r| r["time"].as_str().is_some_and(|t| t.contains('T')) && r["value"].is_number()));
    let last_failed = rows.iter().rev().find(|r| r["outcome"] == "failed").expect("failed rows");
    assert_eq!(last_failed["value"].as_f64(), Some(sql_total(" AND labels['outcome'] = 'failed'")));
    let count = client
        .call(
            "GET",
            &format!("{base}/grafana/infinity/sql?sql={}", encode_query("SELECT COUNT(*) AS n FROM metrics")),
            None,
        )
        .json();
    assert_eq!(count, json!([{"n": 360}]));
}
