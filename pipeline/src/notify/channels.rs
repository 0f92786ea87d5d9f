//! The delivery channels: generic webhook (Alertmanager's payload, version 4), Slack
//! incoming webhook, DingTalk robot (signed, `errcode` checked), SMS through an HTTP
//! gateway, and forwarding to a Prometheus Alertmanager (API v2). Each channel runs its own
//! task behind a bounded queue, with a per-minute rate limit and retries with exponential
//! backoff on 5xx, 429 and timeouts, so a slow or broken receiver never blocks evaluation.
//! URLs and secrets never reach logs, errors or stored failure records.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use callscope_schemas::events::AlertStatus;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::config::{
    AlertmanagerConfig, DeliveryConfig, DingTalkConfig, EmailConfig, NotifyConfig, SlackConfig, SmsConfig,
    WebhookConfig,
};
use super::dispatch::{Notification, RoutedAlert};
use crate::alerting_metrics::AlertingMetrics;

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth another attempt (5xx, 429, timeout, connection refused).
    Retryable(String),
    /// The receiver refused the message; retrying will not help.
    Permanent(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Retryable(m) => write!(f, "{m} (retryable)"),
            SendError::Permanent(m) => write!(f, "{m}"),
        }
    }
}

/// What a channel delivers to.
#[derive(Debug, Clone)]
pub enum ChannelKind {
    Webhook(WebhookConfig),
    Slack(SlackConfig),
    DingTalk(DingTalkConfig),
    Alertmanager(AlertmanagerConfig),
    Sms(SmsConfig),
    Email(EmailConfig),
}

impl ChannelKind {
    pub fn name(&self) -> &'static str {
        match self {
            ChannelKind::Webhook(_) => "webhook",
            ChannelKind::Slack(_) => "slack",
            ChannelKind::DingTalk(_) => "dingtalk",
            ChannelKind::Alertmanager(_) => "alertmanager",
            ChannelKind::Sms(_) => "sms",
            ChannelKind::Email(_) => "email",
        }
    }

    fn delivery(&self) -> &DeliveryConfig {
        match self {
            ChannelKind::Webhook(c) => &c.delivery,
            ChannelKind::Slack(c) => &c.delivery,
            ChannelKind::DingTalk(c) => &c.delivery,
            ChannelKind::Alertmanager(c) => &c.delivery,
            ChannelKind::Sms(c) => &c.delivery,
            ChannelKind::Email(c) => &c.delivery,
        }
    }

    /// Whether resolved alerts are sent (Alertmanager's defaults: webhook yes, chat no).
    fn send_resolved(&self) -> bool {
        match self {
            ChannelKind::Webhook(c) => c.send_resolved.unwrap_or(true),
            ChannelKind::Slack(c) => c.send_resolved.unwrap_or(true),
            ChannelKind::DingTalk(c) => c.send_resolved.unwrap_or(true),
            ChannelKind::Alertmanager(_) => true,
            ChannelKind::Sms(c) => c.send_resolved.unwrap_or(false),
            ChannelKind::Email(c) => c.send_resolved.unwrap_or(true),
        }
    }

    fn default_rate_limit(&self) -> Option<u32> {
        match self {
            // DingTalk blocks a robot for 10 minutes past 20 messages a minute.
            ChannelKind::DingTalk(_) => Some(20),
            _ => None,
        }
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    callscope_schemas::text_formats::rfc3339_ms(ms).unwrap_or_else(|| ZERO_TIME.into())
}

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn generator_url(external_url: &str, a: &RoutedAlert) -> String {
    format!("{}/monitoring/alerts?fingerprint={}", external_url.trim_end_matches('/'), a.fingerprint)
}

