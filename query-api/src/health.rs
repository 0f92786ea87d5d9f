//! Health: `GET /health` (liveness), `GET /monitoring/health` (Kafka connectivity and the
//! consumer group's lag per partition, storage reachability, every worker's heartbeat),
//! and `GET /metrics` (this process's own metrics in the Prometheus text format).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use callscope_storage::workers;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::AppState;

/// Reads the consumer group's committed offsets and the topics' watermarks.
pub struct KafkaProbe {
    consumer: BaseConsumer,
    group_id: String,
    topics: Vec<String>,
    brokers: String,
}

impl KafkaProbe {
    /// `config` must name the brokers; `group_id` is the pipeline's consumer group.
    pub fn new(
        mut config: ClientConfig,
        group_id: &str,
        topics: Vec<String>,
    ) -> Result<KafkaProbe, rdkafka::error::KafkaError> {
        let brokers = config.get("bootstrap.servers").unwrap_or_default().to_string();
        let consumer: BaseConsumer = config.set("group.id", group_id).set("enable.auto.commit", "false").create()?;
        Ok(KafkaProbe { consumer, group_id: group_id.to_string(), topics, brokers })
    }

    /// Blocking: call from `spawn_blocking`.
    pub fn probe(&self, timeout: Duration) -> Value {
        let started = Instant::now();
        let metadata = match self.consumer.fetch_metadata(None, timeout) {
            Ok(m) => m,
            Err(e) => {
                return json!({ "connected": false, "brokers": self.brokers, "error": e.to_string() });
            }
        };
        let mut tpl = TopicPartitionList::new();
        for topic in metadata.topics().iter().filter(|t| self.topics.iter().any(|n| n == t.name())) {
            for p in topic.partitions() {
                tpl.add_partition(topic.name(), p.id());
            }
        }
        let committed = self.consumer.committed_offsets(tpl.clone(), timeout).ok();
        let mut partitions = Vec::new();
        let mut total_lag = 0i64;
        for element in tpl.elements() {
            let (low, high) =
                self.consumer.fetch_watermarks(element.topic(), element.partition(), timeout).unwrap_or((-1, -1));
            let committed_offset = committed
                .as_ref()
                .and_then(|c| c.find_partition(element.topic(), element.partition()))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            let lag = if high < 0 { None } else { Some((high - committed_offset.unwrap_or(low.max(0))).max(0)) };
            total_lag += lag.unwrap_or(0);
            partitions.push(json!({
                "topic": element.topic(),
                "partition": element.partition(),
                "low_watermark": low,
                "high_watermark": high,
                "committed_offset": committed_offset,
                "lag": lag,
            }));
        }
        json!({
            "connected": true,
            "brokers": self.brokers,
            "broker_count": metadata.brokers().len(),
            "group_id": self.group_id,
            "total_lag": total_lag,
            "partitions": partitions,
            "probe_ms": started.elapsed().as_millis() as u64,
        })
    }
}

/// Whether `tier` answers: `{"reachable": true, "latency_ms"}` or
/// `{"reachable": false, "error"}`.
pub async fn tier_probe(tier: &callscope_storage::Tier) -> Value {
    let started = Instant::now();
    match tier.probe().await {
        Ok(()) => json!({"reachable": true, "latency_ms": started.elapsed().as_millis() as u64}),
        Err(e) => json!({"reachable": false, "error": e.to_string()}),
    }
}

pub async fn liveness(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
    }))
}

pub async fn component_health(State(state): State<AppState>) -> Json<Value> {
    Json(component_report(&state).await)
}

/// Kafka, the hot tier and the workers' heartbeats; `status` is `ok` or `degraded`.
pub async fn component_report(state: &AppState) -> Value {
    let kafka = match state.kafka_probe.clone() {
        Some(probe) => tokio::task::spawn_blocking(move || probe.probe(Duration::from_secs(2)))
            .await
            .unwrap_or_else(|e| json!({ "connected": false, "error": e.to_string() })),
        None => json!({ "connected": false, "configured": false }),
    };
    let mut storage = tier_probe(&state.hot).await;
    storage["url"] = json!(state.hot.dir_url(""));
    let now = chrono::Utc::now().timestamp_millis();
    let heartbeats = workers::read_all(&state.hot).await.unwrap_or_default();
    let mut by_state: BTreeMap<&'static str, usize> = BTreeMap::new();
    for w in &heartbeats {
        *by_state.entry(w.state.as_str()).or_default() += 1;
    }
    let alive = |w: &workers::WorkerStatus| now - w.updated_at_ms < 30_000;
    // Partitions a live worker stopped after a permanent write failure: nothing of them is
    // stored until they are reassigned; an operator must look.
    let stopped: Vec<Value> = heartbeats
        .iter()
        .filter(|w| alive(w))
        .flat_map(|w| {
            w.stopped.iter().map(|(p, reason)| json!({"partition": p, "worker": w.worker_id, "reason": reason}))
        })
        .collect();
    let workers_ok = heartbeats.iter().any(|w| alive(w));
    let workers: Vec<Value> = heartbeats
        .iter()
        .map(|w| {
            let mut v = serde_json::to_value(w).unwrap_or(Value::Null);
            v["heartbeat_age_ms"] = json!(now - w.updated_at_ms);
            v["alive"] = json!(alive(w));
            v
        })
        .collect();
    let kafka_ok = kafka["connected"].as_bool().unwrap_or(false);
    let storage_ok = storage["reachable"].as_bool().unwrap_or(false);
    let status = if kafka_ok && storage_ok && workers_ok && stopped.is_empty() { "ok" } else { "degraded" };
    json!({
        "status": status,
        "kafka": kafka,
        "storage": storage,
        "workers": workers,
        "workers_by_state": by_state,
        "stopped_partitions": stopped,
        "uptime_s": state.started.elapsed().as_secs(),
    })
}

/// The process's Prometheus metrics (text exposition format 0.0.4).
pub async fn prometheus_text() -> impl IntoResponse {
    let families = prometheus::default_registry().gather();
    let mut body = String::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode_utf8(&families, &mut body) {
        body = format!("# encoding failed: {e}\n");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}
