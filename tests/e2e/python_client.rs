//! A non-Rust Kafka client: Python confluent-kafka with the Confluent AvroSerializer
//! against callscope's schema-registry endpoints, plus plain JSON.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[test]
fn python_confluent_kafka_producer_with_the_avro_serializer() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/python_producer.py");
    let python = python_with("from confluent_kafka.schema_registry.avro import AvroSerializer");
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(dir.path()).args(["--flush-interval", "200ms"]).spawn();
    let out = std::process::Command::new(&python)
        .args([script, &node.brokers, &node.http, "400"])
        .output()
        .expect("run python producer");
    assert!(
        out.status.success(),
        "python producer failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let client = http();
    let q = "SELECT COUNT(*) FROM metrics WHERE labels['client'] = 'python'";
    assert_eq!(wait_for_count(&client, &node.http, q, 400, Duration::from_secs(60)), 400);
    let rows = sql(
        &client,
        &node.http,
        "SELECT labels['encoding'], COUNT(*), SUM(value) FROM metrics WHERE labels['client'] = 'python' GROUP BY 1 ORDER BY 1",
    );
    let avro_sum: f64 = (0..400).filter(|i| i % 2 == 0).map(f64::from).sum();
    let json_sum: f64 = (0..400).filter(|i| i % 2 == 1).map(f64::from).sum();
    assert_eq!(
        rows,
        vec![vec![json!("avro"), json!(200), json!(avro_sum)], vec![json!("json"), json!(200), json!(json_sum)]]
    );
}