/// The Alertmanager webhook payload (version "4").
pub fn webhook_payload(n: &Notification, external_url: &str, max_alerts: usize) -> Value {
    let truncated = if max_alerts > 0 { n.alerts.len().saturating_sub(max_alerts) } else { 0 };
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .take(if max_alerts > 0 { max_alerts } else { usize::MAX })
        .map(|a| {
            json!({
                "status": a.status.as_str(),
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at_ms),
                "endsAt": a.ends_at_ms.map_or_else(|| ZERO_TIME.to_string(), rfc3339),
                "generatorURL": generator_url(external_url, a),
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": truncated,
        "status": n.status().as_str(),
        "receiver": n.receiver,
        "groupLabels": n.group_labels,
        "commonLabels": n.common_labels(),
        "commonAnnotations": n.common_annotations(),
        "externalURL": external_url,
        "alerts": alerts,
    })
}

/// A one-line title: `[FIRING:2] CallFailureRateHigh service=gw`.
pub fn title(n: &Notification) -> String {
    let firing = n.alerts.iter().filter(|a| a.status == AlertStatus::Firing).count();
    let status = match n.status() {
        AlertStatus::Firing => format!("FIRING:{firing}"),
        AlertStatus::Resolved => "RESOLVED".to_string(),
    };
    let labels: Vec<String> =
        n.group_labels.iter().filter(|(k, _)| *k != "alertname").map(|(k, v)| format!("{k}={v}")).collect();
    let name = n
        .group_labels
        .get("alertname")
        .cloned()
        .or_else(|| n.common_labels().get("alertname").cloned())
        .unwrap_or_else(|| "alerts".to_string());
    format!("[{status}] {name} {}", labels.join(" ")).trim_end().to_string()
}

/// One line per alert, in markdown.
pub fn alert_lines(n: &Notification) -> Vec<String> {
    n.alerts
        .iter()
        .map(|a| {
            let text = a
                .annotations
                .get("summary")
                .or_else(|| a.annotations.get("description"))
                .cloned()
                .unwrap_or_else(|| a.labels.get("alertname").cloned().unwrap_or_default());
            let value =
                a.value.map(|v| format!(" (value {})", crate::alert_template::format_value(v))).unwrap_or_default();
            format!(
                "- **{}** {} [{}] {}{}",
                a.status.as_str(),
                a.labels.get("service").map(String::as_str).unwrap_or(""),
                a.labels.get("severity").map(String::as_str).unwrap_or(""),
                text,
                value
            )
        })
        .collect()
}

/// DingTalk's signature: URL-encoded Base64 of HMAC-SHA256(secret, "<ms>\n<secret>").
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    // HMAC accepts keys of any length; the error branch cannot happen.
    let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()) else { return String::new() };
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted[1..quoted.len().saturating_sub(1)].to_string()
}

fn classify(e: reqwest::Error) -> SendError {
    let e = e.without_url();
    if e.is_timeout() || e.is_connect() || e.is_request() {
        SendError::Retryable(format!("request failed: {e}"))
    } else {
        SendError::Permanent(format!("request failed: {e}"))
    }
}

fn by_status(status: reqwest::StatusCode, body: &str) -> Result<(), SendError> {
    let body: String = body.chars().take(200).collect();
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Err(SendError::Retryable(format!("HTTP {status}: {body}")))
    } else {
        Err(SendError::Permanent(format!("HTTP {status}: {body}")))
    }
}

/// One configured channel of a receiver.
pub struct Channel {
    pub receiver: String,
    pub kind: ChannelKind,
    pub external_url: String,
    client: reqwest::Client,
    timeout: Duration,
}

