//! The Jaeger query API under `/jaeger`, as Jaeger UI and Grafana's Jaeger datasources call
//! it (jaeger v2 `jaegerquery` HTTP handler and `apiv3`, see `../shared/contracts.md`):
//!
//! * v1 (envelope `{"data", "total", "limit", "offset", "errors"}`): `api/services`,
//!   `api/services/{service}/operations`, `api/operations?service=&spanKind=`,
//!   `api/traces` (search: `service` (required unless `traceID`), `operation`, `tags`
//!   (JSON object), `tag=key:value` (repeatable), `start`/`end` (µs; default the last 2
//!   days), `minDuration`/`maxDuration` (`1.2ms`), `limit`; or `traceID=` (repeatable)),
//!   `api/traces/{traceID}` (`start`/`end` are a hint only: Grafana 13 sends ms where
//!   Jaeger means µs, and a lookup never hides a trace), `api/dependencies?endTs=&lookback=`
//!   (ms).
//! * v3 (Jaeger UI ≥ 2.15): `api/v3/services`, `api/v3/operations?service=&spanKind=`,
//!   `api/v3/trace-summaries?query.serviceName=&query.operationName=&query.startTimeMin=
//!   &query.startTimeMax=&query.durationMin=&query.durationMax=&query.attributes=
//!   &query.searchDepth=`; errors `{"error": {"httpCode", "message"}}`.
//!
//! Services and operations are those seen in the last 7 days. Dependencies are computed
//! from parent/child spans across services over the lookback.

pub mod model;

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;

use axum::response::{IntoResponse, Response};
use datafusion::prelude::{Expr, col, lit};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::json_rows::column_values;
use crate::series_query::date_of;
use crate::time_params::parse_duration_us;
use crate::trace_search::{Order, TraceSearch, search};

/// How far back services and operations are listed.
const CATALOG_LOOKBACK_US: i64 = 7 * 24 * 3600 * 1_000_000;
/// Default search range (Jaeger's).
const SEARCH_LOOKBACK_US: i64 = 2 * 24 * 3600 * 1_000_000;

/// A v1 error: the HTTP status and the envelope with `errors`.
pub struct V1Error(ApiError);

impl From<ApiError> for V1Error {
    fn from(e: ApiError) -> Self {
        V1Error(e)
    }
}

impl From<datafusion::error::DataFusionError> for V1Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        V1Error(e.into())
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = json!({"data": null, "total": 0, "limit": 0, "offset": 0,
                          "errors": [{"code": status.as_u16(), "msg": self.0.to_string()}]});
        (status, Json(body)).into_response()
    }
}

/// A v3 error: `{"error": {"httpCode", "message"}}`.
pub struct V3Error(ApiError);

impl From<ApiError> for V3Error {
    fn from(e: ApiError) -> Self {
        V3Error(e)
    }
}

impl From<datafusion::error::DataFusionError> for V3Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        V3Error(e.into())
    }
}

impl IntoResponse for V3Error {
    fn into_response(self) -> Response {
        let status = self.0.status();
        (status, Json(json!({"error": {"httpCode": status.as_u16(), "message": self.0.to_string()}}))).into_response()
    }
}

fn envelope(data: Value) -> Json<Value> {
    let total = data.as_array().map_or(0, Vec::len);
    Json(json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null}))
}

fn now_us() -> i64 {
    callscope_runtime::now_ms().saturating_mul(1000)
}

fn since(from_us: i64) -> Expr {
    col("start_time_us").gt_eq(lit(from_us)).and(col("date").gt_eq(lit(date_of(from_us.div_euclid(1000)))))
}

