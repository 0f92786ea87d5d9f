//! What the alerts reach: local receivers (webhook, Slack-shaped, DingTalk-shaped with its
//! signature checked, SMS gateway, a manager's hook and a flaky hook that fails twice), a
//! real Alertmanager, and the mailbox of a local SMTP sink.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use base64::Engine as _;
use hmac::Mac;
use serde_json::Value;

use crate::support::*;

fn record(inbox: &Inbox, path: &str, query: BTreeMap<String, String>, body: Value) {
    inbox.lock().expect("inbox").push((path.to_string(), query, body));
}

/// What the local receivers got: (receiver path, query, body).
type Inbox = Arc<Mutex<Vec<(String, BTreeMap<String, String>, Value)>>>;

pub const DINGTALK_SECRET: &str = "SECtest-secret";

fn signature_ok(query: &BTreeMap<String, String>) -> bool {
    let (Some(ts), Some(sign)) = (query.get("timestamp"), query.get("sign")) else { return false };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(DINGTALK_SECRET.as_bytes()) else { return false };
    mac.update(format!("{ts}\n{DINGTALK_SECRET}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    // axum's Query has already URL-decoded `sign`.
    *sign == expected
}

type ReceiverState = (Inbox, Arc<Mutex<u32>>);

/// A receiver that records every body under `name` and answers 200.
fn recorder(name: &'static str) -> axum::routing::MethodRouter<ReceiverState> {
    axum::routing::post(
        move |State((inbox, _)): State<ReceiverState>, axum::Json(body): axum::Json<Value>| async move {
            record(&inbox, name, BTreeMap::new(), body);
            StatusCode::OK
        },
    )
}

pub struct Receivers {
    inbox: Inbox,
    /// Attempts seen by the flaky receiver.
    pub flaky_attempts: Arc<Mutex<u32>>,
    /// `http://host:port` of the receivers.
    pub base: String,
    _runtime: tokio::runtime::Runtime,
}

impl Receivers {
    pub fn start() -> Receivers {
        let runtime = runtime();
        let inbox: Inbox = Arc::default();
        let flaky_attempts = Arc::new(Mutex::new(0u32));
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let router = axum::Router::new()
            .route("/hook", recorder("hook"))
            .route(
                "/slack/{*token}",
                axum::routing::post(
                    |State((inbox, _)): State<ReceiverState>,
                     UrlPath(_token): UrlPath<String>,
                     axum::Json(body): axum::Json<Value>| async move {
                        record(&inbox, "slack", BTreeMap::new(), body);
                        "ok"
                    },
                ),
            )
            .route(
                "/robot/send",
                axum::routing::post(
                    |State((inbox, _)): State<ReceiverState>,
                     Query(query): Query<BTreeMap<String, String>>,
                     axum::Json(body): axum::Json<Value>| async move {
                        if !signature_ok(&query) {
                            return axum::Json(serde_json::json!({"errcode": 310000, "errmsg": "sign not match"}));
                        }
                        record(&inbox, "dingtalk", query, body);
                        axum::Json(serde_json::json!({"errcode": 0, "errmsg": "ok"}))
                    },
                ),
            )
            .route("/sms", recorder("sms"))
            .route("/manager", recorder("manager"))
            .route(
                "/flaky",
                axum::routing::post(
                    |State((inbox, attempts)): State<ReceiverState>, axum::Json(body): axum::Json<Value>| async move {
                        let n = {
                            let mut a = attempts.lock().expect("attempts");
                            *a += 1;
                            *a
                        };
                        match n {
                            1 => StatusCode::INTERNAL_SERVER_ERROR,
                            2 => {
                                // Longer than the channel's timeout.
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                StatusCode::OK
                            }
                            _ => {
                                record(&inbox, "flaky", BTreeMap::new(), body);
                                StatusCode::OK
                            }
                        }
                    },
                ),
            )
            .with_state((inbox.clone(), flaky_attempts.clone()));
        runtime.spawn(async move { axum::serve(listener, router).await });
        Receivers { inbox, flaky_attempts, base, _runtime: runtime }
    }

    pub fn received(&self, path: &str) -> Vec<Value> {
        self.inbox.lock().expect("inbox").iter().filter(|(p, _, _)| p == path).map(|(_, _, b)| b.clone()).collect()
    }

    /// Waits until `path` holds `n` messages; returns them.
    pub fn wait_for(&self, path: &str, n: usize, timeout: Duration, node: &mut Node) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received(path);
            if got.len() >= n {
                return got;
            }
            node.proc.assert_running();
            assert!(
                Instant::now() < deadline,
                "{path}: {} of {n} notifications after {timeout:?}\n{}",
                got.len(),
                node.proc.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn alertmanager(dir: &Path) -> (Proc, String) {
    let program = ["/usr/bin/prometheus-alertmanager", "/usr/local/bin/alertmanager", "/usr/bin/alertmanager"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("Alertmanager is missing: apt-get install prometheus-alertmanager (as .ci/run does)")
        });
    let config = dir.join("alertmanager.yml");
    std::fs::write(&config, "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n")
        .expect("config");
    let port = free_port();
    let args = [
        format!("--config.file={}", config.display()),
        format!("--storage.path={}", dir.join("am-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut proc = Proc::spawn_program("alertmanager", dir, program, &args);
    let base = format!("http://127.0.0.1:{port}");
    wait_for_http(&mut proc, &format!("{base}/-/ready"), Duration::from_secs(30));
    (proc, base)
}

/// Messages the local SMTP sink (aiosmtpd, Mailbox handler) stored, as text.
pub fn mailbox(dir: &Path) -> Vec<String> {
    let new = dir.join("new");
    let mut files: Vec<_> =
        std::fs::read_dir(&new).map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect()
}
