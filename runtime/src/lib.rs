//! What every callscope process shares, below the pipeline, the alerting and the query
//! API (which never import each other):
//!
//! * [`kafka`]: connection settings, the client presets (producers and consumers) and topic
//!   creation through the admin API (Tansu does not create topics on first use).
//! * [`dead_letter`]: messages that cannot be stored, and the producer that sends them to the
//!   dead-letter topic with the reason in headers.
//! * [`telemetry`]: registering self-metrics in the process-wide Prometheus registry.
//! * [`clock`]: the wall clock (unix milliseconds) and a settable clock for tests.
//! * [`shutdown`]: the signal that starts an ordered shutdown.

pub mod clock;
pub mod dead_letter;
pub mod kafka;
pub mod shutdown;
pub mod telemetry;

pub use clock::{Clock, ManualClock, SystemClock, now_ms};
pub use kafka::KafkaConnection;

/// Errors of the shared plumbing.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("could not create topics: {0}")]
    TopicCreation(String),
    #[error("cannot reach Kafka at {brokers} to create topics: {reason}")]
    Unreachable { brokers: String, reason: String },
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
