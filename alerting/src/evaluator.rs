//! The alert evaluator, a task of every pipeline process.
//!
//! It reads the metric and alert topics itself (every partition, assigned without a
//! consumer group, decoding only the metrics some rule reads, chosen by message key), so
//! each instance sees all series and a rule that sums across partitions is right. On
//! start it reads back `replay` of history (by timestamp) to rebuild windows, pending
//! timers and firing alerts in event time, which is what makes alert state survive a
//! restart or `kill -9`.
//!
//! While it reads back history it only ingests (no evaluation, no notification; event time
//! is that of the slowest replayed partition, see [`crate::engine`]). Once caught up it
//! evaluates over the history read back and at the caught-up event time, then resolves every alert the notification log
//! says fires and that fires nowhere now (it fired before the history read back and
//! resolved during it, or its rule is gone), so that the log never says "firing" forever.
//!
//! Only the leader notifies and publishes transitions: the instance that holds partition 0
//! of the one-partition lease topic in the `callscope-alerting` consumer group. The others
//! evaluate the same data and stay ready. Every instance restores the notification log from
//! object storage at start, before replaying; on a change of leader the new one loads the
//! log that the old one kept, so a group is not notified twice, takes the next leader term
//! (an old leader that has not noticed stops saving the state, see [`crate::state`]), and
//! publishes the transitions after the last one the old leader confirmed (the
//! [`crate::publisher`] does that in its own task, so a Kafka outage never stalls
//! evaluation). Evaluation runs after every batch of messages and every `eval_interval`
//! (default 250 ms), never waiting for windows to close.

mod delivery;
mod run_loop;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use callscope_runtime::now_ms;
use callscope_schemas::alerting_status::{ActiveAlert, AlertingStatus, AlertmanagerHealth};
use callscope_schemas::events::{AlertStatus, Event};
use callscope_schemas::{Dataset, DecodeOptions, decode_event};
use callscope_storage::alerting::SilenceState;
use callscope_storage::{CatalogKey, Tier};

pub use self::run_loop::run;
use crate::config::{AlertingConfig, default_smart_rules, load_notify, load_rules};
use crate::engine::{ALERT_SOURCE, AlertChange, AlertEngine};
use crate::metrics::AlertingMetrics;
use crate::notify::config::parse_matcher;
use crate::notify::dispatch::{Dispatcher, RoutedAlert, SilenceRule};
use crate::notify::notifier::{DeliveryFailure, FailureSink, Notifier, ReportSink};
use crate::publisher::{Publisher, TransitionKey};
use crate::state::{DurableState, Saved, read_state_checked};

fn failure_sink(tier: Tier) -> FailureSink {
    std::sync::Arc::new(move |f: DeliveryFailure| {
        let tier = tier.clone();
        tokio::spawn(async move {
            let path = CatalogKey::AlertFailure {
                at_ms: f.at_ms,
                receiver: f.receiver.clone(),
                channel: f.channel.to_string(),
            }
            .path();
            let bytes = Bytes::from(serde_json::to_vec(&f).unwrap_or_default());
            if let Err(e) = tier.put_durable(&path, bytes, false).await {
                tracing::warn!(error = %e, "recording a failed notification failed");
            }
        });
    })
}

struct Evaluator {
    config: AlertingConfig,
    tier: Tier,
    engine: AlertEngine,
    dispatcher: Dispatcher,
    notifier: Option<Notifier>,
    /// Publishes transitions (as leader) to the alerts topic.
    publisher: Publisher,
    leader: bool,
    state: DurableState,
    state_dirty: bool,
    /// This process's leader term while it leads (see [`crate::state`]).
    term: u64,
    /// A newer leader owns the durable state: this process stops saving it.
    superseded: bool,
    /// After a takeover, everything in the outbox is queued again at the first flush.
    requeue_outbox: bool,
    /// Where the notifier's channels report deliveries (kept to restart the notifier).
    reports: ReportSink,
    /// When storage last confirmed that no newer leader exists (a save, or a read of the
    /// state): a leader notifies only within [`delivery::LEASE_MS`] of it.
    confirmed_ms: Option<i64>,
    /// A new leader notifies from this time on (see [`delivery`]).
    hold_until_ms: i64,
    /// A new leader that took over from another instance holds until its claim of the term
    /// is saved, then for [`delivery::LEASE_MS`] more.
    claim_pending: bool,
    /// When logged firing alerts that fire nowhere are resolved: after catch-up (or a
    /// takeover), once a condition that still holds has had time to fire again.
    resolve_missing_due: Option<i64>,
    rule_errors: Vec<String>,
    decode: DecodeOptions,
    silences: callscope_storage::SilenceStore,
    smart_rules: callscope_storage::SmartRuleStore,
    acks: callscope_storage::AckStore,
    smart_version: String,
    smart_errors: Vec<String>,
    config_inhibit: Vec<crate::notify::config::InhibitRule>,
    alertmanager_health: Vec<AlertmanagerHealth>,
    last_probe: Option<Instant>,
    /// Per worker: the newest heartbeat read (time, dead letters so far).
    heartbeat_seen: HashMap<String, (i64, u64)>,
}

