//! The notifier: one delivery task per channel behind a bounded queue, with a per-minute
//! rate limit and retries with exponential backoff, so a slow or broken receiver never
//! blocks evaluation; deliveries that fail after their retries are recorded (without URLs
//! or secrets). Each task reports what became of every notification of the outbox
//! ([`super::outbox`]) it was handed, so that the evaluator knows what was delivered.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::channels::{Channel, ChannelKind, SendError};
use super::config::{ConfigError, NotifyConfig};
use super::dispatch::Notification;
use super::outbox::Outcome;
use crate::metrics::AlertingMetrics;

/// Messages allowed per minute, waited for rather than dropped.
struct RateLimit {
    per_minute: Option<u32>,
    sent: VecDeque<Instant>,
}

impl RateLimit {
    async fn acquire(&mut self) {
        let Some(limit) = self.per_minute else { return };
        loop {
            while self.sent.front().is_some_and(|t| t.elapsed() >= Duration::from_secs(60)) {
                self.sent.pop_front();
            }
            if self.sent.len() < limit as usize {
                self.sent.push_back(Instant::now());
                return;
            }
            let wait =
                self.sent.front().map_or(Duration::ZERO, |t| Duration::from_secs(60).saturating_sub(t.elapsed()));
            tokio::time::sleep(wait).await;
        }
    }
}

/// A delivery that gave up, as recorded for operators (no URLs, no secrets).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeliveryFailure {
    pub receiver: String,
    pub channel: String,
    pub group_key: String,
    pub alerts: Vec<String>,
    pub attempts: u32,
    pub error: String,
    pub at_ms: i64,
}

/// Where failed deliveries are recorded.
pub type FailureSink = Arc<dyn Fn(DeliveryFailure) + Send + Sync>;

/// What one channel did with one outbox notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub id: u64,
    pub channel: String,
    pub outcome: Outcome,
}

/// Where channels report.
pub type ReportSink = mpsc::UnboundedSender<DeliveryReport>;

/// A notification handed to a channel: `id` names it in the outbox (`None`: a re-send
/// nobody waits for).
#[derive(Debug, Clone)]
struct Delivery {
    id: Option<u64>,
    notification: Notification,
}

/// One channel's queue.
struct Queue {
    receiver: String,
    /// `webhook#0`, `slack#1`, …: the kind and its place among the receiver's channels of
    /// that kind (stable while the configuration is).
    channel: String,
    kind: &'static str,
    tx: mpsc::Sender<Delivery>,
}

/// The delivery tasks of every channel of every receiver.
pub struct Notifier {
    queues: Vec<Queue>,
    pub alertmanager_receivers: Vec<String>,
    /// Base URLs of the configured Alertmanagers (for health probes).
    pub alertmanager_urls: Vec<String>,
}

const QUEUE: usize = 256;

impl Notifier {
    /// Starts one delivery task per channel; each reports outbox deliveries to `reports`.
    pub fn start(config: &NotifyConfig, failures: FailureSink, reports: ReportSink) -> Result<Notifier, ConfigError> {
        let external_url = config.external_url.clone().unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let mut queues = Vec::new();
        let mut alertmanager_receivers = Vec::new();
        let mut alertmanager_urls = Vec::new();
        for r in &config.receivers {
            let kinds = r
                .webhook_configs
                .iter()
                .cloned()
                .map(ChannelKind::Webhook)
                .chain(r.slack_configs.iter().cloned().map(ChannelKind::Slack))
                .chain(r.dingtalk_configs.iter().cloned().map(ChannelKind::DingTalk))
                .chain(r.alertmanager_configs.iter().cloned().map(ChannelKind::Alertmanager))
                .chain(r.sms_configs.iter().cloned().map(ChannelKind::Sms))
                .chain(r.email_configs.iter().cloned().map(ChannelKind::Email));
            if !r.alertmanager_configs.is_empty() {
                alertmanager_receivers.push(r.name.clone());
            }
            alertmanager_urls.extend(r.alertmanager_configs.iter().map(|c| c.url.clone()));
            let mut of_kind: std::collections::HashMap<&'static str, usize> = Default::default();
            for kind in kinds {
                let channel = Channel::new(&r.name, kind, &external_url)?;
                let name = channel.kind.name();
                let index = of_kind.entry(name).or_default();
                let id = format!("{name}#{index}");
                *index += 1;
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(deliver(channel, id.clone(), rx, failures.clone(), reports.clone()));
                queues.push(Queue { receiver: r.name.clone(), channel: id, kind: name, tx });
            }
        }
        Ok(Notifier { queues, alertmanager_receivers, alertmanager_urls })
    }

