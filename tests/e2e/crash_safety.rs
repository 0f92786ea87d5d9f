//! `kill -9` while ingesting, restart on the same data directory: every acknowledged event
//! is stored exactly once.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const EVENTS: usize = 40_000;

#[test]
fn kill_9_during_ingestion_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small batches so that a kill lands between many batch commits.
    let start = Node::standalone(dir.path()).args(["--flush-rows", "700", "--flush-interval", "100ms"]);
    let mut node = start.spawn();
    let rt = runtime();
    let producer = rt.block_on(async { producer(&node.brokers) });
    let payloads: Vec<(String, Vec<u8>)> =
        (0..EVENTS).map(|i| (format!("k{i}"), encode_mixed(i, &metric(i)))).collect();
    let acked = rt.block_on(produce_all(&producer, "callscope.metrics", &payloads));
    assert_eq!(acked, EVENTS, "every event is acknowledged before the crash");
    drop(producer);

    let client = http();
    // Crash twice at different points of the ingestion.
    for (round, threshold) in [(1, 1), (2, EVENTS as i64 / 3)] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = sql(&client, &node.http, "SELECT COUNT(*) FROM metrics")[0][0].as_i64().unwrap_or(0);
            if n >= threshold {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: ingestion did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        node.proc.kill9();
        let stored = sql_direct(&node.data_dir);
        eprintln!("round {round}: killed with {stored} rows stored");
        node = start.spawn();
    }

    let n =
        wait_for_count(&client, &node.http, "SELECT COUNT(*) FROM metrics", EVENTS as i64, Duration::from_secs(120));
    assert_eq!(n, EVENTS as i64, "no event lost");
    // Let any late duplicate show up before checking for one.
    std::thread::sleep(Duration::from_secs(2));
    let rows = sql(&client, &node.http, "SELECT COUNT(*), COUNT(DISTINCT labels['seq']), SUM(value) FROM metrics");
    let expected_sum: f64 = (0..EVENTS).map(|i| i as f64 + 0.5).sum();
    assert_eq!(rows[0][0], json!(EVENTS), "no duplicate rows");
    assert_eq!(rows[0][1], json!(EVENTS));
    assert!((rows[0][2].as_f64().expect("sum") - expected_sum).abs() < 1e-3);
    let dupes = sql(
        &client,
        &node.http,
        "SELECT COUNT(*) FROM (SELECT kafka_partition, kafka_offset FROM metrics GROUP BY 1, 2 HAVING COUNT(*) > 1)",
    );
    assert_eq!(dupes[0][0], json!(0));
    assert!(node.proc.terminate().is_some_and(|s| s.success()), "clean exit on SIGTERM");
}
