//! The notification configuration, in Alertmanager's shape so that operators can reuse
//! what they know: a `route` tree with `matchers`, `group_by`, `group_wait`,
//! `group_interval`, `repeat_interval` and `continue`, and named `receivers`, each with
//! any number of channels. `${NAME}` in a value is replaced by the environment variable
//! `NAME`, so that secrets stay out of the file.

use std::collections::BTreeMap;
use std::time::Duration;

use promql_parser::label::Matcher;
use serde::Deserialize;

use crate::rules::parse_prometheus_duration;

/// The whole notification configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub route: RouteConfig,
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
    /// A firing alert matching `source_matchers` mutes alerts matching `target_matchers`
    /// that have the same values of the `equal` labels.
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    /// Base URL of the query API, for links in messages.
    #[serde(default)]
    pub external_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    #[serde(default)]
    pub source_matchers: Vec<String>,
    #[serde(default)]
    pub target_matchers: Vec<String>,
    #[serde(default)]
    pub equal: Vec<String>,
}

/// A checked inhibition rule.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

/// Whether every matcher matches `labels` (a missing label reads as "").
pub fn all_match(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub receiver: Option<String>,
    /// Alertmanager matcher strings: `name="v"`, `name!="v"`, `name=~"re"`, `name!~"re"`.
    #[serde(default)]
    pub matchers: Vec<String>,
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    #[serde(default)]
    pub group_wait: Option<String>,
    #[serde(default)]
    pub group_interval: Option<String>,
    #[serde(default)]
    pub repeat_interval: Option<String>,
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// A firing alert nobody acknowledged this long after it was notified…
    #[serde(default)]
    pub escalate_after: Option<String>,
    /// …is notified to this receiver as well.
    #[serde(default)]
    pub escalate_to: Option<String>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    #[serde(default)]
    pub webhook_configs: Vec<WebhookConfig>,
    #[serde(default)]
    pub slack_configs: Vec<SlackConfig>,
    #[serde(default)]
    pub dingtalk_configs: Vec<DingTalkConfig>,
    #[serde(default)]
    pub alertmanager_configs: Vec<AlertmanagerConfig>,
    #[serde(default)]
    pub sms_configs: Vec<SmsConfig>,
    #[serde(default)]
    pub email_configs: Vec<EmailConfig>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `host:port` of the SMTP server.
    pub smarthost: String,
    pub from: String,
    pub to: Vec<String>,
    /// `starttls` (default), `tls` (implicit TLS, usually port 465) or `none`.
    #[serde(default = "default_tls")]
    pub tls: String,
    #[serde(default)]
    pub auth_username: Option<String>,
    #[serde(default)]
    pub auth_password: Option<String>,
    #[serde(default)]
    pub send_resolved: Option<bool>,
    #[serde(flatten)]
    pub delivery: DeliveryConfig,
}

fn default_tls() -> String {
    "starttls".into()
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default)]
    pub send_resolved: Option<bool>,
    #[serde(default)]
    pub max_alerts: usize,
    #[serde(flatten)]
    pub delivery: DeliveryConfig,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    pub api_url: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub send_resolved: Option<bool>,
    /// Message template; `{{ .Status }}`-free: callscope's own placeholders, see README.
    #[serde(default)]
    pub text: Option<String>,
    #[serde(flatten)]
    pub delivery: DeliveryConfig,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DingTalkConfig {
    /// The robot's `…/robot/send?access_token=…` URL.
    pub url: String,
    /// The signing secret (`SEC…`); when set every request is signed.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub at_mobiles: Vec<String>,
    #[serde(default)]
    pub at_all: bool,
    #[serde(default)]
    pub send_resolved: Option<bool>,
    #[serde(flatten)]
    pub delivery: DeliveryConfig,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://127.0.0.1:9093`.
    pub url: String,
    #[serde(flatten)]
    pub delivery: DeliveryConfig,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// Request body; `{{ to }}` and `{{ message }}` are replaced (JSON-escaped when the
    /// content type is JSON).
    pub body: String,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub send_resolved: Option<bool>,
    #[serde(flatten)]
    pub delivery: DeliveryConfig,
}

fn default_method() -> String {
    "POST".into()
}

fn default_content_type() -> String {
    "application/json".into()
}

/// Retries and rate limit of one channel.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Per-attempt timeout (default 10s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Attempts before a notification is recorded as failed (default 5).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Messages allowed per minute (DingTalk default 20, others unlimited).
    #[serde(default)]
    pub rate_limit_per_minute: Option<u32>,
}

macro_rules! redacted_debug {
    ($($t:ty => $kind:literal),+) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!($kind, "(<redacted>)"))
            }
        }
    )+};
}
redacted_debug!(WebhookConfig => "webhook", SlackConfig => "slack", DingTalkConfig => "dingtalk", AlertmanagerConfig => "alertmanager", SmsConfig => "sms", EmailConfig => "email");

/// A configuration error, naming where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("notification config: {0}")]
pub struct ConfigError(pub String);

