//! The Prometheus HTTP API (`/api/v1/…`), so that Grafana's built-in Prometheus data source,
//! `promtool query` and any Prometheus client read callscope's metrics with no plugin, as
//! they read Mimir or VictoriaMetrics.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET/POST /api/v1/query?query=&time=` | instant vector or scalar |
//! | `GET/POST /api/v1/query_range?query=&start=&end=&step=` | matrix |
//! | `GET/POST /api/v1/series?match[]=&start=&end=` | label sets of the matching series |
//! | `GET/POST /api/v1/labels?match[]=&start=&end=` | label names |
//! | `GET /api/v1/label/{name}/values?match[]=&start=&end=` | values of one label |
//! | `GET /api/v1/metadata?metric=&limit=` | type and unit per metric name |
//! | `GET /api/v1/status/buildinfo` | version |
//!
//! Expressions are callscope's PromQL subset (the alert rules' one, see
//! [`callscope_schemas::promql::subset`]), evaluated over the roll-ups and the raw samples
//! after them ([`evaluate`]). Series carry `__name__`, `service` and their labels. Times are
//! RFC 3339 or unix seconds (with a fraction); steps are durations (`15s`) or seconds.
//! Errors come in Prometheus' shape: `{"status": "error", "errorType": "bad_data", "error": …}`
//! with 400 (bad input) or 422 (an expression that cannot be evaluated).

pub mod evaluate;
pub mod series;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use callscope_schemas::text_formats::go_float;
use serde_json::{Value, json};

use crate::AppState;
use crate::extract::ApiPath;
use evaluate::Answer;

/// An error in Prometheus' shape.
#[derive(Debug)]
pub struct PromError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl PromError {
    pub fn bad_data(message: impl Into<String>) -> PromError {
        PromError { status: StatusCode::BAD_REQUEST, kind: "bad_data", message: message.into() }
    }

    pub fn execution(message: impl Into<String>) -> PromError {
        PromError { status: StatusCode::UNPROCESSABLE_ENTITY, kind: "execution", message: message.into() }
    }

    pub fn internal(message: impl Into<String>) -> PromError {
        PromError { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "internal", message: message.into() }
    }
}

impl From<datafusion::error::DataFusionError> for PromError {
    fn from(e: datafusion::error::DataFusionError) -> PromError {
        PromError { status: StatusCode::SERVICE_UNAVAILABLE, kind: "unavailable", message: e.to_string() }
    }
}

impl From<PromError> for crate::error::ApiError {
    fn from(e: PromError) -> crate::error::ApiError {
        use crate::error::ApiError;
        match e.status {
            StatusCode::BAD_REQUEST => ApiError::bad_request(e.message),
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(e.message),
            StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable(e.message),
            _ => ApiError::Internal(e.message),
        }
    }
}

impl IntoResponse for PromError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"status": "error", "errorType": self.kind, "error": self.message}))).into_response()
    }
}

fn success(data: Value) -> Response {
    Json(json!({"status": "success", "data": data})).into_response()
}

/// The parameters of a request: the query string, then a form body (Grafana POSTs them).
pub struct Params(Vec<(String, String)>);

impl Params {
    fn of(query: Option<String>, headers: &HeaderMap, body: &Bytes) -> Params {
        let mut pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
        let form = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form {
            pairs.extend(url::form_urlencoded::parse(body).into_owned());
        }
        Params(pairs)
    }

    /// Parameters given as name/value pairs (`match[]` may repeat).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Params {
        Params(pairs)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    fn required(&self, name: &str) -> Result<&str, PromError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| PromError::bad_data(format!("missing parameter {name:?}")))
    }

    /// A time: RFC 3339 or unix seconds with an optional fraction; unix ms.
    pub fn time(&self, name: &str, default_ms: i64) -> Result<i64, PromError> {
        match self.get(name).filter(|v| !v.is_empty()) {
            None => Ok(default_ms),
            Some(text) => time_param(name, text),
        }
    }

    /// A time that must be given.
    fn required_time(&self, name: &str) -> Result<i64, PromError> {
        time_param(name, self.required(name)?)
    }
}

fn time_param(name: &str, text: &str) -> Result<i64, PromError> {
    parse_time(text).ok_or_else(|| {
        PromError::bad_data(format!("invalid parameter {name:?}: cannot parse {text:?} to a valid timestamp"))
    })
}