/// The evaluation trigger that ends the history replay.
const CATCH_UP: &str = "catch_up";

/// A standby rejoins the lease group when no leader has published status for this long.
const LEADER_SILENCE: Duration = Duration::from_secs(10);

/// Transitions kept for a new leader to publish (and waiting while Kafka is unreachable).
const RECENT_TRANSITIONS: usize = 10_000;

impl Evaluator {
    /// An evaluator (not leading) with the durable `state` read at start: its notification
    /// log is restored before any history is read back.
    #[allow(clippy::too_many_arguments)]
    fn new(
        config: AlertingConfig,
        tier: Tier,
        engine: AlertEngine,
        mut dispatcher: Dispatcher,
        notifier: Option<Notifier>,
        reports: ReportSink,
        publisher: Publisher,
        state: DurableState,
    ) -> Evaluator {
        dispatcher.restore_log(state.nflog.clone());
        Evaluator {
            requeue_outbox: false,
            reports,
            confirmed_ms: None,
            hold_until_ms: 0,
            claim_pending: false,
            state,
            silences: callscope_storage::SilenceStore::new(tier.clone()),
            acks: callscope_storage::AckStore::new(tier.clone()),
            smart_rules: callscope_storage::SmartRuleStore::new(tier.clone()),
            config,
            tier,
            engine,
            dispatcher,
            notifier,
            publisher,
            leader: false,
            state_dirty: false,
            term: 0,
            superseded: false,
            resolve_missing_due: None,
            rule_errors: Vec::new(),
            smart_version: String::new(),
            smart_errors: Vec::new(),
            config_inhibit: Vec::new(),
            alertmanager_health: Vec::new(),
            last_probe: None,
            heartbeat_seen: HashMap::new(),
            decode: DecodeOptions { max_time_skew_ms: DecodeOptions::DEFAULT_MAX_SKEW_MS, now_ms: now_ms() },
        }
    }

    /// After a batch of messages: evaluate and flush, unless history is still being read
    /// back (then the messages were only ingested).
    fn after_batch(&mut self, wall: i64) {
        if self.engine.replaying() {
            return;
        }
        self.evaluate("batch", wall);
        self.flush(wall);
    }

    /// The history is read back: evaluate over it and at the caught-up event time (which
    /// rebuilds the instances and their timers from the samples read back, see
    /// [`AlertEngine::end_replay`]), resolve what the log says fires and fires nowhere
    /// now, and flush (only the leader sends).
    fn catch_up(&mut self, wall: i64) {
        self.evaluate(CATCH_UP, wall);
        self.schedule_resolve_missing(wall);
        self.resolve_missing_if_due(wall);
        self.flush(wall);
    }

    /// A logged firing alert whose condition still holds may be pending again right after a
    /// restart (its `for` timer restarts, in event time): it is resolved only if it has not
    /// fired again within [`AlertEngine::refire_within_ms`] plus two evaluation intervals.
    fn schedule_resolve_missing(&mut self, wall: i64) {
        let grace = i64::try_from(self.config.eval_interval.as_millis()).unwrap_or(i64::MAX).saturating_mul(2);
        self.resolve_missing_due = Some(wall.saturating_add(self.engine.refire_within_ms()).saturating_add(grace));
    }

    fn resolve_missing_if_due(&mut self, wall: i64) {
        if self.resolve_missing_due.is_some_and(|due| wall >= due) {
            self.resolve_missing_due = None;
            self.resolve_missing(wall);
        }
    }

    /// Resolves the alerts the notification log says fire and that fire nowhere now (they
    /// ended while no process evaluated). The resolutions are transitions like any other:
    /// notified, and published to the alerts topic, stamped with the evaluator's event time
    /// so that they sort among the transitions around them.
    fn resolve_missing(&mut self, wall: i64) {
        let resolved = self.dispatcher.resolve_missing(wall);
        if resolved.is_empty() {
            return;
        }
        let fingerprints: Vec<&str> = resolved.iter().map(|a| a.fingerprint.as_str()).collect();
        tracing::info!(alerts = ?fingerprints, "alerts the notification log says fire and that fire nowhere now are resolved");
        self.state_dirty = true;
        let at_ms = self.engine.event_time(wall);
        AlertingMetrics::global().transitions.with_label_values(&["resolved"]).inc_by(resolved.len() as u64);
        for alert in resolved {
            let key = TransitionKey::new(at_ms, alert.fingerprint.clone(), AlertStatus::Resolved);
            self.publisher.submit(key, alert.to_event());
        }
    }

