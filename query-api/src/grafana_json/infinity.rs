//! Flat JSON arrays that Grafana's Infinity data source reads as they are: one object per
//! point of a PromQL expression, or per row of a SQL query.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use serde::Deserialize;
use serde_json::Value;

use super::{body_json, evaluate_series, legend, number, step_ms};
use crate::error::{ApiError, ApiResult};
use crate::prometheus_api::evaluate::MAX_POINTS;
use crate::sql::run_query;
use crate::time_params::{parse_duration, parse_time};
use crate::{AppState, SqlLimits};

/// `GET /grafana/infinity/query`: a PromQL expression over `from`..`to` (default the last
/// hour) every `step` (default about 500 points), one flat object per point.
pub async fn query(State(state): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let params: BTreeMap<String, String> =
        url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()).into_owned().collect();
    let now = callscope_runtime::now_ms();
    let query = params.get("query").filter(|q| !q.trim().is_empty()).ok_or_else(|| {
        ApiError::bad_field("query", "give a PromQL expression: /grafana/infinity/query?query=sum(rate(x[5m]))")
    })?;
    let to = params.get("to").map(|t| parse_time("to", t, now)).transpose()?.unwrap_or(now);
    let from = params.get("from").map(|t| parse_time("from", t, now)).transpose()?.unwrap_or(to - 3_600_000);
    if to < from {
        return Err(ApiError::bad_field("to", "to is before from"));
    }
    let step = match params.get("step") {
        Some(s) => parse_duration("step", s)?.max(step_ms(from, to, None, Some(MAX_POINTS - 1))),
        None => step_ms(from, to, None, Some(500)),
    };
    let series = evaluate_series(&state, query, &[], (from, to, step), "query").await?;
    let keys: BTreeSet<&String> = series.iter().flat_map(|(l, _)| l.keys()).collect();
    let mut rows = Vec::new();
    for (labels, points) in &series {
        let name = legend(None, labels);
        for (t, v) in points {
            let mut row = serde_json::Map::new();
            let time = chrono::DateTime::from_timestamp_millis(*t).map(|d| d.to_rfc3339()).unwrap_or_default();
            row.insert("time".into(), Value::String(time));
            row.insert("series".into(), Value::String(name.clone()));
            for k in &keys {
                row.insert((*k).clone(), Value::String(labels.get(*k).cloned().unwrap_or_default()));
            }
            row.insert("value".into(), number(*v));
            rows.push(Value::Object(row));
        }
    }
    Ok(Json(Value::Array(rows)))
}

/// `GET|POST /grafana/infinity/sql`: `?sql=` or a `{"sql"}` body; one object per row, named
/// by the columns.
pub async fn sql(State(state): State<AppState>, RawQuery(q): RawQuery, body: Bytes) -> ApiResult<Json<Value>> {
    #[derive(Default, Deserialize)]
    #[serde(default)]
    struct Body {
        sql: String,
    }
    let from_query: Option<String> =
        url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()).find(|(k, _)| k == "sql").map(|(_, v)| v.into());
    let sql = match from_query {
        Some(sql) => sql,
        None => body_json::<Body>(&body)?.sql,
    };
    if sql.trim().is_empty() {
        return Err(ApiError::bad_field("sql", "give a query: ?sql=SELECT … or a {\"sql\": …} body"));
    }
    let limits: SqlLimits = state.sql_limits;
    let result = run_query(&state.engine.session(), &sql, limits).await?;
    let names: Vec<String> =
        result.columns.iter().map(|c| c["name"].as_str().unwrap_or_default().to_string()).collect();
    let rows =
        result.rows.into_iter().map(|row| Value::Object(names.iter().cloned().zip(row).collect())).collect::<Vec<_>>();
    Ok(Json(Value::Array(rows)))
}
