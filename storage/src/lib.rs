//! Storage of callscope: object-store tiers, the Parquet object layout, and the batch
//! commit log that gives the pipeline its exactly-once effect.
//!
//! * [`tier`]: a tier is an object_store URL (`file://`, `memory://`, `s3://`); opening one.
//! * [`tiers`]: the four tiers (hot, warm, cold, archive).
//! * [`file_catalog`]: which files of which tier a query reads; atomic lifecycle commits;
//!   the DataFusion table over it.
//! * [`instrumented_store`]: metrics on every object-store call (every tier has them).
//! * [`fault_store`]: fault injection (errors, latency, pauses) for tests and soak runs.
//! * [`layout`]: typed object keys (`<dataset>/date=YYYY-MM-DD/hour=HH/<name>.parquet`).
//! * [`parquet_file`]: encoding record batches as Parquet.
//! * [`catalog`]: typed keys of every `_catalog/…` object.
//! * [`commit_log`]: per-partition batch records, crash recovery and pruning.
//! * [`lifecycle`]: policies, compaction, retention, legal holds, jobs.
//! * [`usage`]: files, rows, bytes per tier and table; [`costs`]: the cost model.
//! * [`custom_metrics`]: stored custom metric definitions.
//! * [`alerting`]: silences and the alert evaluator's state, status and failures.
//! * [`json_objects`]: a directory of JSON objects (the catalog's small shared records).
//! * [`trace_index`]: trace id → where its spans start, maintained in the stream.
//! * [`window_state`]: checkpoints of the stream aggregator's window state.
//! * [`workers`]: worker heartbeat objects.

pub mod alerting;
pub mod catalog;
pub mod commit_log;
pub mod costs;
pub mod custom_metrics;
pub mod dashboards;
pub mod epochs;
pub mod fault_store;
pub mod file_catalog;
pub mod instrumented_store;
pub mod json_objects;
pub mod layout;
pub mod lifecycle;
pub mod local_cas;
pub mod parquet_file;
pub mod tier;
pub mod tiers;
pub mod trace_index;
pub mod usage;
pub mod window_state;
pub mod workers;

pub use alerting::{Ack, AckStore, Silence, SilenceMatcher, SilenceState, SilenceStore, SmartRuleStore};
pub use catalog::{CatalogDir, CatalogKey};
pub use commit_log::{BatchRecord, CommitLog, Recovery};
pub use custom_metrics::CustomMetricStore;
pub use dashboards::{DashboardStore, SaveOutcome};
pub use epochs::{Ownership, PartitionEpochs};
pub use fault_store::{
    Fault, FaultControl, FaultRule, FaultSpecError, FaultStore, InjectedError, PathMatch, Pause, RuleHandle, Stage,
    parse_fault_spec,
};
pub use file_catalog::{CatalogFile, DataTable, FileCatalog, Manifest, RollupGaps, TimeRange, UnitSnapshot};
pub use instrumented_store::{InstrumentedStore, StoreMetrics, StoreOp};
pub use layout::{DataFileKey, HourPartition, RollupFileKey, RollupSource};
pub use tier::{FAULT_SPEC_OPTION, ObjectInfo, Tier, TierConfig};
pub use tiers::{TierName, Tiers};
pub use window_state::CheckpointStore;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid object store URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("commit record {path}: {reason}")]
    CorruptRecord { path: String, reason: String },
    #[error("batch starting at offset {first_offset} of {topic}/{partition} was already committed by another writer")]
    Fenced { topic: String, partition: i32, first_offset: i64 },
    #[error("{path}: a newer owner of the partition sealed this writer's epoch; it commits nothing more")]
    EpochSealed { path: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid fault_spec tier option: {0}")]
    FaultSpec(#[from] FaultSpecError),
    #[error("query: {0}")]
    Query(Box<datafusion::error::DataFusionError>),
    #[error("invalid policy: {0}")]
    Policy(#[from] lifecycle::policy::PolicyError),
}

impl StorageError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StorageError::ObjectStore(object_store::Error::Generic { .. } | object_store::Error::NotModified { .. })
                | StorageError::Io(_)
        )
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
