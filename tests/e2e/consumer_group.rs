//! Two `pipeline` processes in one consumer group share the partitions and together store
//! every event once; when one dies, the other takes over its partitions.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

#[test]
fn two_pipelines_share_partitions_and_store_every_event_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = dir.path().join("shared");
    let broker = Node::broker(dir.path()).spawn();
    let pipeline = |name: &str| {
        group_member(dir.path(), &broker, &shared, "shared-group", name)
            .args(["--window-resolutions", "10s,1m,1h"])
            .metrics_endpoint()
            .spawn()
    };
    let a = pipeline("pipeline-a");
    let mut b = pipeline("pipeline-b");
    let api =
        Node::query_api(dir.path()).broker(&broker).data_dir(&shared).args(["--group-id", "shared-group"]).spawn();
    let base = api.http.clone();

    let client = http();
    // Wait until both workers hold partitions (their heartbeats say so).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = client.call("GET", &format!("{base}/monitoring/health"), None).json();
        let assigned: Vec<usize> = health["workers"]
            .as_array()
            .map(|ws| ws.iter().map(|w| w["assigned"].as_array().map_or(0, Vec::len)).collect())
            .unwrap_or_default();
        if assigned.len() == 2 && assigned.iter().all(|n| *n > 0) {
            let all: Vec<String> = health["workers"]
                .as_array()
                .expect("workers")
                .iter()
                .flat_map(|w| {
                    w["assigned"].as_array().expect("assigned").iter().map(|p| p.as_str().expect("name").to_string())
                })
                .collect();
            let unique: BTreeSet<&String> = all.iter().collect();
            assert_eq!(unique.len(), all.len(), "a partition is assigned to one worker only: {all:?}");
            break;
        }
        assert!(Instant::now() < deadline, "both workers never held partitions: {health}");
        std::thread::sleep(Duration::from_millis(500));
    }

    let rt = runtime();
    let producer = rt.block_on(async { producer(&broker.brokers) });
    let first: Vec<(String, Vec<u8>)> = (0..4000).map(|i| (format!("key-{i}"), encode_mixed(i, &metric(i)))).collect();
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &first)), 4000);
    assert_eq!(wait_for_count(&client, &base, "SELECT COUNT(*) FROM metrics", 4000, Duration::from_secs(60)), 4000);
    let partitions = sql(&client, &base, "SELECT COUNT(DISTINCT kafka_partition) FROM metrics");
    assert_eq!(partitions[0][0], json!(4), "keys spread over all partitions");

    // Both workers wrote batches: the batch records name their writers.
    let writers: BTreeSet<String> = walk(&shared.join("hot/_catalog/commits"))
        .into_iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter_map(|v| v["writer"].as_str().map(str::to_string))
        .collect();
    let heartbeats = client.call("GET", &format!("{base}/monitoring/health"), None).json();
    let stored: Vec<u64> =
        heartbeats["workers"].as_array().expect("workers").iter().map(|w| w["stored"].as_u64().unwrap_or(0)).collect();
    assert!(
        writers.len() == 2 || stored.iter().filter(|n| **n > 0).count() == 2,
        "both workers stored events: writers {writers:?}, heartbeats {heartbeats}"
    );

    // One worker dies; the survivor takes over its partitions (after the session timeout,
    // and if the coordinator leaves them unowned, after the worker's orphan watchdog
    // rejoins the group).
    b.proc.kill9();
    // The survivor's definitions as loaded at start (built-ins), before the new one exists.
    let a_metrics = format!("{}/metrics", a.http);
    wait_for_counter(
        &client,
        &a_metrics,
        "callscope_pipeline_custom_metrics_reloads_total",
        1.0,
        Duration::from_secs(30),
    );
    let loaded_before = counter_total(&client, &a_metrics, "callscope_pipeline_custom_metrics_loaded");
    // A custom metric created now reaches the surviving worker (a separate process) within
    // seconds: it materializes a series of its own from the samples that follow.
    let def = json!({"name": "asr_latency_by_region", "type": "summary", "help": "ASR latency per region",
        "unit": "milliseconds", "labels": ["region"],
        "rule": {"source": "ai_response_time_ms", "filter": {"service": "asr"}, "aggregate": "p95"}});
    let reply = client.call("POST", &format!("{base}/monitoring/metrics/custom"), Some(&def));
    assert_eq!(reply.status, 201, "{}", reply.body);
    // The survivor has loaded it (one definition more) before the samples it must count.
    wait_for_counter(
        &client,
        &a_metrics,
        "callscope_pipeline_custom_metrics_loaded",
        loaded_before + 1.0,
        Duration::from_secs(30),
    );
    let second: Vec<(String, Vec<u8>)> =
        (4000..6000).map(|i| (format!("key-{i}"), encode_mixed(i, &metric(i)))).collect();
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &second)), 2000);
    assert_eq!(wait_for_count(&client, &base, "SELECT COUNT(*) FROM metrics", 6000, Duration::from_secs(120)), 6000);
    // Deliberate quiet window: a late duplicate would show up in it.
    std::thread::sleep(Duration::from_secs(1));
    let rows = sql(&client, &base, "SELECT COUNT(*), COUNT(DISTINCT labels['seq']) FROM metrics");
    assert_eq!(rows[0], vec![json!(6000), json!(6000)], "every event stored exactly once");

    // Window state moved with the partitions: roll-ups equal SQL over raw, nothing twice.
    crate::windows::wait_for_rollups(&client, &base, 6000);
    crate::windows::assert_rollups_match_raw(&client, &base);
    let asr_after_definition = (4000..6000).filter(|i| i % 3 == 1).count() as i64;
    let q = "SELECT COALESCE(SUM(count), 0) FROM metric_rollups WHERE name = 'asr_latency_by_region' AND resolution_ms = 10000";
    // Every sample after the definition is counted; samples the survivor replayed from the
    // dead worker's last checkpoint may be counted too (the definition was loaded by then).
    let asr_total = (0..6000).filter(|i| i % 3 == 1).count() as i64;
    let applied = wait_for_count(&client, &base, q, asr_after_definition, Duration::from_secs(60));
    assert!(
        (asr_after_definition..=asr_total).contains(&applied),
        "the new definition was applied by the running worker: {applied} samples (expected {asr_after_definition}..={asr_total})"
    );
}

