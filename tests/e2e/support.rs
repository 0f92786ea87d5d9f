//! Test harness: processes of the real binary, Kafka clients and HTTP helpers.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use callscope_schemas::avro::encode_confluent;
use callscope_schemas::{Alert, AlertStatus, Event, Metric, MetricKind, Severity, Span, SpanKind, SpanStatus};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

pub use callscope_runtime::now_ms;
pub use s3::MotoS3;

mod s3;

pub const BIN: &str = env!("CARGO_BIN_EXE_callscope");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A child process (the binary, or a peer such as Prometheus), its output in a log file;
/// killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Proc {
    /// Any program, with its output in a log file beside the test's data.
    pub fn spawn_program(name: &str, dir: &Path, program: &str, args: &[&str]) -> Proc {
        Self::spawn_with_env(name, dir, program, args, &[])
    }

    /// Like [`spawn_program`](Self::spawn_program), with extra environment variables.
    pub fn spawn_with_env(name: &str, dir: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let log = dir.join(format!("{name}-{}.log", std::process::id() ^ rand_u32()));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(program)
            .args(args)
            .env("CALLSCOPE_LOG", "info,librdkafka=warn,rdkafka=warn,tansu=error,tansu_broker=error,tansu_storage=error,tansu_sans_io=error")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Proc { child, log, name: name.to_string() }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// SIGKILL: no flush, no commit, no goodbye.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit; `None` if it had to be killed after 30 s.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        None
    }

    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early with {status}:\n{}", self.name, self.log_tail());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- last log lines of {} ----\n{}", self.name, self.log_tail());
        }
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) as u32
}

/// What a process of the binary serves once it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// Its /health answers (the query API of `standalone` and `query-api`).
    Http,
    /// Its Kafka listener accepts connections (`broker`).
    Kafka,
    /// Nothing to wait for (`pipeline`).
    Started,
}

/// A running process of the binary: `standalone`, `pipeline`, `query-api` or `broker`,
/// started by a [`NodeBuilder`].
pub struct Node {
    pub proc: Proc,
    /// Its Kafka bootstrap address: the broker it runs (`standalone`, `broker`) or uses.
    pub brokers: String,
    /// Base URL of its HTTP server (the query API, or a pipeline's metrics endpoint);
    /// empty when it serves none.
    pub http: String,
    pub data_dir: PathBuf,
}

impl Node {
    /// `callscope standalone` with its data in `dir/data`, the embedded broker and the
    /// query API on free ports.
    pub fn standalone(dir: &Path) -> NodeBuilder {
        NodeBuilder::new("standalone", "standalone", dir, dir.join("data"), Ready::Http)
            .kafka_addr()
            .http_addr("--http-addr")
    }

    /// `callscope pipeline` with `--worker-id name` (and its log named so); give it a broker.
    pub fn pipeline(dir: &Path, name: &str) -> NodeBuilder {
        NodeBuilder::new("pipeline", name, dir, dir.join("data"), Ready::Started).args(["--worker-id", name])
    }

    /// `callscope query-api` on a free port.
    pub fn query_api(dir: &Path) -> NodeBuilder {
        NodeBuilder::new("query-api", "query-api", dir, dir.join("data"), Ready::Http).http_addr("--http-addr")
    }

    /// `callscope broker` (4 partitions per topic) with its data in `dir/broker`, on a free port.
    pub fn broker(dir: &Path) -> NodeBuilder {
        NodeBuilder::new("broker", "broker", dir, dir.join("broker"), Ready::Kafka)
            .kafka_addr()
            .args(["--partitions", "4"])
    }

    /// `host:port` of its HTTP server.
    pub fn http_addr(&self) -> &str {
        self.http.trim_start_matches("http://")
    }
}

