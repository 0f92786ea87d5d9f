//! Prometheus rule files: YAML `groups:` → `rules:` with `alert`,
//! `expr`, `for`, `keep_firing_for`, `labels` and `annotations`, the expression parsed by
//! `promql-parser` and checked against the subset callscope evaluates over window
//! aggregates. Anything outside the subset is refused at load time, naming the part.
//!
//! The subset: selectors with `=`, `!=`, `=~`, `!~` matchers; the range functions `rate`,
//! `increase`, `avg_over_time`, `min_over_time`, `max_over_time`, `sum_over_time`,
//! `count_over_time`, `quantile_over_time`, `absent_over_time`; `histogram_quantile(q, …)`
//! answered from the stored sketches; the aggregations `sum`, `avg`, `min`, `max`, `count`
//! with `by`/`without`; arithmetic (`+ - * /`) and comparisons (with or without `bool`)
//! between vectors and scalars, with `on`/`ignoring`; `and`, `or`, `unless`; unary minus;
//! parentheses. Not supported: `offset`, `@`, subqueries, `group_left`/`group_right`,
//! string literals, other functions and aggregations, recording rules.

use std::collections::BTreeMap;
use std::time::Duration;

use callscope_schemas::promql::subset::check_subset;
use promql_parser::parser::{self, Expr};
use serde::Deserialize;

/// A rule file as Prometheus writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub groups: Vec<RuleGroup>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    pub name: String,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub rules: Vec<RuleEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEntry {
    #[serde(default)]
    pub alert: Option<String>,
    #[serde(default)]
    pub record: Option<String>,
    pub expr: String,
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    #[serde(default)]
    pub keep_firing_for: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A loaded alerting rule.
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub group: String,
    pub name: String,
    pub expr_text: String,
    pub expr: Expr,
    pub for_: Duration,
    pub keep_firing_for: Duration,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Why a rule file cannot be loaded: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct RuleError {
    /// `group "x", rule "y"` or `file`.
    pub location: String,
    pub message: String,
}

fn duration(location: &str, field: &str, text: Option<&str>) -> Result<Duration, RuleError> {
    let Some(text) = text else { return Ok(Duration::ZERO) };
    parse_prometheus_duration(text).ok_or_else(|| RuleError {
        location: location.to_string(),
        message: format!("{field}: {text:?} is not a duration like 5m or 1h30m"),
    })
}

/// Prometheus durations: `1h30m`, `5m`, `90s`, `500ms`, `2d`, `1w`, `1y`.
pub fn parse_prometheus_duration(text: &str) -> Option<Duration> {
    let mut total: u128 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u128 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, len) = match rest {
            r if r.starts_with("ms") => (1, 2),
            r if r.starts_with('s') => (1_000, 1),
            r if r.starts_with('m') => (60_000, 1),
            r if r.starts_with('h') => (3_600_000, 1),
            r if r.starts_with('d') => (86_400_000, 1),
            r if r.starts_with('w') => (604_800_000, 1),
            r if r.starts_with('y') => (31_536_000_000, 1),
            _ => return None,
        };
        total += n * unit_ms;
        rest = &rest[len..];
    }
    Some(Duration::from_millis(u64::try_from(total).ok()?))
}