/// A `pipeline` named `name` in consumer group `group`, storing into `shared`.
fn group_member(
    dir: &std::path::Path,
    broker: &Node,
    shared: &std::path::Path,
    group: &str,
    name: &str,
) -> NodeBuilder {
    Node::pipeline(dir, name).broker(broker).data_dir(shared).args(["--group-id", group, "--flush-interval", "200ms"])
}

/// The partitions a worker's last heartbeat in `shared` says it holds.
fn assigned(shared: &std::path::Path, worker: &str) -> Vec<String> {
    let path = shared.join(format!("hot/_catalog/workers/{worker}.json"));
    std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v["assigned"].as_array().map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_string)).collect())
        })
        .unwrap_or_default()
}

/// As an operator would try it: two pipelines, one frozen with SIGSTOP under load. The live
/// one takes the frozen one's partitions within the session timeout plus a few seconds and
/// stores what arrives meanwhile; thawed, the frozen one (a zombie until it rejoins) stores
/// nothing twice.
#[test]
fn a_frozen_worker_loses_its_partitions_and_stores_nothing_twice_when_thawed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = dir.path().join("shared");
    let broker = Node::broker(dir.path()).spawn();
    let pipeline = |name: &str| group_member(dir.path(), &broker, &shared, "frozen-group", name).spawn();
    let mut frozen = pipeline("frozen-a");
    let mut live = pipeline("frozen-b");
    let deadline = Instant::now() + Duration::from_secs(60);
    let inputs = loop {
        let (a, b) = (assigned(&shared, "frozen-a"), assigned(&shared, "frozen-b"));
        if !a.is_empty() && !b.is_empty() {
            break a.len() + b.len();
        }
        assert!(Instant::now() < deadline, "both workers never held partitions: {a:?} {b:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let rt = runtime();
    let producer = rt.block_on(async { producer(&broker.brokers) });
    let events = |from: usize| -> Vec<(String, Vec<u8>)> {
        (from..from + 2000).map(|i| (format!("key-{i}"), encode_mixed(i, &metric(i)))).collect()
    };
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &events(0))), 2000);
    let wait_stored = |n: i64| {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let stored = sql_direct(&shared);
            if stored >= n {
                return stored;
            }
            assert!(Instant::now() < deadline, "{stored} of {n} events stored");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    wait_stored(2000);

    let pid = frozen.proc.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success());
    let stopped = Instant::now();
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &events(2000))), 2000);
    let deadline = Instant::now() + Duration::from_secs(60);
    while assigned(&shared, "frozen-b").len() < inputs {
        assert!(Instant::now() < deadline, "the live worker never took the frozen one's partitions");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("the live worker held every partition {:?} after the freeze", stopped.elapsed());
    wait_stored(4000);

    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().expect("kill").success());
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &events(4000))), 2000);
    assert_eq!(wait_stored(6000), 6000);
    // Whatever the thawed worker still had queued must not show up as a second copy.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sql_direct(&shared), 6000, "no event stored twice");
    let duplicates = sql_direct_value(
        &shared,
        "SELECT COUNT(*) FROM (SELECT kafka_partition, kafka_offset FROM metrics GROUP BY 1, 2 HAVING COUNT(*) > 1)",
    );
    assert_eq!(duplicates, 0);
    frozen.proc.terminate();
    live.proc.terminate();
}