/// How to start a process of the binary. Ports are chosen when the builder is made, so
/// every [`spawn`](Self::spawn) of one builder (a restart) listens where the last did.
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    command: &'static str,
    name: String,
    dir: PathBuf,
    data_dir: PathBuf,
    ready: Ready,
    /// `--kafka-addr` of the embedded broker.
    kafka_addr: Option<String>,
    /// `--brokers`.
    brokers: Option<String>,
    /// `--http-addr` or `--metrics-addr`, and its value.
    http: Option<(&'static str, String)>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl NodeBuilder {
    fn new(command: &'static str, name: &str, dir: &Path, data_dir: PathBuf, ready: Ready) -> NodeBuilder {
        NodeBuilder {
            command,
            name: name.to_string(),
            dir: dir.to_path_buf(),
            data_dir,
            ready,
            kafka_addr: None,
            brokers: None,
            http: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    fn kafka_addr(mut self) -> Self {
        self.kafka_addr = Some(format!("127.0.0.1:{}", free_port()));
        self
    }

    fn http_addr(mut self, flag: &'static str) -> Self {
        self.http = Some((flag, format!("127.0.0.1:{}", free_port())));
        self
    }

    /// Uses the Kafka cluster of `broker` (`--brokers`).
    pub fn broker(mut self, broker: &Node) -> Self {
        self.brokers = Some(broker.brokers.clone());
        self
    }

    /// `--data-dir` (default: `data` in the test's directory, `broker` for a broker).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = dir.to_path_buf();
        self
    }

    /// A pipeline's /metrics and /health on a free port (`--metrics-addr`).
    pub fn metrics_endpoint(self) -> Self {
        self.http_addr("--metrics-addr")
    }

    /// More flags.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// An environment variable of the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the process and waits until it is ready: its /health answers (`standalone`,
    /// `query-api`) or its broker accepts connections (`broker`).
    pub fn spawn(&self) -> Node {
        let data_dir = self.data_dir.to_str().expect("utf-8 path");
        let mut args = vec![self.command, "--data-dir", data_dir];
        if let Some(addr) = &self.kafka_addr {
            args.extend(["--kafka-addr", addr.as_str()]);
        }
        if let Some(brokers) = &self.brokers {
            args.extend(["--brokers", brokers.as_str()]);
        }
        if let Some((flag, addr)) = &self.http {
            args.extend([*flag, addr.as_str()]);
        }
        args.extend(self.args.iter().map(String::as_str));
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut proc = Proc::spawn_with_env(&self.name, &self.dir, BIN, &args, &env);
        let http = self.http.as_ref().map(|(_, addr)| format!("http://{addr}")).unwrap_or_default();
        let brokers = self.kafka_addr.clone().or_else(|| self.brokers.clone()).unwrap_or_default();
        match self.ready {
            Ready::Http => wait_for_http(&mut proc, &format!("{http}/health"), Duration::from_secs(120)),
            Ready::Kafka => {
                // Clients create the topics they need, idempotently.
                let deadline = Instant::now() + Duration::from_secs(60);
                while std::net::TcpStream::connect(&brokers).is_err() {
                    proc.assert_running();
                    assert!(Instant::now() < deadline, "{} did not start:\n{}", self.name, proc.log_tail());
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Ready::Started => {}
        }
        Node { proc, brokers, http, data_dir: self.data_dir.clone() }
    }
}

pub fn wait_for_http(proc: &mut Proc, url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let client = http();
    loop {
        proc.assert_running();
        if client.try_call("GET", url, None).is_some_and(|r| r.status == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} did not answer within {timeout:?}:\n{}", proc.log_tail());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A blocking HTTP client (reqwest on a private single-thread runtime).
pub struct Http {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: BTreeMap<String, String>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Http {
    pub fn try_call(&self, method: &str, url: &str, body: Option<&Value>) -> Option<Reply> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, url);
        if let Some(b) = body {
            request = request.header("content-type", "application/json").body(b.to_string());
        }
        self.send(request)
    }

    pub fn call(&self, method: &str, url: &str, body: Option<&Value>) -> Reply {
        self.try_call(method, url, body).unwrap_or_else(|| panic!("{method} {url}: no answer"))
    }

    /// Like [`call`](Self::call), with extra request headers.
    pub fn call_with_headers(&self, method: &str, url: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method.clone(), url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(b) = body {
            request = request.header("content-type", "application/json").body(b.to_string());
        }
        self.send(request).unwrap_or_else(|| panic!("{method} {url}: no answer"))
    }

    /// POSTs `body` as `content_type`.
    pub fn post_raw(&self, url: &str, content_type: &str, body: String) -> Reply {
        let request = self.client.post(url).header("content-type", content_type).body(body);
        self.send(request).unwrap_or_else(|| panic!("POST {url}: no answer"))
    }

    fn send(&self, request: reqwest::RequestBuilder) -> Option<Reply> {
        self.runtime.block_on(async move {
            let r = request.send().await.ok()?;
            let status = r.status().as_u16();
            let headers = r
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect();
            let body = r.text().await.ok()?;
            Some(Reply { status, body, headers })
        })
    }
}

pub fn http() -> Http {
    Http {
        runtime: tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            // Tests restart servers on the same port: never reuse a connection to a dead one.
            .pool_max_idle_per_host(0)
            .build()
            .expect("client"),
    }
}

/// Runs SQL through the API and returns the rows.
pub fn sql(client: &Http, base: &str, query: &str) -> Vec<Vec<Value>> {
    let reply = client.call("POST", &format!("{base}/monitoring/sql"), Some(&json!({ "sql": query })));
    assert_eq!(reply.status, 200, "{query}: {}", reply.body);
    let v = reply.json();
    serde_json::from_value(v["rows"].clone()).expect("rows")
}

/// Polls a single-value SQL query until it returns `expected` (or times out).
pub fn wait_for_count(client: &Http, base: &str, query: &str, expected: i64, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let rows = sql(client, base, query);
        let n = rows.first().and_then(|r| r.first()).and_then(Value::as_i64).unwrap_or(0);
        if n >= expected || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Polls the JSON file at `path` until `ok` holds for its content; returns that content.
/// Panics after `timeout`, saying `what` it waited for and the last content seen.
pub fn wait_for_json_file(path: &Path, timeout: Duration, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let current = std::fs::read(path).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        if let Some(v) = current.as_ref().filter(|v| ok(v)) {
            return v.clone();
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}; {} holds {current:?}", path.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls the Prometheus text exposition at `url` until the sum of counter or gauge `name`
/// reaches `at_least`; returns it. Panics after `timeout`.
pub fn wait_for_counter(client: &Http, url: &str, name: &str, at_least: f64, timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let n = counter_total(client, url, name);
        if n >= at_least {
            return n;
        }
        assert!(Instant::now() < deadline, "{name} at {url} is {n} after {timeout:?}, expected at least {at_least}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn metric(i: usize) -> Event {
    Event::Metric(Metric {
        name: "ai_response_time_ms".into(),
        kind: MetricKind::Histogram,
        value: i as f64 + 0.5,
        timestamp_ms: now_ms() - (i % 1000) as i64,
        service: ["ai-engine", "asr", "tts"][i % 3].into(),
        labels: BTreeMap::from([("seq".to_string(), i.to_string()), ("region".to_string(), "cn-east".to_string())]),
        unit: Some("milliseconds".into()),
    })
}

pub fn span(i: usize) -> Event {
    Event::Span(Span {
        trace_id: format!("{:032x}", 0xabc0_0000u64 + (i / 4) as u64),
        span_id: format!("{:016x}", 0x5000_0000u64 + i as u64),
        parent_span_id: if i % 4 == 0 { None } else { Some(format!("{:016x}", 0x5000_0000u64 + (i - i % 4) as u64)) },
        service: ["call-gateway", "asr", "ai-engine", "tts"][i % 4].into(),
        operation: "step".into(),
        kind: SpanKind::Server,
        start_time_us: now_ms() * 1000 + i as i64,
        duration_us: 1000 + i as i64,
        status: if i % 10 == 0 { SpanStatus::Error } else { SpanStatus::Ok },
        attributes: BTreeMap::from([("seq".to_string(), i.to_string())]),
        status_message: None,
        resource_attributes: Default::default(),
        events: Vec::new(),
    })
}

pub fn alert(i: usize) -> Event {
    Event::Alert(Alert {
        alert_name: "ASRLatencyHigh".into(),
        severity: Severity::Warning,
        status: if i % 2 == 0 { AlertStatus::Firing } else { AlertStatus::Resolved },
        service: "asr".into(),
        labels: BTreeMap::from([("seq".to_string(), i.to_string())]),
        annotations: BTreeMap::new(),
        starts_at_ms: now_ms(),
        ends_at_ms: if i % 2 == 1 { Some(now_ms() + 1) } else { None },
        value: Some(i as f64),
        source: "test".into(),
    })
}

/// Avro for even `i`, JSON for odd.
pub fn encode_mixed(i: usize, event: &Event) -> Vec<u8> {
    if i % 2 == 0 { encode_confluent(event).expect("avro") } else { callscope_schemas::json::encode(event) }
}

pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer")
}

/// Produces and waits for every acknowledgement; returns how many were acknowledged.
pub async fn produce_all(producer: &FutureProducer, topic: &str, payloads: &[(String, Vec<u8>)]) -> usize {
    let sends = payloads
        .iter()
        .map(|(key, p)| producer.send(FutureRecord::to(topic).key(key).payload(p), Duration::from_secs(60)));
    futures::future::join_all(sends).await.into_iter().filter(Result::is_ok).count()
}

/// Reads every message of a topic (from the beginning) until `expected` or the timeout.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<(Vec<u8>, BTreeMap<String, String>)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-reader-{}", rand_u32()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < expected {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((m.payload().unwrap_or_default().to_vec(), headers));
            }
            Ok(Err(e)) => panic!("consume {topic}: {e}"),
            Err(_) => break,
        }
    }
    out
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn importable(python: &Path, import: &str) -> bool {
    Command::new(python).args(["-c", import]).output().is_ok_and(|o| o.status.success())
}

/// A Python interpreter where `import` works: the system's if it can, else a virtualenv
/// under the target directory, created once from `tests/e2e/requirements.txt` (the
/// Python Kafka client and an S3-compatible server used as real peers by some tests).
pub fn python_with(import: &str) -> PathBuf {
    let system = PathBuf::from("python3");
    if importable(&system, import) {
        return system;
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-e2e");
    let python = venv.join("bin/python");
    let requirements = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/requirements.txt");
    if !importable(&python, import) {
        if !python.exists() {
            let created = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
            assert!(
                created.is_ok_and(|s| s.success()),
                "this test needs Python 3 with venv (apt-get install python3-venv), or: pip install -r {requirements}"
            );
        }
        let installed = Command::new(&python).args(["-m", "pip", "install", "--quiet", "-r", requirements]).status();
        assert!(
            installed.is_ok_and(|s| s.success()) && importable(&python, import),
            "could not install the Python test peers; install them yourself with: pip install -r {requirements}"
        );
    }
    python
}

/// Rows stored in the data directory, counted by the `sql` subcommand (no server).
pub fn sql_direct(data_dir: &std::path::Path) -> i64 {
    sql_direct_value(data_dir, "SELECT COUNT(*) AS n FROM metrics")
}

/// The single integer a query answers, run by the `sql` subcommand over the data directory.
pub fn sql_direct_value(data_dir: &std::path::Path, query: &str) -> i64 {
    let out = std::process::Command::new(BIN)
        .args(["sql", "--data-dir", data_dir.to_str().expect("path"), "--format", "csv", query])
        .output()
        .expect("run callscope sql");
    assert!(out.status.success(), "callscope sql failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("an integer")
}

/// The sum of a counter's series in a Prometheus text exposition at `url`.
pub fn counter_total(client: &Http, url: &str, name: &str) -> f64 {
    let reply = client.call("GET", url, None);
    assert_eq!(reply.status, 200, "{url}: {}", reply.body);
    reply
        .body
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every file under `dir`, recursively (none if it does not exist).
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
    }
    out
}

/// The path of a Debian-packaged tool (`promtool`, `prometheus`, …); fails saying how to
/// get it.
pub fn tool(name: &str) -> String {
    debian_tool(name, "prometheus")
}

/// The path of `name` from the Debian package `package`; fails saying how to get it.
pub fn debian_tool(name: &str, package: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p.display().to_string();
        }
    }
    panic!("{name} is missing: install the Debian package `{package}` (apt-get install {package}), as .ci/run does");
}