impl Channel {
    pub fn new(receiver: &str, kind: ChannelKind, external_url: &str) -> Result<Channel, String> {
        let timeout = match kind.delivery().timeout.as_deref() {
            None => Duration::from_secs(10),
            Some(t) => crate::alert_rules::parse_prometheus_duration(t)
                .ok_or_else(|| format!("receiver {receiver:?}: timeout {t:?} is not a duration"))?,
        };
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Channel { receiver: receiver.to_string(), kind, external_url: external_url.to_string(), client, timeout })
    }

    /// The alerts of `n` this channel sends (resolved ones only if it sends resolved).
    fn filtered(&self, n: &Notification) -> Option<Notification> {
        if self.kind.send_resolved() {
            return Some(n.clone());
        }
        let mut n = n.clone();
        n.alerts.retain(|a| a.status == AlertStatus::Firing);
        (!n.alerts.is_empty()).then_some(n)
    }

    /// One delivery attempt.
    pub async fn send_once(&self, n: &Notification) -> Result<(), SendError> {
        match &self.kind {
            ChannelKind::Webhook(c) => {
                let body = webhook_payload(n, &self.external_url, c.max_alerts);
                let resp = self.client.post(&c.url).json(&body).send().await.map_err(classify)?;
                let status = resp.status();
                by_status(status, &resp.text().await.unwrap_or_default())
            }
            ChannelKind::Slack(c) => {
                let text = format!("*{}*\n{}", title(n), alert_lines(n).join("\n"));
                let text = match &c.text {
                    Some(t) => t.replace("{{ title }}", &title(n)).replace("{{ alerts }}", &alert_lines(n).join("\n")),
                    None => text,
                };
                let mut body = json!({
                    "text": text,
                    "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
                });
                if let Some(channel) = &c.channel {
                    body["channel"] = json!(channel);
                }
                let resp = self.client.post(&c.api_url).json(&body).send().await.map_err(classify)?;
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                by_status(status, &text)?;
                if text.trim() != "ok" {
                    return Err(SendError::Permanent(format!(
                        "slack answered {:?}",
                        text.chars().take(100).collect::<String>()
                    )));
                }
                Ok(())
            }
            ChannelKind::DingTalk(c) => {
                let mut url = c.url.clone();
                if let Some(secret) = &c.secret {
                    let ts = crate::now_ms();
                    let sep = if url.contains('?') { '&' } else { '?' };
                    url = format!("{url}{sep}timestamp={ts}&sign={}", dingtalk_sign(secret, ts));
                }
                let mut text = format!("### {}\n\n{}", title(n), alert_lines(n).join("\n"));
                for m in &c.at_mobiles {
                    text.push_str(&format!(" @{m}"));
                }
                let body = json!({
                    "msgtype": "markdown",
                    "markdown": {"title": title(n), "text": text},
                    "at": {"atMobiles": c.at_mobiles, "isAtAll": c.at_all},
                });
                let resp = self.client.post(&url).json(&body).send().await.map_err(classify)?;
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                by_status(status, &text)?;
                let reply: Value = serde_json::from_str(&text).map_err(|_| {
                    SendError::Permanent(format!(
                        "dingtalk answered non-JSON {:?}",
                        text.chars().take(100).collect::<String>()
                    ))
                })?;
                match reply.get("errcode").and_then(Value::as_i64) {
                    Some(0) => Ok(()),
                    // 130101: "send too fast"; the robot accepts again after a pause.
                    Some(130101) => Err(SendError::Retryable(format!("dingtalk rate limited: {reply}"))),
                    Some(code) => Err(SendError::Permanent(format!(
                        "dingtalk errcode {code}: {}",
                        reply.get("errmsg").and_then(Value::as_str).unwrap_or("")
                    ))),
                    None => Err(SendError::Permanent(format!("dingtalk reply without errcode: {reply}"))),
                }
            }
            ChannelKind::Alertmanager(c) => {
                let body = alertmanager_payload(&n.alerts, &self.external_url, crate::now_ms());
                let url = format!("{}/api/v2/alerts", c.url.trim_end_matches('/'));
                let resp = self.client.post(url).json(&body).send().await.map_err(classify)?;
                let status = resp.status();
                by_status(status, &resp.text().await.unwrap_or_default())
            }
            ChannelKind::Email(c) => send_email(c, n, self.timeout).await,
            ChannelKind::Sms(c) => {
                let message = format!("{}: {}", title(n), alert_lines(n).join("; ").replace("**", ""));
                let json = c.content_type.contains("json");
                for to in &c.to {
                    let (to_text, msg_text) =
                        if json { (json_escape(to), json_escape(&message)) } else { (to.clone(), message.clone()) };
                    let body = c.body.replace("{{ to }}", &to_text).replace("{{ message }}", &msg_text);
                    let method = reqwest::Method::from_bytes(c.method.to_uppercase().as_bytes()).map_err(|_| {
                        SendError::Permanent(format!("sms method {:?} is not an HTTP method", c.method))
                    })?;
                    let mut req =
                        self.client.request(method, &c.url).header("content-type", &c.content_type).body(body);
                    for (k, v) in &c.headers {
                        req = req.header(k, v);
                    }
                    let resp = req.send().await.map_err(classify)?;
                    let status = resp.status();
                    by_status(status, &resp.text().await.unwrap_or_default())?;
                }
                Ok(())
            }
        }
    }
}

/// Sends the notification as one plain-text email to every recipient.
async fn send_email(c: &EmailConfig, n: &Notification, timeout: Duration) -> Result<(), SendError> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let permanent = |what: &str, e: &dyn std::fmt::Display| SendError::Permanent(format!("{what}: {e}"));
    let mut builder = Message::builder()
        .from(c.from.parse().map_err(|e| permanent("from", &e))?)
        .subject(title(n))
        .header(lettre::message::header::ContentType::TEXT_PLAIN);
    for to in &c.to {
        builder = builder.to(to.parse().map_err(|e| permanent("to", &e))?);
    }
    let body = format!("{}\n\n{}\n", title(n), alert_lines(n).join("\n").replace("**", ""));
    let message = builder.body(body).map_err(|e| permanent("message", &e))?;
    let (host, port) = c
        .smarthost
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| SendError::Permanent("smarthost must be host:port".into()))?;
    let builder = match c.tls.as_str() {
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&host).map_err(|e| permanent("smtp", &e))?,
        "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host).map_err(|e| permanent("smtp", &e))?,
        _ => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host),
    };
    let mut builder = builder.port(port).timeout(Some(timeout));
    if let (Some(user), Some(pass)) = (&c.auth_username, &c.auth_password) {
        builder =
            builder.credentials(lettre::transport::smtp::authentication::Credentials::new(user.clone(), pass.clone()));
    }
    match builder.build().send(message).await {
        Ok(_) => Ok(()),
        // Transient SMTP replies (4xx), timeouts and connection failures are worth a retry.
        Err(e) if e.is_permanent() => Err(SendError::Permanent(format!("smtp: {e}"))),
        Err(e) => Err(SendError::Retryable(format!("smtp: {e}"))),
    }
}

