//! What each channel sends: Alertmanager's webhook payload (version 4) and API v2 alerts,
//! the title and lines of chat messages, and DingTalk's request signature.

use base64::Engine as _;
use callscope_schemas::events::AlertStatus;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use super::dispatch::{Notification, RoutedAlert};

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
            let value = a.value.map(|v| format!(" (value {})", crate::template::format_value(v))).unwrap_or_default();
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

pub(super) fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted[1..quoted.len().saturating_sub(1)].to_string()
}

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
