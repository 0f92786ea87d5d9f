//! `callscope grafana deploy` and `POST /monitoring/dashboards/grafana/deploy` against a
//! local stand-in of Grafana's HTTP API that checks every request against the contract
//! (`../shared/contracts.md`: method, path, bearer token, body shape) and answers as Grafana
//! does (409 for an existing folder or data source, dashboard versions counting up, 412
//! when it refuses a dashboard).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::support::*;

const TOKEN: &str = "glsa_standin_token";

#[derive(Default)]
struct Grafana {
    folders: BTreeMap<String, String>,
    /// uid → data source.
    datasources: BTreeMap<String, Value>,
    /// uid → (version, dashboard, folder).
    dashboards: BTreeMap<String, (u64, Value, String)>,
    /// Contract violations seen (a request the real Grafana would refuse or misread).
    violations: Vec<String>,
    requests: usize,
    /// A dashboard uid this Grafana refuses with 412.
    refuse: Option<String>,
}

type Shared = Arc<Mutex<Grafana>>;

fn check_dashboard(g: &Grafana, body: &Value) -> Vec<String> {
    let mut v = Vec::new();
    let d = &body["dashboard"];
    let uid = d["uid"].as_str().unwrap_or_default();
    if uid.is_empty() || uid.len() > 40 {
        v.push(format!("dashboard uid {uid:?} must be 1 to 40 characters"));
    }
    if d["title"].as_str().is_none_or(str::is_empty) {
        v.push(format!("{uid}: no title"));
    }
    if d["schemaVersion"].as_u64().is_none_or(|s| s < 41) {
        v.push(format!("{uid}: schemaVersion {} below 41", d["schemaVersion"]));
    }
    if !d["id"].is_null() {
        v.push(format!("{uid}: id must be null for an upsert"));
    }
    if body["overwrite"] != true {
        v.push(format!("{uid}: overwrite must be true"));
    }
    if !body["folderUid"].as_str().is_some_and(|f| g.folders.contains_key(f)) {
        v.push(format!("{uid}: folderUid {} is not a folder", body["folderUid"]));
    }
    let types = ["timeseries", "stat", "gauge", "table", "barchart", "nodeGraph", "traces"];
    let Some(panels) = d["panels"].as_array().filter(|p| !p.is_empty()) else {
        v.push(format!("{uid}: no panels"));
        return v;
    };
    for p in panels {
        let grid = &p["gridPos"];
        let n = |k: &str| grid[k].as_u64();
        match (n("x"), n("y"), n("w"), n("h")) {
            (Some(x), Some(_), Some(w), Some(h)) if x + w <= 24 && w > 0 && h > 0 => {}
            _ => v.push(format!("{uid}: panel {} gridPos {grid}", p["title"])),
        }
        if !p["type"].as_str().is_some_and(|t| types.contains(&t)) {
            v.push(format!("{uid}: panel type {}", p["type"]));
        }
        let source = p["datasource"]["uid"].as_str().unwrap_or_default();
        if !g.datasources.contains_key(source) {
            v.push(format!("{uid}: panel {} reads data source {source:?}, which does not exist", p["title"]));
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            if t["refId"].as_str().is_none_or(str::is_empty) {
                v.push(format!("{uid}: a target of {} has no refId", p["title"]));
            }
        }
    }
    v
}

