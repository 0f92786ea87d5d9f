//! `callscope bench …`: benchmarks are programs that print figures, never timed assertions
//! in tests.
//!
//! * [`pipeline`]: `bench ingest` (bare consumer vs the full pipeline) and `bench aggregate`
//!   (window aggregation on vs off, window state per series).
//! * [`cluster`]: `bench cluster` (several `pipeline` processes against one).
//! * [`alert_latency`]: `bench alert-latency` (breaching event to webhook notification).
//! * [`chaos`]: `bench chaos` (a soak of exactly-once: kills, two writers, store faults).
//! * [`storage`]: `bench storage` (bytes per sample in each tier, against plain Parquet
//!   and Prometheus' TSDB).
//! * [`query_speed`]: with `bench storage --queries`, queries timed next to DuckDB.
//! * [`traces`]: `bench traces` (trace lookups by id, search and dependencies at scale).
//! * [`common`]: what they share: generated metrics, statistics, scratch directories.

#[cfg(feature = "embedded-broker")]
mod alert_latency;
#[cfg(feature = "embedded-broker")]
mod chaos;
mod cluster;
mod common;
mod pipeline;
mod query_speed;
mod storage;
mod traces;

use crate::cli::BenchCommand;

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest(c) => pipeline::ingest(c).await,
        BenchCommand::Aggregate(c) => pipeline::aggregate(c).await,
        BenchCommand::Cluster(c) => cluster::run(c).await,
        #[cfg(feature = "embedded-broker")]
        BenchCommand::AlertLatency(c) => alert_latency::run(c).await,
        #[cfg(not(feature = "embedded-broker"))]
        BenchCommand::AlertLatency(_) => anyhow::bail!("bench alert-latency needs the embedded broker feature"),
        #[cfg(feature = "embedded-broker")]
        BenchCommand::Chaos(c) => chaos::run(c).await,
        #[cfg(not(feature = "embedded-broker"))]
        BenchCommand::Chaos(_) => anyhow::bail!("bench chaos needs the embedded broker feature"),
        BenchCommand::Storage(c) => storage::run(c).await,
        BenchCommand::Traces(c) => traces::run(c).await,
    }
}
