//! `callscope broker`: only the embedded Tansu broker, with callscope's topics created.

use callscope_runtime::KafkaConnection;
use callscope_runtime::shutdown::stop_signal;

use crate::broker::EmbeddedBroker;
use crate::cli::BrokerConfig;

pub async fn run(config: BrokerConfig) -> anyhow::Result<()> {
    let advertised = config.broker.kafka_advertised_addr.as_deref();
    let broker = EmbeddedBroker::start_advertising(
        config.broker.kafka_addr,
        advertised,
        &config.data_dir,
        config.broker.broker_storage,
    )
    .await?;
    let bootstrap = advertised.map_or_else(|| broker.addr.to_string(), str::to_string);
    crate::topics::create_all(&KafkaConnection::new(bootstrap.clone()), config.partitions, &Default::default()).await?;
    println!("callscope broker (Tansu) listening on {} (clients connect to {bootstrap})", broker.addr);
    stop_signal().await;
    broker.stop();
    Ok(())
}
