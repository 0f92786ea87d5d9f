//! Kafka plumbing every process shares: connection settings, the client presets (so that
//! each kind of client is configured in one place) and topic creation through the admin
//! API (Tansu does not create topics on first use).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureProducer;

use crate::{Result, RuntimeError};

/// Connection settings for a Kafka cluster.
#[derive(Debug, Clone)]
pub struct KafkaConnection {
    /// `host:port[,host:port…]`
    pub brokers: String,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, …).
    pub properties: BTreeMap<String, String>,
}

/// How a producer trades latency for throughput. Every profile waits for all in-sync
/// replicas (`acks=all`): an acknowledged event is never lost by a broker failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerProfile {
    /// Events, dead letters, alert transitions: small batches, 30 s delivery timeout.
    Durable,
    /// Latency measurements: nothing waits for a batch to fill.
    Immediate,
    /// Load generation: large batches and a deep queue, 60 s delivery timeout.
    Bulk,
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

    /// A durable producer ([`ProducerProfile::Durable`]).
    pub fn producer(&self) -> Result<FutureProducer> {
        self.producer_with(ProducerProfile::Durable)
    }

    pub fn producer_with(&self, profile: ProducerProfile) -> Result<FutureProducer> {
        let mut config = self.client_config();
        config.set("acks", "all");
        match profile {
            ProducerProfile::Durable => config.set("linger.ms", "5").set("message.timeout.ms", "30000"),
            ProducerProfile::Immediate => config.set("linger.ms", "0").set("message.timeout.ms", "30000"),
            ProducerProfile::Bulk => config
                .set("linger.ms", "20")
                .set("batch.num.messages", "10000")
                .set("queue.buffering.max.messages", "200000")
                .set("message.timeout.ms", "60000"),
        };
        Ok(config.create()?)
    }

    /// A consumer configuration in `group_id` that never commits by itself (offsets are
    /// committed after the data is durable, or not at all) and starts at the earliest
    /// offset when the group has none. Callers add their timeouts and fetch settings.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        config
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
                    return Err(RuntimeError::TopicCreation(failures.join(", ")));
                }
                tracing::warn!(failures = ?failures, "topic creation failed; retrying");
            }
            Err(e) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(RuntimeError::Unreachable {
                        brokers: connection.brokers.clone(),
                        reason: e.to_string(),
                    });
                }
                tracing::debug!(error = %e, "broker not ready; retrying topic creation");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
