//! What the alerting tests share: the rules, the notification routes, nodes that evaluate
//! them, and the events that breach them.

use std::path::Path;

use callscope_schemas::{Event, Metric, MetricKind};
use serde_json::Value;

use super::peers::{DINGTALK_SECRET, Receivers};
use crate::support::*;

/// The rules: group `e2e` of the fixture shared with `callscope bench alert-latency`
/// (`CallsFailing` and `CallsSlow`: more than 5 failed or slow calls of a service in 20 s).
pub const RULES: &str = include_str!("../../fixtures/alert-rules.yaml");

/// Routes to the local receivers at `base`: team (webhook, Slack, DingTalk), alerts of
/// `flaky-svc` to the flaky hook and a missing one; `CallsFailing` inhibits `CallsSlow` of
/// the same service.
pub fn notify_config(base: &str) -> String {
    format!(
        r#"
route:
  receiver: team
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - matchers: ['service="flaky-svc"']
      receiver: flaky
receivers:
  - name: team
    webhook_configs: [{{url: "{base}/hook"}}]
    slack_configs: [{{api_url: "{base}/slack/${{CALLSCOPE_E2E_SLACK_TOKEN}}"}}]
    dingtalk_configs: [{{url: "{base}/robot/send?access_token=abc", secret: "{DINGTALK_SECRET}"}}]
  - name: flaky
    webhook_configs: [{{url: "{base}/flaky", timeout: 1s, max_attempts: 5}}, {{url: "{base}/no-such-hook?token=s3cret"}}]
inhibit_rules:
  - source_matchers: ['alertname="CallsFailing"']
    target_matchers: ['alertname="CallsSlow"']
    equal: [service]
"#
    )
}

/// Ten failed calls of `service` from `t0` on: enough to breach `CallsFailing`.
pub fn failed_calls(service: &str, t0: i64) -> Vec<(String, Vec<u8>)> {
    (0..10).map(|i| failed_call(service, t0 + i)).collect()
}

/// One failed call of `service` at `t`.
pub fn failed_call(service: &str, t: i64) -> (String, Vec<u8>) {
    counter_event("e2e_calls_failed_total", service, t)
}

/// A counter increment as a JSON message and its key.
pub fn counter_event(name: &str, service: &str, t: i64) -> (String, Vec<u8>) {
    let m = Metric {
        name: name.into(),
        kind: MetricKind::Counter,
        value: 1.0,
        timestamp_ms: t,
        service: service.into(),
        labels: Default::default(),
        unit: None,
    };
    (format!("{service}/{}", m.name), callscope_schemas::json::encode(&Event::Metric(m)))
}

/// A counter of service `gw` that moves event time on.
pub fn heartbeat(t: i64) -> (String, Vec<u8>) {
    counter_event("e2e_heartbeat_total", "gw", t)
}

/// The data recovers after failures at `t0`: heartbeats move event time 30 s on.
pub fn recovery_after(t0: i64) -> Vec<(String, Vec<u8>)> {
    (1..=30).map(|s| heartbeat(t0 + s * 1000 + 1500)).collect()
}

/// `node` evaluating [`RULES`] (without the default pack) and notifying as `notify_yaml`
/// says; both files are written to `dir`.
pub fn with_alerting(node: NodeBuilder, dir: &Path, notify_yaml: &str) -> NodeBuilder {
    let rules = dir.join("rules.yaml");
    let notify = dir.join("notify.yaml");
    std::fs::write(&rules, RULES).expect("rules");
    std::fs::write(&notify, notify_yaml).expect("notify");
    node.args(["--alert-rules", rules.to_str().expect("utf-8 path")])
        .args(["--notify-config", notify.to_str().expect("utf-8 path")])
        .args(["--no-default-rules", "--alert-idle-after", "3s", "--flush-interval", "200ms"])
        .env("CALLSCOPE_E2E_SLACK_TOKEN", "T000/B000/XXXX")
}

/// A standalone node notifying `notify_yaml`'s receivers.
pub fn standalone(dir: &Path, notify_yaml: &str) -> NodeBuilder {
    with_alerting(Node::standalone(dir), dir, notify_yaml)
}

/// A standalone node notifying the local receivers as [`notify_config`] routes them.
pub fn start(dir: &Path, receivers: &Receivers) -> Node {
    standalone(dir, &notify_config(&receivers.base)).spawn()
}

/// The services of a notification's alerts, sorted.
pub fn services_of(notification: &Value) -> Vec<String> {
    let mut s: Vec<String> = notification["alerts"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["labels"]["service"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    s.sort();
    s
}

/// A time for a silence's `endsAt`.
pub fn chrono_like_rfc3339(ms: i64) -> String {
    // Unix milliseconds are accepted as well as RFC 3339.
    ms.to_string()
}

/// `callscope_alerting_leader` of a pipeline process's /metrics.
pub fn is_leader(client: &Http, metrics_url: &str) -> bool {
    client
        .try_call("GET", metrics_url, None)
        .is_some_and(|r| r.body.lines().any(|l| l.trim() == "callscope_alerting_leader 1"))
}
