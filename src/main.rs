//! callscope: one binary whose subcommands wire the crates together.

mod bench;
#[cfg(feature = "embedded-broker")]
mod bench_alert;
#[cfg(feature = "embedded-broker")]
mod broker;
mod cli;
mod loadgen;
mod produce;
mod run;
mod sql_cmd;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse_from(cli::args_with_config_file()?);
    cli::init_tracing(&cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run::dispatch(cli.command))
}
