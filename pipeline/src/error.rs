//! The errors that cross the Kafka loop, each with what to do about it.

/// Errors that cross the Kafka loop, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Runtime(#[from] callscope_runtime::RuntimeError),
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
            PipelineError::Kafka(_) | PipelineError::Runtime(_) | PipelineError::Fenced => RetryHint::Retry,
            PipelineError::Storage(e) if e.is_transient() => RetryHint::Retry,
            PipelineError::Storage(callscope_storage::StorageError::ObjectStore(_)) => RetryHint::Retry,
            PipelineError::Storage(_) | PipelineError::Config(_) | PipelineError::Other(_) => RetryHint::Stop,
        }
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
