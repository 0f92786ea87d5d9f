//! `callscope loadgen`: simulated phone-platform traffic until Ctrl-C or `--duration`.

use callscope_runtime::shutdown::stop_signal;
use tokio_util::sync::CancellationToken;

use crate::cli::LoadgenConfig;
use crate::loadgen::LoadGenerator;

pub async fn run(config: LoadgenConfig) -> anyhow::Result<()> {
    let generator = LoadGenerator::new(&config.kafka.connection(), config.encoding, config.seed)?;
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        stop_signal().await;
        c.cancel();
    });
    println!(
        "loadgen: {} calls/s to {} ({:?} encoding); Ctrl-C to stop",
        config.rate, config.kafka.brokers, config.encoding
    );
    generator.run(config.rate, config.duration, cancel).await
}
