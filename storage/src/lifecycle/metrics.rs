//! The lifecycle's own metrics (in the process-wide Prometheus registry).

use std::sync::OnceLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Counters and timings of lifecycle jobs.
#[derive(Debug, Clone)]
pub struct LifecycleMetrics {
    /// Units a step finished, by step and outcome (`done`, `nothing_to_do`, `lost_race`,
    /// `held`, `failed`).
    pub units: IntCounterVec,
    /// Bytes read and written by steps.
    pub bytes_read: IntCounterVec,
    pub bytes_written: IntCounterVec,
    /// Input files a step replaced (compacted, moved, expired).
    pub files_replaced: IntCounterVec,
    /// Files deleted by garbage collection and retention, by reason.
    pub files_deleted: IntCounterVec,
    /// Duration of whole jobs, by policy and outcome.
    pub job_seconds: HistogramVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"));
    let _ = registry.register(Box::new(counter.clone()));
    counter
}

impl LifecycleMetrics {
    /// The metrics of this process, registered in `prometheus::default_registry()`.
    pub fn global() -> &'static LifecycleMetrics {
        static METRICS: OnceLock<LifecycleMetrics> = OnceLock::new();
        METRICS.get_or_init(|| LifecycleMetrics::new(prometheus::default_registry()))
    }

    pub fn new(registry: &Registry) -> LifecycleMetrics {
        let job_seconds = HistogramVec::new(
            HistogramOpts::new("callscope_lifecycle_job_seconds", "Duration of lifecycle jobs")
                .buckets(vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 7200.0]),
            &["policy", "outcome"],
        )
        .unwrap_or_else(|e| panic!("callscope_lifecycle_job_seconds: {e}"));
        let _ = registry.register(Box::new(job_seconds.clone()));
        LifecycleMetrics {
            units: counter(
                registry,
                "callscope_lifecycle_units_total",
                "Table-hours a lifecycle step finished, by step and outcome",
                &["step", "outcome"],
            ),
            bytes_read: counter(
                registry,
                "callscope_lifecycle_bytes_read_total",
                "Bytes lifecycle steps read",
                &["step"],
            ),
            bytes_written: counter(
                registry,
                "callscope_lifecycle_bytes_written_total",
                "Bytes lifecycle steps wrote",
                &["step"],
            ),
            files_replaced: counter(
                registry,
                "callscope_lifecycle_files_replaced_total",
                "Files a lifecycle step replaced (compacted, moved or expired)",
                &["step"],
            ),
            files_deleted: counter(
                registry,
                "callscope_lifecycle_files_deleted_total",
                "Files deleted by garbage collection or retention",
                &["reason"],
            ),
            job_seconds,
        }
    }
}
