//! Smart alert rules, the API's own rule type: a query over the window aggregates (metric,
//! label filter, aggregate, grouping, window) and a condition that static PromQL
//! thresholds cannot express well:
//! - `threshold` with a separate resolve level (hysteresis);
//! - `rate_of_change`: the value against its value `over` ago, in percent;
//! - `absence`: a series (or group) that reported within `lookback` and stopped for `window`;
//! - `anomaly`: a z-score against an EWMA baseline learned per group, after a warm-up and
//!   a minimum number of samples.
//!
//! A `schedule` (time-zone aware) changes the threshold in peak hours and mutes the rule
//! in maintenance windows; `suppresses` names symptom alerts this rule's firing alerts mute
//! (root-cause suppression).

use std::collections::BTreeMap;

use chrono::{Datelike, TimeZone, Timelike};
use serde::{Deserialize, Serialize};

use crate::custom_metrics::Invalid;

fn yes() -> bool {
    true
}

fn warning() -> String {
    "warning".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmartRule {
    /// Assigned on create when absent.
    #[serde(default)]
    pub id: String,
    /// The alert name of its alerts.
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub query: SmartQuery,
    pub condition: Condition,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<String>,
    #[serde(default = "warning")]
    pub severity: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppresses: Vec<Suppression>,
    #[serde(default)]
    pub created_at_ms: i64,
    #[serde(default)]
    pub updated_at_ms: i64,
    /// One of the built-in rules ([`builtin_smart_rules`]), not a stored one; set by the
    /// code that lists them, never taken from a request.
    #[serde(default)]
    pub builtin: bool,
}

/// The phone platform's built-in smart rules (JSON, the API's rule format).
pub const BUILTIN_SMART_RULES: &str = include_str!("../rules/phone-platform-smart.json");

/// The built-in smart rules, marked `builtin` (the file is checked by a test, so a
/// parse error here cannot ship).
pub fn builtin_smart_rules() -> Result<Vec<SmartRule>, serde_json::Error> {
    let mut rules: Vec<SmartRule> = serde_json::from_str(BUILTIN_SMART_RULES)?;
    for rule in &mut rules {
        rule.builtin = true;
    }
    Ok(rules)
}

/// The built-in rules with stored ones (never `builtin`) replacing those of the same id or
/// adding to them, by id.
pub fn merge_with_builtin_rules(builtins: Vec<SmartRule>, stored: Vec<SmartRule>) -> Vec<SmartRule> {
    let mut all: BTreeMap<String, SmartRule> = builtins.into_iter().map(|r| (r.id.clone(), r)).collect();
    for mut rule in stored {
        rule.builtin = false;
        all.insert(rule.id.clone(), rule);
    }
    all.into_values().collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmartQuery {
    pub metric: String,
    /// Label equality filters (`service` is a label here too).
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
    /// `rate`, `increase`, `sum`, `count`, `avg`, `min`, `max`, `last`, `p50`, `p90`, `p95`, `p99`.
    pub aggregate: String,
    #[serde(default)]
    pub by: Vec<String>,
    /// Range of each evaluation, e.g. `1m`.
    pub window: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    Threshold {
        op: String,
        value: f64,
        /// Resolve only once the value is back past this level (default: `value`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resolve_value: Option<f64>,
    },
    RateOfChange {
        op: String,
        percent: f64,
        over: String,
    },
    Absence {
        /// How far back a group must have reported to be missed (default 30m).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lookback: Option<String>,
    },
    Anomaly {
        #[serde(default = "default_z")]
        z: f64,
        #[serde(default = "default_alpha")]
        alpha: f64,
        /// No alert before the baseline has learned this long (default 10m).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warmup: Option<String>,
        #[serde(default = "default_min_samples")]
        min_samples: u32,
        /// `up`, `down` or `both`.
        #[serde(default = "default_direction")]
        direction: String,
    },
}

fn default_z() -> f64 {
    3.0
}
fn default_alpha() -> f64 {
    0.1
}
fn default_min_samples() -> u32 {
    30
}
fn default_direction() -> String {
    "both".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// IANA time zone, e.g. `Asia/Shanghai`.
    pub timezone: String,
    #[serde(default)]
    pub peak_hours: Vec<PeakHours>,
    #[serde(default)]
    pub maintenance: Vec<TimeWindow>,
}

/// Days (`mon`…`sun`; empty = every day) and a local time range `HH:MM`–`HH:MM` (an end
/// before the start crosses midnight).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    #[serde(default)]
    pub days: Vec<String>,
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeakHours {
    #[serde(default)]
    pub days: Vec<String>,
    pub start: String,
    pub end: String,
    /// The threshold in force during these hours.
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suppression {
    /// Alerts of this name are muted while this rule fires…
    pub alertname: String,
    /// …when these labels are equal.
    #[serde(default)]
    pub equal: Vec<String>,
}

const AGGREGATES: [&str; 12] =
    ["rate", "increase", "sum", "count", "avg", "min", "max", "last", "p50", "p90", "p95", "p99"];
const OPS: [&str; 4] = [">", ">=", "<", "<="];
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), message: message.into() }
}

