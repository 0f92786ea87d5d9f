//! Mixed Avro/JSON events and malformed messages through a standalone process.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

const METRICS: usize = 3000;
const SPANS: usize = 1200;
const ALERTS: usize = 200;

#[test]
fn valid_events_are_stored_with_their_values_and_malformed_ones_are_dead_lettered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(dir.path()).args(["--flush-interval", "300ms"]).spawn();
    let rt = runtime();
    let producer = rt.block_on(async { producer(&node.brokers) });

    let metrics: Vec<(String, Vec<u8>)> =
        (0..METRICS).map(|i| (format!("k{i}"), encode_mixed(i, &metric(i)))).collect();
    let spans: Vec<(String, Vec<u8>)> =
        (0..SPANS).map(|i| (format!("t{}", i / 4), encode_mixed(i, &span(i)))).collect();
    let alerts: Vec<(String, Vec<u8>)> = (0..ALERTS).map(|i| (format!("a{i}"), encode_mixed(i, &alert(i)))).collect();

    let mut nan = metric(0);
    if let callscope_schemas::Event::Metric(m) = &mut nan {
        m.value = f64::NAN;
    }
    let mut old = metric(1);
    if let callscope_schemas::Event::Metric(m) = &mut old {
        m.timestamp_ms -= 30 * 24 * 3600 * 1000;
    }
    let mut unknown_id = callscope_schemas::avro::encode_confluent(&metric(2)).expect("avro");
    unknown_id[4] = 77;
    let bad_metrics: Vec<(String, Vec<u8>)> = vec![
        ("bad".into(), b"this is not an event".to_vec()),
        ("bad".into(), br#"{"name": "calls_total", "kind": "counter"}"#.to_vec()),
        ("bad".into(), unknown_id),
        ("bad".into(), callscope_schemas::avro::encode_confluent(&nan).expect("avro")),
        ("bad".into(), callscope_schemas::json::encode(&old)),
        ("bad".into(), vec![0, 0, 0, 0, 1, 0xff, 0xff]),
    ];
    let bad_spans: Vec<(String, Vec<u8>)> = vec![(
        "bad".into(),
        br#"{"trace_id":"xyz","span_id":"00f067aa0ba902b7","service":"asr","operation":"t","kind":"server","start_time_us":1,"duration_us":1,"status":"ok"}"#.to_vec(),
    )];

    rt.block_on(async {
        // Interleave bad messages between good ones so that they share batches.
        assert_eq!(produce_all(&producer, "callscope.metrics", &metrics[..METRICS / 2]).await, METRICS / 2);
        assert_eq!(produce_all(&producer, "callscope.metrics", &bad_metrics).await, bad_metrics.len());
        assert_eq!(produce_all(&producer, "callscope.metrics", &metrics[METRICS / 2..]).await, METRICS - METRICS / 2);
        assert_eq!(produce_all(&producer, "callscope.spans", &spans).await, SPANS);
        assert_eq!(produce_all(&producer, "callscope.spans", &bad_spans).await, 1);
        assert_eq!(produce_all(&producer, "callscope.alerts", &alerts).await, ALERTS);
    });

    let client = http();
    let wait = Duration::from_secs(60);
    assert_eq!(
        wait_for_count(&client, &node.http, "SELECT COUNT(*) FROM metrics", METRICS as i64, wait),
        METRICS as i64
    );
    assert_eq!(wait_for_count(&client, &node.http, "SELECT COUNT(*) FROM spans", SPANS as i64, wait), SPANS as i64);
    assert_eq!(wait_for_count(&client, &node.http, "SELECT COUNT(*) FROM alerts", ALERTS as i64, wait), ALERTS as i64);

    // Values: every sequence number once, with the value it was sent with.
    let rows = sql(
        &client,
        &node.http,
        "SELECT COUNT(DISTINCT labels['seq']), SUM(value), MIN(value), MAX(value) FROM metrics",
    );
    let expected_sum: f64 = (0..METRICS).map(|i| i as f64 + 0.5).sum();
    assert_eq!(rows[0][0], json!(METRICS));
    assert!((rows[0][1].as_f64().expect("sum") - expected_sum).abs() < 1e-6, "{rows:?}");
    assert_eq!(rows[0][2], json!(0.5));
    let rows = sql(
        &client,
        &node.http,
        "SELECT service, value, unit, labels['region'], kind FROM metrics WHERE labels['seq'] = '1234'",
    );
    assert_eq!(
        rows,
        vec![vec![json!("asr"), json!(1234.5), json!("milliseconds"), json!("cn-east"), json!("histogram")]]
    );
    let dupes = sql(
        &client,
        &node.http,
        "SELECT COUNT(*) FROM (SELECT kafka_partition, kafka_offset FROM metrics GROUP BY 1, 2 HAVING COUNT(*) > 1)",
    );
    assert_eq!(dupes[0][0], json!(0));

    // Alerts keep nullable fields.
    let rows =
        sql(&client, &node.http, "SELECT status, ends_at_ms IS NULL, value FROM alerts WHERE labels['seq'] = '7'");
    assert_eq!(rows, vec![vec![json!("resolved"), json!(false), json!(7.0)]]);

    // The time-series endpoint agrees with SQL.
    let now = now_ms();
    let reply = client.call(
        "GET",
        &format!(
            "{}/monitoring/metrics?name=ai_response_time_ms&agg=count&step=1h&start={}&end={}",
            node.http,
            now - 3 * 3_600_000,
            now + 60_000
        ),
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let series = reply.json();
    let total: f64 = series
        .as_array()
        .expect("array")
        .iter()
        .flat_map(|s| s["points"].as_array().expect("points").iter().map(|p| p[1].as_f64().expect("v")))
        .sum();
    assert_eq!(total as usize, METRICS);
    let reply = client.call(
        "GET",
        &format!(
            "{}/monitoring/metrics?name=ai_response_time_ms&service=tts&label.seq=2&agg=max&step=1h&start={}",
            node.http,
            now - 3 * 3_600_000
        ),
        None,
    );
    let series = reply.json();
    assert_eq!(series.as_array().map(Vec::len), Some(1), "{series}");
    assert_eq!(series[0]["labels"]["service"], "tts");
    assert_eq!(series[0]["points"][0][1], json!(2.5));

    // A trace comes back whole and in order.
    let trace_id = format!("{:032x}", 0xabc0_0000u64 + 5);
    let reply = client.call("GET", &format!("{}/monitoring/tracing/traces/{trace_id}", node.http), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let trace = reply.json();
    assert_eq!(trace["span_count"], 4);
    assert_eq!(trace["spans"][0]["parent_span_id"], serde_json::Value::Null);
    assert_eq!(client.call("GET", &format!("{}/monitoring/tracing/traces/{:032x}", node.http, 1u8), None).status, 404);

    // Every malformed message is in the dead-letter topic, with its reason and origin.
    let expected_bad = bad_metrics.len() + bad_spans.len();
    let dead = rt.block_on(read_topic(&node.brokers, "callscope.dlq", expected_bad, Duration::from_secs(30)));
    assert_eq!(dead.len(), expected_bad, "dead letters");
    let kinds: BTreeSet<String> = dead.iter().map(|(_, h)| h["callscope.error.kind"].clone()).collect();
    for kind in ["encoding", "json", "unknown_schema", "invalid_field", "timestamp_out_of_range", "avro"] {
        assert!(kinds.contains(kind), "missing dead-letter kind {kind}: {kinds:?}");
    }
    for (payload, headers) in &dead {
        assert!(!headers["callscope.error"].is_empty());
        assert!(headers["callscope.source.topic"].starts_with("callscope."));
        assert!(headers["callscope.source.offset"].parse::<i64>().is_ok());
        assert!(headers["callscope.source.partition"].parse::<i32>().is_ok());
        if headers["callscope.error.kind"] == "encoding" {
            assert_eq!(payload.as_slice(), b"this is not an event", "original bytes are kept");
        }
    }

    // The pipeline's own counters saw it all.
    let metrics_text = client.call("GET", &format!("{}/metrics", node.http), None).body;
    assert!(metrics_text.contains("callscope_pipeline_events_dead_lettered_total"), "{metrics_text}");
    assert!(
        metrics_text.contains("callscope_pipeline_events_stored_total{dataset=\"metrics\"} 3000"),
        "{metrics_text}"
    );

    // Ordered shutdown on SIGTERM: flush, commit, remove the heartbeat, exit 0.
    let mut node = node;
    let status = node.proc.terminate();
    assert!(status.is_some_and(|s| s.success()), "clean exit on SIGTERM: {status:?}\n{}", node.proc.log_tail());
    let heartbeats = std::fs::read_dir(node.data_dir.join("hot/_catalog/workers")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(heartbeats, 0, "the worker removes its heartbeat when it stops");
}
