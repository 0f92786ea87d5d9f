//! Evaluates callscope's PromQL subset (see [`super::subset`]) over window partials
//! instead of raw samples. The store holds, per series, the partials of the finest window
//! resolution: closed windows and the open ones as they fill, so a rule sees a breach
//! before the window closes.
//!
//! Semantics over windows of resolution `r` at event time `T`:
//! - a range `[d]` covers the windows that start in `(T - d, T]`, or the window holding
//!   `T` when `d < r`;
//! - `rate` = the counter increments in the covered windows / the seconds they span
//!   (from the first covered window's start to `T`, at least `r`); `increase` = their sum;
//! - `*_over_time` merge the covered partials (`quantile_over_time` and
//!   `histogram_quantile` read the merged DDSketch of histogram and summary series);
//! - an instant selector gives the newest sample (`last`) within the 5-minute lookback;
//! - `absent_over_time` is 1 (labelled with the selector's equality matchers) when no
//!   selected series has a sample in the range.

use std::collections::{BTreeMap, HashMap};

use crate::rollup::{Partial, SeriesKey};
use promql_parser::label::{METRIC_NAME, MatchOp};
use promql_parser::parser::{Expr, LabelModifier, VectorMatchCardinality, VectorSelector};

pub type LabelSet = BTreeMap<String, String>;

/// Prometheus' default lookback for instant selectors.
pub const LOOKBACK_MS: i64 = 300_000;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: LabelSet,
    pub value: f64,
}

/// The result of evaluating an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    Vector(Vec<Sample>),
}

/// The label set of a series as PromQL sees it: `__name__`, `service` and its labels.
pub fn series_labels(key: &SeriesKey) -> LabelSet {
    let mut labels: LabelSet = key.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.insert("service".into(), key.service.clone());
    labels.insert(METRIC_NAME.into(), key.name.clone());
    labels
}

struct StoredSeries {
    labels: LabelSet,
    windows: BTreeMap<i64, Partial>,
}

/// The window partials the rules read, by metric name.
pub struct WindowStore {
    resolution_ms: i64,
    retention_ms: i64,
    by_name: HashMap<String, HashMap<SeriesKey, StoredSeries>>,
}

impl WindowStore {
    /// A store of windows of `resolution_ms`, keeping `retention_ms` of them behind the
    /// newest evaluation time (the longest range any rule reads).
    pub fn new(resolution_ms: i64, retention_ms: i64) -> WindowStore {
        WindowStore { resolution_ms: resolution_ms.max(1), retention_ms, by_name: HashMap::new() }
    }

    pub fn resolution_ms(&self) -> i64 {
        self.resolution_ms
    }

    pub fn set_retention_ms(&mut self, retention_ms: i64) {
        self.retention_ms = retention_ms;
    }

    pub fn series_count(&self) -> usize {
        self.by_name.values().map(HashMap::len).sum()
    }

    /// Adds one sample to its window.
    pub fn add_sample(&mut self, key: &SeriesKey, value: f64, time_ms: i64) {
        let start = time_ms.div_euclid(self.resolution_ms) * self.resolution_ms;
        let kind = key.kind;
        let known = self.by_name.get(&key.name).is_some_and(|m| m.contains_key(key));
        let windows = if known {
            self.by_name.get_mut(&key.name).and_then(|m| m.get_mut(key)).map(|s| &mut s.windows)
        } else {
            Some(self.windows_of(key))
        };
        if let Some(windows) = windows {
            windows.entry(start).or_insert_with(|| Partial::empty(kind)).add(value, time_ms);
        }
    }

    /// Replaces a window's partial with a newer state of the same window.
    pub fn replace(&mut self, key: &SeriesKey, window_start_ms: i64, partial: Partial) {
        self.windows_of(key).insert(window_start_ms, partial);
    }

