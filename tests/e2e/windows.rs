//! Windowed aggregation end to end: random out-of-order streams with late events over
//! several series and partitions; the stored roll-ups must equal the same aggregates
//! recomputed with SQL over the stored raw events, at every resolution, through every
//! source of `/monitoring/metrics`, and across a `kill -9` and restart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use callscope_schemas::{Event, Metric, MetricKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::support::*;

const RESOLUTIONS: [i64; 3] = [10_000, 60_000, 3_600_000];

/// A random stream: event times walk forward one second per event from `base`; most
/// events jitter within ±3 s (inside the 5 s allowed lateness), one in ten is 20–90 s late.
fn random_stream(seed: u64, n: usize, base: i64) -> Vec<(String, Metric)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut t = base + i as i64 * 1_000 + rng.random_range(-3_000..3_000);
        if rng.random_bool(0.1) {
            t -= rng.random_range(20_000..90_000);
        }
        let t = t.max(base);
        let region = ["north", "south"][rng.random_range(0..2)];
        let (name, kind, service, value) = match rng.random_range(0..3) {
            0 => (
                "wt_latency_ms",
                MetricKind::Histogram,
                ["asr", "tts"][rng.random_range(0..2)],
                rng.random_range(1.0..2_000.0),
            ),
            1 => ("wt_active_calls", MetricKind::Gauge, "call-gateway", rng.random_range(0..500) as f64),
            _ => ("wt_calls_total", MetricKind::Counter, "call-gateway", 1.0),
        };
        let metric = Metric {
            name: name.into(),
            kind,
            value,
            timestamp_ms: t,
            service: service.into(),
            labels: BTreeMap::from([("region".to_string(), region.to_string())]),
            unit: None,
        };
        // Histograms keyed by series (one partition each); the rest spread over partitions,
        // so one series' windows are partials from several partitions.
        let key = if kind == MetricKind::Histogram { format!("{service}/{name}") } else { format!("k{i}") };
        out.push((key, metric));
    }
    out
}

fn produce_stream(brokers: &str, stream: &[(String, Metric)]) {
    let rt = runtime();
    let producer = rt.block_on(async { producer(brokers) });
    let payloads: Vec<(String, Vec<u8>)> = stream
        .iter()
        .enumerate()
        .map(|(i, (key, m))| (key.clone(), encode_mixed(i, &Event::Metric(m.clone()))))
        .collect();
    let acked = rt.block_on(produce_all(&producer, "callscope.metrics", &payloads));
    assert_eq!(acked, stream.len(), "every event acknowledged");
}

const WINDOW_FLAGS: [&str; 6] =
    ["--allowed-lateness", "5s", "--idle-timeout", "2s", "--window-resolutions", "10s,1m,1h"];

/// Waits until every event is stored raw and counted in a closed window (or a correction)
/// of every resolution.
pub fn wait_for_rollups(client: &Http, base: &str, n: i64) {
    assert_eq!(
        wait_for_count(client, base, "SELECT COUNT(*) FROM metrics", n, Duration::from_secs(120)),
        n,
        "raw events stored"
    );
    for r in RESOLUTIONS {
        let q = format!(
            "SELECT COALESCE(SUM(count), 0) FROM metric_rollups WHERE resolution_ms = {r} AND name IN (SELECT DISTINCT name FROM metrics)"
        );
        let got = wait_for_count(client, base, &q, n, Duration::from_secs(60));
        assert_eq!(got, n, "every event is in exactly one window of resolution {r} ms");
    }
}

type Cell = (String, String, String, i64);

fn cells(rows: Vec<Vec<Value>>) -> BTreeMap<Cell, (i64, f64, f64, f64)> {
    rows.into_iter()
        .map(|r| {
            let s = |i: usize| r[i].as_str().expect("string").to_string();
            let f = |i: usize| r[i].as_f64().expect("number");
            ((s(0), s(1), s(2), r[3].as_i64().expect("window")), (r[4].as_i64().expect("count"), f(5), f(6), f(7)))
        })
        .collect()
}

