//! Event-time windows of the metrics dataset (and of the metrics derived from spans), one
//! state per topic partition.
//!
//! * [`aggregate`]: the windows themselves (`BTreeMap<window_start, …>` per resolution),
//!   closed by the watermark, the late-data policy, and the cardinality limit.
//! * [`watermarks`]: the combined watermark of a process's partitions (idle partitions do
//!   not hold it back).
//! * [`checkpoint`]: the checkpoint object of a partition's window state.
//! * [`partition`]: how a partition writer drives its windows: restore, aggregate a batch,
//!   checkpoint, close when idle.
//! * [`span_metrics`]: RED metrics and service graph edges derived from spans (a span
//!   partition's windows aggregate them instead of samples).
//! * [`definitions`]: what the writers of one process share (settings, watermark board,
//!   checkpoint store) and the custom metric definitions, kept current by a watch task.

pub mod aggregate;
pub mod checkpoint;
pub mod definitions;
pub mod partition;
pub mod span_metrics;
pub mod watermarks;

pub use aggregate::{AggregationConfig, AggregationConfigError, Outcome, PartitionAggregator};
pub use definitions::AggregationShared;
pub use partition::PartitionWindows;
pub use watermarks::WatermarkBoard;
