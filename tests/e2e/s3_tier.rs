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
    // Samples of an hour that ended hours ago, so that every lifecycle step is due.
    let hour = (callscope_runtime::now_ms() / 3_600_000 - 4) * 3_600_000;
    let payloads: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|i| {
            let mut event = metric(i);
            if let callscope_schemas::Event::Metric(m) = &mut event {
                m.timestamp_ms = hour + i as i64 * 1000;
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
        assert!(stdout.contains(": 1 of"), "{policy} changed the hour: {stdout}");
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
