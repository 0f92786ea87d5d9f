//! `/monitoring/storage/…`: what the tiers hold and cost, the lifecycle policies (create,
//! replace, delete, trigger), their jobs, legal holds and the deletion log.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use callscope_storage::StorageError;
use callscope_storage::catalog::CatalogDir;
use callscope_storage::lifecycle::Lifecycle;
use callscope_storage::lifecycle::holds::LegalHold;
use callscope_storage::lifecycle::policy::Policy;
use callscope_storage::lifecycle::retention::DeletionRecord;
use callscope_storage::lifecycle::stores::PolicyStore;
use callscope_storage::{FileCatalog, usage};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};

fn unavailable(e: StorageError) -> ApiError {
    ApiError::Unavailable(format!("storage: {e}"))
}

fn catalog(state: &AppState) -> FileCatalog {
    FileCatalog::new(state.tiers.clone())
}

fn lifecycle(state: &AppState) -> Lifecycle {
    Lifecycle::new(catalog(state), format!("query-api-{}", std::process::id()))
}

fn policies(state: &AppState) -> PolicyStore {
    PolicyStore::new(state.tiers.hot.clone())
}

/// `GET /monitoring/storage/statistics`: per tier and table, and totals per tier.
pub async fn statistics(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let usage = usage::collect(&catalog(&state)).await.map_err(unavailable)?;
    let mut totals: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for u in &usage {
        let t = totals.entry(u.tier.clone()).or_default();
        t.0 += u.files;
        t.1 += u.rows;
        t.2 += u.bytes;
    }
    let tiers: Vec<Value> = totals
        .into_iter()
        .map(|(tier, (files, rows, bytes))| json!({"tier": tier, "files": files, "rows": rows, "bytes": bytes}))
        .collect();
    Ok(Json(json!({ "tables": usage, "tiers": tiers })))
}

/// `GET /monitoring/storage/tiers`: each tier's location (no credentials), whether it
/// answers, and what it holds.
pub async fn tiers(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let usage = usage::collect(&catalog(&state)).await.map_err(unavailable)?;
    let mut out = Vec::new();
    for (name, tier) in state.tiers.iter() {
        let health = crate::health::tier_probe(tier).await;
        let mine = usage.iter().filter(|u| u.tier == name.as_str());
        let (files, rows, bytes) = mine.fold((0, 0, 0), |(f, r, b), u| (f + u.files, r + u.rows, b + u.bytes));
        out.push(json!({
            "name": name,
            "url": tier.dir_url(""),
            "health": health,
            "files": files,
            "rows": rows,
            "bytes": bytes,
            "usd_per_gb_month": state.costs.usd_per_gb_month.get(&name),
        }));
    }
    Ok(Json(json!(out)))
}

/// `GET /monitoring/storage/costs[?policy=ID]`: current and projected monthly cost.
pub async fn costs(State(state): State<AppState>, ApiQuery(q): ApiQuery<PolicyQuery>) -> ApiResult<Json<Value>> {
    let all = policies(&state).list().await.map_err(unavailable)?;
    let id = q.policy.unwrap_or_else(|| Policy::default_policy().id);
    let policy = all.into_iter().find(|p| p.id == id).ok_or_else(|| ApiError::NotFound(format!("no policy {id:?}")))?;
    let catalog = catalog(&state);
    let usage = usage::collect(&catalog).await.map_err(unavailable)?;
    let ingest = usage::ingest_last_day(&catalog, callscope_runtime::now_ms()).await.map_err(unavailable)?;
    Ok(Json(json!(state.costs.report(&usage, &policy, &ingest))))
}

#[derive(Debug, Deserialize)]
pub struct PolicyQuery {
    pub policy: Option<String>,
}

fn parse_policy(body: &[u8]) -> ApiResult<Policy> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    let policy: Policy = crate::ingest::typed(value).map_err(|(field, message)| ApiError::bad_field(field, message))?;
    policy.validate().map_err(|e| ApiError::bad_field(e.field, e.reason))?;
    Ok(policy)
}

pub async fn list_policies(State(state): State<AppState>) -> ApiResult<Json<Vec<Policy>>> {
    Ok(Json(policies(&state).list().await.map_err(unavailable)?))
}

pub async fn get_policy(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Policy>> {
    policies(&state)
        .get(&id)
        .await
        .map_err(unavailable)?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no policy {id:?}")))
}

pub async fn create_policy(State(state): State<AppState>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let policy = parse_policy(&body)?;
    let store = policies(&state);
    if store.get(&policy.id).await.map_err(unavailable)?.is_some() {
        return Err(ApiError::Conflict(format!(
            "policy {:?} exists; PUT /monitoring/storage/policies/{} replaces it",
            policy.id, policy.id
        )));
    }
    store.put(&policy).await.map_err(unavailable)?;
    Ok((StatusCode::CREATED, Json(policy)))
}

pub async fn replace_policy(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> ApiResult<Json<Policy>> {
    let policy = parse_policy(&body)?;
    if policy.id != id {
        return Err(ApiError::bad_field("id", format!("the body names {:?} but the path {id:?}", policy.id)));
    }
    policies(&state).put(&policy).await.map_err(unavailable)?;
    Ok(Json(policy))
}

pub async fn delete_policy(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<StatusCode> {
    if policies(&state).delete(&id).await.map_err(unavailable)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no stored policy {id:?} (the built-in default cannot be deleted; store it with \"enabled\": false)"
        )))
    }
}