fn label_name_ok(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_') && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn metric_name_ok(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Parses a duration such as `30s`, `5m`, `1h30m`.
pub fn duration_ms(field: &str, text: &str) -> Result<i64, Invalid> {
    humantime::parse_duration(text)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| invalid(field, format!("{text:?} is not a duration such as 30s, 5m or 1h: {e}")))
}

fn minutes_of(field: &str, hhmm: &str) -> Result<u32, Invalid> {
    let (h, m) = hhmm.split_once(':').ok_or_else(|| invalid(field, format!("{hhmm:?} is not HH:MM")))?;
    match (h.parse::<u32>(), m.parse::<u32>()) {
        (Ok(h), Ok(m)) if h <= 24 && m < 60 && h * 60 + m <= 24 * 60 => Ok(h * 60 + m),
        _ => Err(invalid(field, format!("{hhmm:?} is not HH:MM"))),
    }
}

fn check_days(field: &str, days: &[String]) -> Result<(), Invalid> {
    for d in days {
        if !DAYS.contains(&d.to_lowercase().as_str()) {
            return Err(invalid(field, format!("{d:?} is not a day (mon, tue, wed, thu, fri, sat, sun)")));
        }
    }
    Ok(())
}

/// Whether local time `day` (0 = Monday) and `minute` fall in the window.
fn window_holds(days: &[String], start: u32, end: u32, day: usize, minute: u32) -> bool {
    let day_ok = |d: usize| days.is_empty() || days.iter().any(|x| x.eq_ignore_ascii_case(DAYS[d % 7]));
    if start <= end {
        day_ok(day) && (start..end).contains(&minute)
    } else {
        // Crosses midnight: the evening part belongs to `day`, the morning to the day before.
        (day_ok(day) && minute >= start) || (day_ok((day + 6) % 7) && minute < end)
    }
}

