//! Hot reload of custom metric definitions: every worker re-reads the stored definitions
//! (plus the built-ins) every [`RELOAD_EVERY`], so a definition created through the API
//! takes effect in every running worker, in any process, within a few seconds. A sample
//! is aggregated into the series of every source-based definition it matches from the next
//! batch on; expressions are evaluated on read and need nothing here.

use std::sync::Arc;
use std::time::Duration;

use callscope_storage::CustomMetricStore;
use tokio_util::sync::CancellationToken;

use crate::metrics::PipelineMetrics;
use crate::partition_writer::AggregationShared;

/// How often workers look for changed definitions.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Keeps `shared.definitions` current until `cancel`.
pub async fn watch(shared: Arc<AggregationShared>, store: CustomMetricStore, cancel: CancellationToken) {
    let mut current: Option<Vec<callscope_schemas::custom_metrics::CustomMetric>> = None;
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
                    if let Ok(mut defs) = shared.definitions.write() {
                        *defs = Arc::new(materialized.clone());
                    }
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
