//! Dashboards: a title, who may see and change it, the data sources its widgets read, and
//! the widgets, each with its queries, its visualisation settings and its place on a
//! 24-column grid. The three parts are separate types, so one data source serves many
//! widgets and a widget's look changes without touching its queries.
//!
//! A data source is one of callscope's query paths:
//!
//! | kind | a query is |
//! | --- | --- |
//! | `prometheus` | a PromQL expression in callscope's subset ([`crate::promql::subset`]) |
//! | `sql` | a read-only SQL query (`$__from`/`$__to` are the range in unix ms) |
//! | `jaeger` | a trace search (`service=…&errors=true&min_duration=…`), or empty for the service map |
//! | `alerts` | `active`: the firing alerts, with silence and acknowledgement state |
//! | `services` | empty: every service's health |
//! | `pipeline` | empty: callscope's consumer group, its lag per topic partition |
//!
//! [`Dashboard::validate`] checks everything but SQL, which the caller parses (the query API
//! with DataFusion's parser): the first problem names its field, e.g.
//! `widgets[2].queries[0].expr`. Built-in dashboards are in [`builtin`].

pub mod builtin;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::custom_metrics::Invalid;

/// The longest id (Grafana's limit for a dashboard uid).
pub const MAX_ID_LEN: usize = 40;
/// Grafana's grid is 24 columns wide.
pub const GRID_COLUMNS: u32 = 24;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dashboard {
    /// Letters, digits, `-` and `_`, at most 40; assigned on create when absent.
    #[serde(default)]
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Incremented by every update; an update that names another version is refused.
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub access: Access,
    #[serde(default)]
    pub time: TimeRange,
    /// Auto-refresh (`30s`, `1m`), none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
    #[serde(default)]
    pub variables: Vec<Variable>,
    pub datasources: Vec<DataSource>,
    pub widgets: Vec<Widget>,
    /// Set by the code that lists the built-in dashboards, never taken from a request.
    #[serde(default)]
    pub builtin: bool,
    #[serde(default)]
    pub created_at_ms: i64,
    #[serde(default)]
    pub updated_at_ms: i64,
}

/// Who may read and change a dashboard. Roles are free-form names (`viewer`, `operator`,
/// `executive`); `*` is everyone. The owner and the `admin` role may always do both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    #[serde(default)]
    pub owner: String,
    #[serde(default = "everyone")]
    pub viewers: Vec<String>,
    #[serde(default = "editors")]
    pub editors: Vec<String>,
}

fn everyone() -> Vec<String> {
    vec!["*".into()]
}

fn editors() -> Vec<String> {
    vec!["editor".into()]
}

impl Default for Access {
    fn default() -> Access {
        Access { owner: String::new(), viewers: everyone(), editors: editors() }
    }
}

/// The role that may do anything.
pub const ADMIN_ROLE: &str = "admin";

/// A caller: a user name and roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub roles: Vec<String>,
}

impl Access {
    fn allows(&self, caller: &Caller, roles: &[String]) -> bool {
        (!self.owner.is_empty() && caller.user == self.owner)
            || caller.roles.iter().any(|r| r == ADMIN_ROLE)
            || roles.iter().any(|allowed| allowed == "*" || caller.roles.iter().any(|r| r == allowed))
    }

    /// Whether `caller` may read (viewers and editors may).
    pub fn can_view(&self, caller: &Caller) -> bool {
        self.allows(caller, &self.viewers) || self.allows(caller, &self.editors)
    }

    /// Whether `caller` may change or delete.
    pub fn can_edit(&self, caller: &Caller) -> bool {
        self.allows(caller, &self.editors)
    }

    /// Whether one of `caller`'s roles (not its being the owner) may edit: what creating a
    /// dashboard takes, so that naming oneself the owner grants nothing.
    pub fn role_may_edit(&self, caller: &Caller) -> bool {
        caller.roles.iter().any(|r| r == ADMIN_ROLE)
            || self.editors.iter().any(|allowed| allowed == "*" || caller.roles.iter().any(|r| r == allowed))
    }
}

/// The default time range, as Grafana writes ranges (`now-6h`, `now`, or RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRange {
    pub from: String,
    pub to: String,
}

