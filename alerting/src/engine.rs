//! The alert engine: Prometheus-format rules evaluated over a window store that is fed
//! the samples they read, with each rule's instances moving through their lifecycle in
//! event time. Pure and deterministic: the caller passes the wall clock, so tests need no
//! sleeps and a replay of the same samples gives the same alerts.
//!
//! Event time "now" is the newest event time ingested. When nothing arrives for
//! `idle_after_ms` the wall clock (minus that delay) drives time instead, so that absence
//! rules fire when a whole platform goes quiet.
//!
//! While history is read back ([`AlertEngine::begin_replay`] to
//! [`AlertEngine::end_replay`]) the engine only ingests: [`AlertEngine::evaluate`] returns
//! nothing, and event time is the minimum over the replayed partitions of each one's
//! newest event time (samples say where they come from with [`AlertEngine::ingest_from`]).
//! Once caught up, the rules are evaluated over the history read back, in event-time steps,
//! and then at the caught-up event time: see [`replay`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use callscope_schemas::Metric;
use callscope_schemas::events::{Alert, AlertStatus, Severity};
use callscope_schemas::rollup::SeriesKey;
use promql_parser::label::METRIC_NAME;
use promql_parser::parser::Expr;

use crate::lifecycle::{AlertState, RuleInstances, Timing, Verdict, label_fingerprint};
use crate::rules::AlertRule;
use crate::smart::{CompileError, SmartState};
use crate::template::render;
use callscope_schemas::promql::eval::{self, LabelSet, Value, WindowStore};
use callscope_schemas::smart_rules::SmartRule;
use replay::ReplayClock;

/// `source` of the alert events callscope itself emits.
pub const ALERT_SOURCE: &str = "callscope";

/// How the engine keeps time and windows.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Window resolution of the store the rules read.
    pub resolution_ms: i64,
    /// After this long without events, the wall clock drives event time.
    pub idle_after_ms: i64,
}

impl EngineConfig {
    /// After this long without metrics, the wall clock drives alert time (absence rules).
    pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(30);
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { resolution_ms: 10_000, idle_after_ms: Self::DEFAULT_IDLE_AFTER.as_millis() as i64 }
    }
}

struct LoadedRule {
    rule: AlertRule,
    timing: Timing,
    instances: RuleInstances,
    last_error: Option<String>,
    last_value_count: usize,
}

/// A state change of an alert instance, with what is needed to notify about it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    pub rule: String,
    pub group: String,
    pub from: AlertState,
    pub to: AlertState,
    /// The instance's labels: the sample's labels, the rule's labels and `alertname`.
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub value: Option<f64>,
    pub at_ms: i64,
    pub active_since_ms: i64,
    pub flapping: bool,
    pub fingerprint: u64,
}

impl AlertChange {
    /// The alert event of a firing or resolved change (pending is internal).
    pub fn to_event(&self) -> Option<Alert> {
        let status = match self.to {
            AlertState::Firing => AlertStatus::Firing,
            AlertState::Resolved => AlertStatus::Resolved,
            AlertState::Pending | AlertState::Inactive => return None,
        };
        let severity = self.labels.get("severity").and_then(|s| Severity::parse(s)).unwrap_or(Severity::Warning);
        let service =
            self.labels.get("service").filter(|s| !s.is_empty()).cloned().unwrap_or_else(|| ALERT_SOURCE.into());
        let mut labels = self.labels.clone();
        labels.remove("alertname");
        if self.flapping {
            labels.insert("flapping".into(), "true".into());
        }
        Some(Alert {
            alert_name: self.rule.clone(),
            severity,
            status,
            service,
            labels,
            annotations: self.annotations.clone(),
            starts_at_ms: self.active_since_ms,
            ends_at_ms: (status == AlertStatus::Resolved).then_some(self.at_ms.max(self.active_since_ms)),
            value: self.value.filter(|v| v.is_finite()),
            source: ALERT_SOURCE.into(),
        })
    }
}

pub use callscope_schemas::alerting_status::{ActiveInstance, RuleKind, RuleStatus};

