//! `/monitoring/dashboards`: the dashboards (the eight built-in ones and stored ones),
//! created, read, replaced, deleted, exported and imported, each validated on the way in
//! (400 naming the field; PromQL parsed and checked against the subset, SQL planned by
//! DataFusion), versioned (every save is kept; a replace that names an older version is a
//! 409), and shown only to callers whose roles may see them.
//!
//! Until authentication lands, a caller names itself with `X-Callscope-User` and
//! `X-Callscope-Roles` (comma-separated); a request with neither acts with the server's
//! `--anonymous-roles`. The checks themselves are real: a dashboard's `access` lists who may
//! view and edit it, the owner and `admin` may always do both, and a dashboard a caller may
//! not see is absent from lists and exports and a 403 when named.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /monitoring/dashboards` | summaries of the dashboards the caller may see |
//! | `POST /monitoring/dashboards` | create (201); the caller becomes the owner when none is named |
//! | `GET/PUT/DELETE /monitoring/dashboards/{id}` | one dashboard; DELETE of a stored copy of a built-in restores the built-in |
//! | `GET /monitoring/dashboards/{id}/versions[/{version}]` | the saved versions |
//! | `GET /monitoring/dashboards/export[?id=]` | every visible dashboard (or one) as a JSON file |
//! | `POST /monitoring/dashboards/import[?overwrite=true]` | one dashboard, an array, or an export file; all are checked first and every problem is reported; nothing is stored unless all pass |
//! | `GET /monitoring/dashboards/grafana/templates[?id=]` | Grafana dashboard JSON ([`grafana`]) |
//! | `POST /monitoring/dashboards/grafana/deploy` | deploy them to a Grafana instance ([`deploy`]) |

pub mod deploy;
pub mod grafana;

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use callscope_schemas::dashboards::builtin::{builtin_dashboards, merge_with_builtin_dashboards};
use callscope_schemas::dashboards::{Caller, Dashboard, MAX_ID_LEN, is_id};
use callscope_storage::dashboards::{DashboardStore, SaveOutcome};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};

/// The caller a request names, else the anonymous one.
pub fn caller(state: &AppState, headers: &HeaderMap) -> Caller {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let user = text("x-callscope-user");
    let roles = text("x-callscope-roles");
    if user.is_none() && roles.is_none() {
        return state.anonymous.clone();
    }
    Caller {
        user: user.unwrap_or_default().to_string(),
        roles: roles
            .map(|r| r.split(',').map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect())
            .unwrap_or_default(),
    }
}

fn store(state: &AppState) -> DashboardStore {
    DashboardStore::new(state.hot.clone())
}

fn storage_error(e: callscope_storage::StorageError) -> ApiError {
    ApiError::Unavailable(format!("dashboard store: {e}"))
}

fn builtins() -> ApiResult<Vec<Dashboard>> {
    builtin_dashboards().map_err(|e| ApiError::internal(format!("the built-in dashboards do not parse: {e}")))
}

/// Built-ins, replaced or added to by the stored dashboards.
async fn effective(state: &AppState) -> ApiResult<Vec<Dashboard>> {
    Ok(merge_with_builtin_dashboards(builtins()?, store(state).list().await.map_err(storage_error)?))
}

/// A stored dashboard, else the built-in of that id.
async fn find(state: &AppState, id: &str) -> ApiResult<Option<Dashboard>> {
    match store(state).get(id).await.map_err(storage_error)? {
        Some(d) => Ok(Some(d)),
        None => Ok(builtins()?.into_iter().find(|d| d.id == id)),
    }
}

/// The dashboards `caller` may see, in list order.
pub async fn visible(state: &AppState, caller: &Caller) -> ApiResult<Vec<Dashboard>> {
    Ok(effective(state).await?.into_iter().filter(|d| d.access.can_view(caller)).collect())
}