    /// Adds a late correction (a delta) to a window.
    pub fn correct(&mut self, key: &SeriesKey, window_start_ms: i64, delta: &Partial) {
        let windows = self.windows_of(key);
        match windows.get_mut(&window_start_ms) {
            Some(p) => {
                // Sketches of one series share their configuration; a merge cannot fail.
                let _ = p.merge(delta);
            }
            None => {
                windows.insert(window_start_ms, delta.clone());
            }
        }
    }

    fn windows_of(&mut self, key: &SeriesKey) -> &mut BTreeMap<i64, Partial> {
        &mut self
            .by_name
            .entry(key.name.clone())
            .or_default()
            .entry(key.clone())
            .or_insert_with(|| StoredSeries { labels: series_labels(key), windows: BTreeMap::new() })
            .windows
    }

    /// The start of the oldest window a rule can still read at event time `now_ms`.
    pub fn keep_from(&self, now_ms: i64) -> i64 {
        now_ms - self.retention_ms - self.resolution_ms
    }

    /// Drops windows that no rule can read any more at event time `now_ms`, and series
    /// left without windows.
    pub fn evict(&mut self, now_ms: i64) {
        let keep_from = self.keep_from(now_ms);
        for series in self.by_name.values_mut() {
            for s in series.values_mut() {
                while s.windows.first_key_value().is_some_and(|(start, _)| *start < keep_from) {
                    s.windows.pop_first();
                }
            }
            series.retain(|_, s| !s.windows.is_empty());
        }
        self.by_name.retain(|_, s| !s.is_empty());
    }

    fn select<'a>(&'a self, vs: &'a VectorSelector) -> impl Iterator<Item = &'a StoredSeries> + 'a {
        let candidates: Box<dyn Iterator<Item = &StoredSeries>> = match selector_name(vs) {
            Some(n) => Box::new(self.by_name.get(n).into_iter().flat_map(|s| s.values())),
            None => Box::new(self.by_name.values().flat_map(|s| s.values())),
        };
        candidates.filter(move |s| {
            vs.matchers.matchers.iter().all(|m| m.is_match(s.labels.get(&m.name).map_or("", String::as_str)))
        })
    }
}

/// Why an expression cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError(message.into()))
}

/// Evaluates `expr` at event time `at_ms`.
pub fn evaluate(store: &WindowStore, expr: &Expr, at_ms: i64) -> Result<Value, EvalError> {
    Evaluator { store, at_ms }.eval(expr)
}

/// The metric name a selector names: its name, or a `__name__="…"` matcher.
pub fn selector_name(vs: &VectorSelector) -> Option<&str> {
    vs.name.as_deref().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == METRIC_NAME && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.as_str())
    })
}

/// Every range `expr` reads: each range selector's, and the lookback of each instant
/// selector.
fn ranges_ms(expr: &Expr, out: &mut Vec<i64>) {
    match expr {
        Expr::MatrixSelector(m) => out.push(i64::try_from(m.range.as_millis()).unwrap_or(i64::MAX)),
        Expr::VectorSelector(_) => out.push(LOOKBACK_MS),
        Expr::Paren(p) => ranges_ms(&p.expr, out),
        Expr::Unary(u) => ranges_ms(&u.expr, out),
        Expr::Aggregate(a) => ranges_ms(&a.expr, out),
        Expr::Binary(b) => {
            ranges_ms(&b.lhs, out);
            ranges_ms(&b.rhs, out);
        }
        Expr::Call(c) => c.args.args.iter().for_each(|a| ranges_ms(a, out)),
        _ => {}
    }
}

/// The longest range `expr` reads, so the store keeps enough windows (0 without selectors).
pub fn longest_range_ms(expr: &Expr) -> i64 {
    let mut ranges = Vec::new();
    ranges_ms(expr, &mut ranges);
    ranges.into_iter().max().unwrap_or(0)
}

/// The shortest range `expr` reads (a range selector's, or the lookback of an instant
/// selector); `None` for an expression without selectors.
pub fn shortest_range_ms(expr: &Expr) -> Option<i64> {
    let mut ranges = Vec::new();
    ranges_ms(expr, &mut ranges);
    ranges.into_iter().min()
}