/// Rules, the windows they read, and their instances.
pub struct AlertEngine {
    config: EngineConfig,
    store: WindowStore,
    rules: Vec<LoadedRule>,
    smart: Vec<SmartState>,
    /// Resolutions of alerts whose rule was removed, reported by the next evaluation.
    pending: Vec<AlertChange>,
    /// Metric names any rule reads; `None` when a rule selects without a name.
    wanted: Option<BTreeSet<String>>,
    max_event_ms: Option<i64>,
    /// Wall clock of the newest ingested sample.
    last_ingest_wall_ms: Option<i64>,
    now_ms: Option<i64>,
    replay: ReplayClock,
}

fn selector_names(expr: &Expr, names: &mut Option<BTreeSet<String>>) {
    let mut add = |vs: &promql_parser::parser::VectorSelector| {
        let name = callscope_schemas::promql::eval::selector_name(vs).map(str::to_string);
        match (name, names.as_mut()) {
            (Some(n), Some(set)) => {
                set.insert(n.strip_suffix("_bucket").map(str::to_string).unwrap_or(n.clone()));
                set.insert(n);
            }
            (None, _) => *names = None,
            (Some(_), None) => {}
        }
    };
    match expr {
        Expr::VectorSelector(vs) => add(vs),
        Expr::MatrixSelector(m) => add(&m.vs),
        Expr::Paren(p) => selector_names(&p.expr, names),
        Expr::Unary(u) => selector_names(&u.expr, names),
        Expr::Aggregate(a) => selector_names(&a.expr, names),
        Expr::Binary(b) => {
            selector_names(&b.lhs, names);
            selector_names(&b.rhs, names);
        }
        Expr::Call(c) => c.args.args.iter().for_each(|a| selector_names(a, names)),
        _ => {}
    }
}

fn timing_of(rule: &AlertRule) -> Timing {
    Timing {
        for_ms: i64::try_from(rule.for_.as_millis()).unwrap_or(i64::MAX),
        keep_firing_for_ms: i64::try_from(rule.keep_firing_for.as_millis()).unwrap_or(i64::MAX),
        ..Timing::default()
    }
}

impl AlertEngine {
    pub fn new(config: EngineConfig, rules: Vec<AlertRule>) -> AlertEngine {
        let mut engine = AlertEngine {
            config,
            store: WindowStore::new(config.resolution_ms, 0),
            rules: Vec::new(),
            smart: Vec::new(),
            pending: Vec::new(),
            wanted: Some(BTreeSet::new()),
            max_event_ms: None,
            last_ingest_wall_ms: None,
            now_ms: None,
            replay: ReplayClock::default(),
        };
        engine.set_rules(rules);
        engine
    }

    /// Replaces the rules; instances of rules that keep their name and expression survive.
    pub fn set_rules(&mut self, rules: Vec<AlertRule>) {
        let mut old: BTreeMap<(String, String), LoadedRule> = std::mem::take(&mut self.rules)
            .into_iter()
            .map(|r| ((r.rule.group.clone(), r.rule.name.clone()), r))
            .collect();
        for rule in rules {
            // A rule keeps its alerts across edits; the next evaluation resolves those the
            // new expression no longer yields.
            let key = (rule.group.clone(), rule.name.clone());
            let instances = old.remove(&key).map(|r| r.instances).unwrap_or_default();
            self.rules.push(LoadedRule {
                timing: timing_of(&rule),
                rule,
                instances,
                last_error: None,
                last_value_count: 0,
            });
        }
        let now = self.now_ms.unwrap_or(0);
        for (_, mut gone) in old {
            for t in gone.instances.resolve_all(now) {
                self.pending.push(change(&gone.rule, t, None));
            }
        }
        self.recompute_reads();
    }

