//! The grouped query path every time-series answer shares: parameters of a series query,
//! the plan that splits a range between roll-ups (closed windows) and raw samples, and the
//! grouped aggregation over both. `/monitoring/metrics`, custom metrics ([`crate::derived`])
//! and the Prometheus export read through it.
//!
//! Sources: the coarsest roll-up resolution that tiles `step` answers every bucket whose
//! windows have closed (partials merged, quantiles from merged DDSketches); raw samples
//! answer the rest (the newest buckets, steps no resolution tiles, and quantiles of
//! counters and gauges, which keep no sketch). The `x-callscope-source` header says which
//! answered (`rollup:1m+raw`). Points cover whole buckets: `start` and `end` widen to
//! multiples of `step`.
//!
//! Parameters: `name` (required), `service`, `label.<key>=<value>` (any number), `start` and
//! `end` (unix seconds or milliseconds, RFC 3339, or `now-1h`: see [`crate::time_params`];
//! default the last hour), `step` (`15s`, `1m`, `1h`, or ms; default 60 s), `resolution` (`auto` (default), `raw`, or a roll-up resolution such as `1m`), `agg` (`avg|sum|min|max|count|rate|last|p50|p90|p95|p99`; default `avg`).
//! One series per (service, label set); each point is `[bucket start unix ms, value]`, buckets
//! aligned to multiples of `step` since the epoch.

use std::collections::BTreeMap;

use arrow::datatypes::DataType;
use callscope_schemas::rollup::{ROLLUP_TABLE, resolution_label};
use callscope_storage::layout::HOUR_MS;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::{avg, count, last_value, max, min, percentile_cont, sum};
use datafusion::prelude::{Expr, cast, col, lit, when};
use serde::Serialize;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::json_rows::column_values;
use crate::time_params::{parse_duration, parse_time};

/// Most points one request may ask for (per series).
pub const MAX_POINTS: i64 = 11_000;

/// One series in the reply.
#[derive(Debug, Serialize)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(i64, f64)>,
}

/// An aggregation of the series endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Agg {
    Avg,
    Sum,
    Min,
    Max,
    Count,
    /// Sum per second of the step (counters).
    Rate,
    /// The newest sample (gauges).
    Last,
    Quantile(f64),
}

impl Agg {
    pub fn parse(text: &str) -> ApiResult<Agg> {
        Ok(match text {
            "avg" | "mean" => Agg::Avg,
            "sum" => Agg::Sum,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "count" => Agg::Count,
            "rate" => Agg::Rate,
            "last" => Agg::Last,
            "p50" | "median" => Agg::Quantile(0.5),
            "p90" => Agg::Quantile(0.9),
            "p95" => Agg::Quantile(0.95),
            "p99" => Agg::Quantile(0.99),
            other => {
                return Err(ApiError::bad_field(
                    "agg",
                    format!("unknown agg {other:?}; use avg, sum, min, max, count, rate, last, p50, p90, p95 or p99"),
                ));
            }
        })
    }

    /// The aggregate over raw samples.
    pub(crate) fn raw_expr(self, step_ms: i64) -> Expr {
        let v = || col("value");
        match self {
            Agg::Avg => avg(v()),
            Agg::Sum => sum(v()),
            Agg::Min => min(v()),
            Agg::Max => max(v()),
            Agg::Count => count(v()),
            Agg::Rate => sum(v()) / lit(step_ms as f64 / 1000.0),
            Agg::Last => last_value(v(), vec![col("timestamp_ms").sort(true, false), v().sort(true, false)]),
            Agg::Quantile(q) => percentile_cont(v().sort(true, false), lit(q)),
        }
    }

    /// The same aggregate merged from roll-up partials (quantiles are merged from sketches
    /// outside SQL).
    pub(crate) fn rollup_expr(self, step_ms: i64) -> Option<Expr> {
        let f = |e: Expr| cast(e, DataType::Float64);
        Some(match self {
            Agg::Avg => f(sum(col("sum"))) / f(sum(col("count"))),
            Agg::Sum => sum(col("sum")),
            Agg::Min => min(col("min")),
            Agg::Max => max(col("max")),
            Agg::Count => sum(col("count")),
            Agg::Rate => sum(col("sum")) / lit(step_ms as f64 / 1000.0),
            Agg::Last => {
                last_value(col("last"), vec![col("last_time_ms").sort(true, false), col("last").sort(true, false)])
            }
            Agg::Quantile(_) => return None,
        })
    }
}

