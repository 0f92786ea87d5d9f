//! Command-line configuration: one clap `Config` per subcommand ([`commands`], [`bench`]),
//! built from reusable flattened blocks (Kafka, storage, embedded broker, HTTP, query,
//! ingest, windows, alerting). Every flag has a `CALLSCOPE_*` environment variable; a TOML
//! file given with `--config FILE` (or `CALLSCOPE_CONFIG`) supplies values for flags that
//! neither the command line nor the environment set ([`config_file`]). Precedence: flag,
//! environment, file, default.
//!
//! The defaults written here are the only ones: each block builds its library config
//! (`WorkerConfig`, `AggregationConfig`, `AlertingConfig`, `EngineOptions`, …) by setting
//! every field it has a flag for, and code that runs without a command line (the
//! benchmarks) takes a block's defaults with [`defaults`].

pub mod alerting;
pub mod bench;
pub mod broker;
pub mod commands;
pub mod config_file;
pub mod encoding;
pub mod grafana;
pub mod http;
pub mod ingest;
pub mod kafka;
pub mod lifecycle;
pub mod query;
pub mod storage;
pub mod values;
pub mod windows;
pub mod workers;

use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

pub use alerting::AlertArgs;
pub use bench::{
    BenchAggregateConfig, BenchAlertConfig, BenchChaosConfig, BenchClusterConfig, BenchCommand, BenchIngestConfig,
    BenchStorageConfig, BenchTracesConfig,
};
pub use broker::BrokerStorage;
pub use commands::{
    BrokerConfig, LoadgenConfig, PipelineConfig, ProduceConfig, QueryApiConfig, SqlConfig, SqlFormat, StandaloneConfig,
};
pub use encoding::EncodingArg;
pub use ingest::IngestArgs;
pub use lifecycle::LifecycleCommand;
pub use query::QueryArgs;
pub use windows::WindowArgs;
pub use workers::WorkersArgs;

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
    #[arg(long, global = true, env = "CALLSCOPE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
    /// The storage lifecycle (compaction, retention): run it now, show its policies.
    #[command(subcommand)]
    Lifecycle(LifecycleCommand),
    /// Grafana: deploy the dashboards to an instance, or write provisioning files.
    #[command(subcommand)]
    Grafana(grafana::GrafanaCommand),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Parses the command line, with values from `--config FILE` for flags it leaves unset.
pub fn parse() -> anyhow::Result<Cli> {
    Ok(Cli::parse_from(config_file::args_with_config_file(&Cli::command())?))
}

/// A flag block with every flag at its default, ignoring the environment: the settings of
/// code that runs without a command line of its own (the benchmarks), so that it runs with
/// the same defaults as the commands.
pub fn defaults<T: clap::Args + clap::FromArgMatches>() -> anyhow::Result<T> {
    let command = T::augment_args(clap::Command::new("defaults")).mut_args(|arg| arg.env(None::<&str>));
    let matches = command.try_get_matches_from(["defaults"]).context("the defaults of a flag block do not parse")?;
    T::from_arg_matches(&matches).context("the defaults of a flag block do not parse")
}

#[cfg(test)]
mod tests;