/// The metric names `expr` selects; an error names a selector without one (callscope
/// reads series by name).
pub fn metric_names(expr: &Expr) -> Result<std::collections::BTreeSet<String>, EvalError> {
    fn walk(expr: &Expr, out: &mut std::collections::BTreeSet<String>) -> Result<(), EvalError> {
        match expr {
            Expr::VectorSelector(vs) => match selector_name(vs) {
                Some(n) => {
                    out.insert(n.to_string());
                    Ok(())
                }
                None => err(format!("the selector {vs} has no metric name; callscope selects series by name")),
            },
            Expr::MatrixSelector(m) => walk(&Expr::VectorSelector(m.vs.clone()), out),
            Expr::Paren(p) => walk(&p.expr, out),
            Expr::Unary(u) => walk(&u.expr, out),
            Expr::Aggregate(a) => walk(&a.expr, out),
            Expr::Binary(b) => {
                walk(&b.lhs, out)?;
                walk(&b.rhs, out)
            }
            Expr::Call(c) => c.args.args.iter().try_for_each(|a| walk(a, out)),
            _ => Ok(()),
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(expr, &mut out)?;
    Ok(out)
}

struct Evaluator<'a> {
    store: &'a WindowStore,
    at_ms: i64,
}

fn without_name(mut labels: LabelSet) -> LabelSet {
    labels.remove(METRIC_NAME);
    labels
}

fn merged<'p>(parts: impl IntoIterator<Item = &'p Partial>) -> Option<Partial> {
    let mut it = parts.into_iter().filter(|p| p.count > 0);
    let mut acc = it.next()?.clone();
    for p in it {
        // Partials of one series share their sketch configuration; merging cannot fail.
        let _ = acc.merge(p);
    }
    Some(acc)
}

