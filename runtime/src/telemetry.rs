//! Self-metrics: every component registers its families once in the process-wide
//! Prometheus registry (exported by the query API in the text format 0.0.4). Registration
//! fails only on a duplicate name, which each component's `global()` prevents, so the
//! helpers ignore that error rather than fail a process over its own telemetry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// A labelled counter (name ends in `_total`).
pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"));
    let _ = registry.register(Box::new(c.clone()));
    c
}

/// An unlabelled counter.
pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("{name}: {e}"));
    let _ = registry.register(Box::new(c.clone()));
    c
}

/// A labelled gauge.
pub fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"));
    let _ = registry.register(Box::new(g.clone()));
    g
}

/// An unlabelled gauge.
pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("{name}: {e}"));
    let _ = registry.register(Box::new(g.clone()));
    g
}

/// A histogram with the given bucket bounds (seconds, bytes, …).
pub fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h =
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let _ = registry.register(Box::new(h.clone()));
    h
}

/// Buckets for durations of storage and Kafka round trips, 5 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_register_once_and_export() {
        let registry = Registry::new();
        let c = counter_vec(&registry, "t_events_total", "events", &["topic"]);
        c.with_label_values(&["a"]).inc_by(3);
        // A second registration of the same name is ignored, not a panic.
        let _again = counter_vec(&registry, "t_events_total", "events", &["topic"]);
        let h = histogram(&registry, "t_write_seconds", "writes", LATENCY_BUCKETS.to_vec());
        h.observe(0.02);
        let families = registry.gather();
        assert_eq!(families.len(), 2);
        assert_eq!(families.iter().find(|f| f.name() == "t_events_total").map(|f| f.get_metric().len()), Some(1));
    }
}
