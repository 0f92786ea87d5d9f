//! The built-in viewer in a real headless browser: Debian's `chromium`, driven by
//! `chromedriver` over the W3C WebDriver protocol (plain HTTP from this test). With the
//! simulated phone platform running: the page loads without console errors, the executive
//! overview shows charts and numbers drawn from live data, a silence created in the UI
//! appears in the API, and a trace opens from its id. Screenshots are kept under
//! `<target>/screenshots/`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::support::*;

/// A chromedriver process and one browser session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: Http,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Browser {
    fn start() -> Browser {
        let chromedriver = debian_tool("chromedriver", "chromium-driver");
        let chromium = debian_tool("chromium", "chromium");
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let client = http();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.try_call("GET", &format!("{base}/status"), None).is_none_or(|r| r.json()["value"]["ready"] != true)
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("profile dir").keep();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": chromium, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1600,1200",
                format!("--user-data-dir={}", profile.display()),
            ]},
        }}});
        let reply = client.call("POST", &format!("{base}/session"), Some(&capabilities));
        assert_eq!(reply.status, 200, "new session: {}", reply.body);
        let session = reply.json()["value"]["sessionId"].as_str().expect("session id").to_string();
        Browser { driver, base, session, client }
    }

    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let reply = self.client.call(method, &url, body);
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.body);
        reply.json()["value"].clone()
    }

    fn open(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({"url": url})));
    }

    fn run(&self, script: &str) -> Value {
        self.command("POST", "/execute/sync", Some(&json!({"script": script, "args": []})))
    }

    /// Polls `script` until it returns true.
    fn wait_for(&self, what: &str, script: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.run(script) == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}; page: {}",
                self.run("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The browser's console since the last call (chromedriver's log endpoint).
    fn console(&self) -> Vec<Value> {
        self.command("POST", "/se/log", Some(&json!({"type": "browser"}))).as_array().cloned().unwrap_or_default()
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.command("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().expect("base64")).expect("png");
        let dir = target_dir().join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.client.try_call("DELETE", &format!("{}/session/{}", self.base, self.session), None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

#[test]
fn the_viewer_shows_live_dashboards_alerts_and_traces_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(dir.path()).args(["--demo", "--demo-rate", "40", "--flush-interval", "200ms"]).spawn();
    let client = http();
    let base = &node.http;
    // Some data first: a minute of windows makes rates and quantiles.
    wait_for_count(&client, base, "SELECT CAST(COUNT(*) > 2000 AS BIGINT) FROM spans", 1, Duration::from_secs(90));
    let browser = Browser::start();

    // The list, then the executive overview: every widget drawn from data (uPlot canvases
    // for the time series, numbers for the stats).
    browser.open(&format!("{base}/"));
    browser.wait_for(
        "the dashboard list",
        "return document.querySelectorAll('[data-dashboard]').length >= 7",
        Duration::from_secs(30),
    );
    // Refresh every 10 s (the picker), so that windows closing meanwhile show up.
    browser.run("document.getElementById('refresh').value = '10000'; return true");
    browser.open(&format!("{base}/#/d/executive-overview"));
    browser.wait_for(
        "every widget of the executive overview has data",
        "const w = [...document.querySelectorAll('[data-widget]')]; \
         return w.length === 8 && w.every(e => e.dataset.state === 'ok')",
        Duration::from_secs(120),
    );
    let charts = browser.run(
        "return [...document.querySelectorAll('[data-kind=timeseries]')].map(w => w.querySelectorAll('canvas').length)",
    );
    assert_eq!(charts, json!([1, 1]), "two uPlot charts");
    let stat = browser.run("return document.querySelector('[data-widget=calls-per-minute] .stat').textContent");
    assert!(
        stat.as_str().and_then(|s| s.trim().parse::<f64>().ok()).is_some_and(|n| n > 0.0),
        "calls per minute: {stat}"
    );
    let errors = browser.run("return [...document.querySelectorAll('main .error')].map(e => e.textContent)");
    assert_eq!(errors, json!([]), "no widget shows an error");
    let shot = browser.screenshot("viewer-executive-overview");
    eprintln!("screenshot: {}", shot.display());
    browser.open(&format!("{base}/#/d/tracing"));
    browser.wait_for(
        "the service map and the slowest traces",
        "const s = id => document.querySelector(`[data-widget=${id}]`)?.dataset.state; \
         return s('service-map') === 'ok' && s('slowest') === 'ok' && !!document.querySelector('[data-widget=service-map] svg circle')",
        Duration::from_secs(150),
    );
    let errors = browser.run("return [...document.querySelectorAll('main .error')].map(e => e.textContent)");
    assert_eq!(errors, json!([]), "no widget shows an error");
    browser.screenshot("viewer-tracing");

    // The operations dashboard: its alert list and the services' health render too.
    browser.open(&format!("{base}/#/d/operations"));
    browser.wait_for(
        "the operations dashboard",
        "const s = id => document.querySelector(`[data-widget=${id}]`)?.dataset.state;          return s('services') === 'ok' && ['ok', 'empty'].includes(s('active-alerts'))",
        Duration::from_secs(60),
    );
    let errors = browser.run("return [...document.querySelectorAll('main .error')].map(e => e.textContent)");
    assert_eq!(errors, json!([]), "no widget shows an error");
    browser.screenshot("viewer-operations");
    browser.open(&format!("{base}/#/d/tracing"));
    browser.wait_for(
        "the slowest traces again",
        "return !!document.querySelector('[data-widget=slowest] a')",
        Duration::from_secs(60),
    );

    // A trace from the slowest list opens as a waterfall.
    let trace = browser.run("return document.querySelector('[data-widget=slowest] a').getAttribute('href').slice(8)");
    let trace = trace.as_str().expect("a trace link").to_string();
    browser.run(&format!(
        "document.getElementById('trace-id').value = '{trace}'; \
         document.querySelector('#trace-lookup button').click(); return true"
    ));
    browser.wait_for(
        "the waterfall",
        "return document.querySelectorAll('.waterfall .span').length > 3",
        Duration::from_secs(30),
    );

    // A silence created in the UI appears in the API.
    browser.open(&format!("{base}/#/alerts"));
    browser.wait_for("the silence form", "return !!document.querySelector('#new-silence')", Duration::from_secs(30));
    let errors = browser.run("return [...document.querySelectorAll('main .error')].map(e => e.textContent)");
    assert_eq!(errors, json!([]), "the alerts page shows no error");
    browser.run(
        "const f = document.querySelector('#new-silence'); f.name.value = 'service'; f.value.value = 'asr'; \
         f.comment.value = 'ASR maintenance'; f.querySelector('button').click(); return true",
    );
    browser.wait_for(
        "the silence is created",
        "return !!document.querySelector('#silence-status').dataset.silenceId",
        Duration::from_secs(30),
    );
    let id = browser.run("return document.querySelector('#silence-status').dataset.silenceId");
    let silence = client.call("GET", &format!("{base}/monitoring/alerts/silences/{}", id.as_str().expect("id")), None);
    assert_eq!(silence.status, 200, "{}", silence.body);
    let silence = silence.json();
    assert_eq!(
        (silence["createdBy"].as_str(), silence["comment"].as_str()),
        (Some("viewer-ui"), Some("ASR maintenance"))
    );
    assert_eq!(silence["matchers"][0]["name"], "service");
    assert_eq!(silence["status"]["state"], "active");
    browser.screenshot("viewer-alerts");

    // Nothing went wrong in the console along the way.
    let problems: Vec<Value> =
        browser.console().into_iter().filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING").collect();
    assert!(problems.is_empty(), "console: {problems:#?}");
}