fn group_key(labels: &LabelSet, modifier: Option<&LabelModifier>, also_drop: &[&str]) -> LabelSet {
    match modifier {
        None => LabelSet::new(),
        Some(LabelModifier::Include(keep)) => labels
            .iter()
            .filter(|(k, _)| keep.labels.iter().any(|l| l == *k) && !also_drop.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(LabelModifier::Exclude(drop)) => labels
            .iter()
            .filter(|(k, _)| {
                k.as_str() != METRIC_NAME && !drop.labels.iter().any(|l| l == *k) && !also_drop.contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The labels two vectors are matched on (`on`, `ignoring`, or all but the name).
fn signature(labels: &LabelSet, matching: Option<&LabelModifier>) -> LabelSet {
    match matching {
        None => without_name(labels.clone()),
        Some(m) => group_key(labels, Some(m), &[]),
    }
}

fn arithmetic(op: &str, l: f64, r: f64) -> Option<f64> {
    Some(match op {
        "+" => l + r,
        "-" => l - r,
        "*" => l * r,
        "/" => l / r,
        _ => return None,
    })
}

fn compare(op: &str, l: f64, r: f64) -> Option<bool> {
    Some(match op {
        "==" => l == r,
        "!=" => l != r,
        ">" => l > r,
        "<" => l < r,
        ">=" => l >= r,
        "<=" => l <= r,
        _ => return None,
    })
}

impl Evaluator<'_> {
    fn eval(&self, expr: &Expr) -> Result<Value, EvalError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => Ok(match self.eval(&u.expr)? {
                Value::Scalar(v) => Value::Scalar(-v),
                Value::Vector(samples) => Value::Vector(
                    samples.into_iter().map(|s| Sample { labels: without_name(s.labels), value: -s.value }).collect(),
                ),
            }),
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.instant(vs))),
            Expr::Call(call) => match call.func.name {
                "histogram_quantile" => self.histogram_quantile(&call.args.args),
                name => self.range_function(name, &call.args.args),
            },
            Expr::Aggregate(a) => {
                let Value::Vector(samples) = self.eval(&a.expr)? else {
                    return err(format!("`{}` needs a vector, not a scalar", a.op));
                };
                let mut groups: BTreeMap<LabelSet, Vec<f64>> = BTreeMap::new();
                for s in samples {
                    groups.entry(group_key(&s.labels, a.modifier.as_ref(), &[])).or_default().push(s.value);
                }
                let op = a.op.to_string();
                let samples = groups
                    .into_iter()
                    .map(|(labels, values)| {
                        let value = match op.as_str() {
                            "sum" => values.iter().sum(),
                            "avg" => values.iter().sum::<f64>() / values.len() as f64,
                            "min" => values.iter().copied().fold(f64::INFINITY, f64::min),
                            "max" => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                            "count" => values.len() as f64,
                            other => return err(format!("the aggregation `{other}` is not supported")),
                        };
                        Ok(Sample { labels, value })
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Value::Vector(samples))
            }
            Expr::Binary(b) => {
                let op = b.op.to_string();
                let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
                let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
                if let Some(m) = &b.modifier
                    && matches!(m.card, VectorMatchCardinality::ManyToOne(_) | VectorMatchCardinality::OneToMany(_))
                {
                    return err("group_left/group_right are not supported");
                }
                let (lhs, rhs) = (self.eval(&b.lhs)?, self.eval(&b.rhs)?);
                binary(&op, return_bool, matching, lhs, rhs)
            }
            Expr::MatrixSelector(_) => err("a range selector needs a range function"),
            Expr::StringLiteral(_) | Expr::Subquery(_) | Expr::Extension(_) => {
                err("this expression is outside callscope's PromQL subset")
            }
        }
    }

    /// The windows of `series` a range of `range_ms` covers, and the first one's start.
    fn covered<'s>(&self, windows: &'s BTreeMap<i64, Partial>, range_ms: i64) -> (i64, Vec<&'s Partial>) {
        let r = self.store.resolution_ms;
        let from = if range_ms < r { self.at_ms.div_euclid(r) * r } else { self.at_ms - range_ms + 1 };
        let mut first = None;
        let parts = windows
            .range(from..=self.at_ms)
            .map(|(start, p)| {
                first.get_or_insert(*start);
                p
            })
            .collect();
        (first.unwrap_or(from), parts)
    }

    fn instant(&self, vs: &VectorSelector) -> Vec<Sample> {
        self.store
            .select(vs)
            .filter_map(|s| {
                let newest = s.windows.range(self.at_ms - LOOKBACK_MS..=self.at_ms).rev().find(|(_, p)| p.count > 0)?;
                Some(Sample { labels: s.labels.clone(), value: newest.1.last })
            })
            .collect()
    }

    fn range_function(&self, name: &str, args: &[Box<Expr>]) -> Result<Value, EvalError> {
        let (q, matrix) = match (name, args) {
            ("quantile_over_time", [q, m]) => match self.eval(q)? {
                Value::Scalar(q) => (q, m),
                Value::Vector(_) => return err("quantile_over_time needs a number as its quantile"),
            },
            (_, [m]) => (f64::NAN, m),
            _ => return err(format!("`{name}` has the wrong number of arguments")),
        };
        let Expr::MatrixSelector(m) = matrix.as_ref() else {
            return err(format!("`{name}` needs a range selector such as x[5m]"));
        };
        let range_ms = i64::try_from(m.range.as_millis()).unwrap_or(i64::MAX);
        if name == "absent_over_time" {
            let present =
                self.store.select(&m.vs).any(|s| self.covered(&s.windows, range_ms).1.iter().any(|p| p.count > 0));
            if present {
                return Ok(Value::Vector(Vec::new()));
            }
            let labels =
                m.vs.matchers
                    .matchers
                    .iter()
                    .filter(|x| x.name != METRIC_NAME && matches!(x.op, MatchOp::Equal))
                    .map(|x| (x.name.clone(), x.value.clone()))
                    .collect();
            return Ok(Value::Vector(vec![Sample { labels, value: 1.0 }]));
        }
        let r = self.store.resolution_ms;
        let mut samples = Vec::new();
        for s in self.store.select(&m.vs) {
            let (first, parts) = self.covered(&s.windows, range_ms);
            let Some(p) = merged(parts) else { continue };
            let value = match name {
                "rate" => p.sum / ((self.at_ms - first).max(r) as f64 / 1000.0),
                "increase" | "sum_over_time" => p.sum,
                "avg_over_time" => p.sum / p.count as f64,
                "min_over_time" => p.min,
                "max_over_time" => p.max,
                "count_over_time" => p.count as f64,
                "quantile_over_time" => match p.quantile(q) {
                    Some(v) => v,
                    None => continue,
                },
                other => return err(format!("the function `{other}` is not supported")),
            };
            samples.push(Sample { labels: without_name(s.labels.clone()), value });
        }
        Ok(Value::Vector(samples))
    }

    fn histogram_quantile(&self, args: &[Box<Expr>]) -> Result<Value, EvalError> {
        let [q, inner] = args else { return err("histogram_quantile takes a quantile and a vector") };
        let Value::Scalar(q) = self.eval(q)? else { return err("histogram_quantile needs a number as its quantile") };
        let samples = self
            .sketches(inner)?
            .into_iter()
            .filter_map(|(labels, sketch)| {
                let value = sketch.quantile(q)?;
                Some(Sample { labels, value })
            })
            .collect();
        Ok(Value::Vector(samples))
    }

    /// The merged partials (with their sketches) an expression under `histogram_quantile`
    /// selects, by labels (without the name and `le`).
    fn sketches(&self, expr: &Expr) -> Result<Vec<(LabelSet, Partial)>, EvalError> {
        let from_selector = |vs: &VectorSelector, range_ms: Option<i64>| {
            let vs = sketch_selector(vs);
            self.store
                .select(&vs)
                .filter_map(|s| {
                    let parts: Vec<&Partial> = match range_ms {
                        Some(range) => self.covered(&s.windows, range).1,
                        None => {
                            let newest =
                                s.windows.range(self.at_ms - LOOKBACK_MS..=self.at_ms).rev().find(|(_, p)| p.count > 0);
                            newest.map(|(_, p)| p).into_iter().collect()
                        }
                    };
                    let partial = merged(parts).filter(|p| p.sketch.is_some())?;
                    let mut labels = without_name(s.labels.clone());
                    labels.remove("le");
                    Some((labels, partial))
                })
                .collect::<Vec<_>>()
        };
        match expr {
            Expr::Paren(p) => self.sketches(&p.expr),
            Expr::VectorSelector(vs) => Ok(from_selector(vs, None)),
            Expr::MatrixSelector(m) => Ok(from_selector(&m.vs, Some(i64::try_from(m.range.as_millis()).unwrap_or(0)))),
            Expr::Call(c) if matches!(c.func.name, "rate" | "increase") => match c.args.args.as_slice() {
                [m] => self.sketches(m),
                _ => err("rate takes one range selector"),
            },
            Expr::Aggregate(a) if a.op.to_string() == "sum" => {
                let mut groups: BTreeMap<LabelSet, Partial> = BTreeMap::new();
                for (labels, sketch) in self.sketches(&a.expr)? {
                    match groups.entry(group_key(&labels, a.modifier.as_ref(), &["le"])) {
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert(sketch);
                        }
                        std::collections::btree_map::Entry::Occupied(mut e) => {
                            let _ = e.get_mut().merge(&sketch);
                        }
                    }
                }
                Ok(groups.into_iter().collect())
            }
            _ => err("histogram_quantile reads a histogram selector, a rate/increase of one, or a sum of those"),
        }
    }
}

