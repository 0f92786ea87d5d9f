//! Alerting: rules evaluated over event-time windows, alert lifecycles, one leader that
//! notifies, and the notification channels.
//!
//! * [`rules`]: Prometheus rule files and the PromQL subset, checked at load time.
//! * [`smart`]: smart rules (threshold with hysteresis, rate of change, absence, anomaly).
//! * [`lifecycle`]: pending → firing → resolved per fingerprint, in event time.
//! * [`engine`]: rules over the windows they read, and their instances.
//! * [`template`]: Prometheus-style templates of labels and annotations.
//! * [`notify`]: routing, grouping, silences, inhibition and delivery per channel.
//! * [`config`]: where rules and the notification config come from; the default rule pack.
//! * [`replay`]: reading history back by time after a restart.
//! * [`lease`]: the one-partition lease group that picks the leader.
//! * [`state`]: the leader's notification log and publishing progress.
//! * [`publisher`]: alert transitions onto the alerts topic, in one order, off the loop.
//! * [`evaluator`]: the evaluator task that ties them together ([`run`]).
//! * [`metrics`]: alerting's own Prometheus metrics.
//!
//! It depends on `runtime` (Kafka presets, clock, telemetry), `storage` and `schemas`,
//! never on the pipeline or the query API.

pub mod config;
pub mod engine;
pub mod evaluator;
pub mod lease;
pub mod lifecycle;
pub mod metrics;
pub mod notify;
pub mod publisher;
pub mod replay;
pub mod rules;
pub mod smart;
pub mod state;
pub mod template;

pub use config::AlertingConfig;
pub use evaluator::run;

/// Errors that stop the evaluator (everything else is retried or reported per rule).
#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Runtime(#[from] callscope_runtime::RuntimeError),
    #[error("storage: {0}")]
    Storage(#[from] callscope_storage::StorageError),
    #[error("{0}")]
    Notify(#[from] notify::config::ConfigError),
    #[error("configuration: {0}")]
    Config(String),
}

impl AlertingError {
    /// Whether starting the evaluator again later may succeed (a broker or store that did
    /// not answer), as opposed to a configuration that will fail the same way.
    pub fn is_transient(&self) -> bool {
        matches!(self, AlertingError::Kafka(_) | AlertingError::Runtime(_) | AlertingError::Storage(_))
    }
}

pub type Result<T, E = AlertingError> = std::result::Result<T, E>;
