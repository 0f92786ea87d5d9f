//! Smart rules in the engine: each rule's query evaluated over the window store, and its
//! condition turned into verdicts per group (instance) with the state the condition needs:
//! the value history for `rate_of_change`, an EWMA baseline for `anomaly`. Verdicts then go
//! through the same lifecycle as Prometheus rules (`for`, `keep_firing_for`, hysteresis).

use std::collections::{HashMap, VecDeque};

use callscope_schemas::smart_rules::{Condition, SmartRule, duration_ms};
use promql_parser::label::METRIC_NAME;
use promql_parser::parser::Expr;

use crate::lifecycle::{RuleInstances, Timing, Verdict, label_fingerprint};
use callscope_schemas::promql::eval::{self, LabelSet, Value, WindowStore};

/// A smart rule ready to evaluate, with its per-group state.
pub struct SmartState {
    pub rule: SmartRule,
    expr: Expr,
    pub timing: Timing,
    pub instances: RuleInstances,
    history: HashMap<u64, VecDeque<(i64, f64)>>,
    baselines: HashMap<u64, Ewma>,
    pub last_error: Option<String>,
    pub last_sample_count: usize,
}

/// An exponentially weighted mean and variance, updated once per window step.
#[derive(Debug, Clone, Copy)]
pub struct Ewma {
    pub mean: f64,
    pub var: f64,
    pub samples: u32,
    pub first_ms: i64,
    last_step: i64,
    last_seen_ms: i64,
}

impl Ewma {
    fn new(value: f64, at_ms: i64, step: i64) -> Ewma {
        Ewma { mean: value, var: 0.0, samples: 1, first_ms: at_ms, last_step: step, last_seen_ms: at_ms }
    }

    fn update(&mut self, value: f64, alpha: f64) {
        let diff = value - self.mean;
        let incr = alpha * diff;
        self.mean += incr;
        self.var = (1.0 - alpha) * (self.var + diff * incr);
        self.samples += 1;
    }

    /// The z-score of `value`; the deviation has a floor of 1 % of the mean so that a flat
    /// baseline does not turn every wobble into an infinite score.
    pub fn z(&self, value: f64) -> f64 {
        let sd = self.var.sqrt().max(self.mean.abs() * 0.01).max(1e-9);
        (value - self.mean) / sd
    }
}

fn holds(op: &str, v: f64, threshold: f64) -> bool {
    match op {
        ">" => v > threshold,
        ">=" => v >= threshold,
        "<" => v < threshold,
        "<=" => v <= threshold,
        _ => false,
    }
}

/// Why a smart rule cannot run (its field or its generated query).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(String);

impl SmartState {
    pub fn compile(rule: SmartRule) -> Result<SmartState, CompileError> {
        rule.validate().map_err(|e| CompileError(format!("{}: {}", e.field, e.message)))?;
        let text = match rule.condition {
            Condition::Absence { .. } => rule.absence_promql(),
            _ => rule.promql(),
        };
        let expr = promql_parser::parser::parse(&text).map_err(|e| CompileError(format!("query {text:?}: {e}")))?;
        callscope_schemas::promql::subset::check_subset(&expr)
            .map_err(|e| CompileError(format!("query {text:?}: {e}")))?;
        let ms = |d: &Option<String>, field: &str| d.as_deref().map_or(Ok(0), |d| duration_ms(field, d));
        let timing = Timing {
            for_ms: ms(&rule.for_, "for").map_err(|e| CompileError(e.message))?,
            keep_firing_for_ms: ms(&rule.keep_firing_for, "keep_firing_for").map_err(|e| CompileError(e.message))?,
            ..Timing::default()
        };
        Ok(SmartState {
            rule,
            expr,
            timing,
            instances: RuleInstances::default(),
            history: HashMap::new(),
            baselines: HashMap::new(),
            last_error: None,
            last_sample_count: 0,
        })
    }