    /// Replaces the smart rules. A rule that keeps its id keeps its alerts (the next
    /// evaluation resolves what no longer holds); one that also keeps its query and
    /// condition keeps its learned state. Returns the rules that could not be compiled.
    pub fn set_smart_rules(&mut self, rules: Vec<SmartRule>) -> Vec<(String, CompileError)> {
        let mut old: BTreeMap<String, SmartState> =
            std::mem::take(&mut self.smart).into_iter().map(|s| (s.rule.id.clone(), s)).collect();
        let mut errors = Vec::new();
        for rule in rules {
            let previous = old.remove(&rule.id);
            match SmartState::compile(rule.clone()) {
                Ok(mut fresh) => {
                    if let Some(mut state) = previous {
                        if state.same_logic(&rule) {
                            state.rule = fresh.rule;
                            state.timing = fresh.timing;
                            fresh = state;
                        } else {
                            fresh.instances = std::mem::take(&mut state.instances);
                        }
                    }
                    self.smart.push(fresh);
                }
                Err(e) => {
                    errors.push((rule.id.clone(), e));
                    if let Some(state) = previous {
                        old.insert(rule.id.clone(), state);
                    }
                }
            }
        }
        let now = self.now_ms.unwrap_or(0);
        for (_, mut gone) in old {
            let annotations = LabelSet::new();
            for t in gone.instances.resolve_all(now) {
                self.pending.push(smart_change(&gone.rule, annotations.clone(), t));
            }
        }
        self.recompute_reads();
        errors
    }

    fn recompute_reads(&mut self) {
        let mut wanted = Some(BTreeSet::new());
        let mut retention = 0;
        let exprs = self.rules.iter().map(|r| &r.rule.expr).chain(self.smart.iter().map(|s| s.expr()));
        for expr in exprs {
            selector_names(expr, &mut wanted);
            retention = retention.max(eval::longest_range_ms(expr));
        }
        self.wanted = wanted;
        self.store.set_retention_ms(retention);
    }

    /// Inhibition rules of smart rules that suppress their symptoms: a firing alert of the
    /// rule mutes alerts named in `suppresses` with equal `equal` labels.
    pub fn suppressions(&self) -> Vec<(String, String, Vec<String>)> {
        self.smart
            .iter()
            .filter(|s| s.rule.enabled)
            .flat_map(|s| s.rule.suppresses.iter().map(|x| (s.rule.name.clone(), x.alertname.clone(), x.equal.clone())))
            .collect()
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len() + self.smart.len()
    }

    /// Whether any rule reads metrics named `name` (to skip decoding the others).
    pub fn wants(&self, name: &str) -> bool {
        self.wanted.as_ref().is_none_or(|w| w.contains(name))
    }

    /// Whether every metric must be decoded to know its name's relevance.
    pub fn wants_all(&self) -> bool {
        self.wanted.is_none()
    }

    /// Adds a sample the rules may read; `wall_ms` is the current wall clock.
    pub fn ingest(&mut self, m: &Metric, wall_ms: i64) {
        if self.store_sample(m) {
            self.max_event_ms = Some(self.max_event_ms.map_or(m.timestamp_ms, |t| t.max(m.timestamp_ms)));
            self.last_ingest_wall_ms = Some(wall_ms);
        }
    }

    /// Adds a sample that must not move event time (callscope's own metrics, stamped with
    /// the wall clock rather than event time).
    pub fn ingest_side(&mut self, m: &Metric) {
        self.store_sample(m);
    }

    /// Stores a sample a rule reads and that is not older than any rule looks back.
    fn store_sample(&mut self, m: &Metric) -> bool {
        if !self.wants(&m.name) {
            return false;
        }
        if self.now_ms.is_some_and(|now| m.timestamp_ms < self.store.keep_from(now)) {
            return false;
        }
        self.store.add_sample(&SeriesKey::of(m), m.value, m.timestamp_ms);
        true
    }

    /// Event time "now": the newest event time, or the wall clock once the stream is idle.
    pub fn event_time(&self, wall_ms: i64) -> i64 {
        if let Some(t) = self.replay.now() {
            return self.now_ms.map_or(t, |now| now.max(t));
        }
        let idle_clock = wall_ms - self.config.idle_after_ms;
        let t = match (self.max_event_ms, self.last_ingest_wall_ms) {
            (Some(max), Some(last)) if wall_ms - last < self.config.idle_after_ms => max,
            (Some(max), _) => max.max(idle_clock),
            (None, _) => idle_clock,
        };
        self.now_ms.map_or(t, |now| now.max(t))
    }

    /// Evaluates every rule at the current event time; returns the state changes. Does
    /// nothing during a replay.
    pub fn evaluate(&mut self, wall_ms: i64) -> Vec<AlertChange> {
        if self.replay.is_replaying() {
            return Vec::new();
        }
        let now = self.event_time(wall_ms);
        self.evaluate_at(now)
    }

