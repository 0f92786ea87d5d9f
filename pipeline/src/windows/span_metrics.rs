//! Metrics derived from spans in the stream, fed to the same windows as every metric (so
//! roll-ups, alert rules, dashboards and the Prometheus export see them), named as Grafana
//! Tempo's metrics generator names them, so dashboards built for Tempo work unchanged:
//!
//! * **RED per service and operation**: `traces_spanmetrics_calls_total` (a counter, one
//!   per span) and `traces_spanmetrics_latency` (a histogram of the span's duration in
//!   seconds), labelled `span_name`, `span_kind` (`SPAN_KIND_SERVER`, …) and `status_code`
//!   (`STATUS_CODE_OK`, `STATUS_CODE_ERROR`, `STATUS_CODE_UNSET`); the `service` is the span's.
//! * **Service graph edges**: a span whose parent belongs to another service is one call on
//!   the edge parent → child: `traces_service_graph_request_total`,
//!   `traces_service_graph_request_failed_total` (the child failed) and
//!   `traces_service_graph_request_server_seconds` (the child's duration), labelled `client`
//!   and `server`, with `service` = the client, at the child's start time.
//!
//! Pairing a span with its parent needs state: spans arrive in any order (a parent usually
//! after its children, since a span is exported when it ends). [`SpanPairing`] keeps, per
//! topic partition, the recent spans by id and the children still waiting for their parent,
//! for [`PAIR_WAIT_MS`] of event time behind the watermark and at most [`MAX_PENDING`]
//! entries; what expires unpaired is counted, never guessed. Spans of one trace must share a
//! partition (the OTLP receivers and the collector's Kafka exporter key them by trace id).
//! The state depends only on the partition's events in offset order and the watermark, and
//! is saved with the window checkpoint, so a restart pairs exactly as an uninterrupted run.

use std::collections::{HashMap, VecDeque};

use callscope_schemas::events::Labels;
use callscope_schemas::{Metric, MetricKind, Span, SpanKind, SpanStatus};
use serde::{Deserialize, Serialize};

pub const CALLS: &str = "traces_spanmetrics_calls_total";
pub const LATENCY: &str = "traces_spanmetrics_latency";
pub const EDGE_REQUESTS: &str = "traces_service_graph_request_total";
pub const EDGE_FAILED: &str = "traces_service_graph_request_failed_total";
pub const EDGE_SERVER_SECONDS: &str = "traces_service_graph_request_server_seconds";

/// How long (event time behind the watermark) a span waits for its parent or children.
pub const PAIR_WAIT_MS: i64 = 5 * 60_000;
/// Most spans and waiting children kept per partition; the oldest go first.
pub const MAX_PENDING: usize = 200_000;

fn kind_label(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "SPAN_KIND_SERVER",
        SpanKind::Client => "SPAN_KIND_CLIENT",
        SpanKind::Internal => "SPAN_KIND_INTERNAL",
        SpanKind::Producer => "SPAN_KIND_PRODUCER",
        SpanKind::Consumer => "SPAN_KIND_CONSUMER",
    }
}

fn status_label(status: SpanStatus) -> &'static str {
    match status {
        SpanStatus::Ok => "STATUS_CODE_OK",
        SpanStatus::Error => "STATUS_CODE_ERROR",
        SpanStatus::Unset => "STATUS_CODE_UNSET",
    }
}

/// The RED samples of one span.
pub fn red_samples(span: &Span) -> [Metric; 2] {
    let labels: Labels = [
        ("span_name".to_string(), span.operation.clone()),
        ("span_kind".to_string(), kind_label(span.kind).to_string()),
        ("status_code".to_string(), status_label(span.status).to_string()),
    ]
    .into_iter()
    .collect();
    let at = span.start_time_us.div_euclid(1000);
    let sample = |name: &str, kind, value| Metric {
        name: name.to_string(),
        kind,
        value,
        timestamp_ms: at,
        service: span.service.clone(),
        labels: labels.clone(),
        unit: None,
    };
    [sample(CALLS, MetricKind::Counter, 1.0), sample(LATENCY, MetricKind::Histogram, span.duration_us as f64 / 1e6)]
}

/// A child span as an edge needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Child {
    service: String,
    failed: bool,
    duration_us: i64,
    start_ms: i64,
}

