//! Command-line configuration: one clap `Config` per subcommand, built from reusable
//! flattened blocks. Every flag has a `CALLSCOPE_*` environment variable; a TOML file given
//! with `--config FILE` (or `CALLSCOPE_CONFIG`) supplies values for flags that neither the
//! command line nor the environment set (its keys are the long flag names, e.g.
//! `http-addr = "127.0.0.1:8080"`). Precedence: flag, environment, file, default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "callscope",
    version,
    about = "Observability pipeline for an AI phone-answering platform: Kafka → stream workers → Parquet tiers → DataFusion query API"
)]
pub struct Cli {
    /// TOML file with defaults for any flag (keys are long flag names).
    #[arg(long, global = true, env = "CALLSCOPE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log format.
    #[arg(long, global = true, env = "CALLSCOPE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process: embedded Kafka-compatible broker (unless --brokers), stream
    /// workers, query API, and with --demo a simulated phone platform.
    Standalone(StandaloneConfig),
    /// Stream workers only, against an external Kafka cluster.
    Pipeline(PipelineConfig),
    /// Query API only.
    QueryApi(QueryApiConfig),
    /// Run only the embedded Tansu broker (for tests and local development).
    #[cfg(feature = "embedded-broker")]
    Broker(BrokerConfig),
    /// Produce JSON-lines events from a file or stdin to a topic, as Avro or JSON.
    Produce(ProduceConfig),
    /// Simulated phone-platform traffic at a given call rate.
    Loadgen(LoadgenConfig),
    /// Run one read-only SQL query over a data directory or object-store URL and print it.
    Sql(SqlConfig),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Where Kafka is.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (`host:port,…`).
    #[arg(long, env = "CALLSCOPE_BROKERS")]
    pub brokers: Option<String>,
    /// Extra librdkafka property `key=value` (repeatable), e.g. `security.protocol=SASL_SSL`.
    #[arg(long = "kafka-property", short = 'X', env = "CALLSCOPE_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = parse_key_value)]
    pub kafka_properties: Vec<(String, String)>,
    /// Partitions of topics that callscope creates.
    #[arg(long, env = "CALLSCOPE_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
}

impl KafkaArgs {
    pub fn connection(&self, brokers: &str) -> callscope_pipeline::kafka::KafkaConnection {
        let mut c = callscope_pipeline::kafka::KafkaConnection::new(brokers);
        c.properties = self.kafka_properties.iter().cloned().collect();
        c
    }
}

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Local data directory: the broker's database and, unless --hot-url is set, the tiers.
    #[arg(long, env = "CALLSCOPE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Object-store URL of the hot tier (`file:///…`, `s3://bucket/prefix`, `memory:///`).
    /// Default: `<data-dir>/hot`.
    #[arg(long, env = "CALLSCOPE_HOT_URL")]
    pub hot_url: Option<String>,
    /// Object-store option `key=value` (repeatable), e.g. `aws_endpoint=http://127.0.0.1:9000`,
    /// `aws_allow_http=true`. AWS_* environment variables are read as well.
    #[arg(long = "storage-option", env = "CALLSCOPE_STORAGE_OPTIONS", value_delimiter = ',', value_parser = parse_key_value)]
    pub storage_options: Vec<(String, String)>,
}

impl StorageArgs {
    pub fn hot_tier(&self) -> anyhow::Result<callscope_storage::Tier> {
        let mut config = match &self.hot_url {
            Some(url) => callscope_storage::TierConfig::new(url.clone()),
            None => callscope_storage::TierConfig::local_dir(&self.data_dir.join("hot"))
                .with_context(|| format!("cannot create {}", self.data_dir.join("hot").display()))?,
        };
        for (k, v) in std::env::vars() {
            if k.starts_with("AWS_") {
                config.options.insert(k.to_lowercase(), v);
            }
        }
        config.options.extend(self.storage_options.iter().cloned());
        Ok(callscope_storage::Tier::open(&config)?)
    }
}

