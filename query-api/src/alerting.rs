//! Alerting endpoints:
//! - `GET /monitoring/alerts`: active alerts (firing, and resolved ones not yet notified),
//!   each with its receiver and whether a silence or inhibition mutes it;
//! - `GET /monitoring/alerts/history?from=&to=&alertname=&service=&status=&limit=`: alert
//!   events (transitions of callscope's rules and alerts the services sent) from the
//!   `alerts` table;
//! - `GET/POST /monitoring/alerts/silences`, `GET/DELETE /monitoring/alerts/silences/{id}`:
//!   silences in Alertmanager's API v2 shape (DELETE expires, as Alertmanager does);
//! - `GET /monitoring/alertmanager/rules`: the loaded Prometheus-format rules and their
//!   state;
//! - `GET /monitoring/alertmanager/health`: reachability and version of the configured
//!   Alertmanagers, as the evaluator last probed them.
//!
//! Rules, states and active alerts come from the status object the leading evaluator
//! publishes every 2 s; `stale` says when it is older than 30 s.

use crate::extract::{ApiPath, ApiQuery};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use callscope_schemas::AlertStatus;
use callscope_schemas::alerting_status::{ActiveAlert, AlertingStatus, RuleStatus};
use callscope_storage::{CatalogKey, Silence, SilenceMatcher, SilenceStore};
use datafusion::prelude::{col, lit};
use serde::Deserialize;
use serde_json::{Value, json};

use callscope_runtime::now_ms;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::time_params::parse_time;

const STALE_AFTER_MS: i64 = 30_000;

fn rfc3339(ms: i64) -> String {
    callscope_schemas::text_formats::rfc3339_ms(ms).unwrap_or_default()
}

/// The status the leading evaluator published.
struct Published {
    status: AlertingStatus,
    /// `None` when no evaluator has published yet.
    updated_at_ms: Option<i64>,
    /// Older than [`STALE_AFTER_MS`] (or never published).
    stale: bool,
}

/// The evaluator's published status, or an empty one when none runs yet.
async fn status(state: &AppState) -> ApiResult<Published> {
    match state.hot.get(&CatalogKey::AlertingStatus.path()).await {
        Ok(bytes) => {
            let status: AlertingStatus = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::internal(format!("alerting status unreadable: {e}")))?;
            let stale = now_ms() - status.updated_at_ms > STALE_AFTER_MS;
            Ok(Published { updated_at_ms: Some(status.updated_at_ms), status, stale })
        }
        Err(callscope_storage::StorageError::ObjectStore(object_store::Error::NotFound { .. })) => {
            Ok(Published { status: AlertingStatus::default(), updated_at_ms: None, stale: true })
        }
        Err(e) => Err(ApiError::Unavailable(format!("alerting status: {e}"))),
    }
}

/// The evaluator's published status and whether it is stale (older than 30 s, or none
/// published yet).
pub async fn published_status(state: &AppState) -> ApiResult<(AlertingStatus, bool)> {
    status(state).await.map(|p| (p.status, p.stale))
}

/// The rules in the published status (empty when none is published).
pub async fn published_rules(state: &AppState) -> Vec<RuleStatus> {
    status(state).await.map(|p| p.status.rules).unwrap_or_default()
}

pub async fn active_alerts(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let p = status(&state).await?;
    Ok(Json(json!({
        "incidents": incidents(&p.status.alerts),
        "alerts": p.status.alerts,
        "updated_at_ms": p.updated_at_ms,
        "stale": p.stale,
    })))
}

/// Alerts started this close together on one service belong to one incident.
const INCIDENT_WINDOW_MS: u64 = 5 * 60_000;

