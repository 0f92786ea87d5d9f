//! `callscope standalone`: everything in one process — the embedded broker (unless
//! `--brokers` names a cluster), the stream workers, the alert evaluator, the query API and,
//! with `--demo`, the traffic generator. Stops in order on Ctrl-C or SIGTERM: traffic
//! generator, workers and evaluator (flush and commit), query API, broker.

use callscope_runtime::shutdown::stop_signal;
use tokio_util::sync::CancellationToken;

use super::pipeline::Workers;
use super::query_api::{api_state, serve_api};
use crate::cli::{EncodingArg, StandaloneConfig};
use crate::loadgen::LoadGenerator;

pub async fn run(config: StandaloneConfig) -> anyhow::Result<()> {
    let args = &config.workers;
    let tiers = args.storage.tiers()?;
    #[cfg(feature = "embedded-broker")]
    let mut embedded = None;
    let brokers = match &args.kafka.brokers {
        Some(b) => b.clone(),
        None => {
            #[cfg(feature = "embedded-broker")]
            {
                let advertised = config.broker.kafka_advertised_addr.as_deref();
                let broker = crate::broker::EmbeddedBroker::start_advertising(
                    config.broker.kafka_addr,
                    advertised,
                    &args.storage.data_dir,
                    config.broker.broker_storage,
                )
                .await?;
                let addr = advertised.map_or_else(|| broker.addr.to_string(), str::to_string);
                embedded = Some(broker);
                addr
            }
            #[cfg(not(feature = "embedded-broker"))]
            anyhow::bail!("this build has no embedded broker: pass --brokers HOST:PORT");
        }
    };
    let connection = args.kafka.connection(&brokers);
    let workers = Workers::start(args, &connection, &tiers, "standalone").await?;
    let state = api_state(
        &tiers,
        Some((&connection, &args.ingest.group_id)),
        &args.kafka.otlp_topics(),
        &config.query,
        &args.windows,
    )?;
    let http_cancel = CancellationToken::new();
    let (http_addr, http) = serve_api(config.http.http_addr, state, http_cancel.clone()).await?;

    let demo_cancel = CancellationToken::new();
    let demo = if config.demo {
        let generator = LoadGenerator::new(&connection, EncodingArg::Mixed, None)?;
        let cancel = demo_cancel.clone();
        let rate = config.demo_rate;
        Some(tokio::spawn(async move {
            if let Err(e) = generator.run(rate, None, cancel).await {
                tracing::error!(error = %e, "traffic generator stopped");
            }
        }))
    } else {
        None
    };

    println!("callscope standalone is running");
    println!("  Kafka bootstrap : {brokers}");
    println!(
        "  query API       : http://{http_addr}  (open it in a browser: the dashboards; or try /monitoring/health)"
    );
    for (name, tier) in tiers.iter() {
        println!("  {:<16}: {}", format!("{name} tier"), tier.dir_url(""));
    }
    if config.demo {
        println!("  demo traffic    : {} simulated calls/s", config.demo_rate);
    }
    println!("Press Ctrl-C to stop.");

    stop_signal().await;
    tracing::info!("stopping: traffic generator, workers (flush and commit), query API, broker");
    demo_cancel.cancel();
    if let Some(d) = demo {
        let _ = d.await;
    }
    workers.stop().await;
    http_cancel.cancel();
    let _ = http.await;
    #[cfg(feature = "embedded-broker")]
    if let Some(b) = embedded {
        b.stop();
    }
    Ok(())
}
