//! `GET /monitoring/metrics`: time series of one metric, bucketed by `step` and aggregated.
//!
//! A name that is a custom metric is answered by [`crate::derived`]; any other name by
//! [`crate::series_query`] (roll-ups where windows have closed, raw samples after them).

use crate::extract::ApiQuery;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderName;
use axum::response::IntoResponse;
use callscope_storage::CustomMetricStore;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::series_query::{SeriesQuery, answer};

pub async fn get_series(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<Vec<(String, String)>>,
) -> ApiResult<impl IntoResponse> {
    let q = SeriesQuery::parse(params, callscope_runtime::now_ms())?;
    let definitions =
        CustomMetricStore::new(state.hot.clone()).effective().await.map_err(|e| ApiError::internal(e.to_string()))?;
    let (series, sources) = match definitions.iter().find(|d| d.name == q.name) {
        Some(def) => crate::derived::answer(&state, &definitions, def, &q).await?,
        None => answer(&state, &q).await?,
    };
    Ok(([(HeaderName::from_static("x-callscope-source"), sources)], Json(series)))
}