/// `time_column` in `[from, to)`, and the `date` partitions that range touches (whole days
/// are skipped without opening their files).
fn time_range(time_column: &str, from: i64, to: i64) -> Expr {
    col(time_column)
        .gt_eq(lit(from))
        .and(col(time_column).lt(lit(to)))
        .and(col("date").gt_eq(lit(date_of(from))))
        .and(col("date").lt_eq(lit(date_of(to))))
}

pub(crate) fn date_of(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

/// A parsed series request. `start`/`end` are widened to whole steps: each point covers
/// its whole bucket `[t, t + step)`, whichever source answers.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub name: String,
    pub service: Option<String>,
    pub labels: Vec<(String, String)>,
    pub start: i64,
    pub end: i64,
    pub step: i64,
    pub agg: Agg,
    /// `None`: pick automatically; `Some(0)`: raw samples only; `Some(r)`: roll-ups of `r`.
    pub resolution: Option<i64>,
    /// Whether `agg` was asked for (custom metrics default to their own aggregate).
    pub agg_given: bool,
}

impl SeriesQuery {
    /// Parses the query string; `now_ms` is the default `end` and anchors `now-…`. Times are
    /// bounded to the years 1–9999 and steps to 100 years by the parsers, so the bucket
    /// arithmetic below cannot overflow.
    pub fn parse(params: Vec<(String, String)>, now_ms: i64) -> ApiResult<SeriesQuery> {
        let mut name = None;
        let mut service = None;
        let mut labels = Vec::new();
        let (mut start, mut end, mut step, mut agg) = (None, None, None, "avg".to_string());
        let mut resolution = None;
        let mut agg_given = false;
        for (k, v) in params {
            match k.as_str() {
                "name" => name = Some(v),
                "service" => service = Some(v),
                "start" => start = Some(parse_time("start", &v, now_ms)?),
                "end" => end = Some(parse_time("end", &v, now_ms)?),
                "step" => step = Some(parse_duration("step", &v)?),
                "agg" => {
                    agg = v;
                    agg_given = true;
                }
                "resolution" => {
                    resolution = match v.as_str() {
                        "" | "auto" => None,
                        "raw" => Some(0),
                        text => Some(parse_duration("resolution", text).map_err(|e| {
                            ApiError::bad_field(
                                "resolution",
                                format!("{e}; use auto, raw or a roll-up resolution such as 1m"),
                            )
                        })?),
                    }
                }
                key if key.starts_with("label.") && key.len() > 6 => labels.push((key[6..].to_string(), v)),
                other => return Err(ApiError::bad_field(other, format!("unknown parameter {other:?}"))),
            }
        }
        let name = name.filter(|n| !n.is_empty()).ok_or_else(|| ApiError::bad_field("name", "name is required"))?;
        let end = end.unwrap_or(now_ms);
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
        let agg = Agg::parse(&agg)?;
        // Buckets are aligned to multiples of `step` since the epoch (as Prometheus and
        // Grafana align steps), so the same question gives the same buckets whatever its start.
        let start = start.div_euclid(step) * step;
        let end = (end + step - 1).div_euclid(step) * step;
        if let Some(r) = resolution.filter(|r| *r > 0)
            && step % r != 0
        {
            return Err(ApiError::bad_field(
                "resolution",
                format!("a {r} ms resolution does not tile a {step} ms step"),
            ));
        }
        Ok(SeriesQuery { name, service, labels, start, end, step, agg, resolution, agg_given })
    }

    pub(crate) fn series_filter(&self) -> Expr {
        let mut filter = col("name").eq(lit(self.name.clone()));
        if let Some(service) = &self.service {
            filter = filter.and(col("service").eq(lit(service.clone())));
        }
        for (k, v) in &self.labels {
            filter = filter.and(get_field(col("labels"), k.as_str()).eq(lit(v.clone())));
        }
        filter
    }
}

/// The coarsest roll-up resolution whose windows tile every bucket of `step`.
pub fn pick_resolution(resolutions_ms: &[i64], step_ms: i64) -> Option<i64> {
    resolutions_ms.iter().copied().filter(|r| *r > 0 && step_ms % r == 0).max()
}

/// Where a part of a range is answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Roll-ups of this resolution (ms): the workers' or the lifecycle's downsampled ones.
    Rollup(i64),
    Raw,
}

/// Which source answers which part of the range: `[from, to)` parts in time order, their
/// bounds multiples of the step (a bucket is answered by one source).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub(crate) parts: Vec<(Source, i64, i64)>,
}

impl Plan {
    fn all_raw(q: &SeriesQuery) -> Plan {
        Plan { parts: vec![(Source::Raw, q.start, q.end)] }
    }

