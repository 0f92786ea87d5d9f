//! The notifier: one delivery task per channel behind a bounded queue, with a per-minute
//! rate limit and retries with exponential backoff, so a slow or broken receiver never
//! blocks evaluation; deliveries that fail after their retries are recorded (without URLs
//! or secrets).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::channels::{Channel, ChannelKind, SendError};
use super::config::{ConfigError, NotifyConfig};
use super::dispatch::Notification;
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

/// The delivery tasks of every channel of every receiver.
pub struct Notifier {
    queues: Vec<(String, &'static str, mpsc::Sender<Notification>)>,
    pub alertmanager_receivers: Vec<String>,
    /// Base URLs of the configured Alertmanagers (for health probes).
    pub alertmanager_urls: Vec<String>,
}

const QUEUE: usize = 256;

impl Notifier {
    /// Starts one delivery task per channel.
    pub fn start(config: &NotifyConfig, failures: FailureSink) -> Result<Notifier, ConfigError> {
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
            for kind in kinds {
                let channel = Channel::new(&r.name, kind, &external_url)?;
                let name = channel.kind.name();
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(deliver(channel, rx, failures.clone()));
                queues.push((r.name.clone(), name, tx));
            }
        }
        Ok(Notifier { queues, alertmanager_receivers, alertmanager_urls })
    }

    /// Queues a notification on every channel of its receiver; never waits. A full queue
    /// drops the notification for that channel and counts it. Returns whether every channel
    /// took it: when one did not, the caller should not count it as sent (and try again).
    pub fn enqueue(&self, n: &Notification) -> bool {
        let metrics = AlertingMetrics::global();
        let mut all = true;
        for (receiver, channel, tx) in self.queues.iter().filter(|(r, _, _)| *r == n.receiver) {
            match tx.try_send(n.clone()) {
                Ok(()) => metrics.notification_queue.with_label_values(&[receiver.as_str(), channel]).inc(),
                Err(_) => {
                    all = false;
                    metrics.notifications.with_label_values(&[receiver.as_str(), channel, "dropped"]).inc();
                    tracing::warn!(receiver = %receiver, channel, group = %n.group_key, "notification queue full; dropped, to be tried again");
                }
            }
        }
        all
    }

    /// Queues a notification on the Alertmanager channels of its receiver only (re-sends).
    pub fn enqueue_alertmanager(&self, n: &Notification) {
        for (_, _, tx) in self.queues.iter().filter(|(r, c, _)| *r == n.receiver && *c == "alertmanager") {
            let _ = tx.try_send(n.clone());
        }
    }
}

async fn deliver(channel: Channel, mut rx: mpsc::Receiver<Notification>, failures: FailureSink) {
    let metrics = AlertingMetrics::global();
    let name = channel.kind.name();
    let receiver = channel.receiver.clone();
    let mut limit = RateLimit {
        per_minute: channel.kind.delivery().rate_limit_per_minute.or(channel.kind.default_rate_limit()),
        sent: VecDeque::new(),
    };
    let max_attempts = channel.kind.delivery().max_attempts.unwrap_or(5).max(1);
    while let Some(n) = rx.recv().await {
        metrics.notification_queue.with_label_values(&[receiver.as_str(), name]).dec();
        let Some(n) = channel.filtered(&n) else {
            metrics.notifications.with_label_values(&[receiver.as_str(), name, "skipped"]).inc();
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
            }
            Err(e) => {
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