    /// Evaluates every rule at event time `now` (never before an earlier evaluation).
    fn evaluate_at(&mut self, now: i64) -> Vec<AlertChange> {
        let now = self.now_ms.map_or(now, |t| t.max(now));
        self.now_ms = Some(now);
        let mut changes = std::mem::take(&mut self.pending);
        for lr in &mut self.rules {
            let samples = match eval::evaluate(&self.store, &lr.rule.expr, now) {
                Ok(Value::Vector(v)) => v,
                Ok(Value::Scalar(v)) => vec![eval::Sample { labels: LabelSet::new(), value: v }],
                Err(e) => {
                    lr.last_error = Some(e.0);
                    continue;
                }
            };
            lr.last_error = None;
            lr.last_value_count = samples.len();
            let mut seen = BTreeSet::new();
            let mut values: BTreeMap<u64, f64> = BTreeMap::new();
            for s in samples {
                let mut labels = s.labels;
                labels.remove(METRIC_NAME);
                for (k, v) in &lr.rule.labels {
                    let rendered = render(v, &labels, s.value).unwrap_or_else(|_| v.clone());
                    labels.insert(k.clone(), rendered);
                }
                labels.insert("alertname".into(), lr.rule.name.clone());
                let fp = label_fingerprint(&labels);
                seen.insert(fp);
                values.insert(fp, s.value);
                if let Some(t) = lr.instances.observe(&lr.timing, &labels, Verdict::Breach(s.value), now) {
                    changes.push(change(&lr.rule, t, Some(s.value)));
                }
            }
            for labels in lr.instances.active() {
                if seen.contains(&label_fingerprint(&labels)) {
                    continue;
                }
                if let Some(t) = lr.instances.observe(&lr.timing, &labels, Verdict::Clear(f64::NAN), now) {
                    changes.push(change(&lr.rule, t, None));
                }
            }
            lr.instances.prune(&lr.timing, now);
        }
        for state in &mut self.smart {
            changes.extend(evaluate_smart(state, &self.store, now));
        }
        self.store.evict(now);
        changes
    }

    /// Every rule's current state.
    pub fn status(&self) -> Vec<RuleStatus> {
        self.rules
            .iter()
            .map(|lr| {
                let active = active_of(&lr.instances);
                let state = state_of(&active);
                RuleStatus {
                    kind: RuleKind::Prometheus,
                    id: None,
                    group: lr.rule.group.clone(),
                    name: lr.rule.name.clone(),
                    expr: lr.rule.expr_text.clone(),
                    for_seconds: lr.rule.for_.as_secs_f64(),
                    keep_firing_for_seconds: lr.rule.keep_firing_for.as_secs_f64(),
                    labels: lr.rule.labels.clone(),
                    annotations: lr.rule.annotations.clone(),
                    state,
                    active,
                    last_error: lr.last_error.clone(),
                    last_sample_count: lr.last_value_count,
                }
            })
            .chain(self.smart.iter().map(|s| {
                let active = active_of(&s.instances);
                RuleStatus {
                    kind: RuleKind::Smart,
                    id: Some(s.rule.id.clone()),
                    group: "smart".into(),
                    name: s.rule.name.clone(),
                    expr: alert_eval_text(s),
                    for_seconds: s.timing.for_ms as f64 / 1000.0,
                    keep_firing_for_seconds: s.timing.keep_firing_for_ms as f64 / 1000.0,
                    labels: s.rule.labels.clone(),
                    annotations: s.rule.annotations.clone(),
                    state: state_of(&active),
                    active,
                    last_error: s.last_error.clone(),
                    last_sample_count: s.last_sample_count,
                }
            }))
            .collect()
    }

    /// How long after a restart a condition that still holds may take to fire again: the
    /// longest `for` of any rule, plus how long event time can stand still before the idle
    /// clock moves it on (the `for` timers run in event time).
    pub fn refire_within_ms(&self) -> i64 {
        let longest_for =
            self.rules.iter().map(|lr| lr.timing.for_ms).chain(self.smart.iter().map(|s| s.timing.for_ms)).max();
        longest_for.unwrap_or(0).saturating_add(self.config.idle_after_ms)
    }

