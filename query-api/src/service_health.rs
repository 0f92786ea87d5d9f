//! The health of the phone platform's services, judged from their own telemetry, and one
//! report of everything:
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /monitoring/services` | every service seen in the last hour, with status and key figures |
//! | `GET /monitoring/health/{service}` | one service: figures, status and the reasons for it |
//! | `GET /monitoring/health/comprehensive` | callscope's own components and every service |
//!
//! Figures over the last `window` (default 5 minutes): spans (request rate, error ratio,
//! latency p95), metric samples (telemetry rate), the newest value of saturation gauges
//! (names with `queue`, `cpu`, `memory`, `disk`, `connections`, `pool`, `utilization`,
//! `saturation`), and the service's firing alerts. The status is the worst that applies:
//!
//! - `unknown`: no metric sample nor span in the last hour;
//! - `down`: silent for longer than `down_after` (default 2 minutes), or at least half of
//!   its requests failing (of 10 or more);
//! - `degraded`: more than 5 % of its requests failing (of 10 or more), latency p95 above
//!   `p95_slo_ms` (when given), a `*_percent` saturation gauge at 90 or more, or a firing
//!   alert labelled with the service;
//! - `healthy`: none of these.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use axum::Json;
use axum::extract::State;
use callscope_schemas::AlertStatus;
use callscope_schemas::alerting_status::AlertingStatus;
use datafusion::functions_aggregate::expr_fn::{approx_percentile_cont, count, last_value, max, sum};
use datafusion::logical_expr::case;
use datafusion::prelude::{DataFrame, Expr, cast, col, lit};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::series_query::date_of;
use crate::time_params::parse_duration;

/// How far back a service counts as seen.
const SEEN_WITHIN_MS: i64 = 3_600_000;
/// Requests needed before an error ratio judges a service.
const MIN_REQUESTS: i64 = 10;
const DEGRADED_ERROR_RATIO: f64 = 0.05;
const DOWN_ERROR_RATIO: f64 = 0.5;
const SATURATED_PERCENT: f64 = 90.0;
/// Gauge names that signal saturation.
const SATURATION_WORDS: [&str; 8] =
    ["queue", "cpu", "memory", "disk", "connections", "pool", "utilization", "saturation"];

#[derive(Debug, Default, Deserialize)]
pub struct HealthParams {
    window: Option<String>,
    down_after: Option<String>,
    p95_slo_ms: Option<f64>,
}

struct Judging {
    now: i64,
    window_ms: i64,
    down_after_ms: i64,
    p95_slo_ms: Option<f64>,
}

impl HealthParams {
    fn judging(&self) -> ApiResult<Judging> {
        let window_ms = self.window.as_deref().map(|w| parse_duration("window", w)).transpose()?.unwrap_or(300_000);
        let down_after_ms =
            self.down_after.as_deref().map(|w| parse_duration("down_after", w)).transpose()?.unwrap_or(120_000);
        if let Some(slo) = self.p95_slo_ms.filter(|s| !s.is_finite() || *s <= 0.0) {
            return Err(ApiError::bad_field("p95_slo_ms", format!("{slo} is not a positive number of milliseconds")));
        }
        if window_ms > SEEN_WITHIN_MS * 24 {
            return Err(ApiError::bad_field("window", "at most 24h"));
        }
        Ok(Judging { now: callscope_runtime::now_ms(), window_ms, down_after_ms, p95_slo_ms: self.p95_slo_ms })
    }
}

/// A saturation gauge's newest value.
#[derive(Debug, Clone, Serialize)]
pub struct Saturation {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// What the telemetry says about one service.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub last_seen_ms: Option<i64>,
    pub metric_samples_per_second: f64,
    pub requests: i64,
    pub request_rate_per_second: f64,
    pub errors: i64,
    pub error_ratio: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub saturation: Vec<Saturation>,
    pub firing_alerts: Vec<Value>,
}

fn utf8(c: &str) -> Expr {
    cast(col(c), DataType::Utf8).alias(c)
}

async fn table(state: &AppState, name: &str, time: Expr, from: Expr, from_ms: i64) -> ApiResult<DataFrame> {
    Ok(state
        .engine
        .session()
        .table(name)
        .await?
        .filter(time.gt_eq(from).and(col("date").gt_eq(lit(date_of(from_ms)))))?)
}

fn i64_at(batch: &arrow::array::RecordBatch, c: usize, i: usize) -> Option<i64> {
    let a = batch.column(c);
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::Int64 => Some(a.as_primitive::<Int64Type>().value(i)),
        DataType::Float64 => Some(a.as_primitive::<Float64Type>().value(i) as i64),
        _ => None,
    }
}

/// Figures for every service seen in the last hour, with the firing alerts of `alerting`
/// (the evaluator's published status).
async fn all_figures(state: &AppState, j: &Judging, alerting: &AlertingStatus) -> ApiResult<BTreeMap<String, Figures>> {
    let seen_from = j.now - SEEN_WITHIN_MS;
    let window_from = j.now - j.window_ms;
    let mut out: BTreeMap<String, Figures> = BTreeMap::new();
    let seen = |f: &mut Figures, t: i64| f.last_seen_ms = Some(f.last_seen_ms.map_or(t, |s| s.max(t)));

    // Metric samples: last seen, and how many in the window.
    let recent = case(col("timestamp_ms").gt_eq(lit(window_from))).when(lit(true), lit(1i64)).otherwise(lit(0i64))?;
    let df = table(state, "metrics", col("timestamp_ms"), lit(seen_from), seen_from)
        .await?
        .aggregate(vec![utf8("service")], vec![max(col("timestamp_ms")).alias("last"), sum(recent).alias("recent")])?;
    for batch in df.collect().await? {
        let services = batch.column(0).as_string::<i32>();
        for i in 0..batch.num_rows() {
            let f = out.entry(services.value(i).to_string()).or_default();
            if let Some(t) = i64_at(&batch, 1, i) {
                seen(f, t);
            }
            f.metric_samples_per_second = i64_at(&batch, 2, i).unwrap_or(0) as f64 * 1000.0 / j.window_ms as f64;
        }
    }

    // Spans: last seen (their end) over the hour; requests, errors and p95 in the window.
    let df = table(state, "spans", col("start_time_us"), lit(seen_from * 1000), seen_from)
        .await?
        .aggregate(vec![utf8("service")], vec![max(col("start_time_us") + col("duration_us")).alias("last_us")])?;
    for batch in df.collect().await? {
        let services = batch.column(0).as_string::<i32>();
        for i in 0..batch.num_rows() {
            if let Some(t) = i64_at(&batch, 1, i) {
                seen(out.entry(services.value(i).to_string()).or_default(), t / 1000);
            }
        }
    }
    let failed = case(col("status").eq(lit("error"))).when(lit(true), lit(1i64)).otherwise(lit(0i64))?;
    let df = table(state, "spans", col("start_time_us"), lit(window_from * 1000), window_from).await?.aggregate(
        vec![utf8("service")],
        vec![
            count(lit(1)).alias("requests"),
            sum(failed).alias("errors"),
            approx_percentile_cont(col("duration_us").sort(true, false), lit(0.95), None).alias("p95"),
        ],
    )?;
    for batch in df.collect().await? {
        let services = batch.column(0).as_string::<i32>();
        for i in 0..batch.num_rows() {
            let f = out.entry(services.value(i).to_string()).or_default();
            f.requests = i64_at(&batch, 1, i).unwrap_or(0);
            f.errors = i64_at(&batch, 2, i).unwrap_or(0);
            f.request_rate_per_second = f.requests as f64 * 1000.0 / j.window_ms as f64;
            f.error_ratio = (f.requests > 0).then(|| f.errors as f64 / f.requests as f64);
            f.latency_p95_ms = i64_at(&batch, 3, i).map(|us| us as f64 / 1000.0);
        }
    }

    // Saturation gauges: the newest value of each series in the window.
    let words: Vec<Expr> = SATURATION_WORDS.iter().map(|w| col("name").like(lit(format!("%{w}%")))).collect();
    let any_word = words.into_iter().reduce(Expr::or).unwrap_or(lit(false));
    let df = table(state, "metrics", col("timestamp_ms"), lit(window_from), window_from)
        .await?
        .filter(col("kind").eq(lit("gauge")).and(any_word))?
        .aggregate(
            vec![utf8("service"), utf8("name"), utf8("labels_key")],
            vec![last_value(col("value"), vec![col("timestamp_ms").sort(true, false)]).alias("value")],
        )?;
    for batch in df.collect().await? {
        let (services, names, keys) = (
            batch.column(0).as_string::<i32>(),
            batch.column(1).as_string::<i32>(),
            batch.column(2).as_string::<i32>(),
        );
        let values = batch.column(3).as_primitive::<Float64Type>();
        for i in 0..batch.num_rows() {
            let Some(f) = out.get_mut(services.value(i)) else { continue };
            f.saturation.push(Saturation {
                name: names.value(i).to_string(),
                labels: serde_json::from_str(keys.value(i)).unwrap_or_default(),
                value: values.value(i),
            });
        }
    }

    // Firing alerts labelled with the service.
    for a in alerting.alerts.iter().filter(|a| a.alert.status == AlertStatus::Firing) {
        if let Some(f) = a.alert.labels.get("service").and_then(|s| out.get_mut(s)) {
            f.firing_alerts.push(json!({
                "alertname": a.alert.labels.get("alertname"),
                "severity": a.alert.labels.get("severity"),
                "fingerprint": a.alert.fingerprint,
                "starts_at_ms": a.alert.starts_at_ms,
                "muted": a.muted,
                "acknowledged": a.acknowledged,
            }));
        }
    }
    Ok(out)
}

/// The status and its reasons.
fn judge(f: Option<&Figures>, j: &Judging) -> (&'static str, Vec<String>) {
    let Some(f) = f.filter(|f| f.last_seen_ms.is_some()) else {
        return ("unknown", vec!["no metric sample nor span in the last hour".into()]);
    };
    let mut down = Vec::new();
    let mut degraded = Vec::new();
    let silent_ms = j.now - f.last_seen_ms.unwrap_or(j.now);
    if silent_ms > j.down_after_ms {
        down.push(format!("no telemetry for {} s (down after {} s)", silent_ms / 1000, j.down_after_ms / 1000));
    }
    if let Some(ratio) = f.error_ratio.filter(|_| f.requests >= MIN_REQUESTS) {
        let text = format!("{:.1} % of {} requests failed", ratio * 100.0, f.requests);
        if ratio >= DOWN_ERROR_RATIO {
            down.push(text);
        } else if ratio > DEGRADED_ERROR_RATIO {
            degraded.push(text);
        }
    }
    if let (Some(p95), Some(slo)) = (f.latency_p95_ms, j.p95_slo_ms)
        && p95 > slo
    {
        degraded.push(format!("latency p95 {p95:.1} ms above the {slo} ms objective"));
    }
    for s in f.saturation.iter().filter(|s| s.name.ends_with("_percent") && s.value >= SATURATED_PERCENT) {
        degraded.push(format!("{} at {}", s.name, s.value));
    }
    for a in &f.firing_alerts {
        degraded.push(format!("alert {} firing", a["alertname"].as_str().unwrap_or("?")));
    }
    if !down.is_empty() {
        down.extend(degraded);
        ("down", down)
    } else if !degraded.is_empty() {
        ("degraded", degraded)
    } else {
        ("healthy", Vec::new())
    }
}

fn report(service: &str, f: Option<&Figures>, j: &Judging) -> Value {
    let (status, reasons) = judge(f, j);
    let mut v = serde_json::to_value(f.cloned().unwrap_or_default()).unwrap_or_default();
    v["service"] = json!(service);
    v["status"] = json!(status);
    v["reasons"] = json!(reasons);
    v["window_seconds"] = json!(j.window_ms / 1000);
    v
}

/// Every service's report with the default judging (the JSON data source's `services`).
pub async fn report_all(state: &AppState) -> ApiResult<Vec<Value>> {
    let j = HealthParams::default().judging()?;
    let figures = all_figures(state, &j, &crate::alerting::published_status(state).await?.0).await?;
    Ok(figures.iter().map(|(s, f)| report(s, Some(f), &j)).collect())
}

/// `GET /monitoring/services`.
pub async fn services(State(state): State<AppState>, ApiQuery(p): ApiQuery<HealthParams>) -> ApiResult<Json<Value>> {
    let j = p.judging()?;
    let figures = all_figures(&state, &j, &crate::alerting::published_status(&state).await?.0).await?;
    let list: Vec<Value> = figures.iter().map(|(s, f)| report(s, Some(f), &j)).collect();
    Ok(Json(json!({"services": list, "checked_at_ms": j.now})))
}

/// `GET /monitoring/health/{service}`.
pub async fn service(
    State(state): State<AppState>,
    ApiPath(service): ApiPath<String>,
    ApiQuery(p): ApiQuery<HealthParams>,
) -> ApiResult<Json<Value>> {
    let j = p.judging()?;
    let figures = all_figures(&state, &j, &crate::alerting::published_status(&state).await?.0).await?;
    Ok(Json(report(&service, figures.get(&service), &j)))
}

/// `GET /monitoring/health/comprehensive`: callscope's components (Kafka, workers and lag,
/// every storage tier, the alert evaluator and its leader, notification failures in the last
/// hour) and every service; the status is `ok` only when all of callscope is and no service
/// is down.
pub async fn comprehensive(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<HealthParams>,
) -> ApiResult<Json<Value>> {
    let j = p.judging()?;
    let components = crate::health::component_report(&state).await;
    let mut tiers = Vec::new();
    for (name, tier) in state.tiers.iter() {
        let mut probe = crate::health::tier_probe(tier).await;
        probe["tier"] = json!(name);
        tiers.push(probe);
    }
    let (alerting, stale) = crate::alerting::published_status(&state).await?;
    let failures = recent_failures(&state, j.now - SEEN_WITHIN_MS).await;
    let figures = all_figures(&state, &j, &alerting).await?;
    let services: Vec<Value> = figures.iter().map(|(s, f)| report(s, Some(f), &j)).collect();
    let mut problems: Vec<String> = Vec::new();
    if components["status"] != "ok" {
        problems.push("callscope's pipeline is degraded (see components)".into());
    }
    problems.extend(
        tiers
            .iter()
            .filter(|t| t["reachable"] == false)
            .map(|t| format!("tier {} unreachable", t["tier"].as_str().unwrap_or("?"))),
    );
    if stale {
        problems.push("no alert evaluator has published its status in the last 30 s".into());
    }
    if failures > 0 {
        problems.push(format!("{failures} notifications undelivered in the last hour"));
    }
    problems.extend(
        services
            .iter()
            .filter(|s| s["status"] == "down")
            .map(|s| format!("service {} is down", s["service"].as_str().unwrap_or("?"))),
    );
    let degraded = services.iter().filter(|s| s["status"] == "degraded").count();
    Ok(Json(json!({
        "status": if problems.is_empty() { "ok" } else { "degraded" },
        "problems": problems,
        "components": components,
        "tiers": tiers,
        "alerting": {
            "leader": alerting.instance,
            "updated_at_ms": alerting.updated_at_ms,
            "stale": stale,
            "rules": alerting.rules.len(),
            "firing": alerting.alerts.iter().filter(|a| a.alert.status == AlertStatus::Firing).count(),
            "rule_errors": alerting.rule_errors,
            "alertmanagers": alerting.alertmanagers,
            "notification_failures_last_hour": failures,
        },
        "services": services,
        "services_degraded": degraded,
        "checked_at_ms": j.now,
    })))
}

/// Notification failure records newer than `since_ms` (their keys start with the time).
async fn recent_failures(state: &AppState, since_ms: i64) -> usize {
    let keys = state.hot.list(&callscope_storage::CatalogDir::AlertFailures.path()).await.unwrap_or_default();
    let mut n = 0;
    for key in keys.iter().filter(|k| k.ends_with(".json")) {
        if let Ok(bytes) = state.hot.get(key).await
            && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
            && v["at_ms"].as_i64().is_some_and(|t| t >= since_ms)
        {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judging() -> Judging {
        Judging { now: 1_000_000, window_ms: 300_000, down_after_ms: 120_000, p95_slo_ms: Some(200.0) }
    }

    #[test]
    fn the_worst_signal_decides_and_every_reason_is_named() {
        let j = judging();
        assert_eq!(judge(None, &j).0, "unknown");
        let fine = Figures {
            last_seen_ms: Some(990_000),
            requests: 100,
            errors: 1,
            error_ratio: Some(0.01),
            ..Default::default()
        };
        assert_eq!(judge(Some(&fine), &j), ("healthy", vec![]));
        let mut slow = fine.clone();
        slow.latency_p95_ms = Some(250.0);
        slow.saturation.push(Saturation { name: "cpu_usage_percent".into(), labels: BTreeMap::new(), value: 95.0 });
        let (status, reasons) = judge(Some(&slow), &j);
        assert_eq!((status, reasons.len()), ("degraded", 2), "{reasons:?}");
        let mut failing = fine.clone();
        failing.errors = 60;
        failing.error_ratio = Some(0.6);
        assert_eq!(judge(Some(&failing), &j).0, "down");
        let mut few = failing.clone();
        few.requests = 5;
        assert_eq!(judge(Some(&few), &j).0, "healthy", "5 requests are too few to judge");
        let mut silent = fine;
        silent.last_seen_ms = Some(1_000_000 - 121_000);
        let (status, reasons) = judge(Some(&silent), &j);
        assert_eq!(status, "down");
        assert!(reasons[0].contains("121 s"), "{reasons:?}");
    }
}
