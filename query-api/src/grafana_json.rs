//! Grafana's JSON data sources: the routes `simpod-json-datasource` calls (under
//! `/grafana/json`, the URL its data source is given) and flat JSON arrays that Grafana's
//! maintained Infinity data source reads as they are (under `/grafana/infinity`).
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /grafana/json` | 200: the data source test |
//! | `POST /grafana/json/metrics` | what a panel can ask: `promql`, `sql` and every metric name, with their payload fields |
//! | `POST /grafana/json/metric-payload-options` | the options of one payload field |
//! | `POST /grafana/json/query` | time series (`{target, datapoints}`) or tables (`{type: "table", columns, rows}`) |
//! | `POST /grafana/json/variable` | `label_values(label)`, `label_values(metric, label)`, `metrics(regex)` |
//! | `POST /grafana/json/tag-keys`, `/tag-values` | label names and values for ad-hoc filters |
//! | `GET /grafana/infinity/query?query=&from=&to=&step=` | one object per point: `time`, `value`, `series` and every label |
//! | `GET\|POST /grafana/infinity/sql` | one object per row of a read-only SQL query |
//!
//! A target is one of:
//! - `promql` with payload `{"expr": "…"}`: callscope's PromQL subset, evaluated by the same
//!   code as `/api/v1/query_range` ([`crate::prometheus_api::evaluate`]);
//! - a metric name with payload `{"function", "aggregation", "by"}`: the expression is
//!   built from them (`sum by (outcome) (rate(calls_total[2m]))`); the function defaults
//!   to `rate` for counters, `p95` (from the stored sketches) for histograms and summaries
//!   and `avg_over_time` for gauges;
//! - `sql` with payload `{"sql": "…"}`: a read-only query answered as a table; `$__from` and
//!   `$__to` stand for the range's ends in unix milliseconds;
//! - `alerts`, `services` and `pipeline`: the active alerts, every service's health and the
//!   consumer group's lag per partition, as tables.
//!
//! Ad-hoc filters (`filters`, older `adhocFilters`) become label matchers of every selector
//! of the PromQL targets. Bad targets are refused with a 400 that names the field.

pub mod infinity;
mod tables;

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use promql_parser::label::METRIC_NAME;
use promql_parser::parser::Expr;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::prometheus_api::evaluate::{self, Answer, MAX_POINTS};
use crate::prometheus_api::{Params, series};
use crate::sql::run_query;
use crate::time_params::parse_time;

/// The functions a metric-name target may apply.
const FUNCTIONS: [&str; 9] =
    ["rate", "increase", "avg_over_time", "max_over_time", "min_over_time", "p50", "p95", "p99", "last"];
const AGGREGATIONS: [&str; 5] = ["sum", "avg", "max", "min", "count"];

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct QueryRequest {
    range: Option<TimeRange>,
    interval_ms: Option<i64>,
    max_data_points: Option<i64>,
    targets: Vec<Target>,
    filters: Vec<AdhocFilter>,
    adhoc_filters: Vec<AdhocFilter>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TimeRange {
    from: String,
    to: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Target {
    ref_id: Option<String>,
    target: Option<String>,
    payload: Value,
    hide: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AdhocFilter {
    key: String,
    operator: String,
    value: String,
}

fn body_json<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not the JSON expected: {e}")))
}

/// `GET /grafana/json`: the data source's "Save & test".
pub async fn test_connection() -> Json<Value> {
    Json(json!({"status": "ok", "application": "callscope", "version": env!("CARGO_PKG_VERSION")}))
}

/// The range of a request, unix ms: `range.from/to`, or the last 6 hours.
fn request_range(range: Option<&TimeRange>, field: &str) -> ApiResult<(i64, i64)> {
    let now = callscope_runtime::now_ms();
    let Some(range) = range.filter(|r| !r.from.is_empty() || !r.to.is_empty()) else {
        return Ok((now - 6 * 3_600_000, now));
    };
    let to = if range.to.is_empty() { now } else { parse_time(&format!("{field}.to"), &range.to, now)? };
    let from = parse_time(&format!("{field}.from"), &range.from, now)?;
    if to < from {
        return Err(ApiError::bad_field(field, "range.to is before range.from"));
    }
    Ok((from, to))
}

/// Prometheus API parameters for series in `from..to` (unix ms) matching `selector`.
fn series_params(from: i64, to: i64, selector: Option<String>) -> Params {
    let seconds = |ms: i64| format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000));
    let mut pairs = vec![("start".to_string(), seconds(from)), ("end".to_string(), seconds(to))];
    pairs.extend(selector.map(|s| ("match[]".to_string(), s)));
    Params::from_pairs(pairs)
}

/// Every series of the range: metric names with their label names.
async fn metric_labels(state: &AppState, from: i64, to: i64) -> ApiResult<BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for set in series::matching(state, &series_params(from, to, None)).await? {
        let Some(name) = set.get(METRIC_NAME).cloned() else { continue };
        out.entry(name).or_default().extend(set.into_keys().filter(|k| k != METRIC_NAME));
    }
    Ok(out)
}

fn option(value: &str) -> Value {
    json!({"label": value, "value": value})
}

fn payload_fields(labels: &BTreeSet<String>) -> Value {
    json!([
        {"name": "function", "label": "Function", "type": "select",
         "options": FUNCTIONS.iter().map(|f| option(f)).collect::<Vec<_>>()},
        {"name": "aggregation", "label": "Aggregation", "type": "select",
         "options": AGGREGATIONS.iter().map(|a| option(a)).collect::<Vec<_>>()},
        {"name": "by", "label": "Group by", "type": "multi-select",
         "options": labels.iter().map(|l| option(l)).collect::<Vec<_>>()},
        {"name": "legend", "label": "Legend ({{label}})", "type": "input"},
    ])
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MetricsRequest {
    metric: Option<String>,
    name: Option<String>,
}

/// `POST /grafana/json/metrics`.
pub async fn metrics(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let request: MetricsRequest = body_json(&body)?;
    let now = callscope_runtime::now_ms();
    let by_name = metric_labels(&state, now - 6 * 3_600_000, now).await?;
    let mut out = vec![
        json!({"label": "PromQL expression", "value": "promql",
               "payloads": [{"name": "expr", "label": "Expression", "type": "textarea"},
                            {"name": "legend", "label": "Legend ({{label}})", "type": "input"}]}),
        json!({"label": "SQL table", "value": "sql",
               "payloads": [{"name": "sql", "label": "SQL ($__from, $__to in ms)", "type": "textarea"}]}),
        json!({"label": "Active alerts (table)", "value": "alerts", "payloads": []}),
        json!({"label": "Service health (table)", "value": "services", "payloads": []}),
        json!({"label": "Consumer lag by partition (table)", "value": "pipeline", "payloads": []}),
    ];
    out.extend(
        by_name.iter().map(|(name, labels)| json!({"label": name, "value": name, "payloads": payload_fields(labels)})),
    );
    if let Some(metric) = request.metric.filter(|m| !m.is_empty()) {
        out.retain(|m| m["value"] == metric.as_str());
    }
    Ok(Json(Value::Array(out)))
}

/// `POST /grafana/json/metric-payload-options`.
pub async fn metric_payload_options(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let request: MetricsRequest = body_json(&body)?;
    let metric = request.metric.unwrap_or_default();
    let options: Vec<Value> = match request.name.as_deref() {
        Some("function") => FUNCTIONS.iter().map(|f| option(f)).collect(),
        Some("aggregation") => AGGREGATIONS.iter().map(|a| option(a)).collect(),
        Some("by") => {
            let now = callscope_runtime::now_ms();
            let by_name = metric_labels(&state, now - 6 * 3_600_000, now).await?;
            by_name.get(&metric).map(|labels| labels.iter().map(|l| option(l)).collect()).unwrap_or_default()
        }
        Some(other) => return Err(ApiError::bad_field("name", format!("{metric:?} has no payload field {other:?}"))),
        None => return Err(ApiError::bad_field("name", "name the payload field")),
    };
    Ok(Json(Value::Array(options)))
}

/// The step of a panel's request: Grafana's interval, but no more points than
/// `maxDataPoints` nor than a series may have, and at least a second.
fn step_ms(from: i64, to: i64, interval_ms: Option<i64>, max_points: Option<i64>) -> i64 {
    let span = (to - from).max(0);
    let by_points = span / max_points.filter(|n| *n > 0).unwrap_or(1_000).min(MAX_POINTS - 1).max(1);
    interval_ms.unwrap_or(0).max(by_points).max(span / (MAX_POINTS - 1) + 1).max(1_000)
}

/// A label matcher from an ad-hoc filter, parsed by the PromQL parser itself.
fn filter_matchers(filters: &[AdhocFilter]) -> ApiResult<Vec<promql_parser::label::Matcher>> {
    filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let field = format!("filters[{i}]");
            if !matches!(f.operator.as_str(), "=" | "!=" | "=~" | "!~") {
                return Err(ApiError::bad_field(
                    field,
                    format!("operator {:?} is not a label matcher (=, !=, =~, !~)", f.operator),
                ));
            }
            let text = format!("{{{}{}{}}}", f.key, f.operator, Value::String(f.value.clone()));
            match promql_parser::parser::parse(&text) {
                Ok(Expr::VectorSelector(vs)) => {
                    vs.matchers.matchers.into_iter().next().ok_or_else(|| ApiError::bad_field(&field, "empty filter"))
                }
                Ok(_) => Err(ApiError::bad_field(field, format!("{text} is not a label matcher"))),
                Err(e) => Err(ApiError::bad_field(field, format!("{text}: {e}"))),
            }
        })
        .collect()
}

/// Adds `matchers` to every selector of `expr`.
fn add_matchers(expr: &mut Expr, matchers: &[promql_parser::label::Matcher]) {
    match expr {
        Expr::VectorSelector(vs) => vs.matchers.matchers.extend(matchers.iter().cloned()),
        Expr::MatrixSelector(m) => m.vs.matchers.matchers.extend(matchers.iter().cloned()),
        Expr::Aggregate(a) => {
            add_matchers(&mut a.expr, matchers);
            if let Some(p) = a.param.as_mut() {
                add_matchers(p, matchers);
            }
        }
        Expr::Unary(u) => add_matchers(&mut u.expr, matchers),
        Expr::Binary(b) => {
            add_matchers(&mut b.lhs, matchers);
            add_matchers(&mut b.rhs, matchers);
        }
        Expr::Paren(p) => add_matchers(&mut p.expr, matchers),
        Expr::Subquery(s) => add_matchers(&mut s.expr, matchers),
        Expr::Call(c) => c.args.args.iter_mut().for_each(|a| add_matchers(a, matchers)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn payload_str<'a>(payload: &'a Value, name: &str) -> Option<&'a str> {
    payload.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// The PromQL a metric-name target stands for.
fn metric_expression(name: &str, kind: Option<&str>, payload: &Value, step: i64, field: &str) -> ApiResult<String> {
    let function = payload_str(payload, "function").unwrap_or(match kind {
        Some("counter") => "rate",
        Some("histogram" | "summary") => "p95",
        _ => "avg_over_time",
    });
    let aggregation = payload_str(payload, "aggregation").unwrap_or("sum");
    if !AGGREGATIONS.contains(&aggregation) {
        return Err(ApiError::bad_field(
            format!("{field}.payload.aggregation"),
            format!("{aggregation:?} is not one of {AGGREGATIONS:?}"),
        ));
    }
    let by: Vec<&str> = match payload.get("by") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(other) => {
            return Err(ApiError::bad_field(format!("{field}.payload.by"), format!("{other} is not a list of labels")));
        }
    };
    if let Some(bad) = by.iter().find(|l| !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || l.is_empty()) {
        return Err(ApiError::bad_field(format!("{field}.payload.by"), format!("{bad:?} is not a label name")));
    }
    let by_clause = if by.is_empty() { String::new() } else { format!(" by ({})", by.join(", ")) };
    let range = format!("{}s", ((2 * step).max(60_000) + 999) / 1000);
    let expr = match function {
        "rate" | "increase" | "avg_over_time" | "max_over_time" | "min_over_time" => {
            format!("{aggregation}{by_clause} ({function}({name}[{range}]))")
        }
        "last" => format!("{aggregation}{by_clause} ({name})"),
        "p50" | "p95" | "p99" => {
            let q = &function[1..];
            let by = if by.is_empty() { String::new() } else { format!(" by ({})", by.join(", ")) };
            format!("histogram_quantile(0.{q}, sum{by} (rate({name}[{range}])))")
        }
        other => {
            return Err(ApiError::bad_field(
                format!("{field}.payload.function"),
                format!("{other:?} is not one of {FUNCTIONS:?}"),
            ));
        }
    };
    Ok(expr)
}

/// The legend of a series: the target's template with `{{label}}` replaced, or
/// `name{label="value", …}`.
fn legend(template: Option<&str>, labels: &BTreeMap<String, String>) -> String {
    if let Some(template) = template {
        let mut out = template.to_string();
        for (k, v) in labels {
            out = out.replace(&format!("{{{{{k}}}}}"), v);
        }
        return out;
    }
    let name = labels.get(METRIC_NAME).cloned().unwrap_or_default();
    let rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| *k != METRIC_NAME)
        .map(|(k, v)| format!("{k}={}", Value::String(v.clone())))
        .collect();
    if rest.is_empty() && name.is_empty() { "value".into() } else { format!("{name}{{{}}}", rest.join(", ")) }
}

fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null)
}

/// One evaluated PromQL target's series.
async fn evaluate_series(
    state: &AppState,
    query: &str,
    matchers: &[promql_parser::label::Matcher],
    (from, to, step): (i64, i64, i64),
    field: &str,
) -> ApiResult<Vec<(BTreeMap<String, String>, Vec<(i64, f64)>)>> {
    let mut expr = evaluate::parse(query).map_err(|e| match ApiError::from(e) {
        ApiError::BadRequest { message, .. } => ApiError::bad_field(field, message),
        other => other,
    })?;
    add_matchers(&mut expr, matchers);
    let start = from.div_euclid(step) * step;
    Ok(match evaluate::evaluate(state, &expr, start, to, step).await? {
        Answer::Scalar(points) => vec![(BTreeMap::new(), points)],
        Answer::Series(series) => series.into_iter().collect(),
    })
}

fn substitute_range(sql: &str, from: i64, to: i64) -> String {
    sql.replace("$__from", &from.to_string()).replace("$__to", &to.to_string())
}

fn column_type(type_name: &str) -> &'static str {
    match type_name {
        "time" => "time",
        "integer" | "number" => "number",
        _ => "string",
    }
}

/// `POST /grafana/json/query`.
pub async fn query(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let request: QueryRequest = body_json(&body)?;
    let (from, to) = request_range(request.range.as_ref(), "range")?;
    let step = step_ms(from, to, request.interval_ms, request.max_data_points);
    let mut filters = request.filters;
    filters.extend(request.adhoc_filters);
    let matchers = filter_matchers(&filters)?;
    let mut out = Vec::new();
    for (i, target) in request.targets.iter().enumerate().filter(|(_, t)| !t.hide) {
        let field = format!("targets[{i}]");
        // Older plugin versions send the payload as a JSON string.
        let payload = match &target.payload {
            Value::String(text) => serde_json::from_str(text).unwrap_or_else(|_| json!({"expr": text})),
            other => other.clone(),
        };
        let name = target.target.as_deref().map(str::trim).unwrap_or_default();
        let (query, template) = match name {
            "" => return Err(ApiError::bad_field(format!("{field}.target"), "choose a metric, promql or sql")),
            "sql" => {
                let sql = payload_str(&payload, "sql")
                    .ok_or_else(|| ApiError::bad_field(format!("{field}.payload.sql"), "write a SQL query"))?;
                let result = run_query(&state.engine.session(), &substitute_range(sql, from, to), state.sql_limits)
                    .await
                    .map_err(|e| match e {
                        ApiError::BadRequest { message, .. } => {
                            ApiError::bad_field(format!("{field}.payload.sql"), message)
                        }
                        other => other,
                    })?;
                out.push(json!({
                    "type": "table",
                    "refId": target.ref_id,
                    "columns": result.columns.iter().map(|c| json!({
                        "text": c["name"], "type": column_type(c["type"].as_str().unwrap_or_default())
                    })).collect::<Vec<_>>(),
                    "rows": result.rows,
                }));
                continue;
            }
            "alerts" | "services" | "pipeline" => {
                out.push(tables::status_table(&state, name, target.ref_id.as_deref()).await?);
                continue;
            }
            "promql" => (
                payload_str(&payload, "expr")
                    .ok_or_else(|| ApiError::bad_field(format!("{field}.payload.expr"), "write a PromQL expression"))?
                    .to_string(),
                payload_str(&payload, "legend"),
            ),
            metric => {
                let meta = series::metadata(&state, Some(metric), None).await?;
                let kind = meta[metric][0]["type"].as_str();
                if kind.is_none() {
                    return Err(ApiError::bad_field(format!("{field}.target"), format!("no metric named {metric:?}")));
                }
                (metric_expression(metric, kind, &payload, step, &field)?, payload_str(&payload, "legend"))
            }
        };
        let expr_field = if name == "promql" { format!("{field}.payload.expr") } else { field.clone() };
        for (labels, points) in evaluate_series(&state, &query, &matchers, (from, to, step), &expr_field).await? {
            out.push(json!({
                "target": legend(template, &labels),
                "refId": target.ref_id,
                "datapoints": points.iter().map(|(t, v)| json!([number(*v), t])).collect::<Vec<_>>(),
            }));
        }
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct VariableRequest {
    payload: Value,
    range: Option<TimeRange>,
}

/// `POST /grafana/json/variable`.
pub async fn variable(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let request: VariableRequest = body_json(&body)?;
    let (from, to) = request_range(request.range.as_ref(), "range")?;
    let target = match &request.payload {
        Value::String(s) => s.trim().to_string(),
        other => payload_str(other, "target").unwrap_or_default().to_string(),
    };
    let bad = || {
        ApiError::bad_field(
            "payload.target",
            format!("{target:?}: use label_values(label), label_values(metric, label) or metrics(regex)"),
        )
    };
    let args = |prefix: &str| -> Option<Vec<String>> {
        let inner = target.strip_prefix(prefix)?.trim().strip_prefix('(')?.strip_suffix(')')?;
        Some(inner.split(',').map(|a| a.trim().to_string()).collect())
    };
    let values: Vec<String> = if let Some(args) = args("label_values") {
        let (selector, label) = match args.as_slice() {
            [label] => (None, label.clone()),
            [selector, label] => (Some(selector.clone()), label.clone()),
            _ => return Err(bad()),
        };
        let found =
            series::matching(&state, &series_params(from, to, selector)).await.map_err(|e| {
                match ApiError::from(e) {
                    ApiError::BadRequest { message, .. } => ApiError::bad_field("payload.target", message),
                    other => other,
                }
            })?;
        found.into_iter().filter_map(|mut s| s.remove(&label)).collect::<BTreeSet<_>>().into_iter().collect()
    } else if let Some(args) = args("metrics") {
        let pattern = args.first().cloned().unwrap_or_default();
        let re = regex::Regex::new(&format!("^(?:{})$", if pattern.is_empty() { ".*" } else { &pattern }))
            .map_err(|e| ApiError::bad_field("payload.target", format!("invalid regex {pattern:?}: {e}")))?;
        metric_labels(&state, from, to).await?.into_keys().filter(|n| re.is_match(n)).collect()
    } else {
        return Err(bad());
    };
    Ok(Json(Value::Array(values.into_iter().map(|v| json!({"__text": v, "__value": v})).collect())))
}

/// `POST /grafana/json/tag-keys`.
pub async fn tag_keys(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let now = callscope_runtime::now_ms();
    let keys: BTreeSet<String> =
        metric_labels(&state, now - 6 * 3_600_000, now).await?.into_values().flatten().collect();
    Ok(Json(Value::Array(keys.into_iter().map(|k| json!({"type": "string", "text": k})).collect())))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TagValuesRequest {
    key: String,
}

/// `POST /grafana/json/tag-values`.
pub async fn tag_values(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let request: TagValuesRequest = body_json(&body)?;
    if request.key.is_empty() {
        return Err(ApiError::bad_field("key", "name the label"));
    }
    let now = callscope_runtime::now_ms();
    let values: BTreeSet<String> = series::matching(&state, &series_params(now - 6 * 3_600_000, now, None))
        .await?
        .into_iter()
        .filter_map(|mut s| s.remove(&request.key))
        .collect();
    Ok(Json(Value::Array(values.into_iter().map(|v| json!({"text": v})).collect())))
}

#[cfg(test)]
mod tests;
