//! The storage lifecycle against a running `standalone`: `callscope lifecycle run` compacts
//! hours the workers wrote, queries see the same rows before, during and after, and a
//! `kill -9` in the middle of a step is finished by the next run.

use std::process::Command;
use std::time::{Duration, Instant};

use callscope_schemas::Event;

use crate::support::*;

const EVENTS: usize = 6000;
const HOUR_MS: i64 = 3_600_000;

fn lifecycle(data_dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["lifecycle", "run", "--data-dir", data_dir.to_str().expect("path")])
        .args(extra)
        .output()
        .expect("run callscope lifecycle")
}

fn totals(client: &Http, base: &str) -> (i64, f64) {
    let rows = sql(client, base, "SELECT COUNT(*), SUM(value) FROM metrics");
    (rows[0][0].as_i64().expect("count"), rows[0][1].as_f64().unwrap_or(0.0))
}

#[test]
fn lifecycle_run_compacts_beside_live_ingestion_and_a_kill_9_mid_step_is_finished_by_a_rerun() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(dir.path())
        .args(["--flush-rows", "500", "--flush-interval", "100ms", "--lifecycle-interval", "0s"])
        .spawn();
    // Samples of an hour that ended more than 2 h ago: due for compaction by the default policy.
    let hour = (callscope_runtime::now_ms() / HOUR_MS - 4) * HOUR_MS;
    let payloads: Vec<(String, Vec<u8>)> = (0..EVENTS)
        .map(|i| {
            let mut event = metric(i);
            if let Event::Metric(m) = &mut event {
                m.timestamp_ms = hour + (i as i64 * 577) % HOUR_MS;
            }
            (format!("k{i}"), encode_mixed(i, &event))
        })
        .collect();
    let rt = runtime();
    let acked = rt.block_on(async { produce_all(&producer(&node.brokers), "callscope.metrics", &payloads).await });
    assert_eq!(acked, EVENTS);
    let client = http();
    wait_for_count(&client, &node.http, "SELECT COUNT(*) FROM metrics", EVENTS as i64, Duration::from_secs(90));
    let before = totals(&client, &node.http);
    let unit = node.data_dir.join("hot/metrics").join(format!(
        "date={}/hour={}",
        chrono::DateTime::from_timestamp_millis(hour).expect("time").format("%Y-%m-%d"),
        chrono::DateTime::from_timestamp_millis(hour).expect("time").format("%H")
    ));
    let small_files = walk(&unit).len();
    assert!(small_files > 1, "the workers wrote several small files ({small_files})");

    // A dry run changes nothing and says what it would do.
    let dry = lifecycle(&node.data_dir, &["--dry-run"]);
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    assert!(stdout.contains("dry run: policy default") && stdout.contains("changed"), "{stdout}");
    assert!(walk(&node.data_dir.join("warm")).is_empty());

    // kill -9 while the step waits at its commit (the manifest PUT is held back 60 s).
    let mut job = Proc::spawn_program(
        "lifecycle-killed",
        dir.path(),
        BIN,
        &[
            "lifecycle",
            "run",
            "--data-dir",
            node.data_dir.to_str().expect("path"),
            "--storage-option",
            "fault_spec=put:_catalog/manifests/:latency:60s",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while walk(&node.data_dir.join("warm")).is_empty() {
        job.assert_running();
        assert!(Instant::now() < deadline, "the compacted file never appeared:\n{}", job.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    job.kill9();
    assert_eq!(totals(&client, &node.http), before, "a step killed before its commit changes nothing");

    let rerun = lifecycle(&node.data_dir, &[]);
    let stdout = String::from_utf8_lossy(&rerun.stdout);
    assert!(rerun.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&rerun.stderr));
    assert!(stdout.contains("Finished"), "{stdout}");
    assert_eq!(totals(&client, &node.http), before, "the same rows, once each, after compaction");
    assert_eq!(sql_direct(&node.data_dir), EVENTS as i64);
    let manifests = walk(&node.data_dir.join("hot/_catalog/manifests/metrics"));
    assert_eq!(manifests.len(), 1, "one committed generation: {manifests:?}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifests[0]).expect("read")).expect("json");
    let rows: i64 = manifest["files"].as_array().expect("files").iter().map(|f| f["rows"].as_i64().unwrap_or(0)).sum();
    assert_eq!(rows, EVENTS as i64);
    assert_eq!(manifest["replaced_hot"].as_array().expect("replaced").len(), small_files);

    // Nothing left to do; the replaced files wait out the grace (queries may still read them).
    let again = lifecycle(&node.data_dir, &[]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains(": 0 of"), "{stdout}");
    assert_eq!(walk(&unit).len(), small_files);
    assert_eq!(totals(&client, &node.http), before);
}
