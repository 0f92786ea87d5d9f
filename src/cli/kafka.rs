//! Where Kafka is: the cluster the long-running commands use (or the embedded broker when
//! none is named), and the broker a client command (`produce`, `loadgen`) sends to.

use callscope_runtime::KafkaConnection;
use callscope_schemas::otlp::OtlpTopics;
use clap::Args;

use super::values::parse_key_value;

/// Partitions of the topics callscope creates, unless a command says otherwise.
pub const DEFAULT_PARTITIONS: i32 = 4;
/// The broker that `standalone` and `broker` listen on by default, and that client commands
/// send to by default.
pub const LOCAL_BROKER: &str = "127.0.0.1:9092";

/// Extra librdkafka properties.
#[derive(Debug, Clone, Args)]
pub struct KafkaProperties {
    /// Extra librdkafka property `key=value` (repeatable), e.g. `security.protocol=SASL_SSL`.
    #[arg(long = "kafka-property", short = 'X', env = "CALLSCOPE_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = parse_key_value)]
    pub kafka_properties: Vec<(String, String)>,
}

impl KafkaProperties {
    /// The connection to `brokers` with these properties.
    pub fn connection(&self, brokers: &str) -> KafkaConnection {
        let mut c = KafkaConnection::new(brokers);
        c.properties = self.kafka_properties.iter().cloned().collect();
        c
    }
}

/// The cluster of the long-running commands.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (`host:port,…`).
    #[arg(long, env = "CALLSCOPE_BROKERS")]
    pub brokers: Option<String>,
    #[command(flatten)]
    pub properties: KafkaProperties,
    /// Partitions of topics that callscope creates.
    #[arg(long, env = "CALLSCOPE_PARTITIONS", default_value_t = DEFAULT_PARTITIONS)]
    pub partitions: i32,
    /// Topic of OTLP span export requests (the OpenTelemetry Collector's Kafka exporter; protobuf or OTLP JSON); empty: off.
    #[arg(long, env = "CALLSCOPE_OTLP_SPANS_TOPIC", default_value = OtlpTopics::DEFAULT_SPANS)]
    pub otlp_spans_topic: String,
    /// Topic of OTLP metric export requests; empty: off.
    #[arg(long, env = "CALLSCOPE_OTLP_METRICS_TOPIC", default_value = OtlpTopics::DEFAULT_METRICS)]
    pub otlp_metrics_topic: String,
}

impl KafkaArgs {
    /// The OTLP input topics.
    pub fn otlp_topics(&self) -> OtlpTopics {
        OtlpTopics { spans: self.otlp_spans_topic.clone(), metrics: self.otlp_metrics_topic.clone() }
    }

    pub fn connection(&self, brokers: &str) -> KafkaConnection {
        self.properties.connection(brokers)
    }
}

/// The broker a client command sends to.
#[derive(Debug, Clone, Args)]
pub struct ClientKafkaArgs {
    /// Kafka bootstrap servers (`host:port,…`).
    #[arg(long, env = "CALLSCOPE_BROKERS", default_value = LOCAL_BROKER)]
    pub brokers: String,
    #[command(flatten)]
    pub properties: KafkaProperties,
}

impl ClientKafkaArgs {
    pub fn connection(&self) -> KafkaConnection {
        self.properties.connection(&self.brokers)
    }
}
