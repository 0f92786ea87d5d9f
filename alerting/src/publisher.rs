//! Publishing alert transitions to the alerts topic: in one order on every instance, never
//! skipping one, never blocking evaluation.
//!
//! Every transition has a [`TransitionKey`] — (event time, fingerprint, status) — that
//! every instance computes alike from the same data. The [`Publisher`] holds the
//! transitions not yet confirmed on the topic in key order, and its own task hands them to
//! a [`TransitionSink`] one at a time, smallest key first. On a failure it stops there and
//! retries that same transition with exponential backoff, so nothing overtakes it and
//! nothing is skipped. [`Publisher::submit`] takes a lock and returns, however slow or
//! broken the sink is: a Kafka outage stalls publishing, not evaluation or notification.
//!
//! Only the leader publishes ([`Publisher::activate`]). A standby keeps its most recent
//! transitions, so that on taking over it publishes exactly those after the
//! `published_through` key the previous leader recorded in the durable state. That key
//! ([`Publisher::through`]) advances only when the sink confirmed a delivery.
//!
//! A transition the leader evaluates late — out-of-order samples evaluated again at an
//! event time whose transitions are already published — sorts before the mark: the leader
//! still publishes it (first, as it sorts first), and the mark never moves back.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use callscope_schemas::alerting_status::RoutedAlert;
use callscope_schemas::events::{Alert, AlertStatus, Event};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::metrics::AlertingMetrics;

/// Where a transition was meant to go and why it did not get there.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = PublishError> = std::result::Result<T, E>;

/// The order of transitions, the same on every instance: event time, then the alert's
/// fingerprint, then its status (`firing` before `resolved`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TransitionKey {
    pub at_ms: i64,
    pub fingerprint: String,
    pub status: AlertStatus,
}

impl TransitionKey {
    pub fn new(at_ms: i64, fingerprint: impl Into<String>, status: AlertStatus) -> TransitionKey {
        TransitionKey { at_ms, fingerprint: fingerprint.into(), status }
    }

    /// The key of the transition `alert` at event time `at_ms`.
    pub fn of(at_ms: i64, alert: &Alert) -> TransitionKey {
        TransitionKey::new(at_ms, RoutedAlert::from_event(alert).fingerprint, alert.status)
    }

    /// A mark that covers every transition at or before `at_ms` and none after (what the
    /// event-time mark of older versions meant). No transition has this key: fingerprints
    /// are never empty.
    pub fn through_ms(at_ms: i64) -> TransitionKey {
        TransitionKey::new(at_ms.saturating_add(1), String::new(), AlertStatus::Firing)
    }
}

/// Where transitions go: the alerts topic, or a fake in tests.
pub trait TransitionSink: Send + Sync + 'static {
    /// Delivers one transition; `Ok` only once it is durably there.
    fn send(&self, alert: &Alert) -> impl Future<Output = Result<()>> + Send;
}

/// The alerts topic, as JSON alert events keyed like every alert event.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
}

impl KafkaSink {
    pub fn new(producer: FutureProducer, topic: impl Into<String>) -> KafkaSink {
        KafkaSink { producer, topic: topic.into() }
    }
}

impl TransitionSink for KafkaSink {
    fn send(&self, alert: &Alert) -> impl Future<Output = Result<()>> + Send {
        let event = Event::Alert(alert.clone());
        let payload = callscope_schemas::json::encode(&event);
        let key = event.partition_key();
        async move {
            let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
            match self.producer.send(record, Duration::from_secs(10)).await {
                Ok(_) => Ok(()),
                Err((e, _)) => Err(PublishError::Kafka(e)),
            }
        }
    }
}

/// Retry delays after a failed delivery: `initial`, doubling up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { initial: Duration::from_millis(250), max: Duration::from_secs(30) }
    }
}

#[derive(Default)]
struct Queue {
    /// Transitions not confirmed on the topic (a standby: its most recent ones), by key.
    pending: BTreeMap<TransitionKey, Alert>,
    /// Every transition whose key sorts at or before this one is on the topic.
    through: Option<TransitionKey>,
    /// Whether this instance publishes (leads).
    active: bool,
}

