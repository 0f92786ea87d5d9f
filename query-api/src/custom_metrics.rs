//! `/monitoring/metrics/custom`: create, read, replace and delete custom metric
//! definitions. Built-in definitions are listed with `"builtin": true`; a PUT replaces one
//! with a stored copy and a DELETE of that copy restores the built-in. Definitions are
//! validated (400 naming the field), stored in the hot tier, and reach running workers
//! within a few seconds.

use crate::extract::ApiPath;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use callscope_schemas::custom_metrics::{CustomMetric, builtin_definitions, validate_set};
use callscope_storage::CustomMetricStore;
use callscope_storage::custom_metrics::merge_with_builtins;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

fn store(state: &AppState) -> CustomMetricStore {
    CustomMetricStore::new(state.hot.clone())
}

fn storage_error(e: callscope_storage::StorageError) -> ApiError {
    ApiError::Unavailable(format!("definition store: {e}"))
}

fn parse(body: &[u8]) -> ApiResult<CustomMetric> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    let mut def: CustomMetric =
        crate::ingest::typed(value).map_err(|(field, message)| ApiError::bad_field(field, message))?;
    def.builtin = false;
    def.validate().map_err(|e| ApiError::bad_field(e.field, e.message))?;
    Ok(def)
}

/// Checks the whole set with `def` in it, then stores `def`.
async fn save(state: &AppState, def: &CustomMetric) -> ApiResult<()> {
    let store = store(state);
    let mut stored = store.stored().await.map_err(storage_error)?;
    stored.retain(|d| d.name != def.name);
    stored.push(def.clone());
    validate_set(&merge_with_builtins(stored)).map_err(|e| ApiError::bad_field(e.field, e.message))?;
    store.put(def).await.map_err(storage_error)
}

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<CustomMetric>>> {
    Ok(Json(store(&state).effective().await.map_err(storage_error)?))
}

pub async fn get_one(State(state): State<AppState>, ApiPath(name): ApiPath<String>) -> ApiResult<Json<CustomMetric>> {
    let all = store(&state).effective().await.map_err(storage_error)?;
    all.into_iter()
        .find(|d| d.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no custom metric {name:?}")))
}

pub async fn create(State(state): State<AppState>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let def = parse(&body)?;
    let all = store(&state).effective().await.map_err(storage_error)?;
    if all.iter().any(|d| d.name == def.name) {
        return Err(ApiError::Conflict(format!(
            "custom metric {:?} exists; PUT /monitoring/metrics/custom/{} replaces it",
            def.name, def.name
        )));
    }
    save(&state, &def).await?;
    Ok((StatusCode::CREATED, Json(def)))
}

pub async fn replace(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    body: Bytes,
) -> ApiResult<Json<CustomMetric>> {
    let def = parse(&body)?;
    if def.name != name {
        return Err(ApiError::bad_field("name", format!("the body names {:?} but the path {name:?}", def.name)));
    }
    save(&state, &def).await?;
    Ok(Json(def))
}

pub async fn delete(State(state): State<AppState>, ApiPath(name): ApiPath<String>) -> ApiResult<StatusCode> {
    let store = store(&state);
    // Deleting a metric that others' expressions use would break them.
    let mut remaining = store.stored().await.map_err(storage_error)?;
    remaining.retain(|d| d.name != name);
    let remaining = merge_with_builtins(remaining);
    if !remaining.iter().any(|d| d.name == name)
        && let Some(user) = remaining.iter().find(|d| {
            d.rule
                .expr
                .as_deref()
                .is_some_and(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|w| w == name))
        })
    {
        return Err(ApiError::Conflict(format!("{} uses {name}; change or delete it first", user.name)));
    }
    if store.delete(&name).await.map_err(storage_error)? {
        return Ok(StatusCode::NO_CONTENT);
    }
    if builtin_definitions().iter().any(|d| d.name == name) {
        return Err(ApiError::Conflict(format!("{name} is built in; PUT a changed definition instead of deleting it")));
    }
    Err(ApiError::NotFound(format!("no custom metric {name:?}")))
}
