//! The four tiers on an S3-compatible object store (moto's S3 server on loopback): the
//! workers write through the S3 API, batch records and manifests use conditional PUTs, the
//! lifecycle compacts, moves and deletes there, and the query API reads the same bucket.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

fn totals(client: &Http, base: &str) -> Vec<serde_json::Value> {
    sql(client, base, "SELECT COUNT(*), SUM(value), COUNT(DISTINCT labels['seq']) FROM metrics").remove(0)
}

#[test]
fn every_tier_and_lifecycle_step_on_s3() {
    let server = MotoS3::start("callscope-test");
    let client = http();
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = server.storage_args("callscope");
    let node = Node::standalone(dir.path())
        .args(storage.iter().map(String::as_str))
        .args(["--flush-interval", "200ms", "--lifecycle-interval", "0s"])
        .spawn();
    let rt = runtime();
    let producer = rt.block_on(async { producer(&node.brokers) });
    // Samples every 10 s of three hours (03:00 to 05:46) of the day before yesterday, so
    // that every lifecycle step is due, and the day is due whole for roll-ups.
    let day = (callscope_runtime::now_ms() / 86_400_000 - 2) * 86_400_000;
    let hour = day + 3 * 3_600_000;
    let payloads: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|i| {
            let mut event = metric(i);
            if let callscope_schemas::Event::Metric(m) = &mut event {
                m.timestamp_ms = hour + i as i64 * 10_000;
            }
            (format!("k{i}"), encode_mixed(i, &event))
        })
        .collect();
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &payloads)), 1000);
    assert_eq!(
        wait_for_count(&client, &node.http, "SELECT COUNT(*) FROM metrics", 1000, Duration::from_secs(60)),
        1000
    );
    let rows = sql(&client, &node.http, "SELECT COUNT(DISTINCT labels['seq']), MAX(value) FROM metrics");
    assert_eq!(rows[0], vec![json!(1000), json!(999.5)]);
    // A flush every 200 ms on S3 is an expensive habit, and the log says so at start.
    let log = std::fs::read_to_string(&node.proc.log).expect("log");
    assert!(log.contains("object-store requests cost about $"), "no request-cost warning:\n{log}");
    // Nothing went to the local data directory: the tier is the bucket.
    assert!(!node.data_dir.join("hot").exists());
    let health = client.call("GET", &format!("{}/monitoring/health", node.http), None).json();
    assert_eq!(health["storage"]["reachable"], true);
    assert!(
        health["storage"]["url"].as_str().is_some_and(|u| u.starts_with("s3://callscope-test/callscope/hot")),
        "{health}"
    );

    // The roll-ups of the two hours whose windows all closed (the samples run on to 05:46;
    // 360 samples an hour), packed a day per file into cold on the bucket by the cold step:
    // the same answer.
    let date = chrono::DateTime::from_timestamp_millis(day).expect("date").format("%Y-%m-%d").to_string();
    for resolution in ["1m", "1h"] {
        let samples = format!(
            "SELECT SUM(count) FROM metric_rollups WHERE resolution = '{resolution}' AND date = '{date}' \
             AND hour IN ('03', '04') AND name = 'ai_response_time_ms'"
        );
        assert_eq!(wait_for_count(&client, &node.http, &samples, 720, Duration::from_secs(60)), 720, "{resolution}");
    }
    let rollups = format!(
        "SELECT resolution, hour, COUNT(*), SUM(count), CAST(SUM(sum) * 2 AS BIGINT) FROM metric_rollups WHERE date = '{date}' \
         AND hour IN ('03', '04') GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let rollups_before = sql(&client, &node.http, &rollups);
    assert_eq!(rollups_before.len(), 4, "{rollups_before:?}");
    let policies = dir.path().join("policies.json");
    std::fs::write(
        &policies,
        json!([{"id": "s3-rollups", "tables": ["metric_rollups"], "steps": [{"action": "cold", "after": "1h"}]}])
            .to_string(),
    )
    .expect("write policies");
    let out = Command::new(BIN)
        .args(["lifecycle", "run", "--data-dir", node.data_dir.to_str().expect("path"), "--policy", "s3-rollups"])
        .args(["--policy-file", policies.to_str().expect("path")])
        .args(storage.iter().map(String::as_str))
        .output()
        .expect("run callscope lifecycle");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(", 0 errors"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sql(&client, &node.http, &rollups), rollups_before, "the same roll-ups, read from day files");
    let stats = client.call("GET", &format!("{}/monitoring/storage/statistics", node.http), None).json();
    let cold = stats["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|u| u["tier"] == "cold" && u["table"] == "metric_rollups")
        .cloned()
        .unwrap_or_default();
    let (files, hours) = (cold["files"].as_u64().unwrap_or(0), cold["hours"].as_u64().unwrap_or(0));
    assert!(files > 0 && files < hours, "a day file serves several hours: {cold}");

    // Each lifecycle step in turn, on the bucket: compact (warm), cold, archive, delete.
    let before = totals(&client, &node.http);
    let policies = dir.path().join("policies.json");
    std::fs::write(
        &policies,
        json!([
            {"id": "s3-compact", "tables": ["metrics"], "steps": [{"action": "compact", "after": "1h"}]},
            {"id": "s3-cold", "tables": ["metrics"], "steps": [{"action": "cold", "after": "1h"}]},
            {"id": "s3-archive", "tables": ["metrics"], "steps": [{"action": "archive", "after": "1h"}]},
            {"id": "s3-delete", "tables": ["metrics"], "steps": [{"action": "delete", "after": "1h"}]}
        ])
        .to_string(),
    )
    .expect("write policies");
    for (policy, tier) in [("s3-compact", "warm"), ("s3-cold", "cold"), ("s3-archive", "archive"), ("s3-delete", "")] {
        let out = Command::new(BIN)
            .args(["lifecycle", "run", "--data-dir", node.data_dir.to_str().expect("path"), "--policy", policy])
            .args(["--policy-file", policies.to_str().expect("path")])
            .args(storage.iter().map(String::as_str))
            .output()
            .expect("run callscope lifecycle");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{policy}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(": 3 of 3 "), "{policy} changed the three hours: {stdout}");
        if tier.is_empty() {
            assert_eq!(totals(&client, &node.http)[0], json!(0), "deleted");
            break;
        }
        assert_eq!(totals(&client, &node.http), before, "{policy}: the same rows, once each");
        let stats = client.call("GET", &format!("{}/monitoring/storage/statistics", node.http), None).json();
        let here =
            stats["tables"].as_array().expect("tables").iter().find(|u| u["tier"] == tier && u["table"] == "metrics");
        assert_eq!(here.map(|u| u["rows"].clone()), Some(json!(1000)), "{policy}: {stats}");
    }
    drop(server);
}