fn quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl SmartRule {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !label_name_ok(&self.name) {
            return Err(invalid("name", "letters, digits and _ only, not starting with a digit"));
        }
        let q = &self.query;
        if !metric_name_ok(&q.metric) {
            return Err(invalid("query.metric", format!("{:?} is not a metric name", q.metric)));
        }
        for k in q.filter.keys() {
            if !label_name_ok(k) {
                return Err(invalid(format!("query.filter.{k}"), "not a label name"));
            }
        }
        for k in &q.by {
            if !label_name_ok(k) {
                return Err(invalid("query.by", format!("{k:?} is not a label name")));
            }
        }
        if !AGGREGATES.contains(&q.aggregate.as_str()) {
            return Err(invalid("query.aggregate", format!("use one of {}", AGGREGATES.join(", "))));
        }
        if duration_ms("query.window", &q.window)? <= 0 {
            return Err(invalid("query.window", "must be positive"));
        }
        match &self.condition {
            Condition::Threshold { op, value, resolve_value } => {
                if !OPS.contains(&op.as_str()) {
                    return Err(invalid("condition.op", format!("use one of {}", OPS.join(" "))));
                }
                if !value.is_finite() {
                    return Err(invalid("condition.value", "must be a number"));
                }
                if let Some(r) = resolve_value {
                    let wrong_side = if op.starts_with('>') { r > value } else { r < value };
                    if !r.is_finite() || wrong_side {
                        return Err(invalid(
                            "condition.resolve_value",
                            "must be on the healthy side of value (below it for > and >=, above it for < and <=)",
                        ));
                    }
                }
            }
            Condition::RateOfChange { op, percent, over } => {
                if !OPS.contains(&op.as_str()) {
                    return Err(invalid("condition.op", format!("use one of {}", OPS.join(" "))));
                }
                if !percent.is_finite() {
                    return Err(invalid("condition.percent", "must be a number"));
                }
                if duration_ms("condition.over", over)? <= 0 {
                    return Err(invalid("condition.over", "must be positive"));
                }
            }
            Condition::Absence { lookback } => {
                if let Some(l) = lookback
                    && duration_ms("condition.lookback", l)? <= duration_ms("query.window", &q.window)?
                {
                    return Err(invalid("condition.lookback", "must be longer than query.window"));
                }
            }
            Condition::Anomaly { z, alpha, warmup, min_samples: _, direction } => {
                if !(z.is_finite() && *z > 0.0) {
                    return Err(invalid("condition.z", "must be a positive number"));
                }
                if !(*alpha > 0.0 && *alpha <= 1.0) {
                    return Err(invalid("condition.alpha", "must be in (0, 1]"));
                }
                if let Some(w) = warmup {
                    duration_ms("condition.warmup", w)?;
                }
                if !["up", "down", "both"].contains(&direction.as_str()) {
                    return Err(invalid("condition.direction", "use up, down or both"));
                }
            }
        }
        for (field, d) in [("for", &self.for_), ("keep_firing_for", &self.keep_firing_for)] {
            if let Some(d) = d {
                duration_ms(field, d)?;
            }
        }
        if !["critical", "warning", "info"].contains(&self.severity.as_str()) {
            return Err(invalid("severity", "use critical, warning or info"));
        }
        for k in self.labels.keys() {
            if !label_name_ok(k) {
                return Err(invalid(format!("labels.{k}"), "not a label name"));
            }
        }
        if let Some(s) = &self.schedule {
            s.timezone
                .parse::<chrono_tz::Tz>()
                .map_err(|_| invalid("schedule.timezone", format!("{:?} is not an IANA time zone", s.timezone)))?;
            for (i, p) in s.peak_hours.iter().enumerate() {
                check_days(&format!("schedule.peak_hours[{i}].days"), &p.days)?;
                minutes_of(&format!("schedule.peak_hours[{i}].start"), &p.start)?;
                minutes_of(&format!("schedule.peak_hours[{i}].end"), &p.end)?;
                if !matches!(self.condition, Condition::Threshold { .. }) {
                    return Err(invalid("schedule.peak_hours", "peak-hour values apply to threshold conditions"));
                }
            }
            for (i, m) in s.maintenance.iter().enumerate() {
                check_days(&format!("schedule.maintenance[{i}].days"), &m.days)?;
                minutes_of(&format!("schedule.maintenance[{i}].start"), &m.start)?;
                minutes_of(&format!("schedule.maintenance[{i}].end"), &m.end)?;
            }
        }
        for (i, s) in self.suppresses.iter().enumerate() {
            if s.alertname.trim().is_empty() {
                return Err(invalid(format!("suppresses[{i}].alertname"), "empty"));
            }
        }
        Ok(())
    }

    fn selector(&self) -> String {
        let q = &self.query;
        let filters: Vec<String> = q.filter.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
        if filters.is_empty() { q.metric.clone() } else { format!("{}{{{}}}", q.metric, filters.join(", ")) }
    }

    fn by(&self) -> String {
        if self.query.by.is_empty() { String::new() } else { format!(" by ({})", self.query.by.join(", ")) }
    }

    /// The query as a PromQL expression of callscope's subset (valid once validated).
    pub fn promql(&self) -> String {
        let (sel, by, w) = (self.selector(), self.by(), &self.query.window);
        match self.query.aggregate.as_str() {
            "rate" => format!("sum{by} (rate({sel}[{w}]))"),
            "increase" => format!("sum{by} (increase({sel}[{w}]))"),
            "sum" => format!("sum{by} (sum_over_time({sel}[{w}]))"),
            "count" => format!("sum{by} (count_over_time({sel}[{w}]))"),
            "avg" => format!("sum{by} (sum_over_time({sel}[{w}])) / sum{by} (count_over_time({sel}[{w}]))"),
            "min" => format!("min{by} (min_over_time({sel}[{w}]))"),
            "max" => format!("max{by} (max_over_time({sel}[{w}]))"),
            "last" => format!("max{by} ({sel})"),
            p => {
                let q = p.trim_start_matches('p').parse::<f64>().unwrap_or(50.0) / 100.0;
                format!("histogram_quantile({q}, sum{by} (rate({sel}[{w}])))")
            }
        }
    }

    /// For `absence`: groups that reported within the lookback but not within the window.
    pub fn absence_promql(&self) -> String {
        let lookback = match &self.condition {
            Condition::Absence { lookback: Some(l) } => l.clone(),
            _ => "30m".into(),
        };
        let (sel, by, w) = (self.selector(), self.by(), &self.query.window);
        format!("count{by} (count_over_time({sel}[{lookback}])) unless count{by} (count_over_time({sel}[{w}]))")
    }

    fn local(&self, at_ms: i64) -> Option<(usize, u32)> {
        let s = self.schedule.as_ref()?;
        let tz: chrono_tz::Tz = s.timezone.parse().ok()?;
        let t = tz.timestamp_millis_opt(at_ms).single()?;
        Some((t.weekday().num_days_from_monday() as usize, t.hour() * 60 + t.minute()))
    }

    /// Whether a maintenance window mutes the rule at `at_ms`.
    pub fn in_maintenance(&self, at_ms: i64) -> bool {
        let (Some(s), Some((day, minute))) = (&self.schedule, self.local(at_ms)) else { return false };
        s.maintenance.iter().any(|m| {
            let (Ok(start), Ok(end)) = (minutes_of("", &m.start), minutes_of("", &m.end)) else { return false };
            window_holds(&m.days, start, end, day, minute)
        })
    }

    /// The threshold in force at `at_ms`: a peak-hour value, or `default`.
    pub fn threshold_at(&self, at_ms: i64, default: f64) -> f64 {
        let (Some(s), Some((day, minute))) = (&self.schedule, self.local(at_ms)) else { return default };
        s.peak_hours
            .iter()
            .find(|p| {
                let (Ok(start), Ok(end)) = (minutes_of("", &p.start), minutes_of("", &p.end)) else { return false };
                window_holds(&p.days, start, end, day, minute)
            })
            .map_or(default, |p| p.value)
    }
}

#[cfg(test)]
mod tests;