    /// The sources in the `x-callscope-source` header: roll-ups coarsest first, then raw.
    fn sources(&self) -> String {
        let mut rollups: Vec<i64> =
            self.parts.iter().filter_map(|(s, ..)| if let Source::Rollup(r) = s { Some(*r) } else { None }).collect();
        rollups.sort_unstable_by(|a, b| b.cmp(a));
        rollups.dedup();
        let mut sources: Vec<String> = rollups.iter().map(|r| format!("rollup:{}", resolution_label(*r))).collect();
        if self.parts.iter().any(|(s, ..)| *s == Source::Raw) {
            sources.push("raw".into());
        }
        sources.join("+")
    }
}

/// For a step no roll-up resolution tiles: the finest resolution when the series have no
/// raw samples in the range (span metrics exist only as roll-ups), answered at its own
/// granularity; `None` (raw samples) otherwise.
async fn finest_for_rollup_only(state: &AppState, q: &SeriesQuery) -> ApiResult<Option<i64>> {
    let Some(finest) = state.resolutions_ms.iter().copied().filter(|r| *r > 0).min() else { return Ok(None) };
    let raw = state
        .engine
        .session()
        .table("metrics")
        .await?
        .filter(q.series_filter().and(time_range("timestamp_ms", q.start, q.end)))?
        .select(vec![col("timestamp_ms")])?
        .limit(0, Some(1))?
        .collect()
        .await?;
    Ok(raw.iter().all(|b| b.num_rows() == 0).then_some(finest))
}

/// The table-hours of roll-ups the catalog knows of beside the workers' resolution `r`:
/// downsampled resolutions that tile the step (when picking automatically), and the hours
/// whose `r` roll-ups of the series' name are gone (deleted, or the name dropped as sparse).
struct RollupHours {
    /// Coarsest first.
    coarse: Vec<(i64, std::collections::BTreeSet<i64>)>,
    deleted: std::collections::BTreeSet<i64>,
}

impl RollupHours {
    async fn read(state: &AppState, q: &SeriesQuery, r: i64) -> ApiResult<RollupHours> {
        let catalog = callscope_storage::FileCatalog::new(state.tiers.clone());
        let range = callscope_storage::TimeRange::new(q.start, q.end);
        let unavailable = |e: callscope_storage::StorageError| ApiError::Unavailable(format!("storage: {e}"));
        let mut coarse = Vec::new();
        if q.resolution.is_none() {
            let hours = catalog.downsampled_hours(range, &state.resolutions_ms).await.map_err(unavailable)?;
            coarse = hours.into_iter().filter(|(c, _)| *c > r && q.step % c == 0).rev().collect();
        }
        let deleted = catalog.rollup_gaps(r, range).await.map_err(unavailable)?.hours_without(&q.name);
        Ok(RollupHours { coarse, deleted })
    }

    /// The source of the bucket `[from, to)`: the coarsest downsampled resolution that
    /// holds every hour it meets, else `r` unless one of those hours lost its `r` roll-ups,
    /// else raw samples.
    fn source(&self, r: i64, from: i64, to: i64) -> Source {
        let (first, end) = (from.div_euclid(HOUR_MS) * HOUR_MS, to);
        let hours = (end - first + HOUR_MS - 1) / HOUR_MS;
        for (c, held) in &self.coarse {
            if held.range(first..end).count() as i64 == hours {
                return Source::Rollup(*c);
            }
        }
        if self.deleted.range(first..end).next().is_some() { Source::Raw } else { Source::Rollup(r) }
    }
}