/// Loads the alerting rules of a rule file; every rule is checked, and the first problem
/// is reported with its group and rule.
pub fn load_rule_file(text: &str) -> Result<Vec<AlertRule>, RuleError> {
    let file: RuleFile = serde_norway::from_str(text)
        .map_err(|e| RuleError { location: "file".into(), message: format!("not a Prometheus rule file: {e}") })?;
    let mut rules = Vec::new();
    for group in file.groups {
        for (i, entry) in group.rules.into_iter().enumerate() {
            let name = entry.alert.clone().or(entry.record.clone()).unwrap_or_else(|| format!("#{}", i + 1));
            let location = format!("group {:?}, rule {name:?}", group.name);
            let err = |message: String| RuleError { location: location.clone(), message };
            if entry.record.is_some() {
                return Err(err("recording rules are not supported; define a custom metric instead".into()));
            }
            let Some(alert) = entry.alert else { return Err(err("a rule needs `alert`".into())) };
            let expr = parser::parse(&entry.expr).map_err(|e| err(format!("expr: {e}")))?;
            check_subset(&expr).map_err(|e| err(format!("expr: {e}")))?;
            let mut labels = group.labels.clone();
            labels.extend(entry.labels);
            for (field, templates) in [("labels", &labels), ("annotations", &entry.annotations)] {
                for (k, template) in templates {
                    crate::template::render(template, &BTreeMap::new(), 0.0)
                        .map_err(|e| err(format!("{field}.{k}: {e}")))?;
                }
            }
            rules.push(AlertRule {
                group: group.name.clone(),
                name: alert,
                expr_text: entry.expr,
                expr,
                for_: duration(&location, "for", entry.for_.as_deref())?,
                keep_firing_for: duration(&location, "keep_firing_for", entry.keep_firing_for.as_deref())?,
                labels,
                annotations: entry.annotations,
            });
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
groups:
  - name: phone-platform
    labels: {team: voice}
    rules:
      - alert: CallFailureRateHigh
        expr: sum by (region) (rate(calls_total{outcome=~"failed|dropped"}[5m])) / sum by (region) (rate(calls_total[5m])) > 0.05
        for: 2m
        keep_firing_for: 1m
        labels: {severity: critical}
        annotations:
          summary: "Call failure rate {{ $value }} in {{ $labels.region }}"
      - alert: AIResponseSlow
        expr: histogram_quantile(0.95, ai_response_time_ms{service!="test"}) > 1500 and on (model) avg_over_time(ai_confidence[10m]) < 0.7
      - alert: ServiceDown
        expr: absent_over_time(calls_total{service="call-gateway"}[1m])
"#;

    #[test]
    fn a_rule_file_loads_with_durations_and_merged_labels() {
        let rules = load_rule_file(FILE).expect("loads");
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].name, "CallFailureRateHigh");
        assert_eq!(rules[0].for_, Duration::from_secs(120));
        assert_eq!(rules[0].keep_firing_for, Duration::from_secs(60));
        assert_eq!(rules[0].labels["team"], "voice");
        assert_eq!(rules[0].labels["severity"], "critical");
        assert!(rules[0].annotations["summary"].contains("{{ $labels.region }}"));
        assert_eq!(rules[2].for_, Duration::ZERO);
    }

    #[test]
    fn parts_outside_the_subset_are_named() {
        for (expr, part) in [
            ("rate(x[5m] offset 1h)", "offset"),
            ("label_replace(x, \"a\", \"b\", \"c\", \"d\")", "label_replace"),
            ("topk(3, x)", "topk"),
            ("max_over_time(rate(x[1m])[5m:1m])", "subquery"),
            ("x / on (a) group_left (b) y", "group_left"),
            ("x[5m]", "range selector"),
            ("x @ 100", "@ modifier"),
        ] {
            let file = format!(
                "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: '{}'\n",
                expr.replace('\'', "''")
            );
            let e = load_rule_file(&file).expect_err(expr);
            assert!(e.message.contains(part), "{expr}: {e}");
            assert!(e.location.contains("rule \"A\""), "{e}");
        }
    }

    #[test]
    fn malformed_files_and_rules_are_clear_errors() {
        assert_eq!(load_rule_file("groups: 3").expect_err("shape").location, "file");
        let bad_expr = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: 'sum(('\n";
        assert!(load_rule_file(bad_expr).expect_err("syntax").message.starts_with("expr:"));
        let bad_for = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 1\n        for: soon\n";
        assert!(load_rule_file(bad_for).expect_err("for").message.contains("for"));
        let record = "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: x\n";
        assert!(load_rule_file(record).expect_err("record").message.contains("recording rules"));
    }

    #[test]
    fn prometheus_durations() {
        assert_eq!(parse_prometheus_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_prometheus_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_prometheus_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_prometheus_duration("5"), None);
        assert_eq!(parse_prometheus_duration(""), None);
    }
}