async fn find_visible(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Dashboard> {
    match find(state, id).await? {
        Some(d) if d.access.can_view(caller) => Ok(d),
        Some(_) => Err(ApiError::Forbidden(format!("the roles {:?} may not see dashboard {id}", caller.roles))),
        None => Err(ApiError::NotFound(format!("no dashboard {id}"))),
    }
}

/// Parses a dashboard from JSON: a wrong or missing field is a 400 naming it.
fn parse(value: Value, prefix: &str) -> ApiResult<Dashboard> {
    crate::ingest::typed::<Dashboard>(value).map_err(|(field, message)| {
        let field = if field == "." { prefix.trim_end_matches('.').to_string() } else { format!("{prefix}{field}") };
        ApiError::bad_field(field, message)
    })
}

/// Plans every SQL query of `d` with DataFusion (read-only): query text → problem.
async fn sql_problems(state: &AppState, d: &Dashboard) -> HashMap<String, String> {
    let mut problems = HashMap::new();
    for sql in d.sql_queries() {
        if problems.contains_key(&sql) {
            continue;
        }
        let session = state.engine.session();
        if let Err(e) = session.sql_with_options(&sql, crate::sql::read_only()).await {
            problems.insert(sql, e.strip_backtrace());
        }
    }
    problems
}

/// Validates `d`: fields, PromQL, trace searches and SQL (planned over the real tables).
async fn validate(state: &AppState, d: &Dashboard, prefix: &str) -> ApiResult<()> {
    let problems = sql_problems(state, d).await;
    let check_sql = |sql: &str| problems.get(sql).map_or(Ok(()), |m| Err(m.clone()));
    d.validate(&check_sql).map_err(|e| ApiError::bad_field(format!("{prefix}{}", e.field), e.message))
}

fn body_json(body: &Bytes) -> ApiResult<Value> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))
}

/// A summary for lists.
fn summary(d: &Dashboard, caller: &Caller) -> Value {
    json!({
        "id": d.id,
        "title": d.title,
        "description": d.description,
        "tags": d.tags,
        "version": d.version,
        "builtin": d.builtin,
        "owner": d.access.owner,
        "widgets": d.widgets.len(),
        "can_edit": d.access.can_edit(caller),
        "updated_at_ms": d.updated_at_ms,
    })
}

/// `GET /monitoring/dashboards`.
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let caller = caller(&state, &headers);
    let all = visible(&state, &caller).await?;
    Ok(Json(json!({"dashboards": all.iter().map(|d| summary(d, &caller)).collect::<Vec<_>>()})))
}

/// Stores a new dashboard (id taken → 409).
async fn create_one(state: &AppState, caller: &Caller, mut d: Dashboard) -> ApiResult<Dashboard> {
    if d.id.is_empty() {
        d.id = uuid::Uuid::new_v4().simple().to_string()[..20].to_string();
    }
    if d.access.owner.is_empty() {
        d.access.owner = caller.user.clone();
    }
    if !d.access.role_may_edit(caller) {
        return Err(ApiError::Forbidden(format!(
            "creating a dashboard takes one of its editor roles {:?} (or admin); the caller has {:?}",
            d.access.editors, caller.roles
        )));
    }
    if find(state, &d.id).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "dashboard {} exists; PUT /monitoring/dashboards/{} replaces it",
            d.id, d.id
        )));
    }
    d.created_at_ms = callscope_runtime::now_ms();
    d.updated_at_ms = d.created_at_ms;
    save(state, d, 1).await
}

async fn save(state: &AppState, mut d: Dashboard, version: u64) -> ApiResult<Dashboard> {
    match store(state).save(&d, version).await.map_err(storage_error)? {
        SaveOutcome::Saved(v) => {
            d.version = v;
            d.builtin = false;
            Ok(d)
        }
        SaveOutcome::Conflict(v) => Err(ApiError::Conflict(format!(
            "dashboard {} was changed by someone else (version {v} exists): read it again and reapply your change",
            d.id
        ))),
    }
}

/// `POST /monitoring/dashboards`.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Dashboard>)> {
    let caller = caller(&state, &headers);
    let d = parse(body_json(&body)?, "")?;
    validate(&state, &d, "").await?;
    Ok((StatusCode::CREATED, Json(create_one(&state, &caller, d).await?)))
}

/// `GET /monitoring/dashboards/{id}`.
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Dashboard>> {
    let caller = caller(&state, &headers);
    Ok(Json(find_visible(&state, &caller, &id).await?))
}

/// Replaces `id` with `d` (version check, edit right), as the next version.
async fn replace_one(state: &AppState, caller: &Caller, id: &str, mut d: Dashboard) -> ApiResult<Dashboard> {
    if !d.id.is_empty() && d.id != id {
        return Err(ApiError::bad_field("id", format!("the body names {:?} but the path {id:?}", d.id)));
    }
    let existing = find_visible(state, caller, id).await?;
    if !existing.access.can_edit(caller) {
        return Err(ApiError::Forbidden(format!("the roles {:?} may not change dashboard {id}", caller.roles)));
    }
    if d.version != 0 && d.version != existing.version {
        return Err(ApiError::Conflict(format!(
            "dashboard {id} is at version {} but the change was made to version {}: read it again and reapply",
            existing.version, d.version
        )));
    }
    d.id = id.to_string();
    if d.access.owner.is_empty() {
        d.access.owner = existing.access.owner.clone();
    }
    d.created_at_ms = if existing.builtin { callscope_runtime::now_ms() } else { existing.created_at_ms };
    d.updated_at_ms = callscope_runtime::now_ms();
    save(state, d, existing.version + 1).await
}