impl Child {
    fn edge_samples(&self, client: &str) -> Vec<Metric> {
        let labels: Labels = [("client".to_string(), client.to_string()), ("server".to_string(), self.service.clone())]
            .into_iter()
            .collect();
        let sample = |name: &str, kind, value| Metric {
            name: name.to_string(),
            kind,
            value,
            timestamp_ms: self.start_ms,
            service: client.to_string(),
            labels: labels.clone(),
            unit: None,
        };
        let mut out = vec![
            sample(EDGE_REQUESTS, MetricKind::Counter, 1.0),
            sample(EDGE_SERVER_SECONDS, MetricKind::Histogram, self.duration_us as f64 / 1e6),
        ];
        if self.failed {
            out.push(sample(EDGE_FAILED, MetricKind::Counter, 1.0));
        }
        out
    }
}

/// `(trace id, span id)`.
type SpanKey = (String, String);

/// What the pairing keeps, in arrival order (oldest first) for expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Pending {
    /// A span seen, by id: its service (children arriving later pair with it).
    Seen { key: SpanKey, service: String, at_ms: i64 },
    /// A child waiting for its parent `key`.
    Waiting { key: SpanKey, child: Child },
}

impl Pending {
    fn at_ms(&self) -> i64 {
        match self {
            Pending::Seen { at_ms, .. } => *at_ms,
            Pending::Waiting { child, .. } => child.start_ms,
        }
    }
}

/// Parent/child pairing of one partition's spans (see the module's documentation).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SpanPairing {
    /// Spans seen, by key → service.
    seen: HashMap<SpanKey, String>,
    /// Children waiting, by their parent's key.
    waiting: HashMap<SpanKey, Vec<Child>>,
    order: VecDeque<Pending>,
    /// Children that expired without meeting their parent (since the last take).
    unpaired: u64,
}

impl SpanPairing {
    /// Entries kept (spans seen plus waiting children).
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The edge samples `span` completes: with its waiting children, and with its parent.
    pub fn observe(&mut self, span: &Span, watermark_ms: Option<i64>) -> Vec<Metric> {
        if let Some(w) = watermark_ms {
            self.expire(w.saturating_sub(PAIR_WAIT_MS));
        }
        let mut out = Vec::new();
        let key = (span.trace_id.clone(), span.span_id.clone());
        if let Some(children) = self.waiting.remove(&key) {
            for child in children.iter().filter(|c| c.service != span.service) {
                out.extend(child.edge_samples(&span.service));
            }
        }
        let start_ms = span.start_time_us.div_euclid(1000);
        if let Some(parent_id) = span.parent_span_id.as_ref().filter(|p| !p.is_empty()) {
            let parent = (span.trace_id.clone(), parent_id.clone());
            let child = Child {
                service: span.service.clone(),
                failed: span.status == SpanStatus::Error,
                duration_us: span.duration_us,
                start_ms,
            };
            match self.seen.get(&parent) {
                Some(client) if *client != span.service => out.extend(child.edge_samples(client)),
                Some(_) => {}
                None => {
                    self.waiting.entry(parent.clone()).or_default().push(child.clone());
                    self.order.push_back(Pending::Waiting { key: parent, child });
                }
            }
        }
        // A span id seen twice (a retried export) keeps its first service.
        if let std::collections::hash_map::Entry::Vacant(slot) = self.seen.entry(key.clone()) {
            slot.insert(span.service.clone());
            self.order.push_back(Pending::Seen { key, service: span.service.clone(), at_ms: start_ms });
        }
        while self.order.len() > MAX_PENDING {
            self.pop_oldest();
        }
        out
    }

    /// Drops what waited since before `horizon_ms` (in arrival order).
    fn expire(&mut self, horizon_ms: i64) {
        while self.order.front().is_some_and(|p| p.at_ms() < horizon_ms) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        match self.order.pop_front() {
            Some(Pending::Seen { key, .. }) => {
                self.seen.remove(&key);
            }
            Some(Pending::Waiting { key, child }) => {
                if let Some(children) = self.waiting.get_mut(&key)
                    && let Some(i) = children.iter().position(|c| *c == child)
                {
                    children.remove(i);
                    self.unpaired += 1;
                    if children.is_empty() {
                        self.waiting.remove(&key);
                    }
                }
            }
            None => {}
        }
    }

    /// Children that expired unpaired since the last call.
    pub fn take_unpaired(&mut self) -> u64 {
        std::mem::take(&mut self.unpaired)
    }