/// Groups firing alerts into incidents: alerts of one service that started within 5
/// minutes of each other, and alerts linked by inhibition (a root cause and the symptoms it
/// mutes). The root cause is the inhibiting alert, else the earliest critical one.
pub fn incidents(alerts: &[ActiveAlert]) -> Vec<Value> {
    let firing: Vec<&ActiveAlert> = alerts.iter().filter(|a| a.alert.status == AlertStatus::Firing).collect();
    let n = firing.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], i: usize) -> usize {
        let mut i = i;
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    let label = |a: &ActiveAlert, name: &str| a.alert.labels.get(name).cloned();
    let index: std::collections::HashMap<&str, usize> =
        firing.iter().enumerate().map(|(i, a)| (a.alert.fingerprint.as_str(), i)).collect();
    let union = |p: &mut Vec<usize>, a: usize, b: usize| {
        let (ra, rb) = (find(p, a), find(p, b));
        if ra != rb {
            p[ra] = rb;
        }
    };
    for i in 0..n {
        for j in i + 1..n {
            let same_service = label(firing[i], "service") == label(firing[j], "service");
            let close = firing[i].alert.starts_at_ms.abs_diff(firing[j].alert.starts_at_ms) <= INCIDENT_WINDOW_MS;
            if same_service && close {
                union(&mut parent, i, j);
            }
        }
        if let Some(&j) = firing[i].inhibited_by().and_then(|source| index.get(source)) {
            union(&mut parent, i, j);
        }
    }
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = std::collections::BTreeMap::new();
    for i in 0..n {
        let root = find(&mut parent, i);
        groups.entry(root).or_default().push(i);
    }
    groups
        .into_values()
        .map(|members| {
            let inhibitors: Vec<&str> = members.iter().filter_map(|&i| firing[i].inhibited_by()).collect();
            let earliest = |candidates: &mut dyn Iterator<Item = usize>| {
                candidates.min_by_key(|&i| firing[i].alert.starts_at_ms)
            };
            let root = members
                .iter()
                .copied()
                .find(|&i| inhibitors.contains(&firing[i].alert.fingerprint.as_str()))
                .or_else(|| {
                    earliest(&mut members.iter().copied().filter(|&i| label(firing[i], "severity").as_deref() == Some("critical")))
                })
                .or_else(|| earliest(&mut members.iter().copied()))
                .unwrap_or(0);
            let mut services: Vec<String> = members.iter().filter_map(|&i| label(firing[i], "service")).collect();
            services.sort_unstable();
            services.dedup();
            let fp = |i: usize| firing[i].alert.fingerprint.clone();
            json!({
                "id": fp(root),
                "root_cause": {"fingerprint": fp(root), "alertname": label(firing[root], "alertname")},
                "alerts": members.iter().map(|&i| json!({"fingerprint": fp(i), "alertname": label(firing[i], "alertname"), "service": label(firing[i], "service")})).collect::<Vec<_>>(),
                "services": services,
                "started_at_ms": members.iter().map(|&i| firing[i].alert.starts_at_ms).min(),
            })
        })
        .collect()
}

pub async fn rules(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let p = status(&state).await?;
    Ok(Json(json!({
        "rules": p.status.rules,
        "rule_errors": p.status.rule_errors,
        "event_time_ms": p.updated_at_ms.map(|_| p.status.event_time_ms),
        "updated_at_ms": p.updated_at_ms,
        "stale": p.stale,
    })))
}

pub async fn alertmanager_health(State(state): State<AppState>) -> ApiResult<(StatusCode, Json<Value>)> {
    let p = status(&state).await?;
    let ams = &p.status.alertmanagers;
    let healthy = !ams.is_empty() && ams.iter().all(|a| a.reachable);
    let code = if ams.is_empty() || healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let overall = if ams.is_empty() {
        "not_configured"
    } else if healthy {
        "ok"
    } else {
        "unreachable"
    };
    Ok((
        code,
        Json(json!({"status": overall, "alertmanagers": ams, "updated_at_ms": p.updated_at_ms, "stale": p.stale})),
    ))
}

#[derive(Debug, Deserialize)]
pub struct FailureParams {
    limit: Option<usize>,
}