/// Every window of every series at every resolution: roll-up partials merged equal the
/// aggregates recomputed over raw events.
pub fn assert_rollups_match_raw(client: &Http, base: &str) {
    for r in RESOLUTIONS {
        let rollups = cells(sql(
            client,
            base,
            &format!(
                "SELECT name, service, labels_key, window_start_ms, SUM(count), SUM(sum), MIN(min), MAX(max) \
                 FROM metric_rollups WHERE resolution_ms = {r} AND name IN (SELECT DISTINCT name FROM metrics) GROUP BY 1, 2, 3, 4"
            ),
        ));
        let raw = cells(sql(
            client,
            base,
            &format!(
                "SELECT name, service, labels_key, (timestamp_ms / {r}) * {r}, COUNT(*), SUM(value), MIN(value), MAX(value) \
                 FROM metrics GROUP BY 1, 2, 3, 4"
            ),
        ));
        assert_eq!(rollups.keys().collect::<Vec<_>>(), raw.keys().collect::<Vec<_>>(), "same windows at {r} ms");
        for (cell, want) in &raw {
            let got = rollups[cell];
            assert_eq!(got.0, want.0, "count of {cell:?} at {r} ms");
            assert!(
                (got.1 - want.1).abs() <= 1e-9 * want.1.abs().max(1.0),
                "sum of {cell:?} at {r} ms: {got:?} vs {want:?}"
            );
            assert_eq!((got.2, got.3), (want.2, want.3), "min/max of {cell:?} at {r} ms");
        }
    }
    // One row per window, series and partition (corrections apart): nothing written twice.
    let dupes = sql(
        client,
        base,
        "SELECT COUNT(*) FROM (SELECT resolution_ms, window_start_ms, name, service, labels_key, kafka_partition \
         FROM metric_rollups WHERE NOT late GROUP BY 1, 2, 3, 4, 5, 6 HAVING COUNT(*) > 1)",
    );
    assert_eq!(dupes[0][0].as_i64(), Some(0), "no window written twice");
}

fn series_points(client: &Http, url: &str) -> (BTreeMap<String, Vec<(i64, f64)>>, String) {
    let reply = client.call("GET", url, None);
    assert_eq!(reply.status, 200, "{url}: {}", reply.body);
    let mut out = BTreeMap::new();
    for s in reply.json().as_array().expect("series") {
        let key = s["labels"].to_string();
        let points = s["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| (p[0].as_i64().expect("t"), p[1].as_f64().expect("v")))
            .collect();
        out.insert(key, points);
    }
    (out, reply.headers.get("x-callscope-source").cloned().unwrap_or_default())
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-9)
}

#[test]
fn rollups_equal_sql_over_raw_events_at_every_resolution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(dir.path())
        .args(WINDOW_FLAGS)
        .args(["--broker-storage", "memory", "--flush-interval", "200ms", "--checkpoint-interval", "1s"])
        .spawn();
    let hour = 3_600_000;
    let base = (now_ms() / hour - 3) * hour;
    let stream = random_stream(7, 3_000, base);
    produce_stream(&node.brokers, &stream);
    let client = http();
    wait_for_rollups(&client, &node.http, stream.len() as i64);
    assert_rollups_match_raw(&client, &node.http);

    // Late events were corrected, and counted.
    let late_rows = sql(&client, &node.http, "SELECT COUNT(*) FROM metric_rollups WHERE late")[0][0].as_i64();
    assert!(late_rows.is_some_and(|n| n > 0), "late events produce correction rows");
    let metrics = client.call("GET", &format!("{}/metrics", node.http), None).body;
    let late_line = metrics
        .lines()
        .find(|l| l.starts_with("callscope_pipeline_late_events_total{dataset=\"metrics\"}"))
        .unwrap_or_else(|| panic!("late events counted:\n{metrics}"));
    assert!(late_line.split(' ').nth(1).and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0), "{late_line}");
    assert!(metrics.contains("callscope_pipeline_active_series"), "active series reported");

    // The same question gives the same answer whichever source answers it.
    let range = format!("start={base}&end={}", base + hour);
    for agg in ["count", "sum", "min", "max", "avg", "rate", "last"] {
        for name in ["wt_latency_ms", "wt_active_calls", "wt_calls_total"] {
            let url = |resolution: &str, step: &str| {
                format!(
                    "{}/monitoring/metrics?name={name}&{range}&step={step}&agg={agg}&resolution={resolution}",
                    node.http
                )
            };
            let (raw, source) = series_points(&client, &url("raw", "1m"));
            assert_eq!(source, "raw");
            assert!(!raw.is_empty(), "{name} has data");
            for resolution in ["10s", "1m", "auto"] {
                let (got, source) = series_points(&client, &url(resolution, "1m"));
                assert!(source.starts_with("rollup:"), "{resolution}: answered by {source}");
                assert_eq!(got.keys().collect::<Vec<_>>(), raw.keys().collect::<Vec<_>>());
                for (series, points) in &raw {
                    let other = &got[series];
                    assert_eq!(other.len(), points.len(), "{name} {agg} {resolution} {series}");
                    for ((t1, v1), (t2, v2)) in points.iter().zip(other) {
                        assert_eq!(t1, t2);
                        assert!(close(*v1, *v2, 1e-9), "{name} {agg} at {t1} via {resolution}: {v2} vs raw {v1}");
                    }
                }
            }
            // 1 h steps: the 1 h windows and 1 min windows agree with raw.
            let (raw_h, _) = series_points(&client, &url("raw", "1h"));
            for resolution in ["1m", "1h"] {
                let (got, source) = series_points(&client, &url(resolution, "1h"));
                assert_eq!(source, format!("rollup:{resolution}"));
                for (series, points) in &raw_h {
                    for ((_, v1), (_, v2)) in points.iter().zip(&got[series]) {
                        assert!(close(*v1, *v2, 1e-9), "{name} {agg} 1h via {resolution}: {v2} vs {v1}");
                    }
                }
            }
        }
    }

    // Quantiles from merged sketches are within 1 % of the exact rank statistic.
    let raw_values = sql(
        &client,
        &node.http,
        &format!(
            "SELECT service, labels_key, timestamp_ms, value FROM metrics WHERE name = 'wt_latency_ms' AND timestamp_ms < {}",
            base + hour
        ),
    );
    let mut exact: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for r in raw_values {
        let bucket = r[2].as_i64().expect("t") / 60_000 * 60_000;
        let series = format!("{}/{}", r[0].as_str().expect("service"), r[1].as_str().expect("key"));
        exact.entry((series, bucket)).or_default().push(r[3].as_f64().expect("v"));
    }
    for values in exact.values_mut() {
        values.sort_by(f64::total_cmp);
    }
    for (q, agg) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
        for resolution in ["10s", "1m"] {
            let reply = client.call(
                "GET",
                &format!(
                    "{}/monitoring/metrics?name=wt_latency_ms&{range}&step=1m&agg={agg}&resolution={resolution}",
                    node.http
                ),
                None,
            );
            assert_eq!(reply.status, 200, "{}", reply.body);
            assert!(reply.headers["x-callscope-source"].starts_with("rollup:"));
            let mut checked = 0;
            for s in reply.json().as_array().expect("series") {
                let labels = &s["labels"];
                let service = labels["service"].as_str().expect("service");
                let key = format!("{{\"region\":{}}}", labels["region"]);
                for p in s["points"].as_array().expect("points") {
                    let (t, v) = (p[0].as_i64().expect("t"), p[1].as_f64().expect("v"));
                    let values = &exact[&(format!("{service}/{key}"), t)];
                    let want = values[(q * (values.len() - 1) as f64).floor() as usize];
                    assert!(
                        (v - want).abs() <= 0.01 * want + 1e-9,
                        "{agg} at {t} via {resolution}: {v} vs exact {want}"
                    );
                    checked += 1;
                }
            }
            assert!(checked > 50, "{checked} quantile points checked");
        }
    }
}

