//! The topics callscope reads and writes, created at start-up (Tansu does not create topics
//! on first use).

use std::time::Duration;

use callscope_runtime::KafkaConnection;
use callscope_runtime::kafka::ensure_topics;
use callscope_schemas::otlp::OtlpTopics;
use callscope_schemas::{DLQ_TOPIC, Dataset};

/// How long start-up waits for the broker to create the topics.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// The topics the stream workers consume.
pub fn input_topics() -> Vec<String> {
    Dataset::ALL.iter().map(|d| d.default_topic().to_string()).collect()
}

/// Every topic callscope reads or writes: the input topics, the OTLP topics and the
/// dead-letter topic.
pub fn all_topics(otlp: &OtlpTopics) -> Vec<String> {
    let mut topics = input_topics();
    topics.extend(otlp.names());
    topics.push(DLQ_TOPIC.to_string());
    topics
}

/// Creates `topics` (those missing) with `partitions` partitions each.
pub async fn create(connection: &KafkaConnection, topics: &[String], partitions: i32) -> anyhow::Result<()> {
    Ok(ensure_topics(connection, topics, partitions, CREATE_TIMEOUT).await?)
}

/// Creates every topic callscope reads or writes (those missing).
pub async fn create_all(connection: &KafkaConnection, partitions: i32, otlp: &OtlpTopics) -> anyhow::Result<()> {
    create(connection, &all_topics(otlp), partitions).await
}
