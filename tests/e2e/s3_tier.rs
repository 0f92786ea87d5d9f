//! The hot tier on an S3-compatible object store (moto's S3 server on loopback): the
//! workers write through the S3 API, batch records use conditional PUTs, and the query API
//! reads the same bucket.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

struct S3Server(std::process::Child);

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn hot_tier_on_s3() {
    let python = python_with("import moto.server");
    let port = free_port();
    let server = S3Server(
        Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto S3 server"),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let client = http();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.try_call("PUT", &format!("{endpoint}/callscope-test"), None).is_some_and(|r| r.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "S3 server did not start");
        std::thread::sleep(Duration::from_millis(200));
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint_option = format!("aws_endpoint={endpoint}");
    let node = Node::standalone(dir.path())
        .args([
            "--hot-url",
            "s3://callscope-test/callscope/hot",
            "--storage-option",
            &endpoint_option,
            "--storage-option",
            "aws_allow_http=true",
            "--storage-option",
            "aws_access_key_id=test",
            "--storage-option",
            "aws_secret_access_key=test",
            "--storage-option",
            "aws_region=us-east-1",
            "--flush-interval",
            "200ms",
        ])
        .spawn();
    let rt = runtime();
    let producer = rt.block_on(async { producer(&node.brokers) });
    let payloads: Vec<(String, Vec<u8>)> = (0..1000).map(|i| (format!("k{i}"), encode_mixed(i, &metric(i)))).collect();
    assert_eq!(rt.block_on(produce_all(&producer, "callscope.metrics", &payloads)), 1000);
    assert_eq!(
        wait_for_count(&client, &node.http, "SELECT COUNT(*) FROM metrics", 1000, Duration::from_secs(60)),
        1000
    );
    let rows = sql(&client, &node.http, "SELECT COUNT(DISTINCT labels['seq']), MAX(value) FROM metrics");
    assert_eq!(rows[0], vec![json!(1000), json!(999.5)]);
    // Nothing went to the local data directory: the tier is the bucket.
    assert!(!node.data_dir.join("hot").exists());
    let health = client.call("GET", &format!("{}/monitoring/health", node.http), None).json();
    assert_eq!(health["storage"]["reachable"], true);
    assert!(
        health["storage"]["url"].as_str().is_some_and(|u| u.starts_with("s3://callscope-test/callscope/hot")),
        "{health}"
    );
    drop(server);
}
