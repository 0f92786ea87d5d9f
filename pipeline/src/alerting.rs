//! The alert evaluator, a task of every pipeline process.
//!
//! It reads the metric and alert topics itself (every partition, assigned without a
//! consumer group, decoding only the metrics some rule reads, chosen by message key), so
//! each instance sees all series and a rule that sums across partitions is right. On
//! start it reads back `replay` of history (by timestamp) to rebuild windows, pending
//! timers and firing alerts in event time, which is what makes alert state survive a
//! restart or `kill -9`.
//!
//! Only the leader notifies and publishes transitions: the instance that holds partition 0
//! of the one-partition lease topic in the `callscope-alerting` consumer group. The others
//! evaluate the same data and stay ready; on a change of leader the new one loads the
//! notification log that the old one kept in object storage, so a group is not notified
//! twice. Evaluation runs after every batch of messages and every `eval_interval`
//! (default 250 ms), never waiting for windows to close.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use callscope_schemas::events::{Alert, Event};
use callscope_schemas::{Dataset, DecodeOptions, decode_event};
use callscope_storage::Tier;
use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::alert_engine::{ALERT_SOURCE, AlertChange, AlertEngine, EngineConfig, RuleStatus};
use crate::alert_rules::{AlertRule, load_rule_file};
use crate::alerting_metrics::AlertingMetrics;
use crate::kafka::{KafkaConnection, ensure_topics};
use crate::notify::channels::{DeliveryFailure, FailureSink, Notifier};
use crate::notify::config::NotifyConfig;
use crate::notify::config::parse_matcher;
use crate::notify::dispatch::{Dispatcher, Notification, RoutedAlert, SentEntry, SilenceRule};
use crate::{PipelineError, Result, now_ms};

/// The phone platform's default rules, enabled unless turned off.
pub const DEFAULT_RULES: &str = include_str!("../rules/phone-platform.yaml");
/// Its default smart rules (a stored smart rule with the same id replaces one).
pub const DEFAULT_SMART_RULES: &str = include_str!("../rules/phone-platform-smart.json");

/// The default smart rules.
pub fn default_smart_rules() -> std::result::Result<Vec<callscope_schemas::smart_rules::SmartRule>, String> {
    serde_json::from_str(DEFAULT_SMART_RULES).map_err(|e| format!("default smart rules: {e}"))
}

use callscope_storage::alerting::{FAILURES_DIR, STATE_PATH, STATUS_PATH};

#[derive(Debug, Clone)]
pub struct AlertingConfig {
    pub kafka: KafkaConnection,
    pub metric_topics: Vec<String>,
    pub alerts_topic: String,
    pub rule_files: Vec<PathBuf>,
    pub default_rules: bool,
    pub notify_file: Option<PathBuf>,
    pub engine: EngineConfig,
    pub eval_interval: Duration,
    /// History read back on start; at least the longest rule range plus its `for`.
    pub replay: Duration,
    pub lease_topic: String,
    pub lease_group: String,
    pub instance_id: String,
}

impl AlertingConfig {
    pub fn new(kafka: KafkaConnection, instance_id: impl Into<String>) -> AlertingConfig {
        AlertingConfig {
            kafka,
            metric_topics: vec![Dataset::Metrics.default_topic().to_string()],
            alerts_topic: Dataset::Alerts.default_topic().to_string(),
            rule_files: Vec::new(),
            default_rules: true,
            notify_file: None,
            engine: EngineConfig::default(),
            eval_interval: Duration::from_millis(250),
            replay: Duration::from_secs(15 * 60),
            lease_topic: "callscope.alerting-lease".into(),
            lease_group: "callscope-alerting".into(),
            instance_id: instance_id.into(),
        }
    }
}

/// What the leader persists.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DurableState {
    pub nflog: BTreeMap<String, SentEntry>,
    /// Transitions at or before this event time are already on the alerts topic.
    pub published_through_ms: i64,
    pub leader: String,
    pub saved_at_ms: i64,
}