    /// The state as JSON (for the window checkpoint); empty when there is none. The
    /// arrival order keeps entries of children already paired (skipped when they come up
    /// for expiry), so the waiting children are saved as they are.
    pub fn to_json(&self) -> String {
        if self.order.is_empty() {
            return String::new();
        }
        let saved = Saved { order: self.order.clone(), waiting: self.waiting.clone().into_iter().collect() };
        serde_json::to_string(&saved).unwrap_or_default()
    }

    /// The state [`to_json`](Self::to_json) saved.
    pub fn from_json(text: &str) -> Result<SpanPairing, String> {
        let mut pairing = SpanPairing::default();
        if text.is_empty() {
            return Ok(pairing);
        }
        let saved: Saved = serde_json::from_str(text).map_err(|e| format!("span pairing state: {e}"))?;
        for p in &saved.order {
            if let Pending::Seen { key, service, .. } = p {
                pairing.seen.insert(key.clone(), service.clone());
            }
        }
        pairing.waiting = saved.waiting.into_iter().collect();
        pairing.order = saved.order;
        Ok(pairing)
    }
}

/// The saved form of [`SpanPairing`].
#[derive(Serialize, Deserialize)]
struct Saved {
    order: VecDeque<Pending>,
    waiting: Vec<(SpanKey, Vec<Child>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, service: &str, status: SpanStatus) -> Span {
        Span {
            trace_id: "t".repeat(32),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_string),
            service: service.into(),
            operation: "op".into(),
            kind: SpanKind::Server,
            start_time_us: 1_000_000,
            duration_us: 250_000,
            status,
            attributes: Default::default(),
            status_message: None,
            resource_attributes: Default::default(),
            events: vec![],
        }
    }

    fn edges(samples: &[Metric]) -> Vec<(String, String, String, f64)> {
        samples
            .iter()
            .map(|m| (m.name.clone(), m.labels["client"].clone(), m.labels["server"].clone(), m.value))
            .collect()
    }

    #[test]
    fn children_pair_with_parents_in_either_order() {
        let mut p = SpanPairing::default();
        // A child before its parent (the usual order: spans are exported when they end).
        assert!(p.observe(&span("2", Some("1"), "asr", SpanStatus::Error), None).is_empty());
        let got = edges(&p.observe(&span("1", None, "gateway", SpanStatus::Ok), None));
        assert_eq!(
            got,
            vec![
                (EDGE_REQUESTS.into(), "gateway".into(), "asr".into(), 1.0),
                (EDGE_SERVER_SECONDS.into(), "gateway".into(), "asr".into(), 0.25),
                (EDGE_FAILED.into(), "gateway".into(), "asr".into(), 1.0),
            ]
        );
        // A child after its parent; a child of the same service is no edge.
        assert_eq!(edges(&p.observe(&span("3", Some("1"), "ai", SpanStatus::Ok), None)).len(), 2);
        assert!(p.observe(&span("4", Some("1"), "gateway", SpanStatus::Ok), None).is_empty());
        // The state survives a checkpoint.
        let restored = SpanPairing::from_json(&p.to_json()).expect("restores");
        assert_eq!(restored, p);
        assert!(SpanPairing::from_json("{").is_err());
    }

    #[test]
    fn orphans_expire_and_are_counted() {
        let mut p = SpanPairing::default();
        p.observe(&span("2", Some("missing"), "asr", SpanStatus::Ok), None);
        assert_eq!(p.len(), 2);
        // The watermark passes the wait: the orphan is counted and forgotten.
        p.observe(&span("9", None, "gateway", SpanStatus::Ok), Some(1_000 + PAIR_WAIT_MS + 1));
        assert_eq!(p.take_unpaired(), 1);
        assert_eq!(p.len(), 1);
        // Its parent arriving after that pairs with nothing.
        assert!(p.observe(&span("missing", None, "gateway", SpanStatus::Ok), None).is_empty());
    }

    #[test]
    fn red_samples_are_named_like_tempo() {
        let [calls, latency] = red_samples(&span("1", None, "gateway", SpanStatus::Error));
        assert_eq!((calls.name.as_str(), calls.value, calls.timestamp_ms), (CALLS, 1.0, 1_000));
        assert_eq!(calls.labels["status_code"], "STATUS_CODE_ERROR");
        assert_eq!(calls.labels["span_kind"], "SPAN_KIND_SERVER");
        assert_eq!((latency.kind, latency.value), (MetricKind::Histogram, 0.25));
    }
}
