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
    #[error(
        "another writer took this partition (epoch {newer} exists, this writer holds {held}); waiting for a new assignment"
    )]
    LostPartition { held: u64, newer: u64 },
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
            // A store that cannot do what the commit protocol needs (a conditional PUT), or
            // refuses our credentials, will not change its mind: stop with its message.
            PipelineError::Storage(callscope_storage::StorageError::ObjectStore(
                object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::InvalidPath { .. }
                | object_store::Error::UnknownConfigurationKey { .. },
            )) => RetryHint::Stop,
            PipelineError::Storage(callscope_storage::StorageError::ObjectStore(_)) => RetryHint::Retry,
            PipelineError::Storage(_)
            | PipelineError::Config(_)
            | PipelineError::Other(_)
            | PipelineError::LostPartition { .. } => RetryHint::Stop,
        }
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(e: object_store::Error) -> PipelineError {
        PipelineError::Storage(callscope_storage::StorageError::ObjectStore(e))
    }

    #[test]
    fn a_store_that_cannot_do_conditional_puts_stops_instead_of_retrying_forever() {
        let not_implemented = storage(object_store::Error::NotImplemented {
            operation: "put_opts with PutMode::Create".into(),
            implementer: "a store".into(),
        });
        assert_eq!(not_implemented.retry_hint(), RetryHint::Stop);
        let denied = storage(object_store::Error::PermissionDenied { path: "x".into(), source: "403".into() });
        assert_eq!(denied.retry_hint(), RetryHint::Stop);
        let outage = storage(object_store::Error::Generic { store: "S3", source: "connection reset".into() });
        assert_eq!(outage.retry_hint(), RetryHint::Retry);
        let not_found = storage(object_store::Error::NotFound { path: "x".into(), source: "gone".into() });
        assert_eq!(not_found.retry_hint(), RetryHint::Retry);
    }
}