/// What the leader publishes for the query API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AlertingStatus {
    pub instance: String,
    pub updated_at_ms: i64,
    pub event_time_ms: i64,
    pub rules: Vec<serde_json::Value>,
    pub alerts: Vec<ActiveAlert>,
    pub rule_errors: Vec<String>,
    /// Health of the configured Alertmanagers, probed every 10 s.
    pub alertmanagers: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActiveAlert {
    pub receiver: String,
    /// `silenced by <id>` or `inhibited by <fingerprint>` while muted.
    pub muted: Option<String>,
    /// Whether this firing episode is acknowledged (no escalation).
    pub acknowledged: bool,
    #[serde(flatten)]
    pub alert: RoutedAlert,
}

/// Loads the default pack and the rule files; the first problem names its file.
pub fn load_rules(config: &AlertingConfig) -> std::result::Result<Vec<AlertRule>, String> {
    let mut rules = Vec::new();
    if config.default_rules {
        rules.extend(load_rule_file(DEFAULT_RULES).map_err(|e| format!("default rules: {e}"))?);
        for r in default_smart_rules()? {
            r.validate().map_err(|e| format!("default smart rule {}: {}: {}", r.id, e.field, e.message))?;
        }
    }
    for path in &config.rule_files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        rules.extend(load_rule_file(&text).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    Ok(rules)
}

fn load_notify(
    config: &AlertingConfig,
) -> std::result::Result<Option<(NotifyConfig, crate::notify::config::Route)>, String> {
    let Some(path) = &config.notify_file else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    NotifyConfig::parse(&text).map(Some).map_err(|e| format!("{}: {e}", path.display()))
}

/// Fingerprint of the files' contents, to notice edits.
fn files_version(config: &AlertingConfig) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for path in config.rule_files.iter().chain(config.notify_file.iter()) {
        std::fs::read(path).ok().hash(&mut h);
    }
    h.finish()
}

fn failure_sink(tier: Tier) -> FailureSink {
    std::sync::Arc::new(move |f: DeliveryFailure| {
        let tier = tier.clone();
        tokio::spawn(async move {
            let date = chrono::DateTime::from_timestamp_millis(f.at_ms)
                .map(|t| t.format("%Y-%m-%d").to_string())
                .unwrap_or_default();
            let path = format!("{FAILURES_DIR}/date={date}/{}-{}-{}.json", f.at_ms, f.receiver, f.channel);
            let bytes = Bytes::from(serde_json::to_vec(&f).unwrap_or_default());
            if let Err(e) = tier.put_durable(&path, bytes, false).await {
                tracing::warn!(error = %e, "recording a failed notification failed");
            }
        });
    })
}

async fn read_state(tier: &Tier) -> DurableState {
    match tier.get(STATE_PATH).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(error = %e, path = STATE_PATH, "alerting state unreadable; starting with an empty notification log");
            DurableState::default()
        }),
        Err(_) => DurableState::default(),
    }
}