/// How workers ingest.
#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// Consumer group of the stream workers.
    #[arg(long, env = "CALLSCOPE_GROUP_ID", default_value = "callscope-pipeline")]
    pub group_id: String,
    /// Flush a partition's batch at this many messages.
    #[arg(long, env = "CALLSCOPE_FLUSH_ROWS", default_value_t = 50_000)]
    pub flush_rows: usize,
    /// Flush a partition's batch when its oldest message is this old (data is queryable about this long after it is produced).
    #[arg(long, env = "CALLSCOPE_FLUSH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub flush_interval: Duration,
    /// Events whose time is further than this from now are dead-lettered.
    #[arg(long, env = "CALLSCOPE_MAX_TIME_SKEW", default_value = "7d", value_parser = humantime::parse_duration)]
    pub max_time_skew: Duration,
    /// Stream workers in this process (each a consumer-group member).
    #[arg(long, env = "CALLSCOPE_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Worker id prefix (default: random).
    #[arg(long, env = "CALLSCOPE_WORKER_ID")]
    pub worker_id: Option<String>,
}

/// Event-time windows of the stream workers (and the resolutions the query API reads).
#[derive(Debug, Clone, Args)]
pub struct WindowArgs {
    /// Window lengths of the metric roll-ups, comma separated.
    #[arg(long, env = "CALLSCOPE_WINDOW_RESOLUTIONS", default_value = "10s,1m,1h", value_delimiter = ',', value_parser = humantime::parse_duration)]
    pub window_resolutions: Vec<Duration>,
    /// How far behind the newest event time of a partition its windows stay open.
    #[arg(long, env = "CALLSCOPE_ALLOWED_LATENESS", default_value = "30s", value_parser = humantime::parse_duration)]
    pub allowed_lateness: Duration,
    /// A partition without events for this long stops holding its windows open.
    #[arg(long, env = "CALLSCOPE_IDLE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Write correction rows for events that arrive after their window closed
    /// (they are stored raw and counted either way).
    #[arg(long, env = "CALLSCOPE_LATE_CORRECTIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub late_corrections: bool,
    /// Most active series per metric name and partition; samples of further series are
    /// dead-lettered (and stored raw).
    #[arg(long, env = "CALLSCOPE_MAX_SERIES_PER_METRIC", default_value_t = 10_000)]
    pub max_series_per_metric: usize,
    /// Checkpoint window state at most this often while data flows.
    #[arg(long, env = "CALLSCOPE_CHECKPOINT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,
    /// Store raw events only, without windows.
    #[arg(long, env = "CALLSCOPE_NO_AGGREGATION")]
    pub no_aggregation: bool,
}

/// Alert evaluation and notification.
#[derive(Debug, Clone, clap::Args)]
pub struct AlertArgs {
    /// Prometheus rule files to evaluate (comma separated); edits are picked up within 2 s.
    #[arg(long, env = "CALLSCOPE_ALERT_RULES", value_delimiter = ',')]
    pub alert_rules: Vec<std::path::PathBuf>,
    /// Notification routes and receivers (Alertmanager-shaped YAML; `${ENV}` expanded).
    #[arg(long, env = "CALLSCOPE_NOTIFY_CONFIG")]
    pub notify_config: Option<std::path::PathBuf>,
    /// Do not load the built-in rules for the phone platform.
    #[arg(long, env = "CALLSCOPE_NO_DEFAULT_RULES")]
    pub no_default_rules: bool,
    /// Evaluate rules on the open windows this often (and after every batch of messages).
    #[arg(long, env = "CALLSCOPE_ALERT_EVAL_INTERVAL", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub alert_eval_interval: Duration,
    /// History the evaluator reads back on start to rebuild alert state.
    #[arg(long, env = "CALLSCOPE_ALERT_REPLAY", default_value = "35m", value_parser = humantime::parse_duration)]
    pub alert_replay: Duration,
    /// After this long without metrics, the wall clock advances alert time (absence rules).
    #[arg(long, env = "CALLSCOPE_ALERT_IDLE_AFTER", default_value = "30s", value_parser = humantime::parse_duration)]
    pub alert_idle_after: Duration,
    /// Run no alert evaluator in this process.
    #[arg(long, env = "CALLSCOPE_NO_ALERTING")]
    pub no_alerting: bool,
}