#[derive(Debug, Deserialize)]
pub struct TriggerQuery {
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /monitoring/storage/policies/{id}/trigger[?dry_run=true]`: starts a job now in
/// this process; 202 with its id (follow it at `/monitoring/storage/jobs/{id}`).
pub async fn trigger(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TriggerQuery>,
) -> ApiResult<impl IntoResponse> {
    let policy = policies(&state)
        .get(&id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::NotFound(format!("no policy {id:?}")))?;
    let now = callscope_runtime::now_ms();
    let job_id = Lifecycle::new_job_id(&policy.id, now);
    let lifecycle = lifecycle(&state);
    let (job, dry_run) = (job_id.clone(), q.dry_run);
    // On a thread and runtime of its own, like the schedule's jobs: one core at most, and
    // never the API's or the workers' threads.
    tokio::task::spawn_blocking(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => return tracing::error!(job = %job, error = %e, "cannot start a runtime for the job"),
        };
        if let Err(e) = runtime.block_on(lifecycle.run(&policy, &job, dry_run, now, &mut |_| {})) {
            tracing::warn!(job = %job, error = %e, "triggered lifecycle job failed");
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"job_id": job_id, "url": format!("/monitoring/storage/jobs/{job_id}"), "dry_run": dry_run})),
    ))
}

pub async fn list_jobs(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let jobs = lifecycle(&state).jobs().list().await.map_err(unavailable)?;
    Ok(Json(json!(jobs)))
}

pub async fn get_job(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    let job = lifecycle(&state).jobs().get(&id).await.map_err(unavailable)?;
    let job = job.ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
    let progress = job.progress();
    let mut value = json!(job);
    value["progress"] = json!(progress);
    Ok(Json(value))
}

/// The body of `POST /monitoring/storage/holds`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewHold {
    pub id: Option<String>,
    #[serde(default)]
    pub tables: Vec<String>,
    /// Times as in every other parameter (RFC 3339, unix ms, `now-7d`).
    pub start: Option<String>,
    pub end: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub reason: String,
}

pub async fn list_holds(State(state): State<AppState>) -> ApiResult<Json<Vec<LegalHold>>> {
    Ok(Json(lifecycle(&state).holds().list().await.map_err(unavailable)?))
}

pub async fn get_hold(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<LegalHold>> {
    lifecycle(&state)
        .holds()
        .get(&id)
        .await
        .map_err(unavailable)?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no legal hold {id:?}")))
}

pub async fn create_hold(State(state): State<AppState>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    let new: NewHold = crate::ingest::typed(value).map_err(|(field, message)| ApiError::bad_field(field, message))?;
    let now = callscope_runtime::now_ms();
    if new.reason.trim().is_empty() {
        return Err(ApiError::bad_field("reason", "a legal hold needs a reason"));
    }
    for (i, table) in new.tables.iter().enumerate() {
        if callscope_storage::DataTable::from_name(table).is_none() {
            return Err(ApiError::bad_field(format!("tables[{i}]"), format!("unknown table {table:?}")));
        }
    }
    let start_ms = new.start.as_deref().map(|t| crate::time_params::parse_time("start", t, now)).transpose()?;
    let end_ms = new.end.as_deref().map(|t| crate::time_params::parse_time("end", t, now)).transpose()?;
    if let (Some(s), Some(e)) = (start_ms, end_ms)
        && e <= s
    {
        return Err(ApiError::bad_field("end", "end must be after start"));
    }
    let id = new.id.unwrap_or_else(|| format!("hold-{}", uuid::Uuid::new_v4()));
    if id.is_empty() || id.len() > 200 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ApiError::bad_field("id", "1 to 200 letters, digits, '-' or '_'"));
    }
    let holds = lifecycle(&state).holds();
    if holds.get(&id).await.map_err(unavailable)?.is_some() {
        return Err(ApiError::Conflict(format!("legal hold {id:?} exists")));
    }
    let hold = LegalHold {
        id,
        tables: new.tables,
        start_ms,
        end_ms,
        labels: new.labels,
        reason: new.reason,
        created_at_ms: now,
        released_at_ms: None,
    };
    holds.put(&hold).await.map_err(unavailable)?;
    Ok((StatusCode::CREATED, Json(hold)))
}

/// `DELETE /monitoring/storage/holds/{id}`: releases the hold (it stays on record).
pub async fn release_hold(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<LegalHold>> {
    lifecycle(&state)
        .holds()
        .release(&id, callscope_runtime::now_ms())
        .await
        .map_err(unavailable)?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no legal hold {id:?}")))
}

/// `GET /monitoring/storage/deletions`: the deletion log, newest first.
pub async fn deletions(State(state): State<AppState>) -> ApiResult<Json<Vec<DeletionRecord>>> {
    let objects = callscope_storage::json_objects::JsonObjects::new(state.tiers.hot.clone(), CatalogDir::Deletions);
    let mut records: Vec<DeletionRecord> = objects.list().await.map_err(unavailable)?;
    records.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then(a.unit.cmp(&b.unit)));
    Ok(Json(records))
}
