//! `/monitoring/alerts/smart`: create, read, replace and delete smart rules (validated,
//! 400 naming the field; stored in the hot tier; running evaluators load changes within
//! 2 s). The built-in rules are listed with `"builtin": true`; a PUT replaces one with a
//! stored copy and a DELETE of that copy restores it. And `/monitoring/alerts/smart/{id}/insights`: how often the rule fired, how long
//! its alerts took to resolve, flapping, a noise estimate, the alerts that fire with it,
//! and its current state.

use std::collections::BTreeMap;

use crate::extract::{ApiPath, ApiQuery};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use callscope_schemas::alerting_status::{RuleKind, RuleStatus};
use callscope_schemas::smart_rules::{SmartRule, builtin_smart_rules, merge_with_builtin_rules};
use callscope_storage::SmartRuleStore;
use datafusion::prelude::{col, lit};
use serde::Deserialize;
use serde_json::{Value, json};

use callscope_runtime::now_ms;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

fn store(state: &AppState) -> SmartRuleStore {
    SmartRuleStore::new(state.hot.clone())
}

fn storage_error(e: callscope_storage::StorageError) -> ApiError {
    ApiError::Unavailable(format!("smart rule store: {e}"))
}

fn parse(body: &[u8]) -> ApiResult<SmartRule> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    let rule: SmartRule =
        crate::ingest::typed(value).map_err(|(field, message)| ApiError::bad_field(field, message))?;
    rule.validate().map_err(|e| ApiError::bad_field(e.field, e.message))?;
    Ok(rule)
}

/// The rule with its current state from the evaluator's published rules.
fn with_state(published: &[RuleStatus], rule: &SmartRule) -> Value {
    let mut v = serde_json::to_value(rule).unwrap_or_default();
    let current = published.iter().find(|r| r.kind == RuleKind::Smart && r.id.as_deref() == Some(rule.id.as_str()));
    v["state"] = current.map_or(json!("unknown"), |r| json!(r.state));
    v["active"] = current.map_or(json!([]), |r| json!(r.active));
    v["last_error"] = current.map_or(Value::Null, |r| json!(r.last_error));
    v
}

fn builtins() -> ApiResult<Vec<SmartRule>> {
    builtin_smart_rules().map_err(|e| ApiError::internal(format!("the built-in smart rules do not parse: {e}")))
}

/// Every rule that can fire: the built-in ones (`"builtin": true`) unless a stored rule of
/// the same id replaces them, and the stored ones.
async fn effective(state: &AppState) -> ApiResult<Vec<SmartRule>> {
    Ok(merge_with_builtin_rules(builtins()?, store(state).list().await.map_err(storage_error)?))
}

/// A stored rule, else the built-in one of that id.
async fn find(state: &AppState, id: &str) -> ApiResult<Option<SmartRule>> {
    match store(state).get(id).await.map_err(storage_error)? {
        Some(rule) => Ok(Some(rule)),
        None => Ok(builtins()?.into_iter().find(|r| r.id == id)),
    }
}

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Value>>> {
    let rules = effective(&state).await?;
    let published = crate::alerting::published_rules(&state).await;
    Ok(Json(rules.iter().map(|r| with_state(&published, r)).collect()))
}

pub async fn get(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    match find(&state, &id).await? {
        Some(r) => Ok(Json(with_state(&crate::alerting::published_rules(&state).await, &r))),
        None => Err(ApiError::NotFound(format!("no smart rule {id}"))),
    }
}

pub async fn create(State(state): State<AppState>, body: Bytes) -> ApiResult<(StatusCode, Json<SmartRule>)> {
    let mut rule = parse(&body)?;
    if rule.id.is_empty() {
        rule.id = uuid::Uuid::new_v4().to_string();
    } else if rule.id.len() > 200 || !rule.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ApiError::bad_field("id", "1 to 200 letters, digits, - and _"));
    }
    rule.builtin = false;
    let store = store(&state);
    if find(&state, &rule.id).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "smart rule {} exists; PUT /monitoring/alerts/smart/{} replaces it",
            rule.id, rule.id
        )));
    }
    rule.created_at_ms = now_ms();
    rule.updated_at_ms = rule.created_at_ms;
    store.put(&rule).await.map_err(storage_error)?;
    Ok((StatusCode::CREATED, Json(rule)))
}