impl AlertArgs {
    pub fn config(
        &self,
        connection: &callscope_pipeline::kafka::KafkaConnection,
        windows: &WindowArgs,
        instance: &str,
    ) -> Option<callscope_pipeline::alerting::AlertingConfig> {
        if self.no_alerting {
            return None;
        }
        let mut c = callscope_pipeline::alerting::AlertingConfig::new(connection.clone(), instance);
        c.rule_files = self.alert_rules.clone();
        c.notify_file = self.notify_config.clone();
        c.default_rules = !self.no_default_rules;
        c.eval_interval = self.alert_eval_interval.max(Duration::from_millis(10));
        c.replay = self.alert_replay;
        c.engine.idle_after_ms = self.alert_idle_after.as_millis() as i64;
        c.engine.resolution_ms = windows.resolutions_ms().first().copied().unwrap_or(10_000);
        Some(c)
    }
}

impl WindowArgs {
    pub fn aggregation(&self) -> anyhow::Result<Option<callscope_pipeline::AggregationConfig>> {
        if self.no_aggregation {
            return Ok(None);
        }
        let config = callscope_pipeline::AggregationConfig {
            resolutions_ms: self.resolutions_ms(),
            allowed_lateness_ms: self.allowed_lateness.as_millis() as i64,
            idle_timeout: self.idle_timeout,
            late_corrections: self.late_corrections,
            max_series_per_metric: self.max_series_per_metric,
            checkpoint_interval: self.checkpoint_interval,
        };
        config.validated().map(Some).map_err(|e| anyhow::anyhow!("window settings: {e}"))
    }

    pub fn resolutions_ms(&self) -> Vec<i64> {
        let mut r: Vec<i64> = self.window_resolutions.iter().map(|d| d.as_millis() as i64).collect();
        r.sort_unstable();
        r.dedup();
        r
    }
}

/// The query API's own settings.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// Most rows one /monitoring/sql answer returns.
    #[arg(long, env = "CALLSCOPE_SQL_MAX_ROWS", default_value_t = 10_000)]
    pub sql_max_rows: usize,
    /// Time limit of one SQL query.
    #[arg(long, env = "CALLSCOPE_SQL_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub sql_timeout: Duration,
    /// Memory one query may use, in MiB.
    #[arg(long, env = "CALLSCOPE_QUERY_MEMORY_MB", default_value_t = 2048)]
    pub query_memory_mb: usize,
}

#[derive(Debug, Args)]
pub struct StandaloneConfig {
    /// Address of the embedded broker (ignored with --brokers).
    #[arg(long, env = "CALLSCOPE_KAFKA_ADDR", default_value = "127.0.0.1:9092")]
    pub kafka_addr: SocketAddr,
    /// Address of the query API.
    #[arg(long, env = "CALLSCOPE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Embedded broker storage: `sqlite` (in the data directory; survives restarts) or `memory`.
    #[arg(long, env = "CALLSCOPE_BROKER_STORAGE", default_value = "sqlite", value_parser = ["sqlite", "memory"])]
    pub broker_storage: String,
    /// Also run the traffic generator.
    #[arg(long, env = "CALLSCOPE_DEMO")]
    pub demo: bool,
    /// Simulated calls per second with --demo.
    #[arg(long, env = "CALLSCOPE_DEMO_RATE", default_value_t = 20.0)]
    pub demo_rate: f64,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub ingest: IngestArgs,
    #[command(flatten)]
    pub windows: WindowArgs,
    #[command(flatten)]
    pub alerts: AlertArgs,
    #[command(flatten)]
    pub query: QueryArgs,
}

#[derive(Debug, Args)]
pub struct PipelineConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub ingest: IngestArgs,
    #[command(flatten)]
    pub windows: WindowArgs,
    #[command(flatten)]
    pub alerts: AlertArgs,
    /// Serve this process's /metrics and /health here (optional).
    #[arg(long, env = "CALLSCOPE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct QueryApiConfig {
    #[arg(long, env = "CALLSCOPE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub query: QueryArgs,
    #[command(flatten)]
    pub windows: WindowArgs,
    /// Consumer group whose lag /monitoring/health reports.
    #[arg(long, env = "CALLSCOPE_GROUP_ID", default_value = "callscope-pipeline")]
    pub group_id: String,
}