    pub fn store_series(&self) -> usize {
        self.store.series_count()
    }
}

fn active_of(instances: &RuleInstances) -> Vec<ActiveInstance> {
    instances
        .snapshot()
        .into_iter()
        .map(|(labels, state, since)| ActiveInstance { labels, state, active_since_ms: since })
        .collect()
}

fn state_of(active: &[ActiveInstance]) -> AlertState {
    if active.iter().any(|a| a.state == AlertState::Firing) {
        AlertState::Firing
    } else if active.is_empty() {
        AlertState::Inactive
    } else {
        AlertState::Pending
    }
}

fn alert_eval_text(s: &SmartState) -> String {
    match s.rule.condition {
        callscope_schemas::smart_rules::Condition::Absence { .. } => s.rule.absence_promql(),
        _ => s.rule.promql(),
    }
}

/// One evaluation of a smart rule: verdicts through the lifecycle, labelled and annotated.
fn evaluate_smart(state: &mut SmartState, store: &WindowStore, now: i64) -> Vec<AlertChange> {
    let verdicts = if state.rule.enabled {
        match state.verdicts(store, now) {
            Ok(v) => {
                state.last_error = None;
                v
            }
            Err(e) => {
                state.last_error = Some(e);
                return Vec::new();
            }
        }
    } else {
        Vec::new()
    };
    let rule = &state.rule;
    let mut changes = Vec::new();
    let mut seen = BTreeSet::new();
    let label = |mut labels: LabelSet| {
        labels.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.insert("alertname".into(), rule.name.clone());
        labels.insert("severity".into(), rule.severity.clone());
        labels.insert("rule_id".into(), rule.id.clone());
        labels
    };
    let annotate = |labels: &LabelSet, v: f64| -> LabelSet {
        let mut a: LabelSet = rule
            .annotations
            .iter()
            .map(|(k, t)| (k.clone(), render(t, labels, v).unwrap_or_else(|e| format!("{t} ({e})"))))
            .collect();
        if !rule.description.is_empty() {
            a.entry("description".into()).or_insert_with(|| rule.description.clone());
        }
        a
    };
    for (labels, verdict) in verdicts {
        let labels = label(labels);
        seen.insert(label_fingerprint(&labels));
        if let Some(t) = state.instances.observe(&state.timing, &labels, verdict, now) {
            let v = t.value;
            changes.push(smart_change(rule, annotate(&t.labels, v), t));
        }
    }
    for labels in state.instances.active() {
        if seen.contains(&label_fingerprint(&labels)) {
            continue;
        }
        if let Some(t) = state.instances.observe(&state.timing, &labels, Verdict::Clear(f64::NAN), now) {
            changes.push(smart_change(rule, annotate(&t.labels, f64::NAN), t));
        }
    }
    state.instances.prune(&state.timing, now);
    state.prune(now, 24 * 3_600_000);
    changes
}

fn smart_change(rule: &SmartRule, annotations: LabelSet, t: crate::lifecycle::Transition) -> AlertChange {
    AlertChange {
        rule: rule.name.clone(),
        group: "smart".into(),
        from: t.from,
        to: t.to,
        annotations,
        value: Some(t.value).filter(|v| v.is_finite()),
        at_ms: t.at_ms,
        active_since_ms: t.active_since_ms,
        flapping: t.flapping,
        fingerprint: t.fingerprint,
        labels: t.labels,
    }
}

fn change(rule: &AlertRule, t: crate::lifecycle::Transition, value: Option<f64>) -> AlertChange {
    let v = value.unwrap_or(t.value);
    let annotations = rule
        .annotations
        .iter()
        .map(|(k, template)| {
            (k.clone(), render(template, &t.labels, v).unwrap_or_else(|e| format!("{template} ({e})")))
        })
        .collect();
    AlertChange {
        rule: rule.name.clone(),
        group: rule.group.clone(),
        from: t.from,
        to: t.to,
        labels: t.labels,
        annotations,
        value: value.or(Some(t.value)).filter(|v| v.is_finite()),
        at_ms: t.at_ms,
        active_since_ms: t.active_since_ms,
        flapping: t.flapping,
        fingerprint: t.fingerprint,
    }
}

mod replay;
#[cfg(test)]
mod tests;
