//! OpenTelemetry in: the Python SDK's OTLP/HTTP exporters posting to `/v1/traces` and
//! `/v1/metrics`, Kafka messages written as the OpenTelemetry Collector's Kafka exporter
//! writes them (protobuf and OTLP JSON, built with the Python `opentelemetry-proto`
//! package), the OTLP/HTTP answers (protobuf and JSON, gzip, partial success, refusals),
//! and bad OTLP bytes in the dead-letter topic.

use std::io::Write;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::{Value, json};

use crate::support::*;

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/otlp_client.py");

/// The trace with `id` once it has `spans` spans (the API answers 404 until it is stored).
fn wait_for_trace(client: &Http, base: &str, id: &str, spans: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = client.call("GET", &format!("{base}/monitoring/tracing/traces/{id}"), None);
        if reply.status == 200 && reply.json()["span_count"] == json!(spans) {
            return reply.json();
        }
        assert!(Instant::now() < deadline, "trace {id} never had {spans} spans: {} {}", reply.status, reply.body);
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn span_named<'a>(trace: &'a Value, operation: &str) -> &'a Value {
    trace["spans"].as_array().and_then(|s| s.iter().find(|s| s["operation"] == operation)).unwrap_or_else(|| {
        panic!("no span {operation} in {trace}");
    })
}

fn run_python(python: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(python).arg(CLIENT).args(args).output().expect("run otlp_client.py");
    assert!(
        out.status.success(),
        "otlp_client.py {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_python_sdk_exports_traces_and_metrics_over_otlp_http() {
    let python = python_with("from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter");
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(dir.path()).args(["--flush-interval", "200ms"]).spawn();
    let client = http();
    let trace_id = run_python(&python, &["sdk", &node.http, "sdk-run"]);
    assert_eq!(trace_id.len(), 32, "{trace_id}");

    let trace = wait_for_trace(&client, &node.http, &trace_id, 3);
    let root = span_named(&trace, "POST /call");
    let asr = span_named(&trace, "asr.recognize");
    let whitelist = span_named(&trace, "whitelist.check");
    // The tree: both children point at the root, which has no parent.
    assert_eq!(root["parent_span_id"], Value::Null);
    assert_eq!(asr["parent_span_id"], root["span_id"]);
    assert_eq!(whitelist["parent_span_id"], root["span_id"]);
    assert_eq!(
        (root["kind"].as_str(), asr["kind"].as_str(), whitelist["kind"].as_str()),
        (Some("server"), Some("client"), Some("internal"))
    );
    assert_eq!(root["service"], "call-gateway");
    assert_eq!((asr["status"].as_str(), asr["status_message"].as_str()), (Some("error"), Some("recognizer timeout")));
    assert_eq!(whitelist["status"], "unset");
    assert_eq!(asr["attributes"]["asr.model"], "zh-16k");
    assert_eq!(asr["attributes"]["asr.words"], "12");
    assert_eq!(root["attributes"]["call.id"], "sdk-run");
    assert_eq!(root["resource_attributes"]["host.name"], "gw-7");
    assert_eq!(asr["events"][0]["name"], "retry");
    assert_eq!(asr["events"][0]["attributes"]["attempt"], "2");
    assert_eq!(trace["error_count"], 1);

    // Metrics, delta temporality: the counter's increments sum up, the histogram is a
    // family of Prometheus-style series.
    let q = "SELECT CAST(SUM(value) AS BIGINT) FROM metrics WHERE name = 'otel_calls' AND labels['run'] = 'sdk-run'";
    assert_eq!(wait_for_count(&client, &node.http, q, 7, Duration::from_secs(60)), 7);
    let rows = sql(
        &client,
        &node.http,
        "SELECT name, labels['le'], kind, value, service FROM metrics WHERE name LIKE 'otel_asr_latency%' \
         AND labels['run'] = 'sdk-run' AND name <> 'otel_asr_latency_bucket' ORDER BY name",
    );
    assert_eq!(
        rows,
        vec![
            vec![json!("otel_asr_latency_count"), Value::Null, json!("counter"), json!(4.0), json!("call-gateway")],
            vec![json!("otel_asr_latency_max"), Value::Null, json!("gauge"), json!(900.0), json!("call-gateway")],
            vec![json!("otel_asr_latency_min"), Value::Null, json!("gauge"), json!(40.0), json!("call-gateway")],
            vec![json!("otel_asr_latency_sum"), Value::Null, json!("counter"), json!(1190.0), json!("call-gateway")],
        ]
    );
    let inf = "SELECT CAST(value AS BIGINT) FROM metrics WHERE name = 'otel_asr_latency_bucket' AND labels['le'] = '+Inf' \
               AND labels['run'] = 'sdk-run'";
    assert_eq!(wait_for_count(&client, &node.http, inf, 4, Duration::from_secs(10)), 4);
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }) }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "billing")], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            schema_url: String::new(),
        }],
    }
}

fn otlp_span(trace: u8, id: u8, name: &str) -> Span {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: name.into(),
        kind: 2,
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000_000,
        ..Default::default()
    }
}

fn post(node: &Node, path: &str, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    let rt = runtime();
    rt.block_on(async {
        let mut request =
            reqwest::Client::new().post(format!("{}{path}", node.http)).header("content-type", content_type).body(body);
        if let Some(e) = encoding {
            request = request.header("content-encoding", e);
        }
        let reply = request.send().await.expect("send");
        let status = reply.status().as_u16();
        let ct = reply.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        (status, ct, reply.bytes().await.expect("body").to_vec())
    })
}