impl Default for TimeRange {
    fn default() -> TimeRange {
        TimeRange { from: "now-1h".into(), to: "now".into() }
    }
}

/// A dashboard variable: the values of one label (of one metric, when given), offered
/// as a drop-down and substituted as `$name` in queries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    pub name: String,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Offer "All" (`.*`), the default.
    #[serde(default = "yes")]
    pub include_all: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSourceKind {
    Prometheus,
    Sql,
    Jaeger,
    Alerts,
    Services,
    Pipeline,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// How widgets name it.
    pub id: String,
    pub kind: DataSourceKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Widget {
    pub id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The id of one of the dashboard's data sources.
    pub datasource: String,
    #[serde(default)]
    pub queries: Vec<Query>,
    pub visualization: Visualization,
    pub position: Position,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// `A`, `B`, … unique in the widget.
    pub ref_id: String,
    #[serde(default)]
    pub expr: String,
    /// The series' name: `{{label}}` is replaced by the label's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legend: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisualizationKind {
    Timeseries,
    Stat,
    Gauge,
    Table,
    Barchart,
    ServiceMap,
    Traces,
    AlertList,
    ServiceList,
}

impl VisualizationKind {
    /// The data source kinds this visualisation can show.
    pub fn reads(self) -> &'static [DataSourceKind] {
        use DataSourceKind::*;
        match self {
            VisualizationKind::Timeseries => &[Prometheus, Sql],
            VisualizationKind::Stat | VisualizationKind::Gauge => &[Prometheus, Sql, Pipeline],
            VisualizationKind::Table => &[Prometheus, Sql, Alerts, Pipeline],
            VisualizationKind::Barchart => &[Prometheus, Sql, Alerts],
            VisualizationKind::ServiceMap | VisualizationKind::Traces => &[Jaeger],
            VisualizationKind::AlertList => &[Alerts],
            VisualizationKind::ServiceList => &[Services],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Visualization {
    pub kind: VisualizationKind,
    /// Grafana unit ids: `short`, `percent`, `percentunit`, `ms`, `s`, `reqps`, `bytes`,
    /// `currencyCNY`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u8>,
    /// Ascending; the colour applies from its value up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<Threshold>,
    #[serde(default)]
    pub stacked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub value: f64,
    /// A colour name (`green`, `orange`, `red`) or `#rrggbb`.
    pub color: String,
}

/// A place on the 24-column grid (rows of about 30 px).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), message: message.into() }
}

/// Letters, digits, `-` and `_`, 1 to `max` bytes.
pub fn is_id(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_duration(text: &str) -> bool {
    humantime::parse_duration(text).is_ok_and(|d| d.as_millis() >= 1000)
}

fn is_time(text: &str) -> bool {
    let t = text.trim();
    if t == "now" {
        return true;
    }
    if let Some(rest) = t.strip_prefix("now-").or_else(|| t.strip_prefix("now+")) {
        // Grafana's units: s m h d w M y; a rounding suffix `/d` is allowed.
        let rest = rest.split('/').next().unwrap_or_default();
        let digits = rest.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &rest[digits.len()..];
        return !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit())
            && matches!(unit, "s" | "m" | "h" | "d" | "w" | "M" | "y");
    }
    chrono::DateTime::parse_from_rfc3339(t).is_ok()
}

fn is_color(text: &str) -> bool {
    const NAMED: [&str; 10] =
        ["green", "red", "orange", "yellow", "blue", "purple", "transparent", "text", "dark-red", "dark-green"];
    NAMED.contains(&text)
        || (text.len() == 7 && text.starts_with('#') && text[1..].chars().all(|c| c.is_ascii_hexdigit()))
}

/// Replaces `$name` and `${name}` of the dashboard's variables with `.*` (what "All"
/// selects), so that a query with variables parses.
pub fn with_variables_as_all(expr: &str, variables: &[Variable]) -> String {
    let mut out = expr.to_string();
    let mut names: Vec<&str> = variables.iter().map(|v| v.name.as_str()).collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        out = out.replace(&format!("${{{name}}}"), ".*").replace(&format!("${name}"), ".*");
    }
    out
}

/// The text of a SQL query as [`Dashboard::validate`] hands it to its SQL checker: the
/// variables as "All" and the range macros as 0.
pub fn sql_for_checking(expr: &str, variables: &[Variable]) -> String {
    with_variables_as_all(expr, variables).replace("$__from", "0").replace("$__to", "0")
}

impl Dashboard {
    /// The SQL queries of the dashboard as its SQL checker will see them.
    pub fn sql_queries(&self) -> Vec<String> {
        let sql_sources: BTreeSet<&str> =
            self.datasources.iter().filter(|d| d.kind == DataSourceKind::Sql).map(|d| d.id.as_str()).collect();
        self.widgets
            .iter()
            .filter(|w| sql_sources.contains(w.datasource.as_str()))
            .flat_map(|w| w.queries.iter().map(|q| sql_for_checking(&q.expr, &self.variables)))
            .collect()
    }

    /// Checks the whole dashboard; SQL queries are handed to `check_sql` (an error message
    /// or nothing). The first problem names its field.
    pub fn validate(&self, check_sql: &dyn Fn(&str) -> Result<(), String>) -> Result<(), Invalid> {
        if !self.id.is_empty() && !is_id(&self.id, MAX_ID_LEN) {
            return Err(invalid("id", format!("1 to {MAX_ID_LEN} letters, digits, - and _")));
        }
        if self.title.trim().is_empty() || self.title.len() > 200 {
            return Err(invalid("title", "1 to 200 characters"));
        }
        for (i, tag) in self.tags.iter().enumerate() {
            if tag.trim().is_empty() || tag.len() > 50 {
                return Err(invalid(format!("tags[{i}]"), "1 to 50 characters"));
            }
        }
        for (field, time) in [("time.from", &self.time.from), ("time.to", &self.time.to)] {
            if !is_time(time) {
                return Err(invalid(field, format!("{time:?} is not now, now-<n><unit> (s m h d w M y) nor RFC 3339")));
            }
        }
        if let Some(r) = self.refresh.as_deref().filter(|r| !is_duration(r)) {
            return Err(invalid("refresh", format!("{r:?} is not a duration of at least 1s (30s, 1m)")));
        }
        for (field, roles) in [("access.viewers", &self.access.viewers), ("access.editors", &self.access.editors)] {
            if let Some((i, _)) = roles.iter().enumerate().find(|(_, r)| *r != "*" && !is_id(r, 64)) {
                return Err(invalid(format!("{field}[{i}]"), "a role is 1 to 64 letters, digits, - and _, or *"));
            }
        }
        let mut names = BTreeSet::new();
        for (i, v) in self.variables.iter().enumerate() {
            let field = format!("variables[{i}]");
            if !is_label_name(&v.name) || !names.insert(v.name.as_str()) {
                return Err(invalid(format!("{field}.name"), format!("{:?} is not a unique variable name", v.name)));
            }
            if !is_label_name(&v.label) {
                return Err(invalid(format!("{field}.label"), format!("{:?} is not a label name", v.label)));
            }
            if let Some(m) = v.metric.as_deref().filter(|m| !is_label_name(m)) {
                return Err(invalid(format!("{field}.metric"), format!("{m:?} is not a metric name")));
            }
        }
        let mut sources = std::collections::BTreeMap::new();
        for (i, d) in self.datasources.iter().enumerate() {
            if !is_id(&d.id, 64) || sources.insert(d.id.as_str(), d.kind).is_some() {
                return Err(invalid(format!("datasources[{i}].id"), format!("{:?} is not a unique id", d.id)));
            }
        }
        if self.widgets.is_empty() {
            return Err(invalid("widgets", "a dashboard needs at least one widget"));
        }
        let mut ids = BTreeSet::new();
        for (i, w) in self.widgets.iter().enumerate() {
            let field = format!("widgets[{i}]");
            if !is_id(&w.id, 64) || !ids.insert(w.id.as_str()) {
                return Err(invalid(format!("{field}.id"), format!("{:?} is not a unique id", w.id)));
            }
            if w.title.trim().is_empty() || w.title.len() > 200 {
                return Err(invalid(format!("{field}.title"), "1 to 200 characters"));
            }
            let Some(kind) = sources.get(w.datasource.as_str()).copied() else {
                return Err(invalid(
                    format!("{field}.datasource"),
                    format!("{:?} is not one of the dashboard's data sources", w.datasource),
                ));
            };
            let viz = w.visualization.kind;
            if !viz.reads().contains(&kind) {
                return Err(invalid(
                    format!("{field}.visualization.kind"),
                    format!("{viz:?} cannot show a {kind:?} data source (it reads {:?})", viz.reads()),
                ));
            }
            let p = w.position;
            if p.w == 0 || p.h == 0 || p.x.saturating_add(p.w) > GRID_COLUMNS || p.h > 100 || p.y > 10_000 {
                return Err(invalid(
                    format!("{field}.position"),
                    format!("w and h at least 1, x + w at most {GRID_COLUMNS}, h at most 100"),
                ));
            }
            let vis = &w.visualization;
            if let (Some(min), Some(max)) = (vis.min, vis.max)
                && !(min < max)
            {
                return Err(invalid(format!("{field}.visualization.max"), "max must be above min"));
            }
            for (t, th) in vis.thresholds.iter().enumerate() {
                if !th.value.is_finite() || (t > 0 && th.value <= vis.thresholds[t - 1].value) {
                    return Err(invalid(
                        format!("{field}.visualization.thresholds[{t}].value"),
                        "finite and ascending",
                    ));
                }
                if !is_color(&th.color) {
                    return Err(invalid(
                        format!("{field}.visualization.thresholds[{t}].color"),
                        format!("{:?} is not a colour name nor #rrggbb", th.color),
                    ));
                }
            }
            let needs_query = !matches!(kind, DataSourceKind::Services | DataSourceKind::Pipeline)
                && !matches!(viz, VisualizationKind::ServiceMap | VisualizationKind::AlertList);
            if needs_query && w.queries.is_empty() {
                return Err(invalid(format!("{field}.queries"), "this widget needs a query"));
            }
            let mut refs = BTreeSet::new();
            for (q, query) in w.queries.iter().enumerate() {
                let qfield = format!("{field}.queries[{q}]");
                if !is_id(&query.ref_id, 8) || !refs.insert(query.ref_id.as_str()) {
                    return Err(invalid(
                        format!("{qfield}.ref_id"),
                        format!("{:?} is not a unique ref id", query.ref_id),
                    ));
                }
                let expr = match kind {
                    DataSourceKind::Sql => sql_for_checking(&query.expr, &self.variables),
                    _ => with_variables_as_all(&query.expr, &self.variables),
                };
                check_query(kind, &expr, check_sql).map_err(|m| invalid(format!("{qfield}.expr"), m))?;
            }
        }
        Ok(())
    }
}

fn is_label_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && text.len() <= 128
}

