//! Kafka plumbing shared by the workers and the binary: client configuration, topic
//! creation through the admin API (Tansu does not create topics on first use), and the
//! dead-letter producer.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureProducer;

use crate::{PipelineError, Result};

/// Connection settings for a Kafka cluster.
#[derive(Debug, Clone)]
pub struct KafkaConnection {
    /// `host:port[,host:port…]`
    pub brokers: String,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, …).
    pub properties: BTreeMap<String, String>,
}

impl KafkaConnection {
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConnection { brokers: brokers.into(), properties: BTreeMap::new() }
    }

    /// A librdkafka configuration with the brokers and extra properties set.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config.set("log_level", "4");
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }

    /// A producer that waits for all in-sync replicas.
    pub fn producer(&self) -> Result<FutureProducer> {
        Ok(self.client_config().set("acks", "all").set("linger.ms", "5").set("message.timeout.ms", "30000").create()?)
    }
}

/// Creates the topics that are missing; existing topics are left as they are.
pub async fn ensure_topics(
    connection: &KafkaConnection,
    topics: &[String],
    partitions: i32,
    timeout: Duration,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = connection.client_config().create()?;
    let new_topics: Vec<NewTopic<'_>> =
        topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))).collect();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        match admin.create_topics(new_topics.iter(), &opts).await {
            Ok(results) => {
                let mut failures = Vec::new();
                for result in results {
                    match result {
                        Ok(name) => tracing::info!(topic = %name, partitions, "created topic"),
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((name, code)) => failures.push(format!("{name}: {code}")),
                    }
                }
                if failures.is_empty() {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(PipelineError::Config(format!("could not create topics: {}", failures.join(", "))));
                }
                tracing::warn!(failures = ?failures, "topic creation failed; retrying");
            }
            Err(e) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(PipelineError::Config(format!(
                        "cannot reach Kafka at {} to create topics: {e}",
                        connection.brokers
                    )));
                }
                tracing::debug!(error = %e, "broker not ready; retrying topic creation");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