/// `GET /monitoring/alerts/failures?limit=`: notifications that could not be delivered
/// after their retries, newest first (receiver, channel, group, alerts, attempts, error;
/// never a URL or secret).
pub async fn failures(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<FailureParams>,
) -> ApiResult<Json<Vec<Value>>> {
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let keys = state
        .hot
        .list(&callscope_storage::CatalogDir::AlertFailures.path())
        .await
        .map_err(|e| ApiError::Unavailable(format!("failure records: {e}")))?;
    let mut out = Vec::new();
    for key in keys.iter().rev().filter(|k| k.ends_with(".json")).take(limit) {
        if let Ok(bytes) = state.hot.get(key).await
            && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
        {
            out.push(v);
        }
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
pub struct HistoryParams {
    from: Option<String>,
    to: Option<String>,
    alertname: Option<String>,
    service: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

pub async fn history(State(state): State<AppState>, ApiQuery(p): ApiQuery<HistoryParams>) -> ApiResult<Json<Value>> {
    let now = now_ms();
    let to = p.to.as_deref().map(|t| parse_time("to", t, now)).transpose()?.unwrap_or(now);
    let from = p.from.as_deref().map(|t| parse_time("from", t, now)).transpose()?.unwrap_or(to - 24 * 3_600_000);
    if from > to {
        return Err(ApiError::bad_field("from", "from is after to"));
    }
    let limit = p.limit.unwrap_or(1000).clamp(1, 10_000);
    let mut df = state
        .engine
        .session()
        .table("alerts")
        .await
        .map_err(|e| ApiError::internal(format!("alerts table: {e}")))?
        .filter(
            col("starts_at_ms").lt_eq(lit(to)).and(col("ends_at_ms").is_null().or(col("ends_at_ms").gt_eq(lit(from)))),
        )
        .map_err(|e| ApiError::internal(e.to_string()))?;
    for (column, value) in [("alert_name", &p.alertname), ("service", &p.service), ("status", &p.status)] {
        if let Some(v) = value {
            df = df.filter(col(column).eq(lit(v.as_str()))).map_err(|e| ApiError::internal(e.to_string()))?;
        }
    }
    let df = df
        .sort(vec![col("starts_at_ms").sort(false, false), col("kafka_offset").sort(false, false)])
        .and_then(|d| d.limit(0, Some(limit)))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let schema = df.schema().clone();
    let batches = df.collect().await.map_err(|e| ApiError::internal(format!("history query: {e}")))?;
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let events: Vec<Value> = crate::json_rows::rows(&batches)
        .into_iter()
        .map(|row| Value::Object(names.iter().cloned().zip(row).collect()))
        .collect();
    Ok(Json(json!({"from": from, "to": to, "events": events})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: String,
    #[serde(default)]
    comment: String,
}

/// `POST /monitoring/alerts/{fingerprint}/ack`: acknowledges the alert's current firing
/// episode (its escalation stops); `DELETE` takes the acknowledgement back.
pub async fn acknowledge(
    State(state): State<AppState>,
    ApiPath(fingerprint): ApiPath<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    let b: AckBody = crate::ingest::typed(value).map_err(|(field, message)| ApiError::bad_field(field, message))?;
    if b.by.trim().is_empty() {
        return Err(ApiError::bad_field("by", "who acknowledges"));
    }
    let p = status(&state).await?;
    let alert = p
        .status
        .alerts
        .iter()
        .find(|a| a.alert.fingerprint == fingerprint && a.alert.status == AlertStatus::Firing)
        .ok_or_else(|| ApiError::NotFound(format!("no firing alert with fingerprint {fingerprint}")))?;
    let ack = callscope_storage::Ack {
        fingerprint: fingerprint.clone(),
        starts_at_ms: alert.alert.starts_at_ms,
        by: b.by,
        comment: b.comment,
        at_ms: now_ms(),
    };
    callscope_storage::AckStore::new(state.hot.clone())
        .put(&ack)
        .await
        .map_err(|e| ApiError::Unavailable(format!("ack store: {e}")))?;
    Ok(Json(serde_json::to_value(&ack).unwrap_or_default()))
}

pub async fn unacknowledge(
    State(state): State<AppState>,
    ApiPath(fingerprint): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let deleted = callscope_storage::AckStore::new(state.hot.clone())
        .delete(&fingerprint)
        .await
        .map_err(|e| ApiError::Unavailable(format!("ack store: {e}")))?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no acknowledgement for {fingerprint}")))
    }
}

/// A silence in Alertmanager's API v2 shape.
fn silence_json(s: &Silence) -> Value {
    json!({
        "id": s.id,
        "status": {"state": s.state(now_ms())},
        "updatedAt": rfc3339(s.updated_at_ms),
        "matchers": s.matchers,
        "startsAt": rfc3339(s.starts_at_ms),
        "endsAt": rfc3339(s.ends_at_ms),
        "createdBy": s.created_by,
        "comment": s.comment,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SilenceBody {
    #[serde(default)]
    id: Option<String>,
    matchers: Vec<SilenceMatcher>,
    #[serde(default)]
    starts_at: Option<String>,
    ends_at: String,
    created_by: String,
    comment: String,
}

fn store(state: &AppState) -> SilenceStore {
    SilenceStore::new(state.hot.clone())
}

fn storage_error(e: callscope_storage::StorageError) -> ApiError {
    ApiError::Unavailable(format!("silence store: {e}"))
}

/// Checks a silence body; the error names the field.
fn silence_from(body: &[u8], now: i64) -> ApiResult<Silence> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    let b: SilenceBody = crate::ingest::typed(value).map_err(|(field, message)| ApiError::bad_field(field, message))?;
    if b.matchers.is_empty() {
        return Err(ApiError::bad_field("matchers", "a silence needs at least one matcher"));
    }
    let mut matches_everything = true;
    for (i, m) in b.matchers.iter().enumerate() {
        let field = format!("matchers[{i}]");
        if m.name.trim().is_empty() {
            return Err(ApiError::bad_field(format!("{field}.name"), "empty label name"));
        }
        let matches_empty = if m.is_regex {
            let re = regex::Regex::new(&format!("^(?:{})$", m.value))
                .map_err(|e| ApiError::bad_field(format!("{field}.value"), format!("not a regular expression: {e}")))?;
            re.is_match("") == m.is_equal
        } else {
            (m.value.is_empty()) == m.is_equal
        };
        matches_everything &= matches_empty;
    }
    if matches_everything {
        return Err(ApiError::bad_field(
            "matchers",
            "at least one matcher must not match the empty string (this silence would mute everything)",
        ));
    }
    if b.created_by.trim().is_empty() {
        return Err(ApiError::bad_field("createdBy", "who creates the silence"));
    }
    if b.comment.trim().is_empty() {
        return Err(ApiError::bad_field("comment", "why the silence exists"));
    }
    let starts = b.starts_at.as_deref().map(|t| parse_time("startsAt", t, now)).transpose()?.unwrap_or(now);
    let ends = parse_time("endsAt", &b.ends_at, now)?;
    if ends <= starts {
        return Err(ApiError::bad_field("endsAt", "must be after startsAt"));
    }
    if ends <= now {
        return Err(ApiError::bad_field("endsAt", "is in the past"));
    }
    Ok(Silence {
        id: b.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        matchers: b.matchers,
        starts_at_ms: starts,
        ends_at_ms: ends,
        created_by: b.created_by,
        comment: b.comment,
        updated_at_ms: now,
    })
}

pub async fn list_silences(State(state): State<AppState>) -> ApiResult<Json<Vec<Value>>> {
    Ok(Json(store(&state).list().await.map_err(storage_error)?.iter().map(silence_json).collect()))
}

pub async fn get_silence(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    match store(&state).get(&id).await.map_err(storage_error)? {
        Some(s) => Ok(Json(silence_json(&s))),
        None => Err(ApiError::NotFound(format!("no silence {id}"))),
    }
}

pub async fn create_silence(State(state): State<AppState>, body: Bytes) -> ApiResult<(StatusCode, Json<Value>)> {
    let silence = silence_from(&body, now_ms())?;
    let store = store(&state);
    if let Some(existing) = store.get(&silence.id).await.map_err(storage_error)?
        && existing.state(now_ms()) == callscope_storage::alerting::SilenceState::Expired
    {
        return Err(ApiError::Conflict(format!("silence {} has expired; create a new one", silence.id)));
    }
    store.put(&silence).await.map_err(storage_error)?;
    Ok((StatusCode::OK, Json(json!({"silenceID": silence.id}))))
}

pub async fn expire_silence(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<StatusCode> {
    if store(&state).expire(&id, now_ms()).await.map_err(storage_error)? {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::NotFound(format!("no silence {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incidents_group_by_service_time_and_inhibition() {
        let a = |fp: &str, name: &str, service: &str, severity: &str, start: i64, muted: Option<&str>| {
            serde_json::from_value::<ActiveAlert>(json!({
                "fingerprint": fp, "status": "firing", "starts_at_ms": start, "muted": muted,
                "receiver": "r", "acknowledged": false, "annotations": {}, "ends_at_ms": null, "value": null,
                "source": "rule", "labels": {"alertname": name, "service": service, "severity": severity}
            }))
            .expect("an active alert")
        };
        let alerts = vec![
            a("1", "ServiceDown", "asr", "critical", 0, None),
            a("2", "ASRSlow", "asr", "warning", 60_000, Some("inhibited by 1")),
            a("3", "CallFailures", "gw", "critical", 30_000, None),
            a("4", "TTSSlow", "tts", "warning", 0, Some("inhibited by 1")),
            a("5", "QueueLong", "gw", "warning", 3_600_000, None),
        ];
        let incidents = incidents(&alerts);
        let sets: Vec<Vec<&str>> = incidents
            .iter()
            .map(|i| i["alerts"].as_array().expect("alerts").iter().filter_map(|a| a["fingerprint"].as_str()).collect())
            .collect();
        assert_eq!(sets.len(), 3, "{incidents:?}");
        let asr = incidents.iter().find(|i| i["services"].as_array().is_some_and(|s| s.len() == 2)).expect("asr+tts");
        assert_eq!(asr["root_cause"]["alertname"], "ServiceDown");
    }

    #[test]
    fn silence_bodies_are_checked_field_by_field() {
        let now = 1_700_000_000_000;
        let ok = br#"{"matchers":[{"name":"service","value":"gw","isRegex":false}],"endsAt":"2023-11-14T23:13:20Z","createdBy":"ops","comment":"deploy"}"#;
        let s = silence_from(ok, now).expect("valid");
        assert_eq!((s.starts_at_ms, s.ends_at_ms), (now, now + 3_600_000));
        assert!(s.matchers[0].is_equal, "isEqual defaults to true");
        let field = |body: &str| match silence_from(body.as_bytes(), now) {
            Err(ApiError::BadRequest { field, .. }) => field.unwrap_or_default(),
            other => panic!("{body}: {other:?}"),
        };
        assert_eq!(
            field(r#"{"matchers":[],"endsAt":"2023-11-14T23:13:20Z","createdBy":"a","comment":"b"}"#),
            "matchers"
        );
        assert_eq!(
            field(
                r#"{"matchers":[{"name":"x","value":".*","isRegex":true}],"endsAt":"2023-11-14T23:13:20Z","createdBy":"a","comment":"b"}"#
            ),
            "matchers"
        );
        assert_eq!(
            field(
                r#"{"matchers":[{"name":"x","value":"(","isRegex":true}],"endsAt":"2023-11-14T23:13:20Z","createdBy":"a","comment":"b"}"#
            ),
            "matchers[0].value"
        );
        assert_eq!(
            field(
                r#"{"matchers":[{"name":"x","value":"y"}],"endsAt":"2023-11-14T21:00:00Z","createdBy":"a","comment":"b"}"#
            ),
            "endsAt"
        );
        assert_eq!(
            field(
                r#"{"matchers":[{"name":"x","value":"y"}],"endsAt":"2023-11-14T23:13:20Z","createdBy":"","comment":"b"}"#
            ),
            "createdBy"
        );
        assert_eq!(
            field(r#"{"matchers":[{"name":"x","value":"y"}],"endsAt":"soon","createdBy":"a","comment":"b"}"#),
            "endsAt"
        );
    }
}
