//! callscope: one binary whose subcommands wire the crates together.
//!
//! * [`cli`]: the flag blocks and the configuration of every subcommand.
//! * [`commands`]: one module per subcommand; [`bench`]: the benchmarks of `callscope bench`.
//! * [`loadgen`]: the simulated phone platform (`loadgen`, `standalone --demo`).
//! * [`event_sink`]: the Kafka producer of `produce`, `loadgen` and the benchmarks.
//! * [`broker`]: the embedded Kafka-compatible broker (Tansu).
//! * [`topics`]: the topics callscope reads and writes.
//! * [`logging`]: the process's log.

mod bench;
#[cfg(feature = "embedded-broker")]
mod broker;
mod cli;
mod commands;
mod event_sink;
mod loadgen;
mod logging;
mod topics;

/// mimalloc instead of the system allocator: a stored event allocates and frees a handful of
/// small strings and buffers on its way (decode, batch, Arrow, windows), and glibc's malloc
/// and free took about a fifth of `bench ingest`'s CPU, plus page-table flushes from
/// returning memory to the kernel.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = cli::parse()?;
    logging::init(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(commands::run(cli.command))
}
