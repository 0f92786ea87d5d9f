//! Ingestion: the stream workers. A worker reads the input topics as a member of a Kafka
//! consumer group, decodes events, dead-letters bad input, batches valid events per topic
//! partition, aggregates metrics in event-time windows and commits everything to Parquet
//! exactly once; Kafka offsets are committed only after what they cover is durable.
//!
//! The consume loop and the Kafka side:
//!
//! * [`worker`]: the consume loop (decode, buffer, flush, rebalance handling, ordered shutdown).
//! * [`source`]: the Kafka consumer (rebalances, committed offsets, lag) and the offset
//!   acknowledgement the writers report durable offsets through.
//! * [`watchdog`]: rejoins the consumer group when a partition has had no live owner for a while.
//! * [`otlp_input`]: messages of OTLP topics (OpenTelemetry Collector export requests) as events.
//! * [`batch`]: what the consume loop hands to a partition writer (batches, dead letters, jobs).
//! * [`acks`]: the two seams between the writer and Kafka: [`acks::OffsetAck`] (what is durable)
//!   and [`acks::DeadLetterSink`] (where undeliverable messages go).
//!
//! Storing:
//!
//! * [`writer`]: one task per topic partition: recovery from the commit log, encoding Parquet,
//!   the exactly-once commit sequence, then the offset acknowledgement.
//! * [`windows`]: event-time windows per partition (aggregation, watermarks, late data,
//!   checkpoints of the window state, custom metric definitions).
//!
//! Around them:
//!
//! * [`error`]: [`PipelineError`], each error with what to do about it ([`RetryHint`]).
//! * [`metrics`]: the pipeline's own Prometheus metrics.
//! * [`status`]: worker status, published as heartbeat objects for the query API.
//!
//! The crate never imports the alerting or the query API; what it shares with them lives in
//! `callscope-runtime` and `callscope-storage`.

pub mod acks;
pub mod batch;
pub mod error;
pub mod metrics;
pub mod otlp_input;
pub mod source;
pub mod status;
pub mod watchdog;
pub mod windows;
pub mod worker;
pub mod writer;

pub use error::{PipelineError, Result, RetryHint};
pub use windows::aggregate::{AggregationConfig, AggregationConfigError};
pub use worker::{Worker, WorkerConfig};
