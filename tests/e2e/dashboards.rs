//! Dashboards over the real binary with the simulated phone platform running: the eight
//! built-in dashboards answer real data (every PromQL query through the Prometheus API,
//! every SQL query through the SQL route), access follows roles, saves are versioned and
//! checked, import reports every problem, and the Grafana templates come from the same
//! definitions.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// A request with a caller's name and roles.
fn as_role(client: &Http, method: &str, url: &str, roles: &str, body: Option<&Value>) -> Reply {
    client.call_with_headers(method, url, body, &[("X-Callscope-User", "li"), ("X-Callscope-Roles", roles)])
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn small(id: &str) -> Value {
    json!({
        "id": id, "title": "Queue watch",
        "access": {"viewers": ["operator"], "editors": ["operator"]},
        "datasources": [{"id": "m", "kind": "prometheus"}, {"id": "s", "kind": "sql"}],
        "widgets": [
            {"id": "queue", "title": "Queue", "datasource": "m",
             "queries": [{"ref_id": "A", "expr": "max(max_over_time(call_queue_length[1m]))"}],
             "visualization": {"kind": "timeseries"}, "position": {"x": 0, "y": 0, "w": 12, "h": 8}},
            {"id": "rows", "title": "Rows", "datasource": "s",
             "queries": [{"ref_id": "A", "expr": "SELECT COUNT(*) AS n FROM metrics WHERE timestamp_ms > $__from"}],
             "visualization": {"kind": "stat"}, "position": {"x": 12, "y": 0, "w": 12, "h": 8}}
        ]
    })
}

#[test]
fn builtin_dashboards_answer_demo_traffic_and_saves_are_checked_versioned_and_role_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(dir.path()).args(["--demo", "--demo-rate", "40", "--flush-interval", "200ms"]).spawn();
    let client = http();
    let base = &node.http;
    let url = format!("{base}/monitoring/dashboards");

    // Anonymous callers (viewer, editor) see seven; the security role sees its own too.
    let list = client.call("GET", &url, None).json();
    let ids: Vec<&str> = list["dashboards"].as_array().expect("list").iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(
        ids,
        ["executive-overview", "operations", "ai-performance", "infrastructure", "business", "alerts", "tracing"]
    );
    let security = as_role(&client, "GET", &url, "security", None).json();
    assert!(security["dashboards"].as_array().expect("list").iter().any(|d| d["id"] == "security"), "{security}");
    assert_eq!(client.call("GET", &format!("{url}/security"), None).status, 403);

    // Every query of every built-in dashboard answers on the demo traffic: PromQL through
    // the Prometheus API (non-empty once the traffic has flowed), SQL through the SQL route.
    let mut pending: Vec<(String, String, String)> = Vec::new();
    for id in ids.iter().copied().chain(["security"]) {
        let d = as_role(&client, "GET", &format!("{url}/{id}"), "admin", None).json();
        let kinds: std::collections::BTreeMap<String, String> = d["datasources"]
            .as_array()
            .expect("sources")
            .iter()
            .map(|s| (s["id"].as_str().unwrap().to_string(), s["kind"].as_str().unwrap().to_string()))
            .collect();
        for w in d["widgets"].as_array().expect("widgets") {
            for q in w["queries"].as_array().expect("queries") {
                let kind = kinds[w["datasource"].as_str().unwrap()].clone();
                let expr = q["expr"].as_str().unwrap().replace("$region", ".*");
                pending.push((format!("{id}/{}", w["id"].as_str().unwrap()), kind, expr));
            }
        }
    }
    assert!(pending.len() > 40, "{} queries", pending.len());
    // Span metrics answer once their windows close (a minute, plus the watermark); on a
    // loaded 2-core machine running two e2e tests at once that took over two minutes.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut empty: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        empty.clear();
        let now = now_ms();
        for (name, kind, expr) in &pending {
            match kind.as_str() {
                "prometheus" => {
                    let reply = client.call(
                        "GET",
                        &format!(
                            "{base}/api/v1/query_range?query={}&start={}&end={}&step=15",
                            encode(expr),
                            now / 1000 - 300,
                            now / 1000
                        ),
                        None,
                    );
                    assert_eq!(reply.status, 200, "{name}: {expr}: {}", reply.body);
                    let has_value = reply.json()["data"]["result"].as_array().is_some_and(|r| {
                        r.iter().any(|s| s["values"].as_array().is_some_and(|v| v.iter().any(|p| p[1] != "NaN")))
                    });
                    if !has_value {
                        empty.push(format!("{name}: {expr}"));
                    }
                }
                "sql" => {
                    let sql_text =
                        expr.replace("$__from", &(now - 3_600_000).to_string()).replace("$__to", &now.to_string());
                    let reply = client.call("POST", &format!("{base}/monitoring/sql"), Some(&json!({"sql": sql_text})));
                    assert_eq!(reply.status, 200, "{name}: {sql_text}: {}", reply.body);
                }
                _ => {}
            }
        }
        if empty.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(empty.is_empty(), "queries without data on the demo traffic: {empty:#?}");

    // Create: validated (PromQL, and SQL planned over the real tables), owned, versioned.
    let mut bad = small("queue-watch");
    bad["widgets"][0]["queries"][0]["expr"] = "max(max_over_time(call_queue_length[1m])".into();
    let reply = as_role(&client, "POST", &url, "operator", Some(&bad));
    assert_eq!(
        (reply.status, reply.json()["field"].as_str()),
        (400, Some("widgets[0].queries[0].expr")),
        "{}",
        reply.body
    );
    let mut bad = small("queue-watch");
    bad["widgets"][1]["queries"][0]["expr"] = "SELECT no_such_column FROM metrics".into();
    let reply = as_role(&client, "POST", &url, "operator", Some(&bad));
    assert_eq!(
        (reply.status, reply.json()["field"].as_str()),
        (400, Some("widgets[1].queries[0].expr")),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("no_such_column"), "{}", reply.body);
    assert_eq!(
        as_role(&client, "POST", &url, "viewer", Some(&small("queue-watch"))).status,
        403,
        "viewers cannot own it"
    );
    let created = as_role(&client, "POST", &url, "operator", Some(&small("queue-watch")));
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!((created.json()["version"].as_u64(), created.json()["access"]["owner"].as_str()), (Some(1), Some("li")));
    assert_eq!(client.call("GET", &format!("{url}/queue-watch"), None).status, 403, "anonymous is not an operator");
    let mut changed = created.json();
    changed["title"] = "Queue watch v2".into();
    let saved = as_role(&client, "PUT", &format!("{url}/queue-watch"), "operator", Some(&changed));
    assert_eq!((saved.status, saved.json()["version"].as_u64()), (200, Some(2)), "{}", saved.body);
    let stale = as_role(&client, "PUT", &format!("{url}/queue-watch"), "operator", Some(&changed));
    assert_eq!(stale.status, 409, "a change to version 1 after version 2: {}", stale.body);
    let versions = as_role(&client, "GET", &format!("{url}/queue-watch/versions"), "operator", None).json();
    assert_eq!(versions["versions"], json!([1, 2]));
    let first = as_role(&client, "GET", &format!("{url}/queue-watch/versions/1"), "operator", None).json();
    assert_eq!(first["title"], "Queue watch");

    // A built-in is replaced by a stored copy and restored by deleting it.
    let mut ops = as_role(&client, "GET", &format!("{url}/operations"), "operator", None).json();
    ops["title"] = "Operations (night shift)".into();
    let copy = as_role(&client, "PUT", &format!("{url}/operations"), "operator", Some(&ops));
    assert_eq!((copy.status, copy.json()["builtin"].as_bool()), (200, Some(false)), "{}", copy.body);
    assert_eq!(as_role(&client, "DELETE", &format!("{url}/operations"), "operator", None).status, 204);
    let restored = as_role(&client, "GET", &format!("{url}/operations"), "operator", None).json();
    assert_eq!((restored["title"].as_str(), restored["builtin"].as_bool()), (Some("Operations"), Some(true)));
    assert_eq!(as_role(&client, "DELETE", &format!("{url}/operations"), "operator", None).status, 409);

    // Export and import: every problem reported, nothing stored unless all pass.
    let export = as_role(&client, "GET", &format!("{url}/export?id=queue-watch"), "operator", None);
    assert!(export.body.contains("\"dashboards\""), "{}", export.body);
    let mut file = export.json();
    let mut second = small("second");
    second["widgets"][0]["position"]["w"] = 30.into();
    let mut third = small("third");
    third["datasources"][0]["kind"] = "graphite".into();
    file["dashboards"].as_array_mut().expect("dashboards").extend([second, third]);
    let refused = as_role(&client, "POST", &format!("{url}/import"), "operator", Some(&file));
    assert_eq!(refused.status, 400, "{}", refused.body);
    let problems = refused.json()["problems"].clone();
    assert_eq!(problems.as_array().map(Vec::len), Some(3), "{problems}");
    assert_eq!(problems[0]["status"], 409, "exists without overwrite: {problems}");
    assert_eq!(problems[1]["field"], "dashboards[1].widgets[0].position");
    assert!(problems[2]["field"].as_str().is_some_and(|f| f.starts_with("dashboards[2].datasources")), "{problems}");
    assert_eq!(as_role(&client, "GET", &format!("{url}/second"), "operator", None).status, 404);
    file["dashboards"].as_array_mut().expect("dashboards").truncate(1);
    file["dashboards"][0]["title"] = "Imported".into();
    let imported = as_role(&client, "POST", &format!("{url}/import?overwrite=true"), "operator", Some(&file));
    assert_eq!(imported.status, 200, "{}", imported.body);
    assert_eq!(imported.json()["imported"], json!([{"id": "queue-watch", "version": 3}]));

    // Grafana templates from the same definitions.
    let templates = client.call("GET", &format!("{url}/grafana/templates"), None).json();
    let dashboards = templates["dashboards"].as_array().expect("dashboards");
    assert_eq!(dashboards.len(), 7, "what the anonymous caller may see");
    assert!(
        dashboards.iter().all(|d| d["schemaVersion"] == 41 && d["panels"].as_array().is_some_and(|p| !p.is_empty()))
    );
    let sources: Vec<&str> =
        templates["datasources"].as_array().expect("sources").iter().filter_map(|s| s["type"].as_str()).collect();
    assert_eq!(sources, ["prometheus", "simpod-json-datasource", "jaeger"]);
    assert!(templates["datasources"][0]["url"].as_str().is_some_and(|u| u.starts_with("http://127.0.0.1:")));
}
