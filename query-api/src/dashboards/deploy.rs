//! Deploying the dashboards to a Grafana instance through its HTTP API, idempotently: the
//! folder (`POST /api/folders`; 409 or 412 when it exists is fine), the three data sources
//! (`POST /api/datasources`, or `PUT /api/datasources/uid/{uid}` when one of that name or
//! uid exists), then every dashboard (`POST /api/dashboards/db` with `overwrite: true`). Each
//! step is reported as it ends (a progress line per dashboard), failures included; nothing
//! stops at the first failure.

use std::time::Duration;

use callscope_schemas::dashboards::Dashboard;
use serde::Serialize;
use serde_json::{Value, json};

use super::grafana;

/// Where and as whom to deploy.
#[derive(Debug, Clone)]
pub struct DeployTarget {
    /// Grafana's base URL (`http://127.0.0.1:3000`).
    pub grafana_url: String,
    /// A service account token (`Authorization: Bearer …`).
    pub token: String,
    /// The callscope query API the data sources point at, as Grafana reaches it.
    pub callscope_url: String,
    pub folder_uid: String,
    pub folder_title: String,
}

impl DeployTarget {
    pub const DEFAULT_FOLDER: &'static str = "callscope";
}

/// One step of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// `folder`, `datasource` or `dashboard`.
    pub kind: &'static str,
    pub name: String,
    /// `created`, `updated`, `exists` or `failed`.
    pub outcome: &'static str,
    /// Grafana's URL of a deployed dashboard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Step {
    pub fn failed(&self) -> bool {
        self.outcome == "failed"
    }

    /// One line for a terminal.
    pub fn line(&self) -> String {
        match (&self.error, &self.url) {
            (Some(e), _) => format!("{:<10} {:<28} FAILED: {e}", self.kind, self.name),
            (None, Some(url)) => format!("{:<10} {:<28} {} ({url})", self.kind, self.name, self.outcome),
            (None, None) => format!("{:<10} {:<28} {}", self.kind, self.name, self.outcome),
        }
    }
}

/// What a deployment did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeployReport {
    pub steps: Vec<Step>,
}

impl DeployReport {
    pub fn failures(&self) -> usize {
        self.steps.iter().filter(|s| s.failed()).count()
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// Sends one request; the status and the JSON body (or the text as a JSON string).
    async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> Result<(u16, Value), String> {
        let response = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| format!("{method} {path}: {e}"))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }
}

fn message(body: &Value) -> String {
    body.get("message").and_then(Value::as_str).map_or_else(|| body.to_string(), str::to_string)
}

/// Deploys `dashboards` to `target`; `progress` sees each step as it ends.
pub async fn deploy(
    target: &DeployTarget,
    dashboards: &[Dashboard],
    progress: &(dyn Fn(&Step) + Sync),
) -> DeployReport {
    let mut report = DeployReport::default();
    let mut record = |step: Step| {
        progress(&step);
        report.steps.push(step);
    };
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(30)).build() {
        Ok(h) => h,
        Err(e) => {
            record(Step {
                kind: "folder",
                name: target.folder_uid.clone(),
                outcome: "failed",
                url: None,
                error: Some(e.to_string()),
            });
            return report;
        }
    };
    let client =
        Client { http, base: target.grafana_url.trim_end_matches('/').to_string(), token: target.token.clone() };
    let step = |kind: &'static str, name: &str, outcome: &'static str| Step {
        kind,
        name: name.to_string(),
        outcome,
        url: None,
        error: None,
    };
    let fail = |kind: &'static str, name: &str, error: String| Step {
        kind,
        name: name.to_string(),
        outcome: "failed",
        url: None,
        error: Some(error),
    };

    // The folder.
    let folder = json!({"uid": target.folder_uid, "title": target.folder_title});
    record(match client.send(reqwest::Method::POST, "/api/folders", &folder).await {
        Ok((200, _)) => step("folder", &target.folder_uid, "created"),
        Ok((409 | 412, _)) => step("folder", &target.folder_uid, "exists"),
        Ok((status, body)) => fail("folder", &target.folder_uid, format!("HTTP {status}: {}", message(&body))),
        Err(e) => fail("folder", &target.folder_uid, e),
    });

    // The data sources.
    for source in grafana::datasources(&target.callscope_url) {
        let uid = source["uid"].as_str().unwrap_or_default().to_string();
        let outcome = match client.send(reqwest::Method::POST, "/api/datasources", &source).await {
            Ok((200, _)) => step("datasource", &uid, "created"),
            Ok((409, _)) => {
                match client.send(reqwest::Method::PUT, &format!("/api/datasources/uid/{uid}"), &source).await {
                    Ok((200, _)) => step("datasource", &uid, "updated"),
                    Ok((status, body)) => fail("datasource", &uid, format!("HTTP {status}: {}", message(&body))),
                    Err(e) => fail("datasource", &uid, e),
                }
            }
            Ok((status, body)) => fail("datasource", &uid, format!("HTTP {status}: {}", message(&body))),
            Err(e) => fail("datasource", &uid, e),
        };
        record(outcome);
    }

    // The dashboards.
    for d in dashboards {
        let mut dashboard = grafana::dashboard(d);
        dashboard["id"] = Value::Null;
        let body = json!({
            "dashboard": dashboard,
            "folderUid": target.folder_uid,
            "overwrite": true,
            "message": format!("callscope dashboard {} version {}", d.id, d.version),
        });
        let outcome = match client.send(reqwest::Method::POST, "/api/dashboards/db", &body).await {
            Ok((200, reply)) if reply["status"] == "success" => {
                let version = reply["version"].as_u64().unwrap_or(0);
                let mut s = step("dashboard", &d.id, if version <= 1 { "created" } else { "updated" });
                s.url = reply["url"].as_str().map(|u| format!("{}{u}", client.base));
                s
            }
            Ok((status, reply)) => {
                let why = reply.get("status").and_then(Value::as_str).map(|s| format!(" ({s})")).unwrap_or_default();
                fail("dashboard", &d.id, format!("HTTP {status}{why}: {}", message(&reply)))
            }
            Err(e) => fail("dashboard", &d.id, e),
        };
        record(outcome);
    }
    report
}