#[cfg(feature = "embedded-broker")]
#[derive(Debug, Args)]
pub struct BrokerConfig {
    #[arg(long, env = "CALLSCOPE_KAFKA_ADDR", default_value = "127.0.0.1:9092")]
    pub kafka_addr: SocketAddr,
    /// Directory of the broker database.
    #[arg(long, env = "CALLSCOPE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "CALLSCOPE_BROKER_STORAGE", default_value = "sqlite", value_parser = ["sqlite", "memory"])]
    pub broker_storage: String,
    /// Create callscope's topics with this many partitions once the broker is up.
    #[arg(long, env = "CALLSCOPE_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncodingArg {
    /// Confluent wire format (magic byte, schema id, Avro datum).
    Avro,
    Json,
    /// Alternate Avro and JSON message by message.
    Mixed,
}

#[derive(Debug, Args)]
pub struct ProduceConfig {
    #[arg(long, env = "CALLSCOPE_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Dataset of the events: metrics, spans or alerts.
    #[arg(long, env = "CALLSCOPE_DATASET", value_parser = ["metrics", "spans", "alerts"])]
    pub dataset: String,
    /// Topic (default: the dataset's callscope topic).
    #[arg(long, env = "CALLSCOPE_TOPIC")]
    pub topic: Option<String>,
    #[arg(long, value_enum, default_value = "avro", env = "CALLSCOPE_ENCODING")]
    pub encoding: EncodingArg,
    /// JSON-lines file; `-` for stdin.
    #[arg(long, default_value = "-", env = "CALLSCOPE_FILE")]
    pub file: String,
    #[arg(long = "kafka-property", short = 'X', value_delimiter = ',', value_parser = parse_key_value, env = "CALLSCOPE_KAFKA_PROPERTIES")]
    pub kafka_properties: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct LoadgenConfig {
    #[arg(long, env = "CALLSCOPE_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Simulated calls per second (each call is about 20 events).
    #[arg(long, default_value_t = 20.0, env = "CALLSCOPE_RATE")]
    pub rate: f64,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration, env = "CALLSCOPE_DURATION")]
    pub duration: Option<Duration>,
    #[arg(long, value_enum, default_value = "mixed", env = "CALLSCOPE_ENCODING")]
    pub encoding: EncodingArg,
    /// Random seed (default: from the clock).
    #[arg(long, env = "CALLSCOPE_SEED")]
    pub seed: Option<u64>,
    #[arg(long = "kafka-property", short = 'X', value_delimiter = ',', value_parser = parse_key_value, env = "CALLSCOPE_KAFKA_PROPERTIES")]
    pub kafka_properties: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct SqlConfig {
    /// The query.
    pub query: String,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Output format.
    #[arg(long, env = "CALLSCOPE_FORMAT", default_value = "table", value_parser = ["table", "json", "csv"])]
    pub format: String,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Bare rdkafka consumer vs the full pipeline on the same preloaded topic.
    Ingest(BenchIngestConfig),
    /// Pipeline throughput with window aggregation on vs off on the same stream, window
    /// state per active series, and peak memory.
    Aggregate(BenchAggregateConfig),
    /// Latency from producing a breaching event to the webhook receiving its notification,
    /// under background traffic (p50 / p99 over trials).
    AlertLatency(BenchAlertConfig),
}

#[derive(Debug, Args)]
pub struct BenchAlertConfig {
    /// Background metric events per second.
    #[arg(long, default_value_t = 50_000, env = "CALLSCOPE_BENCH_RATE")]
    pub rate: u64,
    /// Breaching events, one per trial.
    #[arg(long, default_value_t = 30, env = "CALLSCOPE_BENCH_TRIALS")]
    pub trials: usize,
    /// Background traffic before the first trial.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Pause between trials.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub pause: Duration,
    #[arg(long, default_value_t = 4, env = "CALLSCOPE_PARTITIONS")]
    pub partitions: i32,
    #[arg(long, env = "CALLSCOPE_BROKER_STORAGE", default_value = "memory", value_parser = ["sqlite", "memory"])]
    pub broker_storage: String,
    /// Evaluate only the benchmark's rule (the default pack is on otherwise).
    #[arg(long)]
    pub no_default_rules: bool,
}

#[derive(Debug, Args)]
pub struct BenchAggregateConfig {
    #[command(flatten)]
    pub stream: BenchIngestConfig,
    /// Active series for the state-size measurement.
    #[arg(long, default_value_t = 100_000, env = "CALLSCOPE_BENCH_SERIES")]
    pub series: usize,
}