/// `PUT /monitoring/dashboards/{id}`.
pub async fn replace(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> ApiResult<Json<Dashboard>> {
    let caller = caller(&state, &headers);
    let d = parse(body_json(&body)?, "")?;
    validate(&state, &d, "").await?;
    Ok(Json(replace_one(&state, &caller, &id, d).await?))
}

/// `DELETE /monitoring/dashboards/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let caller = caller(&state, &headers);
    let existing = find_visible(&state, &caller, &id).await?;
    if !existing.access.can_edit(&caller) {
        return Err(ApiError::Forbidden(format!("the roles {:?} may not delete dashboard {id}", caller.roles)));
    }
    if existing.builtin {
        return Err(ApiError::Conflict(format!(
            "{id} is a built-in dashboard: PUT a changed copy instead (DELETE of that copy restores the built-in)"
        )));
    }
    store(&state).delete(&id).await.map_err(storage_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /monitoring/dashboards/{id}/versions`.
pub async fn versions(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let caller = caller(&state, &headers);
    let current = find_visible(&state, &caller, &id).await?;
    let stored = store(&state).versions(&id).await.map_err(storage_error)?;
    Ok(Json(json!({"id": id, "current": current.version, "builtin": current.builtin, "versions": stored})))
}

/// `GET /monitoring/dashboards/{id}/versions/{version}`.
pub async fn version(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((id, version)): ApiPath<(String, u64)>,
) -> ApiResult<Json<Dashboard>> {
    let caller = caller(&state, &headers);
    find_visible(&state, &caller, &id).await?;
    match store(&state).version(&id, version).await.map_err(storage_error)? {
        Some(d) => Ok(Json(d)),
        None => Err(ApiError::NotFound(format!("dashboard {id} has no stored version {version}"))),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ExportParams {
    id: Option<String>,
    #[serde(default)]
    overwrite: bool,
}

fn attachment(name: &str, body: Value) -> Response {
    let text = serde_json::to_string_pretty(&body).unwrap_or_default();
    (
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        text,
    )
        .into_response()
}

/// `GET /monitoring/dashboards/export[?id=]`: `{"dashboards": […]}`, what import reads.
pub async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<ExportParams>,
) -> ApiResult<Response> {
    let caller = caller(&state, &headers);
    let (name, dashboards) = match p.id.as_deref() {
        Some(id) => (format!("{id}.dashboard.json"), vec![find_visible(&state, &caller, id).await?]),
        None => ("callscope-dashboards.json".to_string(), visible(&state, &caller).await?),
    };
    Ok(attachment(&name, json!({"callscope_dashboards": 1, "dashboards": dashboards})))
}

/// `POST /monitoring/dashboards/import[?overwrite=true]`.
pub async fn import(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<ExportParams>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let caller = caller(&state, &headers);
    let items: Vec<Value> = match body_json(&body)? {
        Value::Array(items) => items,
        Value::Object(o) if o.get("dashboards").is_some_and(Value::is_array) => {
            o["dashboards"].as_array().cloned().unwrap_or_default()
        }
        one @ Value::Object(_) => vec![one],
        _ => return Err(ApiError::bad_request("import a dashboard, an array of them, or an export file")),
    };
    if items.is_empty() {
        return Err(ApiError::bad_request("nothing to import"));
    }
    // Check everything first; report every problem.
    let mut parsed = Vec::new();
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let prefix = format!("dashboards[{i}].");
        let id = item.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let checked = async {
            let d = parse(item, &prefix)?;
            if d.id.is_empty() || !is_id(&d.id, MAX_ID_LEN) {
                return Err(ApiError::bad_field(format!("{prefix}id"), "an imported dashboard needs its id"));
            }
            if !seen.insert(d.id.clone()) {
                return Err(ApiError::bad_field(format!("{prefix}id"), format!("{} twice in one import", d.id)));
            }
            validate(&state, &d, &prefix).await?;
            if let Some(existing) = find(&state, &d.id).await? {
                if !p.overwrite {
                    return Err(ApiError::Conflict(format!("dashboard {} exists (import with ?overwrite=true)", d.id)));
                }
                if !existing.access.can_view(&caller) || !existing.access.can_edit(&caller) {
                    return Err(ApiError::Forbidden(format!("the roles {:?} may not change {}", caller.roles, d.id)));
                }
            }
            Ok(d)
        };
        match checked.await {
            Ok(d) => parsed.push(d),
            Err(e) => {
                let field = match &e {
                    ApiError::BadRequest { field, .. } => field.clone(),
                    _ => None,
                };
                problems.push(json!({"index": i, "id": id, "status": e.status().as_u16(), "field": field, "error": e.to_string()}));
            }
        }
    }
    if !problems.is_empty() {
        let status = StatusCode::BAD_REQUEST;
        return Ok((status, Json(json!({"imported": [], "problems": problems}))));
    }
    let mut imported = Vec::new();
    for mut d in parsed {
        let saved = match find(&state, &d.id).await? {
            Some(existing) => {
                d.version = 0;
                replace_one(&state, &caller, &existing.id.clone(), d).await?
            }
            None => create_one(&state, &caller, d).await?,
        };
        imported.push(json!({"id": saved.id, "version": saved.version}));
    }
    Ok((StatusCode::OK, Json(json!({"imported": imported, "problems": []}))))
}

/// `GET /monitoring/dashboards/grafana/templates[?id=]`.
pub async fn grafana_templates(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<ExportParams>,
) -> ApiResult<Json<Value>> {
    let caller = caller(&state, &headers);
    let dashboards = match p.id.as_deref() {
        Some(id) => vec![find_visible(&state, &caller, id).await?],
        None => visible(&state, &caller).await?,
    };
    // The data sources point at this API as the caller reached it.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:8080");
    Ok(Json(json!({
        "datasources": grafana::datasources(&format!("http://{host}")),
        "dashboards": dashboards.iter().map(grafana::dashboard).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Grafana's base URL.
    url: String,
    /// A service account token; default the server's `CALLSCOPE_GRAFANA_TOKEN`.
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    folder: Option<String>,
    /// The URL Grafana reaches this API at; default how the caller reached it.
    #[serde(default)]
    callscope_url: Option<String>,
}

/// `POST /monitoring/dashboards/grafana/deploy`: the dashboards the caller may see, to the
/// Grafana at `url` (needs the `editor` or `admin` role). 200 with every step when all
/// succeeded, 502 with every step when some failed.
pub async fn grafana_deploy(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let caller = caller(&state, &headers);
    if !caller.roles.iter().any(|r| r == "editor" || r == callscope_schemas::dashboards::ADMIN_ROLE) {
        return Err(ApiError::Forbidden(format!(
            "deploying to Grafana needs the editor or admin role, not {:?}",
            caller.roles
        )));
    }
    let request: DeployRequest = crate::ingest::typed(body_json(&body)?).map_err(|(f, m)| ApiError::bad_field(f, m))?;
    let grafana_url = url::Url::parse(&request.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| ApiError::bad_field("url", format!("{:?} is not an http(s) URL", request.url)))?;
    let token = request
        .token
        .or_else(|| std::env::var("CALLSCOPE_GRAFANA_TOKEN").ok())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::bad_field("token", "give a service account token (or set CALLSCOPE_GRAFANA_TOKEN on the server)")
        })?;
    let folder = request.folder.unwrap_or_else(|| deploy::DeployTarget::DEFAULT_FOLDER.to_string());
    if !is_id(&folder, MAX_ID_LEN) {
        return Err(ApiError::bad_field("folder", "1 to 40 letters, digits, - and _"));
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:8080");
    let target = deploy::DeployTarget {
        grafana_url: grafana_url.as_str().trim_end_matches('/').to_string(),
        token,
        callscope_url: request.callscope_url.unwrap_or_else(|| format!("http://{host}")),
        folder_title: folder.clone(),
        folder_uid: folder,
    };
    let dashboards = visible(&state, &caller).await?;
    let report =
        deploy::deploy(&target, &dashboards, &|step| tracing::info!(step = %step.line(), "grafana deploy")).await;
    let status = if report.failures() == 0 { StatusCode::OK } else { StatusCode::BAD_GATEWAY };
    Ok((status, Json(json!({"failures": report.failures(), "steps": report.steps}))))
}