pub async fn replace(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> ApiResult<Json<SmartRule>> {
    let mut rule = parse(&body)?;
    if !rule.id.is_empty() && rule.id != id {
        return Err(ApiError::bad_field("id", format!("the body names {:?} but the path {id:?}", rule.id)));
    }
    // A built-in rule is replaced by a stored copy (DELETE brings the built-in back).
    let Some(existing) = find(&state, &id).await? else {
        return Err(ApiError::NotFound(format!("no smart rule {id}")));
    };
    rule.id = id;
    rule.builtin = false;
    rule.created_at_ms = if existing.builtin { now_ms() } else { existing.created_at_ms };
    rule.updated_at_ms = now_ms();
    store(&state).put(&rule).await.map_err(storage_error)?;
    Ok(Json(rule))
}

pub async fn delete(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<StatusCode> {
    if store(&state).delete(&id).await.map_err(storage_error)? {
        Ok(StatusCode::NO_CONTENT)
    } else if builtins()?.iter().any(|r| r.id == id) {
        Err(ApiError::Conflict(format!(
            "{id} is a built-in rule: PUT a copy with \"enabled\": false to turn it off (DELETE of that copy restores it)"
        )))
    } else {
        Err(ApiError::NotFound(format!("no smart rule {id}")))
    }
}

#[derive(Debug, Deserialize)]
pub struct InsightParams {
    /// How far back to look (default 7d).
    window: Option<String>,
}

/// Alert events since `from`: (alert name, status, service, starts, ends, labels).
type EventRow = (String, String, String, i64, Option<i64>, BTreeMap<String, String>);

async fn events_since(state: &AppState, from: i64) -> ApiResult<Vec<EventRow>> {
    let df = state
        .engine
        .session()
        .table("alerts")
        .await
        .map_err(|e| ApiError::internal(format!("alerts table: {e}")))?
        .filter(col("starts_at_ms").gt_eq(lit(from)))
        .and_then(|d| d.select_columns(&["alert_name", "status", "service", "starts_at_ms", "ends_at_ms", "labels"]))
        .and_then(|d| d.limit(0, Some(200_000)))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let batches = df.collect().await.map_err(|e| ApiError::internal(format!("insights query: {e}")))?;
    Ok(crate::json_rows::rows(&batches)
        .into_iter()
        .map(|r| {
            let s = |i: usize| r.get(i).and_then(Value::as_str).unwrap_or_default().to_string();
            let labels = r
                .get(5)
                .and_then(Value::as_object)
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
                .unwrap_or_default();
            (s(0), s(1), s(2), r.get(3).and_then(Value::as_i64).unwrap_or(0), r.get(4).and_then(Value::as_i64), labels)
        })
        .collect())
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).copied()
}

/// Alerts resolved within this long count as noise.
const SHORT_LIVED_MS: i64 = 5 * 60_000;
/// Other alerts starting this close to one of the rule's are correlated with it.
const CORRELATION_MS: i64 = 5 * 60_000;

pub async fn insights(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(p): ApiQuery<InsightParams>,
) -> ApiResult<Json<Value>> {
    let Some(rule) = find(&state, &id).await? else {
        return Err(ApiError::NotFound(format!("no smart rule {id}")));
    };
    let window_ms = match p.window.as_deref() {
        None => 7 * 24 * 3_600_000,
        Some(w) => crate::time_params::parse_duration("window", w)?,
    };
    let now = now_ms();
    let events = events_since(&state, now - window_ms).await?;
    let mine = |e: &&EventRow| e.0 == rule.name && e.5.get("rule_id").is_none_or(|r| *r == rule.id);
    let firing: Vec<&EventRow> = events.iter().filter(mine).filter(|e| e.1 == "firing").collect();
    let resolved: Vec<&EventRow> = events.iter().filter(mine).filter(|e| e.1 == "resolved").collect();
    let mut durations: Vec<f64> =
        resolved.iter().filter_map(|e| e.4.map(|end| (end - e.3) as f64 / 1000.0)).filter(|d| *d >= 0.0).collect();
    durations.sort_by(f64::total_cmp);
    let short_lived = resolved.iter().filter(|e| e.4.is_some_and(|end| end - e.3 < SHORT_LIVED_MS)).count();
    let flapping = events.iter().filter(mine).filter(|e| e.5.get("flapping").is_some_and(|f| f == "true")).count();
    let fired = firing.len();
    let noise = if fired == 0 { 0.0 } else { (short_lived.max(flapping) as f64 / fired as f64).min(1.0) };
    let mut correlated: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for other in events.iter().filter(|e| e.1 == "firing" && e.0 != rule.name) {
        if let Some(mine) = firing.iter().find(|f| (f.3 - other.3).abs() <= CORRELATION_MS) {
            let entry = correlated.entry(other.0.clone()).or_default();
            entry.0 += 1;
            if mine.2 == other.2 {
                entry.1 += 1;
            }
        }
    }
    let mut correlated: Vec<Value> = correlated
        .into_iter()
        .map(|(name, (n, same))| json!({"alertname": name, "fired_together": n, "same_service": same}))
        .collect();
    correlated.sort_by(|a, b| b["fired_together"].as_u64().cmp(&a["fired_together"].as_u64()));
    correlated.truncate(10);
    let current = with_state(&crate::alerting::published_rules(&state).await, &rule);
    let per_day = fired as f64 / (window_ms as f64 / 86_400_000.0);
    Ok(Json(json!({
        "id": rule.id,
        "name": rule.name,
        "window_ms": window_ms,
        "fired": fired,
        "fired_per_day": per_day,
        "resolved": resolved.len(),
        "time_to_resolve_seconds": {"median": quantile(&durations, 0.5), "p90": quantile(&durations, 0.9), "max": durations.last()},
        "flapping": flapping,
        "short_lived": short_lived,
        "noise_estimate": noise,
        "noise_hint": if noise > 0.5 { "most of its alerts resolve within 5 minutes or flap: raise `for`, add a resolve level, or widen the window" } else { "" },
        "correlated": correlated,
        "state": current["state"],
        "active": current["active"],
    })))
}