#[test]
fn rollups_are_exact_across_kill_9_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small batches and frequent checkpoints: the kill lands after some checkpoints and
    // before others, so the restart restores a checkpoint in the middle of the stream and
    // replays only what came after it.
    let start = Node::standalone(dir.path()).args(WINDOW_FLAGS).args([
        "--flush-rows",
        "300",
        "--flush-interval",
        "50ms",
        "--checkpoint-interval",
        "1s",
    ]);
    let mut node = start.spawn();
    let hour = 3_600_000;
    let base = (now_ms() / hour - 5) * hour;
    let stream = random_stream(11, 12_000, base);
    produce_stream(&node.brokers, &stream);
    let client = http();
    // Kill once half the stream is stored and a checkpoint past the first batch exists.
    let checkpoints = dir.path().join("data/hot/_catalog/window_state");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = sql(&client, &node.http, "SELECT COUNT(*) FROM metrics")[0][0].as_i64().unwrap_or(0);
        let later_checkpoint = walk(&checkpoints)
            .iter()
            .filter_map(|p| p.file_stem()?.to_str()?.split('-').next()?.parse::<i64>().ok())
            .any(|offset| offset >= 300);
        if n >= stream.len() as i64 / 2 && later_checkpoint {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint past the first batch while ingesting");
        std::thread::sleep(Duration::from_millis(20));
    }
    node.proc.kill9();
    let stored_before = sql_direct(&node.data_dir);
    node = start.spawn();
    wait_for_rollups(&client, &node.http, stream.len() as i64);
    assert_rollups_match_raw(&client, &node.http);
    // The restart replayed only what its restored checkpoints did not cover: without them
    // it would re-read every stored event.
    let replayed = counter_total(&client, &format!("{}/metrics", node.http), "callscope_pipeline_replay_skipped_total");
    assert!(
        replayed < stored_before as f64,
        "the restart re-read {replayed} stored events of {stored_before}: the checkpoints were not used"
    );
    let log = node.proc.log_tail();
    assert!(log.contains("restored window state"), "{log}");
    assert!(node.proc.terminate().is_some_and(|s| s.success()), "clean exit on SIGTERM:\n{log}");
}
