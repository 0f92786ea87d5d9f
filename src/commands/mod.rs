//! One module per subcommand; [`run`] hands the parsed command to it. The benchmarks of
//! `callscope bench` live in [`crate::bench`].

#[cfg(feature = "embedded-broker")]
mod broker;
mod grafana;
mod lifecycle;
mod loadgen;
mod pipeline;
mod produce;
mod query_api;
mod sql;
mod standalone;

use crate::cli::Command;

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Standalone(c) => standalone::run(c).await,
        Command::Pipeline(c) => pipeline::run(c).await,
        Command::QueryApi(c) => query_api::run(c).await,
        #[cfg(feature = "embedded-broker")]
        Command::Broker(c) => broker::run(c).await,
        Command::Produce(c) => produce::run(c).await,
        Command::Loadgen(c) => loadgen::run(c).await,
        Command::Sql(c) => sql::run(c).await,
        Command::Lifecycle(c) => lifecycle::run(c).await,
        Command::Grafana(c) => grafana::run(c).await,
        Command::Bench(c) => crate::bench::run(c).await,
    }
}