/// Assigns every partition of `topics` at the first offset at or after `since_ms`.
/// Returns, for each partition that has history to read back, the end offset at start (to
/// know when the history has been read).
async fn assign_from(
    consumer: &StreamConsumer,
    topics: &[String],
    since_ms: i64,
) -> Result<HashMap<(String, i32), i64>> {
    let mut by_time = TopicPartitionList::new();
    let mut watermarks = HashMap::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                by_time.add_partition_offset(topic, p.id(), Offset::Offset(since_ms))?;
                let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
                watermarks.insert((topic.clone(), p.id()), (low, high));
            }
        }
    }
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    match consumer.offsets_for_times(by_time.clone(), Duration::from_secs(10)) {
        Ok(found) => {
            for e in found.elements() {
                let key = (e.topic().to_string(), e.partition());
                let offset = match e.offset() {
                    Offset::Offset(o) => {
                        if let Some((_, high)) = watermarks.get(&key).filter(|(_, high)| o < *high) {
                            ends.insert(key, *high);
                        }
                        Offset::Offset(o)
                    }
                    // Nothing at or after `since_ms`: only new messages matter.
                    _ => Offset::End,
                };
                assignment.add_partition_offset(e.topic(), e.partition(), offset)?;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "the broker cannot look up offsets by time; the evaluator reads history from the start of each partition");
            for e in by_time.elements() {
                let key = (e.topic().to_string(), e.partition());
                if let Some((_, high)) = watermarks.get(&key).filter(|(low, high)| low < high) {
                    ends.insert(key, *high);
                }
                assignment.add_partition_offset(e.topic(), e.partition(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&assignment)?;
    Ok(ends)
}

struct Evaluator {
    config: AlertingConfig,
    tier: Tier,
    engine: AlertEngine,
    dispatcher: Dispatcher,
    notifier: Option<Notifier>,
    producer: FutureProducer,
    leader: bool,
    state: DurableState,
    state_dirty: bool,
    rule_errors: Vec<String>,
    decode: DecodeOptions,
    /// Recent transitions (event time, alert event), for publishing by whoever leads.
    recent: std::collections::VecDeque<(i64, Alert)>,
    silences: callscope_storage::SilenceStore,
    smart_rules: callscope_storage::SmartRuleStore,
    acks: callscope_storage::AckStore,
    smart_version: String,
    smart_errors: Vec<String>,
    config_inhibit: Vec<crate::notify::config::InhibitRule>,
    alertmanager_health: Vec<serde_json::Value>,
    last_probe: Option<Instant>,
    /// Per worker: the newest heartbeat read (time, dead letters so far).
    heartbeat_seen: HashMap<String, (i64, u64)>,
}

/// A standby rejoins the lease group when no leader has published status for this long.
const LEADER_SILENCE: Duration = Duration::from_secs(10);

/// Transitions kept for a new leader to publish.
const RECENT_TRANSITIONS: usize = 10_000;

impl Evaluator {
    fn on_message(&mut self, topic: &str, key: Option<&[u8]>, payload: &[u8], wall: i64) {
        let metrics = AlertingMetrics::global();
        let is_alert = topic == self.config.alerts_topic;
        if !is_alert && !self.engine.wants_all() {
            // Metric keys are `service/name`: skip what no rule reads without decoding it.
            if let Some(name) =
                key.and_then(|k| std::str::from_utf8(k).ok()).and_then(|k| k.rsplit_once('/')).map(|(_, n)| n)
                && !self.engine.wants(name)
            {
                metrics.samples_ingested.with_label_values(&["skipped"]).inc();
                return;
            }
        }
        let dataset = if is_alert { Dataset::Alerts } else { Dataset::Metrics };
        self.decode.now_ms = wall;
        match decode_event(dataset, payload, &self.decode) {
            Ok((Event::Metric(m), _)) => {
                self.engine.ingest(&m, wall);
                metrics.samples_ingested.with_label_values(&["read"]).inc();
            }
            Ok((Event::Alert(a), _)) if a.source != ALERT_SOURCE => {
                self.dispatcher.receive(RoutedAlert::from_event(&a), wall);
            }
            Ok(_) => {}
            // The workers dead-letter bad input; the evaluator just skips it.
            Err(_) => metrics.samples_ingested.with_label_values(&["undecodable"]).inc(),
        }
    }

    async fn evaluate(&mut self, trigger: &str, wall: i64) {
        let metrics = AlertingMetrics::global();
        let started = Instant::now();
        let changes = self.engine.evaluate(wall);
        metrics.evaluation_seconds.observe(started.elapsed().as_secs_f64());
        metrics.evaluations.with_label_values(&[trigger]).inc();
        metrics.window_series.set(self.engine.store_series() as i64);
        for change in changes {
            self.on_change(change, wall);
        }
        self.publish_recent().await;
    }

    fn on_change(&mut self, change: AlertChange, wall: i64) {
        let metrics = AlertingMetrics::global();
        metrics.transitions.with_label_values(&[&format!("{:?}", change.to).to_lowercase()]).inc();
        let Some(event) = change.to_event() else { return };
        self.dispatcher.receive(RoutedAlert::from_event(&event), wall);
        self.recent.push_back((change.at_ms, event));
        while self.recent.len() > RECENT_TRANSITIONS {
            self.recent.pop_front();
        }
    }

    /// Publishes (as leader) the transitions newer than what is already on the topic; a
    /// new leader thereby publishes what happened while nobody led.
    async fn publish_recent(&mut self) {
        if !self.leader {
            return;
        }
        let through = self.state.published_through_ms;
        let mut newest = through;
        for (at_ms, event) in self.recent.iter().filter(|(at, _)| *at > through) {
            self.publish(event).await;
            newest = newest.max(*at_ms);
        }
        if newest > through {
            self.state.published_through_ms = newest;
            self.state_dirty = true;
        }
    }

    async fn publish(&self, alert: &Alert) {
        let event = Event::Alert(alert.clone());
        let payload = callscope_schemas::json::encode(&event);
        let key = event.partition_key();
        let record = FutureRecord::to(&self.config.alerts_topic).key(&key).payload(&payload);
        if let Err((e, _)) = self.producer.send(record, Duration::from_secs(10)).await {
            tracing::warn!(error = %e, alert = %alert.alert_name, "publishing an alert transition failed");
        }
    }

    fn flush(&mut self, wall: i64) {
        if !self.leader {
            // A standby sends nothing and keeps resolved alerts for an hour: if it takes over
            // before the leader notified a resolution, its first flush (with the leader's
            // log) sends it.
            self.dispatcher.forget_resolved_before(wall - 3_600_000);
            return;
        }
        let sent = self.dispatcher.flush(wall);
        if sent.is_empty() {
            return;
        }
        for n in &sent {
            if let Some(notifier) = &self.notifier {
                notifier.enqueue(n);
            }
        }
        self.state_dirty = true;
    }

    /// Firing alerts are re-sent to Alertmanagers every minute so that they stay active there.
    fn resend_to_alertmanagers(&self, wall: i64) {
        let Some(notifier) = &self.notifier else { return };
        for receiver in &notifier.alertmanager_receivers {
            let alerts: Vec<RoutedAlert> =
                self.dispatcher.alerts().filter(|(r, _)| r == receiver).map(|(_, a)| a.clone()).collect();
            if alerts.is_empty() {
                continue;
            }
            notifier.enqueue_alertmanager(&Notification {
                receiver: receiver.clone(),
                group_key: "resend".into(),
                group_labels: Default::default(),
                alerts,
                at_ms: wall,
            });
        }
    }

    async fn save_state(&mut self) {
        if !self.leader || !self.state_dirty {
            return;
        }
        self.state.nflog = self.dispatcher.log().clone();
        self.state.leader = self.config.instance_id.clone();
        self.state.saved_at_ms = now_ms();
        let bytes = Bytes::from(serde_json::to_vec(&self.state).unwrap_or_default());
        match self.tier.put_durable(STATE_PATH, bytes, false).await {
            Ok(()) => self.state_dirty = false,
            Err(e) => tracing::warn!(error = %e, "saving the alerting state failed; will retry"),
        }
    }

    async fn publish_status(&self, wall: i64) {
        if !self.leader {
            return;
        }
        let rules: Vec<serde_json::Value> =
            self.engine.status().iter().map(|r: &RuleStatus| serde_json::to_value(r).unwrap_or_default()).collect();
        let status = AlertingStatus {
            instance: self.config.instance_id.clone(),
            updated_at_ms: wall,
            event_time_ms: self.engine.event_time(wall),
            rules,
            alerts: self
                .dispatcher
                .alerts()
                .map(|(r, a)| ActiveAlert {
                    receiver: r.to_string(),
                    muted: self.dispatcher.mute_reason(a, wall),
                    acknowledged: self.dispatcher.acked(a),
                    alert: a.clone(),
                })
                .collect(),
            rule_errors: self.rule_errors.iter().chain(&self.smart_errors).cloned().collect(),
            alertmanagers: self.alertmanager_health.clone(),
        };
        let bytes = Bytes::from(serde_json::to_vec(&status).unwrap_or_default());
        if let Err(e) = self.tier.put_durable(STATUS_PATH, bytes, false).await {
            tracing::debug!(error = %e, "publishing alerting status failed");
        }
    }

    /// Loads the silences (created through the API) into the dispatcher.
    /// Loads the smart rules (created through the API) into the engine, and their
    /// root-cause suppressions into the dispatcher's inhibition rules.
    async fn load_smart_rules(&mut self) {
        let stored = match self.smart_rules.list().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reading smart rules failed; keeping the previous ones");
                return;
            }
        };
        let mut rules = if self.config.default_rules { default_smart_rules().unwrap_or_default() } else { Vec::new() };
        rules.retain(|d| !stored.iter().any(|s| s.id == d.id));
        rules.extend(stored);
        let fingerprint = serde_json::to_string(&rules).unwrap_or_default();
        if fingerprint == self.smart_version {
            return;
        }
        self.smart_version = fingerprint;
        let errors = self.engine.set_smart_rules(rules);
        for (id, e) in &errors {
            tracing::warn!(rule = %id, error = %e, "smart rule not loaded");
        }
        self.smart_errors = errors.into_iter().map(|(id, e)| format!("smart rule {id}: {e}")).collect();
        AlertingMetrics::global().rules_loaded.set(self.engine.rule_count() as i64);
        AlertingMetrics::global().rule_reloads.with_label_values(&["smart"]).inc();
        self.apply_inhibitions();
    }

    /// Inhibition rules: the notification config's plus the smart rules' suppressions.
    fn apply_inhibitions(&mut self) {
        let mut rules = self.config_inhibit.clone();
        let quoted = |v: &str| serde_json::to_string(v).unwrap_or_default();
        for (source, target, equal) in self.engine.suppressions() {
            let (Ok(s), Ok(t)) = (
                parse_matcher(&format!("alertname={}", quoted(&source))),
                parse_matcher(&format!("alertname={}", quoted(&target))),
            ) else {
                continue;
            };
            rules.push(crate::notify::config::InhibitRule { source: vec![s], target: vec![t], equal });
        }
        self.dispatcher.set_inhibit_rules(rules);
    }

    /// callscope watching itself: every worker's heartbeat becomes samples of
    /// `callscope_consumer_lag_messages` (gauge per worker and partition) and
    /// `callscope_dead_letters_total` (counter increments per worker), which the default
    /// rules read like any other metric.
    async fn self_samples(&mut self) {
        let Ok(workers) = callscope_storage::workers::read_all(&self.tier).await else { return };
        let wall = now_ms();
        for w in workers.into_iter().filter(|w| wall - w.updated_at_ms < 30_000) {
            let t = w.updated_at_ms;
            if self.heartbeat_seen.get(&w.worker_id).is_some_and(|(at, _)| *at >= t) {
                continue;
            }
            let sample = |name: &str, kind, value: f64, labels: Vec<(&str, String)>| callscope_schemas::Metric {
                name: name.into(),
                kind,
                value,
                timestamp_ms: t,
                service: "callscope".into(),
                labels: labels.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                unit: None,
            };
            for (partition, lag) in &w.lag {
                let m = sample(
                    "callscope_consumer_lag_messages",
                    callscope_schemas::MetricKind::Gauge,
                    *lag as f64,
                    vec![("worker", w.worker_id.clone()), ("partition", partition.clone())],
                );
                self.engine.ingest_side(&m);
            }
            if let Some((_, before)) = self.heartbeat_seen.get(&w.worker_id)
                && w.dead_lettered >= *before
            {
                let m = sample(
                    "callscope_dead_letters_total",
                    callscope_schemas::MetricKind::Counter,
                    (w.dead_lettered - before) as f64,
                    vec![("worker", w.worker_id.clone())],
                );
                self.engine.ingest_side(&m);
            }
            self.heartbeat_seen.insert(w.worker_id.clone(), (t, w.dead_lettered));
        }
    }

    /// Loads acknowledgements (made through the API) into the dispatcher.
    async fn load_acks(&mut self) {
        match self.acks.list().await {
            Ok(acks) => self.dispatcher.set_acks(acks.into_iter().map(|a| (a.fingerprint, a.starts_at_ms)).collect()),
            Err(e) => tracing::warn!(error = %e, "reading acknowledgements failed; keeping the previous ones"),
        }
    }

    async fn load_silences(&mut self) {
        let silences = match self.silences.list().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading silences failed; keeping the previous ones");
                return;
            }
        };
        let wall = now_ms();
        let rules = silences
            .into_iter()
            .filter(|s| s.state(wall) != "expired")
            .filter_map(|s| {
                let matchers = s
                    .matchers
                    .iter()
                    .map(|m| {
                        let op = match (m.is_regex, m.is_equal) {
                            (false, true) => "=",
                            (false, false) => "!=",
                            (true, true) => "=~",
                            (true, false) => "!~",
                        };
                        parse_matcher(&format!("{}{op}{}", m.name, serde_json::to_string(&m.value).unwrap_or_default()))
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| tracing::warn!(silence = %s.id, error = %e, "ignoring a silence with a bad matcher"))
                    .ok()?;
                Some(SilenceRule { id: s.id, matchers, starts_at_ms: s.starts_at_ms, ends_at_ms: s.ends_at_ms })
            })
            .collect();
        self.dispatcher.set_silences(rules);
    }

    async fn probe_alertmanagers(&mut self) {
        if self.last_probe.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        self.last_probe = Some(Instant::now());
        let urls = self.notifier.as_ref().map(|n| n.alertmanager_urls.clone()).unwrap_or_default();
        self.alertmanager_health =
            futures::future::join_all(urls.iter().map(|u| crate::notify::channels::probe_alertmanager(u))).await;
    }

    fn reload(&mut self) {
        let metrics = AlertingMetrics::global();
        match load_rules(&self.config) {
            Ok(rules) => {
                metrics.rules_loaded.set(rules.len() as i64);
                self.engine.set_rules(rules);
                self.rule_errors.clear();
                metrics.rule_reloads.with_label_values(&["ok"]).inc();
            }
            Err(e) => {
                tracing::warn!(error = %e, "alert rules not reloaded; the previous rules stay in force");
                self.rule_errors = vec![e];
                metrics.rule_reloads.with_label_values(&["error"]).inc();
            }
        }
        match load_notify(&self.config) {
            Ok(Some((config, route))) => match Notifier::start(&config, failure_sink(self.tier.clone())) {
                Ok(notifier) => {
                    self.dispatcher.set_route(route);
                    self.config_inhibit = config.inhibit_rules().unwrap_or_default();
                    self.apply_inhibitions();
                    self.notifier = Some(notifier);
                }
                Err(e) => tracing::warn!(error = %e, "notification config not reloaded"),
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "notification config not reloaded; the previous one stays in force");
                metrics.rule_reloads.with_label_values(&["error"]).inc();
            }
        }
    }
}