    /// This process leads from now on: it takes over the notification log and the outbox the
    /// previous leader saved and the next leader term. Returns `false` (to be tried again)
    /// when storage cannot say what the previous leader saved: leading without its log
    /// would notify again what it notified, and without its term could not fence it.
    async fn take_over(&mut self, wall: i64) -> bool {
        let stored = match read_state_checked(&self.tier).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the alerting state to take over; will retry");
                return false;
            }
        };
        // While the previous leader's lease may still run, it may still send.
        let previous = stored.as_ref().is_some_and(|s| !s.leader.is_empty() && s.leader != self.config.instance_id);
        self.claim_pending = previous;
        self.hold_until_ms = wall;
        self.confirmed_ms = Some(wall);
        self.state = stored.unwrap_or_default();
        self.dispatcher.restore_log(self.state.nflog.clone());
        self.requeue_outbox = true;
        self.term = self.state.term + 1;
        self.superseded = false;
        // Claim the term at the next save, so that an old leader stops saving.
        self.state_dirty = true;
        if !self.engine.replaying() {
            self.schedule_resolve_missing(wall);
        }
        // Publish the transitions after the last one the old leader confirmed.
        self.publisher.activate(self.state.published_through.clone());
        self.leader = true;
        tracing::info!(instance = %self.config.instance_id, term = self.term, pending = self.state.outbox.len(), "this process now sends alert notifications");
        true
    }

    fn on_message(&mut self, topic: &str, partition: i32, key: Option<&[u8]>, payload: &[u8], wall: i64) {
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
                self.engine.ingest_from(&m, wall, topic, partition);
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

    fn evaluate(&mut self, trigger: &str, wall: i64) {
        let metrics = AlertingMetrics::global();
        let started = Instant::now();
        let changes = if trigger == CATCH_UP { self.engine.end_replay(wall) } else { self.engine.evaluate(wall) };
        metrics.evaluation_seconds.observe(started.elapsed().as_secs_f64());
        metrics.evaluations.with_label_values(&[trigger]).inc();
        metrics.window_series.set(self.engine.store_series() as i64);
        for change in changes {
            self.on_change(change, wall);
        }
    }

    fn on_change(&mut self, change: AlertChange, wall: i64) {
        let metrics = AlertingMetrics::global();
        metrics.transitions.with_label_values(&[&format!("{:?}", change.to).to_lowercase()]).inc();
        let Some(event) = change.to_event() else { return };
        let routed = RoutedAlert::from_event(&event);
        let key = TransitionKey::new(change.at_ms, routed.fingerprint.clone(), event.status);
        self.dispatcher.receive(routed, wall);
        self.publisher.submit(key, event);
    }

    async fn save_state(&mut self, wall: i64) {
        if !self.leader || self.superseded {
            return;
        }
        let through = self.publisher.through();
        if through != self.state.published_through {
            self.state.set_published_through(through);
            self.state_dirty = true;
        }
        if !self.state_dirty {
            return;
        }
        self.state.nflog = self.dispatcher.log().clone();
        self.state.leader = self.config.instance_id.clone();
        self.state.term = self.term;
        self.state.saved_at_ms = now_ms();
        match crate::state::save(&self.tier, &self.state).await {
            Ok(Saved::Written) => {
                self.state_dirty = false;
                self.confirmed_ms = Some(wall);
                if std::mem::take(&mut self.claim_pending) {
                    // The old leader's reads see the claim from now on.
                    self.hold_until_ms = wall.saturating_add(delivery::LEASE_MS);
                }
            }
            Ok(Saved::Conflict) => tracing::info!("the alerting state changed while being saved; will retry"),
            Ok(Saved::Superseded { term }) => {
                self.superseded = true;
                tracing::warn!(
                    term = self.term,
                    newer_term = term,
                    "a newer alerting leader owns the state; this process stops saving it"
                );
            }
            Err(e) => tracing::warn!(error = %e, "saving the alerting state failed; will retry"),
        }
    }

    async fn publish_status(&self, wall: i64) {
        if !self.leader {
            return;
        }
        let status = AlertingStatus {
            instance: self.config.instance_id.clone(),
            updated_at_ms: wall,
            event_time_ms: self.engine.event_time(wall),
            rules: self.engine.status(),
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
        if let Err(e) = self.tier.put_durable(&CatalogKey::AlertingStatus.path(), bytes, false).await {
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
        let builtins = if self.config.default_rules { default_smart_rules().unwrap_or_default() } else { Vec::new() };
        let rules = callscope_schemas::smart_rules::merge_with_builtin_rules(builtins, stored);
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
            .filter(|s| s.state(wall) != SilenceState::Expired)
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
                self.rule_errors = vec![e.to_string()];
                metrics.rule_reloads.with_label_values(&["error"]).inc();
            }
        }
        match load_notify(&self.config) {
            Ok(Some((config, route))) => {
                match Notifier::start(&config, failure_sink(self.tier.clone()), self.reports.clone()) {
                    Ok(notifier) => {
                        self.dispatcher.set_route(route);
                        self.config_inhibit = config.inhibit_rules().unwrap_or_default();
                        self.apply_inhibitions();
                        self.notifier = Some(notifier);
                    }
                    Err(e) => tracing::warn!(error = %e, "notification config not reloaded"),
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "notification config not reloaded; the previous one stays in force");
                metrics.rule_reloads.with_label_values(&["error"]).inc();
            }
        }
    }
}

#[cfg(test)]
mod tests;