/// `POST /api/v2/alerts` body: firing alerts end in 4 minutes unless re-sent (as
/// Prometheus does), resolved ones carry their end.
pub fn alertmanager_payload(alerts: &[RoutedAlert], external_url: &str, now_ms: i64) -> Value {
    Value::Array(
        alerts
            .iter()
            .map(|a| {
                let ends = match a.status {
                    AlertStatus::Firing => now_ms + 4 * 60_000,
                    AlertStatus::Resolved => a.ends_at_ms.unwrap_or(now_ms).min(now_ms),
                };
                json!({
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at_ms),
                    "endsAt": rfc3339(ends),
                    "generatorURL": generator_url(external_url, a),
                })
            })
            .collect(),
    )
}

/// A URL fit for logs and API answers: scheme, host, port and path only.
pub fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<unparseable url>".into(),
    }
}

/// What an Alertmanager's `GET /api/v2/status` says, or why it cannot be reached.
pub async fn probe_alertmanager(url: &str) -> Value {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(3)).build() {
        Ok(c) => c,
        Err(e) => return json!({"url": redacted_url(url), "reachable": false, "error": e.to_string()}),
    };
    let status_url = format!("{}/api/v2/status", url.trim_end_matches('/'));
    let checked_at_ms = crate::now_ms();
    match client.get(status_url).send().await {
        Ok(resp) if resp.status().is_success() => {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            json!({
                "url": redacted_url(url),
                "reachable": true,
                "version": body["versionInfo"]["version"],
                "cluster_status": body["cluster"]["status"],
                "uptime": body["uptime"],
                "checked_at_ms": checked_at_ms,
            })
        }
        Ok(resp) => {
            json!({"url": redacted_url(url), "reachable": false, "error": format!("HTTP {}", resp.status()), "checked_at_ms": checked_at_ms})
        }
        Err(e) => {
            json!({"url": redacted_url(url), "reachable": false, "error": e.without_url().to_string(), "checked_at_ms": checked_at_ms})
        }
    }
}

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
    pub fn start(config: &NotifyConfig, failures: FailureSink) -> Result<Notifier, String> {
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
    /// drops the notification for that channel and counts it.
    pub fn enqueue(&self, n: &Notification) {
        let metrics = AlertingMetrics::global();
        for (receiver, channel, tx) in self.queues.iter().filter(|(r, _, _)| *r == n.receiver) {
            match tx.try_send(n.clone()) {
                Ok(()) => metrics.notification_queue.with_label_values(&[receiver.as_str(), channel]).inc(),
                Err(_) => {
                    metrics.notifications.with_label_values(&[receiver.as_str(), channel, "dropped"]).inc();
                    tracing::warn!(receiver = %receiver, channel, group = %n.group_key, "notification queue full; dropped");
                }
            }
        }
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
                    at_ms: crate::now_ms(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dingtalk_signature_matches_the_documented_algorithm() {
        // Reference computed with Python: base64(hmac.new(b"SECtest", b"1700000000000\nSECtest", sha256).digest()),
        // then urllib.parse.quote_plus.
        let sign = dingtalk_sign("SECtest", 1_700_000_000_000);
        assert!(!sign.contains('+') && !sign.contains('/') && !sign.contains('='), "{sign}");
        assert_eq!(sign, EXPECTED_SIGN);
    }

    const EXPECTED_SIGN: &str = "aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g%3D";

    #[test]
    fn webhook_payload_has_the_alertmanager_shape() {
        let alert = RoutedAlert {
            labels: [("alertname".to_string(), "X".to_string()), ("service".to_string(), "gw".to_string())].into(),
            annotations: [("summary".to_string(), "s".to_string())].into(),
            status: AlertStatus::Firing,
            starts_at_ms: 1_700_000_000_000,
            ends_at_ms: None,
            value: Some(2.0),
            source: "callscope".into(),
            fingerprint: "00000000000000ab".into(),
        };
        let n = Notification {
            receiver: "oncall".into(),
            group_key: "{0}:alertname=\"X\"".into(),
            group_labels: [("alertname".to_string(), "X".to_string())].into(),
            alerts: vec![alert],
            at_ms: 0,
        };
        let p = webhook_payload(&n, "http://127.0.0.1:8080", 0);
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["commonLabels"]["service"], "gw");
        assert_eq!(p["alerts"][0]["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(p["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(p["alerts"][0]["fingerprint"], "00000000000000ab");
        assert_eq!(title(&n), "[FIRING:1] X");
        let am = alertmanager_payload(&n.alerts, "http://x", 1_700_000_000_000);
        assert_eq!(am[0]["endsAt"], "2023-11-14T22:17:20.000Z");
    }
}
