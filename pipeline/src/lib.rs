//! The stream workers: a Kafka consumer group that decodes events, dead-letters bad input,
//! batches valid events per topic partition and commits them to Parquet exactly once.
//!
//! * [`aggregate`]: event-time windows per partition (watermarks, late data, roll-ups).
//! * [`alerting`]: the alert evaluator task (reads, evaluates, leads, notifies).
//! * [`alert_engine`]: rules over the windows they read, and their alert lifecycles.
//! * [`alert_eval`]: the PromQL subset evaluated over window partials.
//! * [`alert_lifecycle`]: alert instance states in event time (alerting, in progress).
//! * [`alert_smart`]: smart rules (threshold with hysteresis, rate of change, absence, anomaly).
//! * [`alert_rules`]: Prometheus rule files and the PromQL subset (alerting, in progress).
//! * [`custom_metrics`]: keeps the custom metric definitions of running workers current.
//! * [`watermarks`]: the combined watermark of a process's partitions.
//! * [`kafka`]: client configuration, topic creation, the dead-letter producer.
//! * [`worker`]: the consume loop (decode, buffer, flush, rebalance handling, shutdown).
//! * [`partition_writer`]: one task per topic partition that writes batches and commits offsets.
//! * [`notify`]: routing, grouping and delivery of alert notifications.
//! * [`metrics`]: the pipeline's own Prometheus metrics.
//! * [`status`]: worker status, published as heartbeat objects for the query API.

pub mod aggregate;
pub mod alert_engine;
pub mod alert_eval;
pub mod alert_lifecycle;
pub mod alert_rules;
pub mod alert_smart;
pub mod alert_template;
pub mod alerting;
pub mod alerting_metrics;
pub mod custom_metrics;
pub mod kafka;
pub mod metrics;
pub mod notify;
pub mod partition_writer;
pub mod status;
pub mod watermarks;
pub mod worker;

pub use aggregate::AggregationConfig;
pub use worker::{Worker, WorkerConfig};

/// Errors that cross the Kafka loop, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("storage: {0}")]
    Storage(#[from] callscope_storage::StorageError),
    #[error("batch range already committed by another writer; recovering")]
    Fenced,
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Other(String),
}

/// What the loop should do with an error (after Arroyo's `RetryHint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// Transient: back off and try the same thing again.
    Retry,
    /// The message is bad: send it to the dead-letter topic and go on.
    DeadLetter,
    /// Configuration or programming error: stop the worker.
    Stop,
}

impl PipelineError {
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            PipelineError::Kafka(_) | PipelineError::Fenced => RetryHint::Retry,
            PipelineError::Storage(e) if e.is_transient() => RetryHint::Retry,
            PipelineError::Storage(callscope_storage::StorageError::ObjectStore(_)) => RetryHint::Retry,
            PipelineError::Storage(_) | PipelineError::Config(_) | PipelineError::Other(_) => RetryHint::Stop,
        }
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