/// A `_bucket` selector reads the histogram's own series; `le` matchers do not apply.
fn sketch_selector(vs: &VectorSelector) -> VectorSelector {
    let strip = |n: &str| n.strip_suffix("_bucket").unwrap_or(n).to_string();
    let mut out = vs.clone();
    out.name = vs.name.as_deref().map(strip);
    out.matchers.matchers.retain(|m| m.name != "le");
    for m in &mut out.matchers.matchers {
        if m.name == METRIC_NAME {
            m.value = strip(&m.value);
        }
    }
    out
}

fn binary(
    op: &str,
    return_bool: bool,
    matching: Option<&LabelModifier>,
    lhs: Value,
    rhs: Value,
) -> Result<Value, EvalError> {
    let is_comparison = compare(op, 0.0, 0.0).is_some();
    // The value of `l op r`, or None when a comparison filters the element out.
    let apply = |l: f64, r: f64, keep: f64| -> Option<f64> {
        match compare(op, l, r) {
            Some(holds) if return_bool => Some(if holds { 1.0 } else { 0.0 }),
            Some(holds) => holds.then_some(keep),
            None => arithmetic(op, l, r),
        }
    };
    let drops_name = !is_comparison || return_bool;
    let relabel = |labels: LabelSet| if drops_name { without_name(labels) } else { labels };
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => match compare(op, l, r) {
            Some(holds) => Ok(Value::Scalar(if holds { 1.0 } else { 0.0 })),
            None => arithmetic(op, l, r).map(Value::Scalar).ok_or_else(|| EvalError(format!("`{op}` needs vectors"))),
        },
        (Value::Vector(v), Value::Scalar(r)) => Ok(Value::Vector(
            v.into_iter()
                .filter_map(|s| Some(Sample { value: apply(s.value, r, s.value)?, labels: relabel(s.labels) }))
                .collect(),
        )),
        (Value::Scalar(l), Value::Vector(v)) => Ok(Value::Vector(
            v.into_iter()
                .filter_map(|s| Some(Sample { value: apply(l, s.value, s.value)?, labels: relabel(s.labels) }))
                .collect(),
        )),
        (Value::Vector(l), Value::Vector(r)) => {
            let rhs_sigs: std::collections::BTreeSet<LabelSet> =
                r.iter().map(|s| signature(&s.labels, matching)).collect();
            match op {
                "and" => {
                    return Ok(Value::Vector(
                        l.into_iter().filter(|s| rhs_sigs.contains(&signature(&s.labels, matching))).collect(),
                    ));
                }
                "unless" => {
                    return Ok(Value::Vector(
                        l.into_iter().filter(|s| !rhs_sigs.contains(&signature(&s.labels, matching))).collect(),
                    ));
                }
                "or" => {
                    let lhs_sigs: std::collections::BTreeSet<LabelSet> =
                        l.iter().map(|s| signature(&s.labels, matching)).collect();
                    let mut out = l;
                    out.extend(r.into_iter().filter(|s| !lhs_sigs.contains(&signature(&s.labels, matching))));
                    return Ok(Value::Vector(out));
                }
                _ => {}
            }
            let mut by_sig: BTreeMap<LabelSet, f64> = BTreeMap::new();
            for s in &r {
                if by_sig.insert(signature(&s.labels, matching), s.value).is_some() {
                    return err(format!(
                        "`{op}`: several right-hand series match the same labels; aggregate them or add on(...)"
                    ));
                }
            }
            let mut out = Vec::new();
            for s in l {
                let sig = signature(&s.labels, matching);
                let Some(&rv) = by_sig.get(&sig) else { continue };
                let Some(value) = apply(s.value, rv, s.value) else { continue };
                let labels = match matching {
                    Some(LabelModifier::Include(_)) => sig,
                    Some(LabelModifier::Exclude(_)) => group_key(&s.labels, matching, &[]),
                    None => relabel(s.labels),
                };
                out.push(Sample { labels, value });
            }
            Ok(Value::Vector(out))
        }
    }
}

#[cfg(test)]
mod tests;