/// A resolved route: matchers, grouping, timing, receiver and children.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: String,
    pub receiver: String,
    pub matchers: Vec<Matcher>,
    /// `None` groups by all labels (`...`).
    pub group_by: Option<Vec<String>>,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub continue_: bool,
    /// Unacknowledged firing alerts go to this receiver after this long.
    pub escalation: Option<(Duration, String)>,
    pub routes: Vec<Route>,
}

impl Route {
    /// The routes an alert with `labels` goes to (depth first, `continue` honoured).
    pub fn matching<'a>(&'a self, labels: &BTreeMap<String, String>) -> Vec<&'a Route> {
        let mut out = Vec::new();
        self.collect(labels, &mut out);
        out
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        all_match(&self.matchers, labels)
    }

    fn collect<'a>(&'a self, labels: &BTreeMap<String, String>, out: &mut Vec<&'a Route>) -> bool {
        if !self.matches(labels) {
            return false;
        }
        let before = out.len();
        for child in &self.routes {
            if child.collect(labels, out) && !child.continue_ {
                break;
            }
        }
        if out.len() == before {
            out.push(self);
        }
        true
    }
}

/// Parses one Alertmanager matcher string.
pub fn parse_matcher(text: &str) -> Result<Matcher, ConfigError> {
    let selector = format!("{{{text}}}");
    match promql_parser::parser::parse(&selector) {
        Ok(promql_parser::parser::Expr::VectorSelector(vs)) if vs.matchers.matchers.len() == 1 => {
            Ok(vs.matchers.matchers[0].clone())
        }
        _ => Err(ConfigError(format!("matcher {text:?} is not of the form name=\"value\" (or !=, =~, !~)"))),
    }
}

fn duration_or(text: Option<&str>, default: Duration, what: &str) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(t) => parse_prometheus_duration(t).ok_or_else(|| ConfigError(format!("{what}: {t:?} is not a duration"))),
    }
}

/// Replaces `${NAME}` with the environment variable `NAME`.
pub fn expand_env(text: &str) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| ConfigError("unclosed ${ in the file".into()))?;
        let name = &after[..end];
        let value = std::env::var(name)
            .map_err(|_| ConfigError(format!("environment variable {name} (referenced as ${{{name}}}) is not set")))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl NotifyConfig {
    /// Parses a YAML configuration (after `${ENV}` expansion) and checks it.
    pub fn parse(text: &str) -> Result<(NotifyConfig, Route), ConfigError> {
        let expanded = expand_env(text)?;
        let config: NotifyConfig =
            serde_norway::from_str(&expanded).map_err(|e| ConfigError(format!("not a valid file: {e}")))?;
        let route = config.resolve()?;
        config.inhibit_rules()?;
        Ok((config, route))
    }

    /// The inhibition rules, checked.
    pub fn inhibit_rules(&self) -> Result<Vec<InhibitRule>, ConfigError> {
        let parse = |ms: &[String], i: usize| {
            ms.iter()
                .map(|m| parse_matcher(m))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError(format!("inhibit_rules[{i}]: {e}")))
        };
        self.inhibit_rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(InhibitRule {
                    source: parse(&r.source_matchers, i)?,
                    target: parse(&r.target_matchers, i)?,
                    equal: r.equal.clone(),
                })
            })
            .collect()
    }

    fn resolve(&self) -> Result<Route, ConfigError> {
        let names: Vec<&str> = self.receivers.iter().map(|r| r.name.as_str()).collect();
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(ConfigError(format!("receiver {name:?} is defined twice")));
            }
        }
        for r in &self.receivers {
            for e in &r.email_configs {
                if !["starttls", "tls", "none"].contains(&e.tls.as_str()) {
                    return Err(ConfigError(format!("receiver {:?}: email tls must be starttls, tls or none", r.name)));
                }
                if e.smarthost.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()) {
                    return Err(ConfigError(format!("receiver {:?}: email smarthost must be host:port", r.name)));
                }
                for addr in std::iter::once(&e.from).chain(&e.to) {
                    if addr.parse::<lettre::message::Mailbox>().is_err() {
                        return Err(ConfigError(format!("receiver {:?}: {addr:?} is not an email address", r.name)));
                    }
                }
            }
            for d in r.dingtalk_configs.iter() {
                if !d.url.starts_with("http") {
                    return Err(ConfigError(format!("receiver {:?}: dingtalk url must be http(s)", r.name)));
                }
            }
        }
        let defaults = Route {
            id: String::new(),
            receiver: String::new(),
            matchers: Vec::new(),
            group_by: Some(vec!["alertname".into()]),
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            continue_: false,
            escalation: None,
            routes: Vec::new(),
        };
        let root = resolve_route(&self.route, &defaults, "0", &names)?;
        if root.receiver.is_empty() {
            return Err(ConfigError("the root route needs a receiver".into()));
        }
        Ok(root)
    }
}

