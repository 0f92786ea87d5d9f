//! The pipeline's own metrics, registered once in the process-wide Prometheus registry.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use callscope_runtime::telemetry::{
    LATENCY_BUCKETS, counter as single_counter, counter_vec as counter, gauge, gauge_vec, histogram,
};
use callscope_schemas::rollup::{RollupRow, resolution_label};
use prometheus::{Histogram, IntCounterVec, IntGauge, IntGaugeVec, Registry};

/// Counters and gauges of the stream workers.
#[derive(Debug)]
pub struct PipelineMetrics {
    pub consumed: IntCounterVec,
    pub stored: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub replay_skipped: IntCounterVec,
    pub batches: IntCounterVec,
    pub rollbacks: IntCounterVec,
    pub published_by_recovery: IntCounterVec,
    pub fenced: IntCounterVec,
    pub stopped_partitions: IntCounterVec,
    pub write_retries: IntCounterVec,
    pub write_seconds: Histogram,
    pub consumer_lag: IntGaugeVec,
    pub assigned_partitions: IntGauge,
    pub buffered_events: IntGauge,
    pub late_events: IntCounterVec,
    pub windows_closed: IntCounterVec,
    pub rollup_rows: IntCounterVec,
    pub series_over_limit: IntCounterVec,
    pub spans_unpaired: IntCounterVec,
    pub checkpoints: IntCounterVec,
    pub checkpoint_seconds: Histogram,
    pub windows_open: IntGaugeVec,
    pub active_series: IntGaugeVec,
    pub window_state_bytes: IntGaugeVec,
    pub watermark_delay_seconds: IntGaugeVec,
    pub custom_metrics_loaded: IntGauge,
    pub custom_metrics_reloads: prometheus::IntCounter,
}

