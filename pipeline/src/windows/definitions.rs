//! What the writers of one process share when they aggregate metrics in windows: the
//! settings, the watermark board, the checkpoint store and the custom metric definitions,
//! which [`watch`] keeps current.
//!
//! Hot reload of custom metric definitions: every worker re-reads the stored definitions
//! (plus the built-ins) every [`RELOAD_EVERY`], so a definition created through the API
//! takes effect in every running worker, in any process, within a few seconds. A sample
//! is aggregated into the series of every source-based definition it matches from the next
//! batch on; expressions are evaluated on read and need nothing here.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use callscope_schemas::custom_metrics::CustomMetric;
use callscope_storage::{CheckpointStore, CustomMetricStore, Tier};
use tokio_util::sync::CancellationToken;

use super::aggregate::AggregationConfig;
use super::watermarks::WatermarkBoard;
use crate::metrics::PipelineMetrics;

/// How often workers look for changed definitions.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// What the writers of one process share when they aggregate metrics in windows.
pub struct AggregationShared {
    pub config: Arc<AggregationConfig>,
    pub board: WatermarkBoard,
    pub checkpoints: CheckpointStore,
    /// Custom metrics the workers materialize (those with a source metric), kept current
    /// by [`watch`].
    definitions: RwLock<Arc<Vec<CustomMetric>>>,
}

impl AggregationShared {
    pub fn new(config: AggregationConfig, tier: Tier) -> AggregationShared {
        AggregationShared {
            config: Arc::new(config),
            board: WatermarkBoard::default(),
            checkpoints: CheckpointStore::new(tier),
            definitions: RwLock::new(Arc::new(Vec::new())),
        }
    }

    /// The custom metrics materialized now.
    pub fn definitions(&self) -> Arc<Vec<CustomMetric>> {
        self.definitions.read().map(|d| d.clone()).unwrap_or_default()
    }

    /// Replaces the materialized custom metrics.
    pub fn set_definitions(&self, definitions: Vec<CustomMetric>) {
        if let Ok(mut defs) = self.definitions.write() {
            *defs = Arc::new(definitions);
        }
    }
}

/// Keeps the definitions of `shared` current until `cancel`.
pub async fn watch(shared: Arc<AggregationShared>, store: CustomMetricStore, cancel: CancellationToken) {
    let mut current: Option<Vec<CustomMetric>> = None;
    loop {
        match store.effective().await {
            Ok(all) => {
                let materialized: Vec<_> =
                    all.into_iter().filter(|d| d.rule.source.is_some() && d.validate().is_ok()).collect();
                if current.as_ref() != Some(&materialized) {
                    tracing::info!(definitions = materialized.len(), names = ?materialized.iter().map(|d| &d.name).collect::<Vec<_>>(), "custom metric definitions loaded");
                    let metrics = PipelineMetrics::global();
                    metrics.custom_metrics_loaded.set(materialized.len() as i64);
                    metrics.custom_metrics_reloads.inc();
                    shared.set_definitions(materialized.clone());
                    current = Some(materialized);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read custom metric definitions; keeping the current ones"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RELOAD_EVERY) => {}
        }
    }
}