impl Queue {
    fn backlog(&self) -> usize {
        if self.active { self.pending.len() } else { 0 }
    }

    fn show_backlog(&self) {
        AlertingMetrics::global().transition_publish_backlog.set(i64::try_from(self.backlog()).unwrap_or(i64::MAX));
    }
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Notify,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue is consistent after every statement: a panic elsewhere leaves it usable.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Takes transitions from the evaluator and publishes them in key order from its own task.
pub struct Publisher {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Publisher {
    /// Starts the publishing task (inactive: call [`Publisher::activate`] to publish). At
    /// most `capacity` transitions are held; beyond that the oldest keys are dropped.
    pub fn start<S: TransitionSink>(sink: S, capacity: usize, backoff: Backoff) -> Publisher {
        let shared = Arc::new(Shared { queue: Mutex::default(), wake: Notify::new(), capacity: capacity.max(1) });
        let task = tokio::spawn(publish_loop(shared.clone(), sink, backoff));
        Publisher { shared, task }
    }

    /// Takes a transition to publish; never waits.
    pub fn submit(&self, key: TransitionKey, alert: Alert) {
        let mut q = self.shared.lock();
        q.pending.insert(key, alert);
        while q.pending.len() > self.shared.capacity {
            let Some((dropped, alert)) = q.pending.pop_first() else { break };
            if q.active {
                AlertingMetrics::global().transitions_dropped.inc();
                tracing::warn!(
                    alert = %alert.alert_name,
                    at_ms = dropped.at_ms,
                    capacity = self.shared.capacity,
                    "too many alert transitions waiting to be published; dropping the oldest"
                );
            }
        }
        q.show_backlog();
        drop(q);
        self.shared.wake.notify_one();
    }

    /// Starts publishing (this instance leads), after `through`: what the durable state
    /// says is on the topic already. Held transitions at or before it are dropped.
    pub fn activate(&self, through: Option<TransitionKey>) {
        let mut q = self.shared.lock();
        let through = q.through.clone().max(through);
        if let Some(t) = &through {
            q.pending = q.pending.split_off(t);
            q.pending.remove(t);
        }
        q.through = through;
        q.active = true;
        q.show_backlog();
        drop(q);
        self.shared.wake.notify_one();
    }

    /// Stops publishing (another instance leads); transitions are still taken and kept.
    pub fn deactivate(&self) {
        let mut q = self.shared.lock();
        q.active = false;
        q.show_backlog();
    }

    /// The key through which every transition is confirmed on the topic.
    pub fn through(&self) -> Option<TransitionKey> {
        self.shared.lock().through.clone()
    }

    /// Transitions waiting to be published (0 while inactive).
    pub fn backlog(&self) -> usize {
        self.shared.lock().backlog()
    }
}

async fn publish_loop<S: TransitionSink>(shared: Arc<Shared>, sink: S, backoff: Backoff) {
    let metrics = AlertingMetrics::global();
    let mut delay = backoff.initial;
    loop {
        let next = {
            let q = shared.lock();
            if q.active { q.pending.first_key_value().map(|(k, a)| (k.clone(), a.clone())) } else { None }
        };
        let Some((key, alert)) = next else {
            shared.wake.notified().await;
            continue;
        };
        match sink.send(&alert).await {
            Ok(()) => {
                metrics.transitions_published.inc();
                let mut q = shared.lock();
                q.pending.remove(&key);
                if q.through.as_ref().is_none_or(|t| *t < key) {
                    q.through = Some(key);
                }
                q.show_backlog();
                delay = backoff.initial;
            }
            Err(e) => {
                metrics.transition_publish_failures.inc();
                tracing::warn!(
                    error = %e,
                    alert = %alert.alert_name,
                    at_ms = key.at_ms,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "publishing an alert transition failed; retrying it before any later one"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(backoff.max);
            }
        }
    }
}

#[cfg(test)]
mod tests;
