//! `GET /monitoring/metrics`: time series of one metric, bucketed by `step` and aggregated.
//!
//! Parameters: `name` (required), `service`, `label.<key>=<value>` (any number), `start` and
//! `end` (unix ms or RFC 3339; default the last hour), `step` (`15s`, `1m`, `1h`, or ms;
//! default 60 s), `agg` (`avg|sum|min|max|count|p50|p90|p95|p99`; default `avg`).
//! One series per (service, label set); each point is `[bucket start unix ms, value]`, buckets
//! aligned to multiples of `step` since the epoch.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::{avg, count, max, min, percentile_cont, sum};
use datafusion::prelude::{Expr, col, lit};
use serde::Serialize;
use serde_json::Value;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::json_rows::column_values;

/// Most points one request may ask for (per series).
pub const MAX_POINTS: i64 = 11_000;

/// One series in the reply.
#[derive(Debug, Serialize)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(i64, f64)>,
}

/// Parses a time given as unix milliseconds or RFC 3339.
pub fn parse_time(field: &str, text: &str) -> ApiResult<i64> {
    if let Ok(ms) = text.trim().parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(secs) = text.trim().parse::<f64>()
        && secs.is_finite()
    {
        return Ok((secs * 1000.0) as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|_| ApiError::bad_field(field, format!("{field}={text:?} is neither unix milliseconds nor RFC 3339")))
}

/// Parses a Prometheus-style duration (`30s`, `1m`, `1h30m`, `500ms`) or plain milliseconds.
pub fn parse_step(text: &str) -> ApiResult<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        if ms <= 0 {
            return Err(ApiError::bad_field("step", "step must be positive"));
        }
        return Ok(ms);
    }
    let d = humantime::parse_duration(text).map_err(|e| ApiError::bad_field("step", format!("step={text:?}: {e}")))?;
    let ms = d.as_millis() as i64;
    if ms <= 0 {
        return Err(ApiError::bad_field("step", "step must be at least 1ms"));
    }
    Ok(ms)
}

fn aggregate(agg: &str) -> ApiResult<Expr> {
    let v = || col("value");
    Ok(match agg {
        "avg" | "mean" => avg(v()),
        "sum" => sum(v()),
        "min" => min(v()),
        "max" => max(v()),
        "count" => count(v()),
        "p50" | "median" => percentile_cont(v().sort(true, false), lit(0.5)),
        "p90" => percentile_cont(v().sort(true, false), lit(0.9)),
        "p95" => percentile_cont(v().sort(true, false), lit(0.95)),
        "p99" => percentile_cont(v().sort(true, false), lit(0.99)),
        other => {
            return Err(ApiError::bad_field(
                "agg",
                format!("unknown agg {other:?}; use avg, sum, min, max, count, p50, p90, p95 or p99"),
            ));
        }
    })
}

fn date_of(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

pub async fn get_series(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult<Json<Vec<Series>>> {
    let mut name = None;
    let mut service = None;
    let mut labels = Vec::new();
    let (mut start, mut end, mut step, mut agg) = (None, None, None, "avg".to_string());
    for (k, v) in params {
        match k.as_str() {
            "name" => name = Some(v),
            "service" => service = Some(v),
            "start" => start = Some(parse_time("start", &v)?),
            "end" => end = Some(parse_time("end", &v)?),
            "step" => step = Some(parse_step(&v)?),
            "agg" => agg = v,
            key if key.starts_with("label.") && key.len() > 6 => labels.push((key[6..].to_string(), v)),
            other => return Err(ApiError::bad_field(other, format!("unknown parameter {other:?}"))),
        }
    }
    let name = name.filter(|n| !n.is_empty()).ok_or_else(|| ApiError::bad_field("name", "name is required"))?;
    let end = end.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let start = start.unwrap_or(end - 3_600_000);
    if start >= end {
        return Err(ApiError::bad_field("start", "start must be before end"));
    }
    let step = step.unwrap_or(60_000);
    if (end - start) / step > MAX_POINTS {
        return Err(ApiError::bad_field(
            "step",
            format!("too many points: (end-start)/step must be at most {MAX_POINTS}"),
        ));
    }
    let agg_expr = aggregate(&agg)?;

    let mut filter = col("name")
        .eq(lit(name.clone()))
        .and(col("timestamp_ms").gt_eq(lit(start)))
        .and(col("timestamp_ms").lt(lit(end)))
        .and(col("date").gt_eq(lit(date_of(start))))
        .and(col("date").lt_eq(lit(date_of(end))));
    if let Some(service) = &service {
        filter = filter.and(col("service").eq(lit(service.clone())));
    }
    for (k, v) in &labels {
        filter = filter.and(get_field(col("labels"), k.as_str()).eq(lit(v.clone())));
    }
    // Buckets are aligned to multiples of `step` since the epoch (as Prometheus and Grafana
    // align steps), so the same question gives the same buckets whatever its start.
    let bucket = (col("timestamp_ms") / lit(step)) * lit(step);
    let df = state
        .engine
        .context()
        .table("metrics")
        .await?
        .filter(filter)?
        .aggregate(
            vec![col("service"), col("labels_key"), bucket.alias("bucket")],
            vec![datafusion::prelude::cast(agg_expr, arrow::datatypes::DataType::Float64).alias("value")],
        )?
        .sort(vec![
            col("service").sort(true, false),
            col("labels_key").sort(true, false),
            col("bucket").sort(true, false),
        ])?;
    let batches = df.collect().await?;

    let mut series: BTreeMap<(String, String), Series> = BTreeMap::new();
    for batch in &batches {
        let services = column_values(batch.column(0).as_ref());
        let keys = column_values(batch.column(1).as_ref());
        let buckets = column_values(batch.column(2).as_ref());
        let values = column_values(batch.column(3).as_ref());
        for i in 0..batch.num_rows() {
            let (Value::String(svc), Value::String(key)) = (&services[i], &keys[i]) else { continue };
            let (Some(t), Some(v)) = (buckets[i].as_i64(), values[i].as_f64()) else { continue };
            let entry = series.entry((svc.clone(), key.clone())).or_insert_with(|| {
                let mut labels: BTreeMap<String, String> = serde_json::from_str(key).unwrap_or_default();
                labels.insert("service".into(), svc.clone());
                Series { name: name.clone(), labels, points: Vec::new() }
            });
            entry.points.push((t, v));
        }
    }
    Ok(Json(series.into_values().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_steps_parse() {
        assert_eq!(parse_time("start", "1700000000000").expect("ms"), 1_700_000_000_000);
        assert_eq!(parse_time("start", "2023-11-14T22:13:20Z").expect("rfc3339"), 1_700_000_000_000);
        assert!(parse_time("start", "yesterday").is_err());
        assert_eq!(parse_step("60s").expect("60s"), 60_000);
        assert_eq!(parse_step("1m").expect("1m"), 60_000);
        assert_eq!(parse_step("1h").expect("1h"), 3_600_000);
        assert_eq!(parse_step("250").expect("ms"), 250);
        assert!(parse_step("0").is_err());
        assert!(parse_step("soon").is_err());
    }

    #[test]
    fn unknown_aggregations_are_refused() {
        assert!(aggregate("p95").is_ok());
        assert!(aggregate("mode").is_err());
    }
}