fn is_leader(lease: &StreamConsumer, topic: &str) -> bool {
    lease.assignment().is_ok_and(|a| a.elements().iter().any(|e| e.topic() == topic && e.partition() == 0))
}

/// Runs the evaluator until `shutdown`.
pub async fn run(config: AlertingConfig, tier: Tier, shutdown: CancellationToken) -> Result<()> {
    let rules = load_rules(&config).map_err(PipelineError::Config)?;
    let notify = load_notify(&config).map_err(PipelineError::Config)?;
    ensure_topics(&config.kafka, std::slice::from_ref(&config.lease_topic), 1, Duration::from_secs(60)).await?;
    let metrics = AlertingMetrics::global();
    metrics.rules_loaded.set(rules.len() as i64);
    let replay_ms = i64::try_from(config.replay.as_millis()).unwrap_or(i64::MAX);
    let engine = AlertEngine::new(config.engine, rules);
    let (dispatcher, notifier, config_inhibit) = match notify {
        Some((nc, route)) => {
            let notifier = Notifier::start(&nc, failure_sink(tier.clone())).map_err(PipelineError::Config)?;
            let inhibit = nc.inhibit_rules().map_err(|e| PipelineError::Config(e.to_string()))?;
            (Dispatcher::new(route), Some(notifier), inhibit)
        }
        None => {
            let (_, route) = NotifyConfig::parse("route: {receiver: none}\nreceivers: [{name: none}]")
                .map_err(|e| PipelineError::Config(e.to_string()))?;
            (Dispatcher::new(route), None, Vec::new())
        }
    };
    let source: StreamConsumer = config
        .kafka
        .client_config()
        .set("group.id", format!("{}-reader", config.lease_group))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "20")
        .create()?;
    let mut topics = config.metric_topics.clone();
    topics.push(config.alerts_topic.clone());
    let ends = assign_from(&source, &topics, now_ms() - replay_ms).await?;
    let lease: StreamConsumer = config
        .kafka
        .client_config()
        .set("group.id", &config.lease_group)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .create()?;
    lease.subscribe(&[config.lease_topic.as_str()])?;
    let lease = std::sync::Arc::new(lease);
    let lease_poller = {
        let lease = lease.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            // Polling keeps the membership alive and serves rebalances; the topic stays empty.
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    received = lease.recv() => {
                        if let Err(e) = received {
                            tracing::debug!(error = %e, "alerting lease poll");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            }
        })
    };
    let producer = config.kafka.producer()?;
    let silences = callscope_storage::SilenceStore::new(tier.clone());
    let acks = callscope_storage::AckStore::new(tier.clone());
    let smart_rules = callscope_storage::SmartRuleStore::new(tier.clone());
    let mut ev = Evaluator {
        state: read_state(&tier).await,
        config,
        tier,
        engine,
        dispatcher,
        notifier,
        producer,
        leader: false,
        state_dirty: false,
        rule_errors: Vec::new(),
        recent: Default::default(),
        silences,
        smart_rules,
        acks,
        smart_version: String::new(),
        smart_errors: Vec::new(),
        config_inhibit,
        alertmanager_health: Vec::new(),
        last_probe: None,
        heartbeat_seen: HashMap::new(),
        decode: DecodeOptions { max_time_skew_ms: DecodeOptions::DEFAULT_MAX_SKEW_MS, now_ms: now_ms() },
    };
    ev.apply_inhibitions();
    ev.load_silences().await;
    ev.load_acks().await;
    ev.load_smart_rules().await;
    let mut positions: HashMap<(String, i32), i64> = HashMap::new();
    let mut caught_up = ends.is_empty();
    let mut ticker = tokio::time::interval(ev.config.eval_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut slow = tokio::time::interval(Duration::from_secs(2));
    let mut last_resend = Instant::now();
    let mut last_rejoin = Instant::now();
    let mut version = files_version(&ev.config);
    tracing::info!(instance = %ev.config.instance_id, rules = ev.engine.rule_count(), replay_ms, "alert evaluator started");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            first = source.recv() => {
                let wall = now_ms();
                let mut batch = vec![first];
                // Drain what is already fetched: one evaluation per batch.
                while batch.len() < 5000 {
                    match source.recv().now_or_never() {
                        Some(m) => batch.push(m),
                        None => break,
                    }
                }
                for m in batch {
                    match m {
                        Ok(m) => {
                            positions.insert((m.topic().to_string(), m.partition()), m.offset());
                            ev.on_message(m.topic(), m.key(), m.payload().unwrap_or_default(), wall);
                        }
                        Err(e) => tracing::warn!(error = %e, "alert evaluator read failed"),
                    }
                }
                if !caught_up {
                    caught_up = ends.iter().all(|(k, end)| positions.get(k).is_some_and(|p| *p + 1 >= *end));
                    if caught_up {
                        tracing::info!("alert evaluator read back its history");
                    }
                }
                ev.evaluate("batch", wall).await;
                ev.flush(wall);
            }
            _ = ticker.tick() => {
                let wall = now_ms();
                let leader = is_leader(&lease, &ev.config.lease_topic);
                if leader != ev.leader {
                    if leader {
                        // Take over the notification log of the previous leader.
                        ev.state = read_state(&ev.tier).await;
                        ev.dispatcher.restore_log(ev.state.nflog.clone());
                        tracing::info!(instance = %ev.config.instance_id, "this process now sends alert notifications");
                    } else {
                        tracing::info!(instance = %ev.config.instance_id, "another process sends alert notifications now");
                    }
                    ev.leader = leader;
                    metrics.leader.set(i64::from(leader));
                    ev.publish_recent().await;
                }
                if caught_up {
                    ev.evaluate("interval", wall).await;
                }
                ev.flush(wall);
                if last_resend.elapsed() >= Duration::from_secs(60) && ev.leader {
                    ev.resend_to_alertmanagers(wall);
                    last_resend = Instant::now();
                }
                ev.save_state().await;
            }
            _ = slow.tick() => {
                // Tansu 0.6 can leave a dead member's partition unassigned (see the worker's
                // orphan watchdog): when no leader has published status for 10 s, rejoin.
                if !ev.leader && last_rejoin.elapsed() >= LEADER_SILENCE {
                    let silent_for = match ev.tier.get(STATUS_PATH).await {
                        Ok(bytes) => serde_json::from_slice::<AlertingStatus>(&bytes)
                            .map_or(i64::MAX, |s| now_ms() - s.updated_at_ms),
                        Err(_) => i64::MAX,
                    };
                    if silent_for > LEADER_SILENCE.as_millis() as i64 {
                        tracing::warn!(silent_for_ms = silent_for, "no alerting leader is publishing; rejoining the lease group");
                        lease.unsubscribe();
                        if let Err(e) = lease.subscribe(&[ev.config.lease_topic.as_str()]) {
                            tracing::warn!(error = %e, "could not rejoin the alerting lease group");
                        }
                        last_rejoin = Instant::now();
                    }
                }
                ev.load_silences().await;
                ev.load_acks().await;
                ev.load_smart_rules().await;
                ev.self_samples().await;
                let now_version = files_version(&ev.config);
                if now_version != version {
                    version = now_version;
                    ev.reload();
                }
                if ev.leader {
                    ev.probe_alertmanagers().await;
                }
                ev.publish_status(now_ms()).await;
            }
        }
    }
    ev.save_state().await;
    lease_poller.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pack_loads() {
        let config = AlertingConfig::new(KafkaConnection::new("127.0.0.1:1"), "test");
        let rules = load_rules(&config).expect("default rules load");
        assert!(rules.len() >= 9, "{}", rules.len());
        let smart = default_smart_rules().expect("default smart rules parse");
        let mut engine = crate::alert_engine::AlertEngine::new(Default::default(), rules);
        assert!(engine.set_smart_rules(smart).is_empty(), "default smart rules compile");
    }
}