fn parse_time(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<f64>() {
        let ms = (seconds * 1000.0).round();
        return (ms.is_finite() && ms.abs() < 1e17).then_some(ms as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_millis())
}

/// A step: a duration (`15s`, `1m`) or seconds; ms.
fn parse_step(text: &str) -> Result<i64, PromError> {
    let invalid =
        || PromError::bad_data(format!("invalid parameter \"step\": cannot parse {text:?} to a valid duration"));
    if let Ok(seconds) = text.parse::<f64>() {
        let ms = (seconds * 1000.0).round();
        return if ms.is_finite() && ms > 0.0 && ms < 1e15 { Ok(ms as i64) } else { Err(invalid()) };
    }
    crate::time_params::parse_duration("step", text).map_err(|_| invalid())
}

fn seconds(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

pub fn labels_json(labels: &callscope_schemas::promql::eval::LabelSet) -> Value {
    Value::Object(labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

/// `GET|POST /api/v1/query`.
pub async fn query(State(state): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let params = Params::of(q, &headers, &body);
    let run = async {
        let expr = evaluate::parse(params.required("query")?)?;
        let at = params.time("time", callscope_runtime::now_ms())?;
        let data = match evaluate::evaluate(&state, &expr, at, at, 1).await? {
            Answer::Scalar(points) => {
                let (t, v) = points.first().copied().unwrap_or((at, f64::NAN));
                json!({"resultType": "scalar", "result": [seconds(t), go_float(v)]})
            }
            Answer::Series(series) => json!({
                "resultType": "vector",
                "result": series.iter().filter_map(|(labels, points)| points.first().map(|(t, v)| {
                    json!({"metric": labels_json(labels), "value": [seconds(*t), go_float(*v)]})
                })).collect::<Vec<_>>(),
            }),
        };
        Ok::<_, PromError>(success(data))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET|POST /api/v1/query_range`.
pub async fn query_range(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::of(q, &headers, &body);
    let run = async {
        let expr = evaluate::parse(params.required("query")?)?;
        let (start, end) = (params.required_time("start")?, params.required_time("end")?);
        let step = parse_step(params.required("step")?)?;
        let series = match evaluate::evaluate(&state, &expr, start, end, step).await? {
            Answer::Scalar(points) => vec![(Default::default(), points)],
            Answer::Series(series) => series.into_iter().collect(),
        };
        let result: Vec<Value> = series
            .iter()
            .map(|(labels, points)| {
                json!({"metric": labels_json(labels),
                       "values": points.iter().map(|(t, v)| json!([seconds(*t), go_float(*v)])).collect::<Vec<_>>()})
            })
            .collect();
        Ok::<_, PromError>(success(json!({"resultType": "matrix", "result": result})))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET|POST /api/v1/series`.
pub async fn series_route(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::of(q, &headers, &body);
    let run = async {
        if params.all("match[]").is_empty() {
            return Err(PromError::bad_data("no match[] parameter provided"));
        }
        let found = series::matching(&state, &params).await?;
        Ok(success(Value::Array(found.iter().map(labels_json).collect())))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET|POST /api/v1/labels`.
pub async fn labels(State(state): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let params = Params::of(q, &headers, &body);
    let run = async {
        let found = series::matching(&state, &params).await?;
        let mut names: Vec<&String> = found.iter().flat_map(|s| s.keys()).collect();
        names.sort_unstable();
        names.dedup();
        Ok::<_, PromError>(success(json!(names)))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/label/{name}/values`.
pub async fn label_values(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::of(q, &headers, &body);
    let run = async {
        let found = series::matching(&state, &params).await?;
        let mut values: Vec<&String> = found.iter().filter_map(|s| s.get(&name)).collect();
        values.sort_unstable();
        values.dedup();
        Ok::<_, PromError>(success(json!(values)))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/metadata`.
pub async fn metadata(State(state): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let params = Params::of(q, &HeaderMap::new(), &Bytes::new());
    series::metadata(&state, params.get("metric"), params.get("limit"))
        .await
        .map(success)
        .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/status/buildinfo`.
pub async fn buildinfo() -> Response {
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "callscope",
        "buildDate": "",
        "goVersion": "",
        "application": "callscope",
    }))
}
