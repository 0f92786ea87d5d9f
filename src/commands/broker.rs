//! `callscope broker`: only the embedded Tansu broker, with callscope's topics created.

use callscope_runtime::KafkaConnection;
use callscope_runtime::shutdown::stop_signal;

use crate::broker::EmbeddedBroker;
use crate::cli::BrokerConfig;

pub async fn run(config: BrokerConfig) -> anyhow::Result<()> {
    let broker =
        EmbeddedBroker::start(config.broker.kafka_addr, &config.data_dir, config.broker.broker_storage).await?;
    crate::topics::create_all(&KafkaConnection::new(broker.addr.to_string()), config.partitions, &Default::default())
        .await?;
    println!("callscope broker (Tansu) listening on {}", broker.addr);
    stop_signal().await;
    broker.stop();
    Ok(())
}
