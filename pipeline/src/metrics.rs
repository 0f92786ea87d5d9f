//! The pipeline's own metrics, registered once in the process-wide Prometheus registry.

use std::sync::OnceLock;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Counters and gauges of the stream workers.
#[derive(Debug)]
pub struct PipelineMetrics {
    pub consumed: IntCounterVec,
    pub stored: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub replay_skipped: IntCounterVec,
    pub batches: IntCounterVec,
    pub rollbacks: IntCounterVec,
    pub fenced: IntCounterVec,
    pub write_retries: IntCounterVec,
    pub write_seconds: Histogram,
    pub consumer_lag: IntGaugeVec,
    pub assigned_partitions: IntGauge,
    pub buffered_events: IntGauge,
    pub late_events: IntCounterVec,
    pub windows_closed: IntCounterVec,
    pub rollup_rows: IntCounterVec,
    pub series_over_limit: IntCounterVec,
    pub checkpoints: IntCounterVec,
    pub checkpoint_seconds: Histogram,
    pub windows_open: IntGaugeVec,
    pub active_series: IntGaugeVec,
    pub window_state_bytes: IntGaugeVec,
    pub watermark_delay_seconds: IntGaugeVec,
    pub custom_metrics_loaded: IntGauge,
    pub custom_metrics_reloads: prometheus::IntCounter,
}

pub(crate) fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"));
    let _ = registry.register(Box::new(g.clone()));
    g
}

pub(crate) fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"));
    // Registration fails only on a duplicate name, which `global` prevents.
    let _ = registry.register(Box::new(c.clone()));
    c
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

    pub fn new(registry: &Registry) -> PipelineMetrics {
        let write_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "callscope_pipeline_batch_write_seconds",
                "Time to encode and durably write one batch (Parquet files and commit record)",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .unwrap_or_else(|e| panic!("histogram: {e}"));
        let _ = registry.register(Box::new(write_seconds.clone()));
        let consumer_lag = IntGaugeVec::new(
            Opts::new("callscope_pipeline_consumer_lag_messages", "Messages behind the partition's high watermark"),
            &["topic", "partition"],
        )
        .unwrap_or_else(|e| panic!("gauge: {e}"));
        let _ = registry.register(Box::new(consumer_lag.clone()));
        let assigned_partitions = IntGauge::new(
            "callscope_pipeline_assigned_partitions",
            "Topic partitions currently assigned to this process's workers",
        )
        .unwrap_or_else(|e| panic!("gauge: {e}"));
        let _ = registry.register(Box::new(assigned_partitions.clone()));
        let buffered_events = IntGauge::new(
            "callscope_pipeline_buffered_events",
            "Events consumed and waiting in a batch that is not yet written",
        )
        .unwrap_or_else(|e| panic!("gauge: {e}"));
        let _ = registry.register(Box::new(buffered_events.clone()));
        let checkpoint_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "callscope_pipeline_window_checkpoint_seconds",
                "Time to encode and durably write one window-state checkpoint",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .unwrap_or_else(|e| panic!("histogram: {e}"));
        let _ = registry.register(Box::new(checkpoint_seconds.clone()));
        let partition = &["topic", "partition"];
        let custom_metrics_loaded = IntGauge::new(
            "callscope_pipeline_custom_metrics_loaded",
            "Custom metric definitions the workers materialize (built-in and stored)",
        )
        .unwrap_or_else(|e| panic!("gauge: {e}"));
        let _ = registry.register(Box::new(custom_metrics_loaded.clone()));
        let custom_metrics_reloads = prometheus::IntCounter::new(
            "callscope_pipeline_custom_metrics_reloads_total",
            "Times a changed set of custom metric definitions was loaded",
        )
        .unwrap_or_else(|e| panic!("counter: {e}"));
        let _ = registry.register(Box::new(custom_metrics_reloads.clone()));
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
                "Incomplete batches rolled back during recovery",
                &["topic"],
            ),
            fenced: counter(
                registry,
                "callscope_pipeline_batches_fenced_total",
                "Batches refused because another writer committed the same range",
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