    /// Whether `other` evaluates the same way (its state can be kept across a reload).
    pub fn same_logic(&self, other: &SmartRule) -> bool {
        self.rule.query == other.query && self.rule.condition == other.condition && self.rule.name == other.name
    }

    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The verdicts of one evaluation at `now`, keyed by the instance's labels.
    pub fn verdicts(&mut self, store: &WindowStore, now: i64) -> Result<Vec<(LabelSet, Verdict)>, String> {
        let samples = match eval::evaluate(store, &self.expr, now).map_err(|e| e.0)? {
            Value::Vector(v) => v,
            Value::Scalar(v) => vec![eval::Sample { labels: LabelSet::new(), value: v }],
        };
        self.last_sample_count = samples.len();
        let muted = self.rule.in_maintenance(now);
        let step = store.resolution_ms();
        let mut out = Vec::with_capacity(samples.len());
        for s in samples {
            let mut labels = s.labels;
            labels.remove(METRIC_NAME);
            let key = label_fingerprint(&labels);
            let v = s.value;
            let verdict = match &self.rule.condition {
                _ if muted => Verdict::Clear(v),
                Condition::Threshold { op, value, resolve_value } => {
                    let threshold = self.rule.threshold_at(now, *value);
                    let resolve = resolve_value.map_or(threshold, |r| r + (threshold - value));
                    if holds(op, v, threshold) {
                        Verdict::Breach(v)
                    } else if holds(op, v, resolve) {
                        Verdict::Hold(v)
                    } else {
                        Verdict::Clear(v)
                    }
                }
                Condition::RateOfChange { op, percent, over } => {
                    let over_ms = duration_ms("over", over).unwrap_or(60_000);
                    let h = self.history.entry(key).or_default();
                    if h.back().is_none_or(|(t, _)| t.div_euclid(step) < now.div_euclid(step)) {
                        h.push_back((now, v));
                    }
                    while h.len() > 2 && h.get(1).is_some_and(|(t, _)| *t <= now - over_ms) {
                        h.pop_front();
                    }
                    match h.front() {
                        Some((t, reference)) if *t <= now - over_ms && *reference != 0.0 => {
                            let change = (v - reference) / reference.abs() * 100.0;
                            if holds(op, change, *percent) { Verdict::Breach(change) } else { Verdict::Clear(change) }
                        }
                        _ => Verdict::Clear(f64::NAN),
                    }
                }
                Condition::Absence { .. } => Verdict::Breach(1.0),
                Condition::Anomaly { z, alpha, warmup, min_samples, direction } => {
                    let warmup_ms = warmup.as_deref().map_or(600_000, |w| duration_ms("warmup", w).unwrap_or(600_000));
                    let this_step = now.div_euclid(step);
                    let base = self.baselines.entry(key).or_insert_with(|| Ewma::new(v, now, this_step));
                    base.last_seen_ms = now;
                    let warm = base.samples >= *min_samples && now - base.first_ms >= warmup_ms;
                    let score = base.z(v);
                    let anomalous = warm
                        && match direction.as_str() {
                            "up" => score > *z,
                            "down" => score < -z,
                            _ => score.abs() > *z,
                        };
                    // Learn once per window step, and not from anomalies.
                    if this_step > base.last_step && !anomalous {
                        base.update(v, *alpha);
                        base.last_step = this_step;
                    }
                    if anomalous { Verdict::Breach(score) } else { Verdict::Clear(score) }
                }
            };
            out.push((labels, verdict));
        }
        Ok(out)
    }

    /// Drops state of groups not seen for a while.
    pub fn prune(&mut self, now: i64, keep_ms: i64) {
        self.history.retain(|_, h| h.back().is_some_and(|(t, _)| now - t <= keep_ms));
        self.baselines.retain(|_, b| now - b.last_seen_ms <= keep_ms);
    }
}

#[cfg(test)]
mod tests;