async fn handle(State(g): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: String) -> Response {
    let mut g = g.lock().expect("grafana");
    g.requests += 1;
    if headers.get("authorization").and_then(|a| a.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
        g.violations.push(format!("{method} {uri}: no or wrong bearer token"));
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "Unauthorized"}))).into_response();
    }
    if headers.get("content-type").and_then(|c| c.to_str().ok()) != Some("application/json") {
        g.violations.push(format!("{method} {uri}: content-type is not application/json"));
    }
    let body: Value = match serde_json::from_str(&body) {
        Ok(b) => b,
        Err(e) => {
            g.violations.push(format!("{method} {uri}: body is not JSON: {e}"));
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"message": "bad request data"}))).into_response();
        }
    };
    let path = uri.path().to_string();
    let ok = |v: Value| (StatusCode::OK, axum::Json(v)).into_response();
    match (method.as_str(), path.as_str()) {
        ("POST", "/api/folders") => {
            let (Some(uid), Some(title)) = (body["uid"].as_str(), body["title"].as_str()) else {
                g.violations.push(format!("folder body {body}"));
                return StatusCode::BAD_REQUEST.into_response();
            };
            if g.folders.contains_key(uid) {
                return (
                    StatusCode::CONFLICT,
                    axum::Json(json!({"message": "a folder with the same uid already exists"})),
                )
                    .into_response();
            }
            g.folders.insert(uid.to_string(), title.to_string());
            ok(json!({"uid": uid, "title": title, "url": format!("/dashboards/f/{uid}/")}))
        }
        ("POST", "/api/datasources") => {
            let valid = body["name"].is_string()
                && body["uid"].is_string()
                && ["prometheus", "simpod-json-datasource", "jaeger"]
                    .contains(&body["type"].as_str().unwrap_or_default())
                && body["access"] == "proxy"
                && body["url"].as_str().is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"))
                && body["jsonData"].is_object();
            if !valid {
                g.violations.push(format!("data source body {body}"));
                return StatusCode::BAD_REQUEST.into_response();
            }
            let uid = body["uid"].as_str().unwrap_or_default().to_string();
            if g.datasources.contains_key(&uid) || g.datasources.values().any(|d| d["name"] == body["name"]) {
                return (
                    StatusCode::CONFLICT,
                    axum::Json(json!({"message": "data source with the same name already exists"})),
                )
                    .into_response();
            }
            let id = g.datasources.len() + 1;
            g.datasources.insert(uid, body.clone());
            ok(json!({"datasource": body, "id": id, "message": "Datasource added", "name": body["name"]}))
        }
        ("POST", "/api/dashboards/db") => {
            let problems = check_dashboard(&g, &body);
            if !problems.is_empty() {
                g.violations.extend(problems);
                return (StatusCode::BAD_REQUEST, axum::Json(json!({"message": "bad dashboard"}))).into_response();
            }
            let uid = body["dashboard"]["uid"].as_str().unwrap_or_default().to_string();
            if g.refuse.as_deref() == Some(uid.as_str()) {
                return (
                    StatusCode::PRECONDITION_FAILED,
                    axum::Json(json!({"status": "name-exists", "message": "A dashboard with the same name in the folder already exists"})),
                )
                    .into_response();
            }
            let folder = body["folderUid"].as_str().unwrap_or_default().to_string();
            let version = g.dashboards.get(&uid).map_or(1, |(v, _, _)| v + 1);
            g.dashboards.insert(uid.clone(), (version, body["dashboard"].clone(), folder));
            ok(
                json!({"id": g.dashboards.len(), "uid": uid, "url": format!("/d/{uid}/{uid}"), "status": "success", "version": version}),
            )
        }
        _ => {
            g.violations.push(format!("{method} {path}: not a route of the contract"));
            (StatusCode::NOT_FOUND, axum::Json(json!({"message": "Not found"}))).into_response()
        }
    }
}

async fn update_datasource(
    State(g): State<Shared>,
    UrlPath(uid): UrlPath<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut g = g.lock().expect("grafana");
    g.requests += 1;
    if headers.get("authorization").and_then(|a| a.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
        g.violations.push(format!("PUT /api/datasources/uid/{uid}: no or wrong bearer token"));
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let body: Value = serde_json::from_str(&body).unwrap_or_default();
    if body["uid"] != uid.as_str() {
        g.violations.push(format!("PUT /api/datasources/uid/{uid} with body uid {}", body["uid"]));
    }
    if !g.datasources.contains_key(&uid) {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"message": "Data source not found"}))).into_response();
    }
    g.datasources.insert(uid, body);
    (StatusCode::OK, axum::Json(json!({"message": "Datasource updated"}))).into_response()
}

/// A Grafana stand-in on a loopback port.
pub struct GrafanaStandin {
    pub url: String,
    state: Shared,
    _runtime: tokio::runtime::Runtime,
}

impl GrafanaStandin {
    pub fn start() -> GrafanaStandin {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let state: Shared = Arc::default();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let router = axum::Router::new()
            .route("/api/datasources/uid/{uid}", axum::routing::put(update_datasource))
            .fallback(handle)
            .with_state(state.clone());
        runtime.spawn(async move { axum::serve(listener, router).await.expect("serve") });
        GrafanaStandin { url, state, _runtime: runtime }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Grafana) -> T) -> T {
        f(&mut self.state.lock().expect("grafana"))
    }
}

