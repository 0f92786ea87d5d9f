//! What a process with stream workers is configured with (`standalone`, `pipeline`): the
//! Kafka cluster, the hot tier, ingestion, windows and alerting.

use clap::Args;

use super::alerting::AlertArgs;
use super::ingest::IngestArgs;
use super::kafka::KafkaArgs;
use super::lifecycle::LifecycleArgs;
use super::storage::StorageArgs;
use super::windows::WindowArgs;

#[derive(Debug, Clone, Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub ingest: IngestArgs,
    #[command(flatten)]
    pub windows: WindowArgs,
    #[command(flatten)]
    pub alerts: AlertArgs,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}