#[test]
fn otlp_http_answers_per_the_spec_and_kafka_takes_collector_messages() {
    let python =
        python_with("from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest");
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(dir.path()).args(["--flush-interval", "200ms"]).spawn();
    let client = http();

    // Protobuf, gzip-compressed, one good span and one with a short trace id: 200 with a
    // partial success naming the rejected span; the good span is stored.
    let mut bad = otlp_span(0xc3, 2, "bad");
    bad.trace_id = vec![7; 3];
    let mut ancient = otlp_span(0xc3, 3, "ancient");
    (ancient.start_time_unix_nano, ancient.end_time_unix_nano) = (1_000_000_000, 2_000_000_000);
    let body = request(vec![otlp_span(0xc3, 1, "charge"), bad, ancient]).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).expect("gzip");
    let (status, content_type, reply) =
        post(&node, "/v1/traces", "application/x-protobuf", Some("gzip"), gz.finish().expect("gzip"));
    assert_eq!((status, content_type.as_str()), (200, "application/x-protobuf"));
    let answer = ExportTraceServiceResponse::decode(reply.as_slice()).expect("an ExportTraceServiceResponse");
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(partial.error_message.contains("traceId has 3 bytes"), "{}", partial.error_message);
    assert!(partial.error_message.contains("\"ancient\""), "{}", partial.error_message);
    let trace = wait_for_trace(&client, &node.http, &"c3".repeat(16), 1);
    assert_eq!(trace["spans"][0]["service"], "billing");
    // The receiver counts what it took and what it refused.
    let metrics = client.call("GET", &format!("{}/metrics", node.http), None).body;
    for line in [
        r#"callscope_otlp_http_items_total{outcome="accepted",signal="traces"} 1"#,
        r#"callscope_otlp_http_items_total{outcome="rejected",signal="traces"} 2"#,
        r#"callscope_otlp_http_requests_total{signal="traces",status="200"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} not in:\n{metrics}");
    }

    // OTLP JSON in, JSON out; nothing rejected: no partial success.
    let json_body = serde_json::to_vec(&request(vec![otlp_span(0xd4, 1, "refund")])).expect("json");
    let (status, content_type, reply) = post(&node, "/v1/traces", "application/json", None, json_body);
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let reply: Value = serde_json::from_slice(&reply).expect("JSON answer");
    assert_eq!(reply.get("partialSuccess").cloned().unwrap_or(Value::Null), Value::Null, "{reply}");
    wait_for_trace(&client, &node.http, &"d4".repeat(16), 1);

    // Refusals: not a request (400, google.rpc.Status), an unknown media type (415).
    let (status, _, reply) = post(&node, "/v1/traces", "application/json", None, b"[1, 2]".to_vec());
    assert_eq!(status, 400);
    let reply: Value = serde_json::from_slice(&reply).expect("a status");
    assert!(reply["message"].as_str().is_some_and(|m| m.contains("not an OTLP JSON request")), "{reply}");
    assert_eq!(post(&node, "/v1/traces", "text/plain", None, b"x".to_vec()).0, 415);
    assert_eq!(post(&node, "/v1/metrics", "application/x-protobuf", Some("gzip"), b"not gzip".to_vec()).0, 400);

    // The collector's Kafka exporter: a protobuf and an OTLP JSON request, then garbage.
    let ids = run_python(&python, &["kafka", &node.brokers, "otlp_spans", "kafka-run"]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    for (id, encoding) in ids.iter().zip(["proto", "json"]) {
        let trace = wait_for_trace(&client, &node.http, id, 2);
        let root = span_named(&trace, "dialogue.turn");
        let llm = span_named(&trace, "llm.generate");
        assert_eq!(root["attributes"]["encoding"], encoding);
        assert_eq!(root["kind"], "server");
        assert_eq!(llm["parent_span_id"], root["span_id"]);
        assert_eq!((llm["kind"].as_str(), llm["status"].as_str()), (Some("client"), Some("error")));
        assert_eq!(llm["status_message"], "model overloaded");
        assert_eq!(llm["attributes"]["llm.tokens"], "321");
        assert_eq!(
            (root["service"].as_str(), root["resource_attributes"]["run"].as_str()),
            (Some("ai-engine"), Some("kafka-run"))
        );
        assert_eq!(root["duration_us"], 80_000);
    }
    let rt = runtime();
    let dead = rt.block_on(read_topic(&node.brokers, "callscope.dlq", 1, Duration::from_secs(30)));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (payload, headers) = &dead[0];
    assert_eq!(headers["callscope.error.kind"], "otlp");
    assert_eq!(headers["callscope.source.topic"], "otlp_spans");
    assert!(payload.ends_with(b"not an export request"), "the original bytes are kept");
    // Every offset is committed, the empty request's (the newest) too.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let health = client.call("GET", &format!("{}/monitoring/tracing/health", node.http), None).json();
        let lag: i64 = health["lag"]["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .filter(|p| p["topic"] == "otlp_spans")
            .filter_map(|p| p["lag"].as_i64())
            .sum();
        if lag == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "otlp_spans offsets never all committed: {}", health["lag"]);
        std::thread::sleep(Duration::from_millis(500));
    }
}