/// The trace search parameters a `jaeger` query may set.
pub const TRACE_SEARCH_PARAMS: [&str; 9] =
    ["service", "operation", "kind", "attr", "errors", "min_duration", "max_duration", "limit", "order"];

fn check_query(kind: DataSourceKind, expr: &str, check_sql: &dyn Fn(&str) -> Result<(), String>) -> Result<(), String> {
    match kind {
        DataSourceKind::Prometheus => {
            let parsed = promql_parser::parser::parse(expr).map_err(|e| format!("not PromQL: {e}"))?;
            crate::promql::subset::check_subset(&parsed).map_err(|e| e.to_string())
        }
        DataSourceKind::Sql => {
            if expr.trim().is_empty() {
                return Err("write a SQL query".into());
            }
            check_sql(expr)
        }
        DataSourceKind::Jaeger => {
            for pair in expr.split('&').filter(|p| !p.is_empty()) {
                let name = pair.split('=').next().unwrap_or_default();
                if !TRACE_SEARCH_PARAMS.contains(&name) {
                    return Err(format!(
                        "{name:?} is not a trace search parameter ({})",
                        TRACE_SEARCH_PARAMS.join(", ")
                    ));
                }
            }
            Ok(())
        }
        DataSourceKind::Alerts => match expr {
            "active" | "" => Ok(()),
            other => Err(format!(
                "{other:?}: an alerts query is `active` (history and trends are SQL over the alerts table)"
            )),
        },
        DataSourceKind::Services | DataSourceKind::Pipeline => {
            if expr.is_empty() {
                Ok(())
            } else {
                Err(format!("a {kind:?} query is empty"))
            }
        }
    }
}

#[cfg(test)]
mod tests;
