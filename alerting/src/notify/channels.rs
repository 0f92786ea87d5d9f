//! The delivery channels: generic webhook (Alertmanager's payload, version 4), Slack
//! incoming webhook, DingTalk robot (signed, `errcode` checked), SMS through an HTTP
//! gateway, and forwarding to a Prometheus Alertmanager (API v2). Each channel runs its own
//! task behind a bounded queue, with a per-minute rate limit and retries with exponential
//! backoff on 5xx, 429 and timeouts, so a slow or broken receiver never blocks evaluation.
//! URLs and secrets never reach logs, errors or stored failure records.

use std::time::Duration;

use callscope_schemas::alerting_status::AlertmanagerHealth;
use callscope_schemas::events::AlertStatus;
use serde_json::{Value, json};

use super::config::{
    AlertmanagerConfig, ConfigError, DeliveryConfig, DingTalkConfig, EmailConfig, SlackConfig, SmsConfig, WebhookConfig,
};
use super::dispatch::Notification;
use super::payloads::{alert_lines, alertmanager_payload, dingtalk_sign, json_escape, title, webhook_payload};

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

    pub(super) fn delivery(&self) -> &DeliveryConfig {
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

    pub(super) fn default_rate_limit(&self) -> Option<u32> {
        match self {
            // DingTalk blocks a robot for 10 minutes past 20 messages a minute.
            ChannelKind::DingTalk(_) => Some(20),
            _ => None,
        }
    }
}

/// RFC 3339 with milliseconds, UTC.
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
    pub fn new(receiver: &str, kind: ChannelKind, external_url: &str) -> Result<Channel, ConfigError> {
        let timeout = match kind.delivery().timeout.as_deref() {
            None => Duration::from_secs(10),
            Some(t) => crate::rules::parse_prometheus_duration(t)
                .ok_or_else(|| ConfigError(format!("receiver {receiver:?}: timeout {t:?} is not a duration")))?,
        };
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| ConfigError(format!("http client: {e}")))?;
        Ok(Channel { receiver: receiver.to_string(), kind, external_url: external_url.to_string(), client, timeout })
    }

    /// The alerts of `n` this channel sends (resolved ones only if it sends resolved).
    pub(super) fn filtered(&self, n: &Notification) -> Option<Notification> {
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
                    let ts = callscope_runtime::now_ms();
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
                let body = alertmanager_payload(&n.alerts, &self.external_url, callscope_runtime::now_ms());
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
pub async fn probe_alertmanager(url: &str) -> AlertmanagerHealth {
    let unreachable = |error: String, checked_at_ms: Option<i64>| AlertmanagerHealth {
        url: redacted_url(url),
        reachable: false,
        error: Some(error),
        checked_at_ms,
        ..Default::default()
    };
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(3)).build() {
        Ok(c) => c,
        Err(e) => return unreachable(e.to_string(), None),
    };
    let status_url = format!("{}/api/v2/status", url.trim_end_matches('/'));
    let checked_at_ms = callscope_runtime::now_ms();
    match client.get(status_url).send().await {
        Ok(resp) if resp.status().is_success() => {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let text = |v: &Value| v.as_str().map(str::to_string);
            AlertmanagerHealth {
                url: redacted_url(url),
                reachable: true,
                version: text(&body["versionInfo"]["version"]),
                cluster_status: text(&body["cluster"]["status"]),
                uptime: text(&body["uptime"]),
                error: None,
                checked_at_ms: Some(checked_at_ms),
            }
        }
        Ok(resp) => unreachable(format!("HTTP {}", resp.status()), Some(checked_at_ms)),
        Err(e) => unreachable(e.without_url().to_string(), Some(checked_at_ms)),
    }
}
