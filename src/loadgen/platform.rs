//! What the phone platform's hosts and its security components report once a second:
//! CPU, memory, disk and network per service, the billing database and the whitelist
//! cache, SIP authentication failures and audit events. Load follows the call rate, so
//! the infrastructure and security dashboards move with the traffic.

use callscope_schemas::{Event, MetricKind};
use rand::Rng;
use rand::rngs::StdRng;

use super::metric;

/// The services that run on their own hosts, with their memory footprint (GiB) at rest.
const HOSTS: [(&str, f64); 7] = [
    ("call-gateway", 1.5),
    ("whitelist-service", 0.5),
    ("spam-detector", 1.0),
    ("asr", 6.0),
    ("ai-engine", 12.0),
    ("tts", 4.0),
    ("billing", 1.0),
];
const AUDIT_ACTIONS: [&str; 4] = ["login", "config_change", "rule_change", "data_export"];

/// One second's samples; `load` is the platform's utilisation, 0 to 1.
pub fn second_events(rng: &mut StdRng, now_ms: i64, load: f64) -> Vec<Event> {
    let load = load.clamp(0.0, 1.0);
    let mut events = Vec::with_capacity(HOSTS.len() * 5 + 8);
    let gib = 1024.0 * 1024.0 * 1024.0;
    for (service, memory_gib) in HOSTS {
        let cpu = (8.0 + 70.0 * load + rng.random_range(-5.0..5.0)).clamp(0.0, 100.0);
        let host = [("host", service)];
        events.push(metric("cpu_usage_percent", MetricKind::Gauge, cpu, now_ms, service, &host, Some("percent")));
        let memory = memory_gib * gib * (1.0 + 0.3 * load + rng.random_range(0.0..0.05));
        events.push(metric(
            "memory_usage_bytes",
            MetricKind::Gauge,
            memory.round(),
            now_ms,
            service,
            &host,
            Some("bytes"),
        ));
        let disk = 35.0 + 10.0 * load + rng.random_range(0.0..2.0);
        events.push(metric(
            "disk_usage_percent",
            MetricKind::Gauge,
            disk,
            now_ms,
            service,
            &[("host", service), ("mount", "/data")],
            Some("percent"),
        ));
        let received = (200_000.0 + 4_000_000.0 * load * rng.random_range(0.8..1.2)).round();
        events.push(metric(
            "network_receive_bytes_total",
            MetricKind::Counter,
            received,
            now_ms,
            service,
            &host,
            Some("bytes"),
        ));
        events.push(metric(
            "network_transmit_bytes_total",
            MetricKind::Counter,
            (received * rng.random_range(0.6..0.9)).round(),
            now_ms,
            service,
            &host,
            Some("bytes"),
        ));
    }
    let db = [("db", "billing-postgres")];
    events.push(metric(
        "db_connections_in_use",
        MetricKind::Gauge,
        (4.0 + 40.0 * load * rng.random_range(0.8..1.2)).round(),
        now_ms,
        "billing",
        &db,
        None,
    ));
    events.push(metric(
        "db_query_latency_ms",
        MetricKind::Histogram,
        rng.random_range(1.0..6.0) * (1.0 + 2.0 * load),
        now_ms,
        "billing",
        &db,
        Some("milliseconds"),
    ));
    let lookups = (50.0 + 900.0 * load).round();
    let hits = (lookups * rng.random_range(0.88..0.97)).round();
    for (result, n) in [("hit", hits), ("miss", lookups - hits)] {
        events.push(metric(
            "cache_requests_total",
            MetricKind::Counter,
            n,
            now_ms,
            "whitelist-service",
            &[("cache", "whitelist-redis"), ("result", result)],
            None,
        ));
    }
    if rng.random::<f64>() < 0.3 {
        let reason = if rng.random::<f64>() < 0.7 { "bad_credentials" } else { "unknown_trunk" };
        events.push(metric(
            "auth_failures_total",
            MetricKind::Counter,
            f64::from(rng.random_range(1..4u8)),
            now_ms,
            "call-gateway",
            &[("method", "sip_digest"), ("reason", reason)],
            None,
        ));
    }
    if rng.random::<f64>() < 0.1 {
        let action = AUDIT_ACTIONS[rng.random_range(0..AUDIT_ACTIONS.len())];
        events.push(metric(
            "audit_events_total",
            MetricKind::Counter,
            1.0,
            now_ms,
            "callscope",
            &[("action", action)],
            None,
        ));
    }
    events
}