fn deploy(standin: &GrafanaStandin, data_dir: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["grafana", "deploy", "--url", &standin.url, "--callscope-url", "http://127.0.0.1:8080"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("CALLSCOPE_GRAFANA_TOKEN", TOKEN)
        .output()
        .expect("run callscope grafana deploy");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn grafana_deploy_is_idempotent_reports_each_step_and_keeps_to_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let grafana = GrafanaStandin::start();
    let (ok, out) = deploy(&grafana, dir.path());
    assert!(ok, "{out}");
    assert_eq!(grafana.with(|g| g.violations.clone()), Vec::<String>::new(), "{out}");
    let ids = [
        "executive-overview",
        "operations",
        "ai-performance",
        "infrastructure",
        "business",
        "alerts",
        "security",
        "tracing",
    ];
    for id in ids {
        assert!(
            out.lines().any(|l| l.starts_with("dashboard") && l.contains(id) && l.contains("created")),
            "{id}: {out}"
        );
    }
    assert_eq!(grafana.with(|g| g.dashboards.len()), 8);
    assert_eq!(grafana.with(|g| g.dashboards.values().all(|(v, _, f)| *v == 1 && f == "callscope")), true);
    let prometheus = grafana.with(|g| g.datasources["callscope-prometheus"].clone());
    assert_eq!(prometheus["url"], "http://127.0.0.1:8080");

    // Again: the folder exists, data sources are updated, dashboards get version 2.
    let (ok, out) = deploy(&grafana, dir.path());
    assert!(ok, "{out}");
    assert!(out.lines().any(|l| l.starts_with("folder") && l.contains("exists")), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("datasource") && l.contains("updated")).count(), 3, "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("dashboard") && l.contains("updated")).count(), 8, "{out}");
    assert_eq!(grafana.with(|g| g.violations.clone()), Vec::<String>::new());
    assert!(grafana.with(|g| g.dashboards.values().all(|(v, _, _)| *v == 2)));

    // Grafana refuses one: the others still go, the report names it, the exit code says so.
    grafana.with(|g| g.refuse = Some("business".into()));
    let (ok, out) = deploy(&grafana, dir.path());
    assert!(!ok, "{out}");
    let failed: Vec<&str> = out.lines().filter(|l| l.contains("FAILED")).collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert!(failed[0].contains("business") && failed[0].contains("412") && failed[0].contains("name-exists"), "{out}");
    assert!(grafana.with(|g| g.dashboards["tracing"].0) == 3, "later dashboards were still deployed");

    // A wrong token is reported, not hidden.
    let out = Command::new(BIN)
        .args(["grafana", "deploy", "--url", &grafana.url, "--token", "wrong"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("CALLSCOPE_GRAFANA_TOKEN")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("HTTP 401"), "{text}");
}

#[test]
fn the_api_deploys_what_the_caller_may_see() {
    let dir = tempfile::tempdir().expect("tempdir");
    let grafana = GrafanaStandin::start();
    let node = Node::standalone(dir.path()).spawn();
    let client = http();
    let url = format!("{}/monitoring/dashboards/grafana/deploy", node.http);
    let body = json!({"url": grafana.url, "token": TOKEN});
    let denied = client.call_with_headers("POST", &url, Some(&body), &[("X-Callscope-Roles", "viewer")]);
    assert_eq!(denied.status, 403, "{}", denied.body);
    let reply = client.call("POST", &url, Some(&body));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let report = reply.json();
    assert_eq!(report["failures"], 0);
    let dashboards: Vec<&Value> =
        report["steps"].as_array().expect("steps").iter().filter(|s| s["kind"] == "dashboard").collect();
    assert_eq!(dashboards.len(), 7, "the anonymous caller does not see the security dashboard: {report}");
    assert_eq!(grafana.with(|g| g.violations.clone()), Vec::<String>::new());
    let source = grafana.with(|g| g.datasources["callscope-json"]["url"].clone());
    assert_eq!(source, format!("{}/grafana/json", node.http).as_str(), "the data sources point at this API");
    let bad = client.call("POST", &url, Some(&json!({"url": "ftp://x", "token": "t"})));
    assert_eq!((bad.status, bad.json()["field"].as_str()), (400, Some("url")));
}
