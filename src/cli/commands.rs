//! The configuration of each subcommand but `bench` ([`super::bench`]): the flag blocks it
//! flattens and the flags of its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use callscope_schemas::Dataset;
use clap::{Args, ValueEnum};

use super::broker::BrokerArgs;
use super::encoding::EncodingArg;
use super::http::HttpArgs;
use super::ingest::DEFAULT_GROUP_ID;
use super::kafka::{ClientKafkaArgs, DEFAULT_PARTITIONS, KafkaArgs};
use super::query::QueryArgs;
use super::storage::{DEFAULT_DATA_DIR, StorageArgs};
use super::values::dataset;
use super::windows::WindowArgs;
use super::workers::WorkersArgs;

/// Simulated calls per second of `loadgen` and `standalone --demo`.
const DEFAULT_CALL_RATE: f64 = 20.0;

#[derive(Debug, Args)]
pub struct StandaloneConfig {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    /// Also run the traffic generator.
    #[arg(long, env = "CALLSCOPE_DEMO")]
    pub demo: bool,
    /// Simulated calls per second with --demo.
    #[arg(long, env = "CALLSCOPE_DEMO_RATE", default_value_t = DEFAULT_CALL_RATE)]
    pub demo_rate: f64,
    #[command(flatten)]
    pub workers: WorkersArgs,
    #[command(flatten)]
    pub query: QueryArgs,
}

#[derive(Debug, Args)]
pub struct PipelineConfig {
    #[command(flatten)]
    pub workers: WorkersArgs,
    /// Serve this process's /metrics and /health here (optional).
    #[arg(long, env = "CALLSCOPE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct QueryApiConfig {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub query: QueryArgs,
    #[command(flatten)]
    pub windows: WindowArgs,
    /// Consumer group whose lag /monitoring/health reports.
    #[arg(long, env = "CALLSCOPE_GROUP_ID", default_value = DEFAULT_GROUP_ID)]
    pub group_id: String,
}

#[derive(Debug, Args)]
pub struct BrokerConfig {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Directory of the broker database.
    #[arg(long, env = "CALLSCOPE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Create callscope's topics with this many partitions once the broker is up.
    #[arg(long, env = "CALLSCOPE_PARTITIONS", default_value_t = DEFAULT_PARTITIONS)]
    pub partitions: i32,
}

#[derive(Debug, Args)]
pub struct ProduceConfig {
    #[command(flatten)]
    pub kafka: ClientKafkaArgs,
    /// Dataset of the events: metrics, spans or alerts.
    #[arg(long, env = "CALLSCOPE_DATASET", value_parser = dataset())]
    pub dataset: Dataset,
    /// Topic (default: the dataset's callscope topic).
    #[arg(long, env = "CALLSCOPE_TOPIC")]
    pub topic: Option<String>,
    /// How the events are encoded.
    #[arg(long, value_enum, default_value = "avro", env = "CALLSCOPE_ENCODING")]
    pub encoding: EncodingArg,
    /// JSON-lines file; `-` for stdin.
    #[arg(long, default_value = "-", env = "CALLSCOPE_FILE")]
    pub file: String,
}

#[derive(Debug, Args)]
pub struct LoadgenConfig {
    #[command(flatten)]
    pub kafka: ClientKafkaArgs,
    /// Simulated calls per second (each call is about 20 events).
    #[arg(long, default_value_t = DEFAULT_CALL_RATE, env = "CALLSCOPE_RATE")]
    pub rate: f64,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration, env = "CALLSCOPE_DURATION")]
    pub duration: Option<Duration>,
    /// How the events are encoded.
    #[arg(long, value_enum, default_value = "mixed", env = "CALLSCOPE_ENCODING")]
    pub encoding: EncodingArg,
    /// Random seed (default: from the clock).
    #[arg(long, env = "CALLSCOPE_SEED")]
    pub seed: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SqlConfig {
    /// The query.
    pub query: String,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Output format.
    #[arg(long, env = "CALLSCOPE_FORMAT", value_enum, default_value = "table")]
    pub format: SqlFormat,
}

/// How `callscope sql` prints its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqlFormat {
    Table,
    /// One JSON object per row.
    Json,
    /// A header line, then one line per row.
    Csv,
}