fn resolve_route(config: &RouteConfig, parent: &Route, id: &str, receivers: &[&str]) -> Result<Route, ConfigError> {
    let receiver = config.receiver.clone().unwrap_or_else(|| parent.receiver.clone());
    if !receiver.is_empty() && !receivers.contains(&receiver.as_str()) {
        return Err(ConfigError(format!("route {id}: receiver {receiver:?} is not defined")));
    }
    let matchers = config
        .matchers
        .iter()
        .map(|m| parse_matcher(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError(format!("route {id}: {e}")))?;
    let group_by = match &config.group_by {
        None => parent.group_by.clone(),
        Some(labels) if labels.iter().any(|l| l == "...") => None,
        Some(labels) => Some(labels.clone()),
    };
    let escalation = match (&config.escalate_after, &config.escalate_to) {
        (None, None) => parent.escalation.clone(),
        (Some(after), Some(to)) => {
            if !receivers.contains(&to.as_str()) {
                return Err(ConfigError(format!("route {id}: escalate_to receiver {to:?} is not defined")));
            }
            Some((duration_or(Some(after), Duration::ZERO, "escalate_after")?, to.clone()))
        }
        _ => return Err(ConfigError(format!("route {id}: escalate_after and escalate_to go together"))),
    };
    let mut route = Route {
        id: id.to_string(),
        escalation,
        receiver,
        matchers,
        group_by,
        group_wait: duration_or(config.group_wait.as_deref(), parent.group_wait, "group_wait")?,
        group_interval: duration_or(config.group_interval.as_deref(), parent.group_interval, "group_interval")?,
        repeat_interval: duration_or(config.repeat_interval.as_deref(), parent.repeat_interval, "repeat_interval")?,
        continue_: config.continue_,
        routes: Vec::new(),
    };
    for (i, child) in config.routes.iter().enumerate() {
        let child = resolve_route(child, &route, &format!("{id}.{i}"), receivers)?;
        route.routes.push(child);
    }
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
route:
  receiver: oncall
  group_by: [alertname, service]
  group_wait: 1s
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      group_wait: 0s
      continue: true
    - matchers: ['service=~"asr|tts"']
      receiver: speech
receivers:
  - name: oncall
    webhook_configs: [{url: "http://127.0.0.1:1/hook"}]
  - name: pager
    dingtalk_configs: [{url: "http://127.0.0.1:1/robot/send?access_token=${CARGO_PKG_NAME}", secret: "SECabc"}]
  - name: speech
    slack_configs: [{api_url: "http://127.0.0.1:1/services/x"}]
"#;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn routes_match_with_continue_and_inherit_timing() {
        // Cargo sets CARGO_PKG_NAME for test processes: it stands in for a secret.
        let (config, root) = NotifyConfig::parse(CONFIG).expect("parses");
        let receivers = |l: &[(&str, &str)]| -> Vec<String> {
            root.matching(&labels(l)).iter().map(|r| r.receiver.clone()).collect()
        };
        assert_eq!(receivers(&[("severity", "critical"), ("service", "tts")]), ["pager", "speech"]);
        assert_eq!(receivers(&[("severity", "warning"), ("service", "tts")]), ["speech"]);
        assert_eq!(receivers(&[("service", "billing")]), ["oncall"]);
        let pager = &root.routes[0];
        assert_eq!((pager.group_wait, pager.group_interval), (Duration::ZERO, Duration::from_secs(300)));
        assert_eq!(pager.group_by, Some(vec!["alertname".to_string(), "service".to_string()]));
        assert!(config.receivers[1].dingtalk_configs[0].url.ends_with("access_token=callscope-alerting"));
        assert_eq!(format!("{:?}", config.receivers[1].dingtalk_configs[0]), "dingtalk(<redacted>)");
    }

    #[test]
    fn the_deploy_example_is_valid() {
        let mut text = include_str!("../../../deploy/notify.example.yaml").to_string();
        while let Some(start) = text.find("${") {
            let end = text[start..].find('}').map_or(text.len(), |e| start + e + 1);
            text.replace_range(start..end, "placeholder");
        }
        let (config, root) = NotifyConfig::parse(&text).expect("the example parses");
        assert_eq!(config.receivers.len(), 3);
        assert_eq!(root.routes[0].escalation.as_ref().map(|(d, r)| (d.as_secs(), r.as_str())), Some((900, "managers")));
        assert_eq!(config.inhibit_rules().expect("rules").len(), 1);
    }

    #[test]
    fn errors_name_the_problem() {
        let bad = |t: &str| NotifyConfig::parse(t).expect_err("refused").0;
        assert!(bad("route: {receiver: nobody}\nreceivers: []").contains("\"nobody\" is not defined"));
        assert!(bad("route: {receiver: a, matchers: ['sev']}\nreceivers: [{name: a}]").contains("matcher \"sev\""));
        assert!(bad("route: {receiver: a, group_wait: soon}\nreceivers: [{name: a}]").contains("group_wait"));
        assert!(bad("route: {receiver: a}\nreceivers: [{name: a}, {name: a}]").contains("twice"));
        assert!(
            bad("route: {receiver: a}\nreceivers: [{name: a, webhook_configs: [{url: '${CALLSCOPE_NOT_SET_X}'}]}]")
                .contains("CALLSCOPE_NOT_SET_X")
        );
        assert!(bad("route: {receiver: a}\nreceivers: [{name: a, pager_configs: []}]").contains("pager_configs"));
    }
}
