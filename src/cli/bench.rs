//! The configuration of `callscope bench …`.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::broker::BrokerStorage;
use super::encoding::EncodingArg;
use super::ingest::DEFAULT_FLUSH_ROWS;
use super::kafka::DEFAULT_PARTITIONS;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Bare rdkafka consumer vs the full pipeline on the same preloaded topic.
    Ingest(BenchIngestConfig),
    /// Pipeline throughput with window aggregation on vs off on the same stream, window
    /// state per active series, and peak memory.
    Aggregate(BenchAggregateConfig),
    /// Aggregate events/s of several `pipeline` processes in one consumer group against
    /// one process, on the same preloaded topic; CPU time and peak memory per process.
    Cluster(BenchClusterConfig),
    /// Latency from producing a breaching event to the webhook receiving its notification,
    /// under background traffic (p50 / p99 over trials).
    AlertLatency(BenchAlertConfig),
    /// Soak of exactly-once: two pipelines, one killed with SIGKILL and restarted in a loop,
    /// faults injected into the store; prints events produced, stored, duplicated, lost.
    Chaos(BenchChaosConfig),
    /// Bytes per sample of realistic metric series in each tier after the lifecycle, next
    /// to a plain float Parquet writer and (with promtool) a Prometheus TSDB block.
    Storage(BenchStorageConfig),
    /// Trace lookups by id without a time range (old and new), a search and the dependency
    /// graph at scale, and the bytes per span stored.
    Traces(BenchTracesConfig),
}

#[derive(Debug, Args)]
pub struct BenchTracesConfig {
    /// Spans generated.
    #[arg(long, default_value_t = 10_000_000)]
    pub spans: u64,
    /// Days the spans are spread over (ending now).
    #[arg(long, default_value_t = 3)]
    pub days: u32,
    /// Trace ids looked up from the oldest day, and as many from the newest hour.
    #[arg(long, default_value_t = 100)]
    pub lookups: usize,
    /// Random seed of the generator.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct BenchStorageConfig {
    /// Series generated.
    #[arg(long, default_value_t = 1000)]
    pub series: usize,
    /// Hours of samples per series.
    #[arg(long, default_value_t = 6)]
    pub hours: u32,
    /// Sample interval.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    pub interval: Duration,
    /// Random seed of the generator.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// After compaction, also time a raw SQL aggregate and a dashboard query (p95 per
    /// series per minute) next to DuckDB on the same files (needs Python's `duckdb`).
    #[arg(long)]
    pub queries: bool,
    /// Repetitions of each timed query (after one untimed run); medians are reported.
    #[arg(long, default_value_t = 25)]
    pub query_runs: usize,
}

#[derive(Debug, Args)]
pub struct BenchChaosConfig {
    /// How long events are produced (kills and faults go on meanwhile).
    #[arg(long, default_value = "60s")]
    pub duration: humantime::Duration,
    /// Metric events per second.
    #[arg(long, default_value_t = 2_000, env = "CALLSCOPE_BENCH_RATE")]
    pub rate: u64,
    /// One of the two pipelines is killed and restarted this often (alternating).
    #[arg(long, default_value = "5s")]
    pub kill_every: humantime::Duration,
    /// Faults injected into every store call of the pipelines (syntax of the storage
    /// crate's fault_store; empty for none).
    #[arg(long, default_value = "put:*:error:0.02;rename:*:error:0.02;get:*:latency:2ms")]
    pub fault_spec: String,
    /// After production stops, how long to wait for every event to be stored.
    #[arg(long, default_value = "120s")]
    pub settle: humantime::Duration,
    /// Partitions of the topics.
    #[arg(long, default_value_t = DEFAULT_PARTITIONS, env = "CALLSCOPE_PARTITIONS")]
    pub partitions: i32,
    /// How the events are encoded.
    #[arg(long, value_enum, default_value = "json", env = "CALLSCOPE_ENCODING")]
    pub encoding: EncodingArg,
    /// Embedded broker storage.
    #[arg(long, env = "CALLSCOPE_BROKER_STORAGE", value_enum, default_value = "memory")]
    pub broker_storage: BrokerStorage,
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
    /// Partitions of the benchmark's topics.
    #[arg(long, default_value_t = DEFAULT_PARTITIONS, env = "CALLSCOPE_PARTITIONS")]
    pub partitions: i32,
    /// Embedded broker storage.
    #[arg(long, env = "CALLSCOPE_BROKER_STORAGE", value_enum, default_value = "memory")]
    pub broker_storage: BrokerStorage,
    /// Evaluate only the benchmark's rules (the default pack is on otherwise).
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
pub struct BenchClusterConfig {
    #[command(flatten)]
    pub stream: BenchIngestConfig,
    /// `pipeline` processes of the cluster.
    #[arg(long, default_value_t = 3)]
    pub pipelines: usize,
    /// Stream workers in each process (`pipeline --workers`), on both sides.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
}

#[derive(Debug, Args)]
pub struct BenchIngestConfig {
    /// Events to preload and read.
    #[arg(long, default_value_t = 500_000, env = "CALLSCOPE_BENCH_EVENTS")]
    pub events: usize,
    /// Repetitions; medians are reported.
    #[arg(long, default_value_t = 3, env = "CALLSCOPE_BENCH_RUNS")]
    pub runs: usize,
    /// Partitions of the benchmark's topics.
    #[arg(long, default_value_t = DEFAULT_PARTITIONS, env = "CALLSCOPE_PARTITIONS")]
    pub partitions: i32,
    /// How the preloaded events are encoded.
    #[arg(long, value_enum, default_value = "avro", env = "CALLSCOPE_ENCODING")]
    pub encoding: EncodingArg,
    /// Use this cluster instead of an in-process broker.
    #[arg(long, env = "CALLSCOPE_BROKERS")]
    pub brokers: Option<String>,
    /// Embedded broker storage when --brokers is not given.
    #[arg(long, env = "CALLSCOPE_BROKER_STORAGE", value_enum, default_value = "memory")]
    pub broker_storage: BrokerStorage,
    /// Flush size of the pipeline under test.
    #[arg(long, default_value_t = DEFAULT_FLUSH_ROWS, env = "CALLSCOPE_FLUSH_ROWS")]
    pub flush_rows: usize,
}