pub(crate) async fn plan(state: &AppState, q: &SeriesQuery) -> ApiResult<Plan> {
    let r = match q.resolution {
        None => match pick_resolution(&state.resolutions_ms, q.step) {
            Some(r) => Some(r),
            None => finest_for_rollup_only(state, q).await?,
        },
        Some(0) => None,
        Some(r) if state.resolutions_ms.contains(&r) => Some(r),
        Some(r) => {
            return Err(ApiError::bad_field(
                "resolution",
                format!(
                    "no {} roll-ups are written; resolutions: {}",
                    resolution_label(r),
                    state.resolutions_ms.iter().map(|r| resolution_label(*r)).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    };
    let Some(r) = r else { return Ok(Plan::all_raw(q)) };
    let hours = RollupHours::read(state, q, r).await?;
    // How far closed windows reach in each Kafka partition, and whether they carry sketches
    // (quantiles need them). Each partition's worker closes its own windows: the roll-ups
    // answer only up to the partition that is furthest behind, or a lagging partition's raw
    // rows would be left out of buckets labelled exact. Sketches are counted in the
    // downsampled resolutions too, which answer where `r` was deleted.
    let mut resolutions: Vec<Expr> = hours.coarse.iter().map(|(c, _)| lit(*c)).collect();
    resolutions.push(lit(r));
    let labels = hours.coarse.iter().map(|(c, _)| *c).chain([r]).map(|c| lit(resolution_label(c))).collect();
    let df = state
        .engine
        .session()
        .table(ROLLUP_TABLE)
        .await?
        .filter(
            q.series_filter()
                .and(col("resolution").in_list(labels, false))
                .and(col("resolution_ms").in_list(resolutions, false))
                .and(col("late").eq(lit(false)))
                .and(time_range("window_start_ms", q.start, q.end)),
        )?
        .aggregate(
            vec![col("resolution_ms"), col("kafka_partition")],
            vec![
                max(col("window_start_ms")).alias("newest"),
                count(lit(1)).alias("n"),
                // Histograms and summaries carry a sketch; counting their kind reads no sketch.
                sum(when(col("kind").in_list(vec![lit("histogram"), lit("summary")], false), lit(1i64))
                    .otherwise(lit(0i64))?)
                .alias("s"),
            ],
        )?;
    // The newest window of `r` that every partition with rows has closed.
    let (mut closed_by_all, mut n, mut with_sketch) = (None::<i64>, 0, 0);
    for batch in df.collect().await? {
        let (resolution, ends, rows, sketches) = (
            column_values(batch.column(0).as_ref()),
            column_values(batch.column(2).as_ref()),
            column_values(batch.column(3).as_ref()),
            column_values(batch.column(4).as_ref()),
        );
        for i in 0..batch.num_rows() {
            if resolution[i].as_i64() == Some(r)
                && let Some(end) = ends[i].as_i64()
            {
                closed_by_all = Some(closed_by_all.map_or(end, |t| t.min(end)));
            }
            n += rows[i].as_i64().unwrap_or(0);
            with_sketch += sketches[i].as_i64().unwrap_or(0);
        }
    }
    if n == 0 || (matches!(q.agg, Agg::Quantile(_)) && with_sketch < n) {
        // No roll-ups of these series here; or counters and gauges, which keep no sketch:
        // their quantiles come from raw samples.
        return Ok(Plan::all_raw(q));
    }
    // Windows are closed up to the newest one stored, and, for data older than the allowed
    // lateness plus the idle timeout, everywhere: a window without rows there has no data.
    let settled = callscope_runtime::now_ms() - state.rollups_settled_after_ms;
    let horizon = closed_by_all.map_or(settled, |closed| (closed + r).max(settled));
    let covered = (horizon.div_euclid(q.step) * q.step).clamp(q.start, q.end);
    // Each bucket from its source; neighbours of one source make one part.
    let mut parts: Vec<(Source, i64, i64)> = Vec::new();
    let mut bucket = q.start;
    while bucket < covered {
        let source = hours.source(r, bucket, bucket + q.step);
        match parts.last_mut() {
            Some((last, _, to)) if *last == source => *to = bucket + q.step,
            _ => parts.push((source, bucket, bucket + q.step)),
        }
        bucket += q.step;
    }
    if covered < q.end {
        match parts.last_mut() {
            Some((Source::Raw, _, to)) => *to = q.end,
            _ => parts.push((Source::Raw, covered, q.end)),
        }
    }
    Ok(Plan { parts })
}

pub use crate::grouped::Grouped;
use crate::grouped::{collect_quantiles, collect_values};

/// Runs `q` along `plan`, grouped by `keys` (string expressions) and the bucket: roll-up
/// partials merged in SQL (quantiles from merged sketches), then raw samples.
pub(crate) async fn grouped_by(state: &AppState, q: &SeriesQuery, plan: &Plan, keys: Vec<Expr>) -> ApiResult<Grouped> {
    let n = keys.len();
    let keys = |bucket_of: &str| {
        let mut k: Vec<Expr> = keys.iter().cloned().enumerate().map(|(i, e)| e.alias(format!("g{i}"))).collect();
        k.push(((col(bucket_of) / lit(q.step)) * lit(q.step)).alias("bucket"));
        k
    };
    let mut out = Grouped::new();
    for &(source, from, to) in &plan.parts {
        match source {
            Source::Rollup(r) => rollup_part(state, q, r, from, to, keys("window_start_ms"), n, &mut out).await?,
            Source::Raw => {
                let filter = q.series_filter().and(time_range("timestamp_ms", from, to));
                let df = state.engine.session().table("metrics").await?.filter(filter)?.aggregate(
                    keys("timestamp_ms"),
                    vec![cast(q.agg.raw_expr(q.step), DataType::Float64).alias("value")],
                )?;
                collect_values(df, n, &mut out).await?;
            }
        }
    }
    Ok(out)
}

/// Roll-ups of resolution `r` over `[from, to)`, grouped by `keys` (the group keys and the
/// bucket), into `out`.
#[allow(clippy::too_many_arguments)]
async fn rollup_part(
    state: &AppState,
    q: &SeriesQuery,
    r: i64,
    from: i64,
    to: i64,
    keys: Vec<Expr>,
    n: usize,
    out: &mut Grouped,
) -> ApiResult<()> {
    let filter = q
        .series_filter()
        .and(col("resolution").eq(lit(resolution_label(r))))
        .and(col("resolution_ms").eq(lit(r)))
        .and(time_range("window_start_ms", from, to));
    let table = state.engine.session().table(ROLLUP_TABLE).await?.filter(filter)?;
    if let Some(expr) = q.agg.rollup_expr(q.step) {
        let df = table.aggregate(keys, vec![cast(expr, DataType::Float64).alias("value")])?;
        collect_values(df, n, out).await?;
    } else if let Agg::Quantile(quantile) = q.agg {
        // Merge the sketches of every partial in a bucket, then ask the merged sketch.
        let mut select = keys;
        select.push(col("sketch"));
        collect_quantiles(table.select(select)?, n, quantile, out).await?;
    }
    Ok(())
}

/// Answers a series query from roll-ups where closed windows cover it and from raw samples
/// after them; returns the series and a description of the sources (`rollup:1m`, `raw`).
pub async fn answer(state: &AppState, q: &SeriesQuery) -> ApiResult<(Vec<Series>, String)> {
    let plan = plan(state, q).await?;
    let grouped = grouped_by(state, q, &plan, vec![col("service"), col("labels_key")]).await?;
    let mut series = Vec::with_capacity(grouped.len());
    for (key, points) in grouped {
        if let [service, labels_key] = key.as_slice() {
            let mut labels: BTreeMap<String, String> = serde_json::from_str(labels_key).unwrap_or_default();
            labels.insert("service".into(), service.clone());
            series.push(Series { name: q.name.clone(), labels, points: points.into_iter().collect() });
        }
    }
    Ok((series, plan.sources()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_ranges_are_refused_not_wrapped() {
        let params = |s: &str, e: &str, step: &str| {
            vec![
                ("name".into(), "x".into()),
                ("start".into(), s.into()),
                ("end".into(), e.into()),
                ("step".into(), step.into()),
            ]
        };
        for (s, e, step) in [
            ("-9223372036854775808", "0", "1m"),
            ("0", "9223372036854775807", "1m"),
            ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1ms"),
            ("0", "1", "100y"),
        ] {
            let err = SeriesQuery::parse(params(s, e, step), 0);
            assert!(matches!(err, Err(ApiError::BadRequest { .. }) | Ok(_)), "{s} {e} {step}");
            if let Ok(q) = err {
                assert!((q.end - q.start) / q.step <= MAX_POINTS + 2, "{s} {e} {step}: {q:?}");
            }
        }
        assert!(SeriesQuery::parse(params("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1ms"), 0).is_err());
    }

    #[test]
    fn unknown_aggregations_are_refused() {
        assert_eq!(Agg::parse("p95").expect("p95"), Agg::Quantile(0.95));
        assert!(Agg::parse("mode").is_err());
    }

    #[test]
    fn the_coarsest_resolution_that_tiles_the_step() {
        let r = [10_000, 60_000, 3_600_000];
        assert_eq!(pick_resolution(&r, 60_000), Some(60_000));
        assert_eq!(pick_resolution(&r, 300_000), Some(60_000));
        assert_eq!(pick_resolution(&r, 7_200_000), Some(3_600_000));
        assert_eq!(pick_resolution(&r, 30_000), Some(10_000));
        assert_eq!(pick_resolution(&r, 15_000), None);
        assert_eq!(pick_resolution(&[], 60_000), None);
    }

    #[test]
    fn ranges_widen_to_whole_steps() {
        let params = |s: &str, e: &str| {
            vec![
                ("name".into(), "x".into()),
                ("start".into(), s.into()),
                ("end".into(), e.into()),
                ("step".into(), "1m".into()),
            ]
        };
        let q = SeriesQuery::parse(params("1700000090000", "1700000150000"), 0).expect("query");
        assert_eq!((q.start, q.end), (1_700_000_040_000, 1_700_000_160_000));
    }
}
