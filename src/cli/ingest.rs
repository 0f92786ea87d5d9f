//! How the stream workers ingest: consumer group, batching, time skew, workers per process.

use callscope_pipeline::{AggregationConfig, WorkerConfig};
use callscope_runtime::KafkaConnection;
use clap::Args;

use super::windows::WindowArgs;

/// Consumer group of the stream workers (and whose lag the query API reports).
pub const DEFAULT_GROUP_ID: &str = WorkerConfig::DEFAULT_GROUP_ID;
/// Messages per partition batch (also the batch size of `bench ingest`).
pub const DEFAULT_FLUSH_ROWS: usize = WorkerConfig::DEFAULT_FLUSH_ROWS;

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// Consumer group of the stream workers.
    #[arg(long, env = "CALLSCOPE_GROUP_ID", default_value = DEFAULT_GROUP_ID)]
    pub group_id: String,
    /// Flush a partition's batch at this many messages.
    #[arg(long, env = "CALLSCOPE_FLUSH_ROWS", default_value_t = DEFAULT_FLUSH_ROWS)]
    pub flush_rows: usize,
    /// Flush a partition's batch when its oldest message is this old (data is queryable about this long after it is produced).
    #[arg(long, env = "CALLSCOPE_FLUSH_INTERVAL", default_value_t = WorkerConfig::DEFAULT_FLUSH_INTERVAL.into())]
    pub flush_interval: humantime::Duration,
    /// Events whose time is further than this from now are dead-lettered.
    #[arg(long, env = "CALLSCOPE_MAX_TIME_SKEW", default_value_t = WorkerConfig::DEFAULT_MAX_TIME_SKEW.into())]
    pub max_time_skew: humantime::Duration,
    /// Stream workers in this process (each a consumer-group member).
    #[arg(long, env = "CALLSCOPE_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Worker id prefix (default: random).
    #[arg(long, env = "CALLSCOPE_WORKER_ID")]
    pub worker_id: Option<String>,
}

impl IngestArgs {
    /// `--worker-id`, or a random `worker-xxxxxxxx`.
    pub fn worker_id_prefix(&self) -> String {
        self.worker_id.clone().unwrap_or_else(|| format!("worker-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))
    }

    /// The settings of one worker with these flags.
    pub fn worker_config(
        &self,
        connection: &KafkaConnection,
        aggregation: Option<AggregationConfig>,
        worker_id: String,
    ) -> WorkerConfig {
        let mut c = WorkerConfig::new(connection.clone(), self.group_id.clone());
        c.flush_rows = self.flush_rows.max(1);
        c.flush_interval = *self.flush_interval;
        c.max_time_skew = *self.max_time_skew;
        c.worker_id = worker_id;
        c.aggregation = aggregation;
        c
    }

    /// The settings of the `--workers` workers of this process: ids `<prefix>` for one
    /// worker, `<prefix>-0`, `<prefix>-1`, … for more.
    pub fn worker_configs(
        &self,
        connection: &KafkaConnection,
        windows: &WindowArgs,
    ) -> anyhow::Result<Vec<WorkerConfig>> {
        let aggregation = windows.aggregation()?;
        let prefix = self.worker_id_prefix();
        Ok((0..self.workers.max(1))
            .map(|i| {
                let id = if self.workers > 1 { format!("{prefix}-{i}") } else { prefix.clone() };
                self.worker_config(connection, aggregation.clone(), id)
            })
            .collect())
    }
}