    /// The channels of a receiver.
    pub fn channels_of(&self, receiver: &str) -> BTreeSet<String> {
        self.queues.iter().filter(|q| q.receiver == receiver).map(|q| q.channel.clone()).collect()
    }

    /// Queues outbox notification `id` on the `channels` of its receiver; never waits.
    /// Returns the channels that took it: a full queue drops it for that channel and counts
    /// it (the outbox tries that channel again).
    pub fn enqueue(&self, n: &Notification, id: u64, channels: &BTreeSet<String>) -> BTreeSet<String> {
        let metrics = AlertingMetrics::global();
        let mut took = BTreeSet::new();
        for q in self.queues.iter().filter(|q| q.receiver == n.receiver && channels.contains(&q.channel)) {
            match q.tx.try_send(Delivery { id: Some(id), notification: n.clone() }) {
                Ok(()) => {
                    metrics.notification_queue.with_label_values(&[q.receiver.as_str(), q.kind]).inc();
                    took.insert(q.channel.clone());
                }
                Err(_) => {
                    metrics.notifications.with_label_values(&[q.receiver.as_str(), q.kind, "dropped"]).inc();
                    tracing::warn!(receiver = %q.receiver, channel = %q.channel, group = %n.group_key, "notification queue full; dropped, to be tried again");
                }
            }
        }
        took
    }

    /// Queues a notification on the Alertmanager channels of its receiver only (re-sends).
    pub fn enqueue_alertmanager(&self, n: &Notification) {
        for q in self.queues.iter().filter(|q| q.receiver == n.receiver && q.kind == "alertmanager") {
            let _ = q.tx.try_send(Delivery { id: None, notification: n.clone() });
        }
    }
}

async fn deliver(
    channel: Channel,
    channel_id: String,
    mut rx: mpsc::Receiver<Delivery>,
    failures: FailureSink,
    reports: ReportSink,
) {
    let metrics = AlertingMetrics::global();
    let name = channel.kind.name();
    let receiver = channel.receiver.clone();
    let mut limit = RateLimit {
        per_minute: channel.kind.delivery().rate_limit_per_minute.or(channel.kind.default_rate_limit()),
        sent: VecDeque::new(),
    };
    let max_attempts = channel.kind.delivery().max_attempts.unwrap_or(5).max(1);
    let report = |id: Option<u64>, outcome: Outcome| {
        if let Some(id) = id {
            // The evaluator is gone when this fails (shutdown): nothing waits for the report.
            let _ = reports.send(DeliveryReport { id, channel: channel_id.clone(), outcome });
        }
    };
    while let Some(Delivery { id, notification: n }) = rx.recv().await {
        metrics.notification_queue.with_label_values(&[receiver.as_str(), name]).dec();
        let Some(n) = channel.filtered(&n) else {
            metrics.notifications.with_label_values(&[receiver.as_str(), name, "skipped"]).inc();
            report(id, Outcome::Delivered);
            continue;
        };
        limit.acquire().await;
        let started = Instant::now();
        let mut backoff = Duration::from_millis(250);
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            match channel.send_once(&n).await {
                Ok(()) => {
                    metrics.notification_attempts.with_label_values(&[name, "ok"]).inc();
                    break Ok(());
                }
                Err(SendError::Retryable(e)) if attempts < max_attempts => {
                    metrics.notification_attempts.with_label_values(&[name, "retry"]).inc();
                    tracing::info!(receiver = %receiver, channel = name, attempt = attempts, error = %e, "notification failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    metrics.notification_attempts.with_label_values(&[name, "permanent"]).inc();
                    break Err(e);
                }
            }
        };
        metrics.notification_seconds.observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(()) => {
                metrics.notifications.with_label_values(&[receiver.as_str(), name, "sent"]).inc();
                tracing::debug!(receiver = %receiver, channel = name, group = %n.group_key, alerts = n.alerts.len(), "notification sent");
                report(id, Outcome::Delivered);
            }
            Err(e) => {
                report(id, if matches!(e, SendError::Permanent(_)) { Outcome::Rejected } else { Outcome::Failed });
                metrics.notifications.with_label_values(&[receiver.as_str(), name, "failed"]).inc();
                tracing::warn!(receiver = %receiver, channel = name, group = %n.group_key, attempts, error = %e, "notification failed");
                failures(DeliveryFailure {
                    receiver: receiver.clone(),
                    channel: name.to_string(),
                    group_key: n.group_key.clone(),
                    alerts: n.alerts.iter().map(|a| a.labels.get("alertname").cloned().unwrap_or_default()).collect(),
                    attempts,
                    error: e.to_string(),
                    at_ms: callscope_runtime::now_ms(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