impl PipelineMetrics {
    /// The metrics of this process, registered in `prometheus::default_registry()`.
    pub fn global() -> &'static PipelineMetrics {
        static METRICS: OnceLock<PipelineMetrics> = OnceLock::new();
        METRICS.get_or_init(|| {
            let metrics = PipelineMetrics::new(prometheus::default_registry());
            // Zero-valued series from the start, so that "none yet" is visible as 0.
            for dataset in callscope_schemas::Dataset::ALL {
                metrics.late_events.with_label_values(&[dataset.name()]);
            }
            metrics
        })
    }

    /// Counts roll-up rows durably written, by resolution and lateness.
    pub fn count_rollup_rows(&self, rows: &[RollupRow]) {
        let mut counts: BTreeMap<(i64, bool), u64> = BTreeMap::new();
        for row in rows {
            *counts.entry((row.resolution_ms, row.late)).or_default() += 1;
        }
        for ((resolution, late), n) in counts {
            self.rollup_rows
                .with_label_values(&[resolution_label(resolution).as_str(), if late { "true" } else { "false" }])
                .inc_by(n);
        }
    }

    pub fn new(registry: &Registry) -> PipelineMetrics {
        let write_seconds = histogram(
            registry,
            "callscope_pipeline_batch_write_seconds",
            "Time to encode and durably write one batch (Parquet files and commit record)",
            LATENCY_BUCKETS.to_vec(),
        );
        let consumer_lag = gauge_vec(
            registry,
            "callscope_pipeline_consumer_lag_messages",
            "Messages behind the partition's high watermark",
            &["topic", "partition"],
        );
        let assigned_partitions = gauge(
            registry,
            "callscope_pipeline_assigned_partitions",
            "Topic partitions currently assigned to this process's workers",
        );
        let buffered_events = gauge(
            registry,
            "callscope_pipeline_buffered_events",
            "Events consumed and waiting in a batch that is not yet written",
        );
        let checkpoint_seconds = histogram(
            registry,
            "callscope_pipeline_window_checkpoint_seconds",
            "Time to encode and durably write one window-state checkpoint",
            LATENCY_BUCKETS.to_vec(),
        );
        let partition = &["topic", "partition"];
        let custom_metrics_loaded = gauge(
            registry,
            "callscope_pipeline_custom_metrics_loaded",
            "Custom metric definitions the workers materialize (built-in and stored)",
        );
        let custom_metrics_reloads = single_counter(
            registry,
            "callscope_pipeline_custom_metrics_reloads_total",
            "Times a changed set of custom metric definitions was loaded",
        );
        PipelineMetrics {
            consumed: counter(
                registry,
                "callscope_pipeline_events_consumed_total",
                "Messages read from Kafka",
                &["topic"],
            ),
            stored: counter(
                registry,
                "callscope_pipeline_events_stored_total",
                "Events durably written to Parquet",
                &["dataset"],
            ),
            dead_lettered: counter(
                registry,
                "callscope_pipeline_events_dead_lettered_total",
                "Messages sent to the dead-letter topic, by reason",
                &["topic", "reason"],
            ),
            replay_skipped: counter(
                registry,
                "callscope_pipeline_replay_skipped_total",
                "Messages re-read after a restart or rebalance that were already stored",
                &["topic"],
            ),
            batches: counter(
                registry,
                "callscope_pipeline_batches_committed_total",
                "Batches durably committed",
                &["dataset"],
            ),
            rollbacks: counter(
                registry,
                "callscope_pipeline_batch_rollbacks_total",
                "Incomplete batches of the older commit protocol rolled back during recovery",
                &["topic"],
            ),
            published_by_recovery: counter(
                registry,
                "callscope_pipeline_batches_published_by_recovery_total",
                "Committed batches whose files recovery moved from pending to their final keys",
                &["topic"],
            ),
            fenced: counter(
                registry,
                "callscope_pipeline_batches_fenced_total",
                "Batches refused because another writer committed the same range",
                &["topic"],
            ),
            stopped_partitions: counter(
                registry,
                "callscope_pipeline_partitions_stopped_total",
                "Partitions stopped (and paused) after a permanent write failure",
                &["topic"],
            ),
            write_retries: counter(
                registry,
                "callscope_pipeline_write_retries_total",
                "Batch writes retried after a transient storage or Kafka error",
                &["topic"],
            ),
            write_seconds,
            consumer_lag,
            assigned_partitions,
            buffered_events,
            late_events: counter(
                registry,
                "callscope_pipeline_late_events_total",
                "Events that arrived after the watermark had passed their (finest) window; stored raw, never dropped",
                &["dataset"],
            ),
            windows_closed: counter(
                registry,
                "callscope_pipeline_windows_closed_total",
                "Aggregation windows closed by the watermark (per partition)",
                &["resolution"],
            ),
            rollup_rows: counter(
                registry,
                "callscope_pipeline_rollup_rows_total",
                "Roll-up rows durably written, by resolution and whether they are late corrections",
                &["resolution", "late"],
            ),
            series_over_limit: counter(
                registry,
                "callscope_pipeline_series_over_limit_total",
                "Samples not aggregated because their series exceeded the cardinality limit of its metric name (dead-lettered, stored raw)",
                &["topic"],
            ),
            spans_unpaired: counter(
                registry,
                "callscope_pipeline_spans_unpaired_total",
                "Child spans whose parent did not arrive within the pairing wait (no service graph edge counted)",
                &["topic"],
            ),
            checkpoints: counter(
                registry,
                "callscope_pipeline_window_checkpoints_total",
                "Window-state checkpoints written",
                &["topic"],
            ),
            checkpoint_seconds,
            windows_open: gauge_vec(registry, "callscope_pipeline_windows_open", "Aggregation windows open", partition),
            active_series: gauge_vec(
                registry,
                "callscope_pipeline_active_series",
                "Series with at least one open window",
                partition,
            ),
            window_state_bytes: gauge_vec(
                registry,
                "callscope_pipeline_window_state_bytes",
                "Approximate memory held by open windows and their series",
                partition,
            ),
            watermark_delay_seconds: gauge_vec(
                registry,
                "callscope_pipeline_watermark_delay_seconds",
                "Wall clock minus the partition's event-time watermark",
                partition,
            ),
            custom_metrics_loaded,
            custom_metrics_reloads,
        }
    }
}