#[derive(Debug, Args)]
pub struct BenchIngestConfig {
    /// Events to preload and read.
    #[arg(long, default_value_t = 500_000, env = "CALLSCOPE_BENCH_EVENTS")]
    pub events: usize,
    /// Repetitions; medians are reported.
    #[arg(long, default_value_t = 3, env = "CALLSCOPE_BENCH_RUNS")]
    pub runs: usize,
    #[arg(long, default_value_t = 4, env = "CALLSCOPE_PARTITIONS")]
    pub partitions: i32,
    #[arg(long, value_enum, default_value = "avro", env = "CALLSCOPE_ENCODING")]
    pub encoding: EncodingArg,
    /// Use this cluster instead of an in-process broker.
    #[arg(long, env = "CALLSCOPE_BROKERS")]
    pub brokers: Option<String>,
    /// Embedded broker storage when --brokers is not given.
    #[arg(long, env = "CALLSCOPE_BROKER_STORAGE", default_value = "memory", value_parser = ["sqlite", "memory"])]
    pub broker_storage: String,
    /// Flush size of the pipeline under test.
    #[arg(long, default_value_t = 50_000, env = "CALLSCOPE_FLUSH_ROWS")]
    pub flush_rows: usize,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// The command line with values from `--config FILE` (or `CALLSCOPE_CONFIG`) appended for
/// every flag of the chosen subcommand that neither the command line nor its environment
/// variable sets. Keys are long flag names; keys that the subcommand does not have are
/// skipped, so one file can serve every subcommand.
pub fn args_with_config_file() -> anyhow::Result<Vec<std::ffi::OsString>> {
    use clap::CommandFactory;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let strings: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let path = strings
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| strings.get(i + 1).cloned())
        .or_else(|| strings.iter().find_map(|a| a.strip_prefix("--config=").map(str::to_string)))
        .or_else(|| std::env::var("CALLSCOPE_CONFIG").ok());
    let Some(path) = path else { return Ok(args) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read config file {path}"))?;
    let table: BTreeMap<String, toml::Value> =
        toml::from_str(&text).with_context(|| format!("config file {path} is not valid TOML"))?;
    let command = Cli::command();
    let Some(sub) = strings.iter().skip(1).find_map(|a| command.find_subcommand(a)) else { return Ok(args) };
    // Nested subcommands (bench ingest) keep their own flags.
    let sub = strings.iter().skip(1).find_map(|a| sub.find_subcommand(a)).unwrap_or(sub);
    for (key, value) in table {
        let Some(arg) = sub.get_arguments().find(|a| a.get_long() == Some(key.as_str())) else {
            continue;
        };
        let flag = format!("--{key}");
        if strings.iter().any(|a| *a == flag || a.starts_with(&format!("{flag}="))) {
            continue;
        }
        if arg.get_env().is_some_and(|env| std::env::var_os(env).is_some()) {
            continue;
        }
        let values: Vec<String> = match value {
            toml::Value::Array(items) => items.into_iter().map(toml_text).collect(),
            // A switch is given or not; a flag that takes a value gets `true`/`false`.
            toml::Value::Boolean(b) if arg.get_action().takes_values() => vec![b.to_string()],
            toml::Value::Boolean(b) => {
                if b {
                    args.push(flag.into());
                }
                continue;
            }
            other => vec![toml_text(other)],
        };
        for v in values {
            args.push(flag.clone().into());
            args.push(v.into());
        }
    }
    Ok(args)
}

fn toml_text(value: toml::Value) -> String {
    match value {
        toml::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Tansu logs every request at INFO; keep it at WARN unless the filter names it.
const QUIET_BROKER: &str = "tansu_broker=warn,tansu_storage=warn,tansu_sans_io=warn,tansu_schema=warn,tansu_service=warn,tansu_auth=warn,tansu_model=warn,librdkafka=warn,rdkafka=warn";

pub fn init_tracing(format: &str) {
    let base = std::env::var("CALLSCOPE_LOG").unwrap_or_else(|_| "info".to_string());
    let directives = if base.contains("tansu") { base } else { format!("{base},{QUIET_BROKER}") };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info,{QUIET_BROKER}")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