async fn services(state: &AppState) -> Result<Vec<String>, ApiError> {
    let df = state
        .engine
        .session()
        .table("spans")
        .await?
        .filter(since(now_us() - CATALOG_LOOKBACK_US))?
        .aggregate(vec![col("service")], vec![])?
        .sort(vec![col("service").sort(true, false)])?;
    let mut out = Vec::new();
    for batch in df.collect().await? {
        out.extend(column_values(batch.column(0).as_ref()).into_iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    Ok(out)
}

/// (operation, span kind) pairs of `service`, optionally of one kind.
async fn operations(state: &AppState, service: &str, kind: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut filter = since(now_us() - CATALOG_LOOKBACK_US).and(col("service").eq(lit(service.to_string())));
    if let Some(kind) = kind.filter(|k| !k.is_empty()) {
        filter = filter.and(col("kind").eq(lit(kind.to_ascii_lowercase())));
    }
    let df = state
        .engine
        .session()
        .table("spans")
        .await?
        .filter(filter)?
        .aggregate(vec![col("operation"), col("kind")], vec![])?
        .sort(vec![col("operation").sort(true, false), col("kind").sort(true, false)])?;
    let mut out = Vec::new();
    for batch in df.collect().await? {
        let (ops, kinds) = (column_values(batch.column(0).as_ref()), column_values(batch.column(1).as_ref()));
        for (op, kind) in ops.into_iter().zip(kinds) {
            out.push((op.as_str().unwrap_or_default().to_string(), kind.as_str().unwrap_or_default().to_string()));
        }
    }
    Ok(out)
}

/// `GET /jaeger/api/services`.
pub async fn v1_services(State(state): State<AppState>) -> Result<Json<Value>, V1Error> {
    Ok(envelope(json!(services(&state).await?)))
}

/// `GET /jaeger/api/services/{service}/operations`.
pub async fn v1_service_operations(
    State(state): State<AppState>,
    service: Result<ApiPath<String>, ApiError>,
) -> Result<Json<Value>, V1Error> {
    let ApiPath(service) = service?;
    let mut names: Vec<String> = operations(&state, &service, None).await?.into_iter().map(|(op, _)| op).collect();
    names.dedup();
    Ok(envelope(json!(names)))
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

/// `GET /jaeger/api/operations?service=&spanKind=`.
pub async fn v1_operations(
    State(state): State<AppState>,
    params: Result<ApiQuery<Vec<(String, String)>>, ApiError>,
) -> Result<Json<Value>, V1Error> {
    let ApiQuery(params) = params?;
    let service = param(&params, "service").ok_or_else(|| ApiError::bad_field("service", "service is required"))?;
    let ops = operations(&state, service, param(&params, "spanKind")).await?;
    Ok(envelope(ops.into_iter().map(|(name, kind)| json!({"name": name, "spanKind": kind})).collect()))
}

/// The Jaeger traces with these ids (those that exist).
async fn traces_by_id(state: &AppState, ids: &[String]) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    for id in ids {
        let id = crate::traces::trace_id_param(id)?;
        match crate::traces::load_spans(state, &id).await {
            Ok(rows) => out.push(model::trace(&id, &rows)),
            Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// `GET /jaeger/api/traces/{traceID}`.
pub async fn v1_trace(
    State(state): State<AppState>,
    id: Result<ApiPath<String>, ApiError>,
) -> Result<Json<Value>, V1Error> {
    let ApiPath(id) = id?;
    let traces = traces_by_id(&state, std::slice::from_ref(&id)).await?;
    if traces.is_empty() {
        return Err(ApiError::NotFound("trace not found".into()).into());
    }
    Ok(envelope(Value::Array(traces)))
}

/// The attributes of the JSON object in parameter `key` (values that are not strings as
/// JSON writes them).
fn json_attributes(params: &[(String, String)], key: &str) -> Result<Vec<(String, String)>, ApiError> {
    let Some(text) = param(params, key) else { return Ok(Vec::new()) };
    let map: BTreeMap<String, Value> = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_field(key, format!("{key} must be a JSON object: {e}")))?;
    Ok(map.into_iter().map(|(k, v)| (k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))).collect())
}

/// A newest-first trace search as both Jaeger APIs ask for it: Jaeger's `error=true` tag
/// means failed spans, the other tags are attributes; `limit` defaults to 20 (1–1000);
/// `range` is `(start, end, the parameter named when start is not before end)`.
fn newest_first(
    service: &str,
    operation: Option<&str>,
    mut attributes: Vec<(String, String)>,
    (min_duration_us, max_duration_us): (Option<i64>, Option<i64>),
    (start_us, end_us, start_param): (i64, i64, &str),
    limit: Option<&str>,
) -> Result<TraceSearch, ApiError> {
    let errors_only = attributes.iter().any(|(k, v)| k == "error" && v == "true");
    attributes.retain(|(k, _)| k != "error");
    if start_us >= end_us {
        return Err(ApiError::bad_field(start_param, format!("{start_param} must be before the end of the range")));
    }
    Ok(TraceSearch {
        service: Some(service.to_string()),
        operation: operation.map(str::to_string),
        kind: None,
        attributes,
        errors_only,
        min_duration_us,
        max_duration_us,
        start_us,
        end_us,
        limit: limit.and_then(|v| v.parse::<usize>().ok()).unwrap_or(20).clamp(1, 1000),
        order: Order::Newest,
    })
}

/// `GET /jaeger/api/traces`: search, or `traceID=` lookups.
pub async fn v1_traces(
    State(state): State<AppState>,
    params: Result<ApiQuery<Vec<(String, String)>>, ApiError>,
) -> Result<Json<Value>, V1Error> {
    let ApiQuery(params) = params?;
    let ids: Vec<String> = params.iter().filter(|(k, _)| k == "traceID").map(|(_, v)| v.clone()).collect();
    if !ids.is_empty() {
        return Ok(envelope(Value::Array(traces_by_id(&state, &ids).await?)));
    }
    let service = param(&params, "service").ok_or_else(|| ApiError::bad_field("service", "service is required"))?;
    let micros = |key: &str| -> Result<Option<i64>, ApiError> {
        let range = crate::time_params::MIN_TIME_MS * 1000..=crate::time_params::MAX_TIME_MS * 1000;
        param(&params, key)
            .map(|v| {
                v.parse::<i64>().ok().filter(|us| range.contains(us)).ok_or_else(|| {
                    ApiError::bad_field(key, format!("{key} is unix microseconds in the years 1 to 9999"))
                })
            })
            .transpose()
    };
    let end = micros("end")?.unwrap_or_else(now_us);
    let start = micros("start")?.unwrap_or(end - SEARCH_LOOKBACK_US);
    let mut attributes = json_attributes(&params, "tags")?;
    for (_, tag) in params.iter().filter(|(k, _)| k == "tag") {
        let (k, v) =
            tag.split_once(':').ok_or_else(|| ApiError::bad_field("tag", format!("tag={tag:?}: use tag=key:value")))?;
        attributes.push((k.to_string(), v.to_string()));
    }
    let duration = |key: &str| param(&params, key).map(|v| parse_duration_us(key, v)).transpose();
    let q = newest_first(
        service,
        param(&params, "operation"),
        attributes,
        (duration("minDuration")?, duration("maxDuration")?),
        (start, end, "start"),
        param(&params, "limit"),
    )?;
    let summaries = search(&state, &q).await?;
    let ids: Vec<String> = summaries.iter().filter_map(|s| s["trace_id"].as_str().map(str::to_string)).collect();
    Ok(envelope(Value::Array(traces_by_id(&state, &ids).await?)))
}

/// `GET /jaeger/api/dependencies?endTs=&lookback=` (ms).
pub async fn v1_dependencies(
    State(state): State<AppState>,
    params: Result<ApiQuery<Vec<(String, String)>>, ApiError>,
) -> Result<Json<Value>, V1Error> {
    let ApiQuery(params) = params?;
    let ms = |key: &str, default: i64| -> Result<i64, ApiError> {
        param(&params, key)
            .map(|v| v.parse::<i64>().map_err(|_| ApiError::bad_field(key, format!("{key} is milliseconds"))))
            .transpose()
            .map(|v| v.unwrap_or(default))
    };
    let end = ms("endTs", callscope_runtime::now_ms())?;
    let lookback = ms("lookback", 24 * 3600 * 1000)?;
    if !(0..=crate::time_params::MAX_DURATION_MS).contains(&lookback)
        || !(crate::time_params::MIN_TIME_MS..=crate::time_params::MAX_TIME_MS).contains(&end)
    {
        return Err(ApiError::bad_request("endTs or lookback out of range").into());
    }
    let edges = crate::trace_dependencies::edges(&state, (end - lookback) * 1000, end * 1000, None).await?;
    Ok(envelope(
        edges.into_iter().map(|e| json!({"parent": e.parent, "child": e.child, "callCount": e.calls})).collect(),
    ))
}

/// `GET /jaeger/api/v3/services`.
pub async fn v3_services(State(state): State<AppState>) -> Result<Json<Value>, V3Error> {
    Ok(Json(json!({"services": services(&state).await?})))
}

/// `GET /jaeger/api/v3/operations?service=&spanKind=`.
pub async fn v3_operations(
    State(state): State<AppState>,
    params: Result<ApiQuery<Vec<(String, String)>>, ApiError>,
) -> Result<Json<Value>, V3Error> {
    let ApiQuery(params) = params?;
    let service = param(&params, "service").ok_or_else(|| ApiError::bad_field("service", "service is required"))?;
    let ops = operations(&state, service, param(&params, "spanKind")).await?;
    Ok(Json(
        json!({"operations": ops.into_iter().map(|(name, kind)| json!({"name": name, "spanKind": kind})).collect::<Vec<_>>()}),
    ))
}

/// `GET /jaeger/api/v3/trace-summaries`.
pub async fn v3_trace_summaries(
    State(state): State<AppState>,
    params: Result<ApiQuery<Vec<(String, String)>>, ApiError>,
) -> Result<Json<Value>, V3Error> {
    let ApiQuery(params) = params?;
    let service = param(&params, "query.serviceName")
        .ok_or_else(|| ApiError::bad_field("query.serviceName", "query.serviceName is required"))?;
    let time = |key: &str| -> Result<Option<i64>, ApiError> {
        param(&params, key)
            .map(|v| {
                chrono::DateTime::parse_from_rfc3339(v)
                    .map(|t| t.timestamp_micros())
                    .map_err(|e| ApiError::bad_field(key, format!("{key} must be RFC 3339: {e}")))
            })
            .transpose()
    };
    let end = time("query.startTimeMax")?.unwrap_or_else(now_us);
    let start = time("query.startTimeMin")?.unwrap_or(end - SEARCH_LOOKBACK_US);
    let duration = |key: &str| param(&params, key).map(|v| parse_duration_us(key, v)).transpose();
    let q = newest_first(
        service,
        param(&params, "query.operationName"),
        json_attributes(&params, "query.attributes")?,
        (duration("query.durationMin")?, duration("query.durationMax")?),
        (start, end, "query.startTimeMin"),
        param(&params, "query.searchDepth"),
    )?;
    let summaries: Vec<Value> = search(&state, &q)
        .await?
        .into_iter()
        .map(|s| {
            let start_ns = s["start_time_us"].as_i64().unwrap_or(0).saturating_mul(1000);
            let end_ns = start_ns.saturating_add(s["duration_us"].as_i64().unwrap_or(0).saturating_mul(1000));
            let services: Vec<Value> = s["services"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| json!({"name": x["name"], "spanCount": x["span_count"], "errorSpanCount": x["error_count"]}))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "traceId": s["trace_id"],
                "rootServiceName": s["root_service"],
                "rootOperationName": s["root_operation"],
                "minStartTimeUnixNano": start_ns.to_string(),
                "maxEndTimeUnixNano": end_ns.to_string(),
                "spanCount": s["span_count"],
                "errorSpanCount": s["error_count"],
                "services": services,
            })
        })
        .collect();
    Ok(Json(json!({"summaries": summaries})))
}

/// Any other path under `/jaeger`: a 404 in the Jaeger error shape of its API version.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    let error = ApiError::NotFound(format!("no Jaeger API endpoint at {}", uri.path()));
    if uri.path().starts_with("/jaeger/api/v3/") {
        V3Error(error).into_response()
    } else {
        V1Error(error).into_response()
    }
}
