//! PromQL over the stored data: the roll-up partials of one resolution (closed windows)
//! and the raw samples after them are loaded into a [`WindowStore`] and the expression is
//! evaluated at every step by the same code the alert rules run
//! ([`callscope_schemas::promql::eval`]).
//!
//! The resolution is the coarsest roll-up resolution no longer than the step nor than the
//! shortest range the expression reads (an instant selector reads the 5-minute lookback):
//! `rate(x[5m])` every minute reads 1-minute windows, every hour over a week as well. With
//! no roll-ups (aggregation off) raw samples fill 10-second windows.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use callscope_schemas::MetricKind;
use callscope_schemas::promql::eval::{
    self, LabelSet, Value, WindowStore, longest_range_ms, metric_names, shortest_range_ms,
};
use callscope_schemas::promql::subset::check_subset;
use callscope_schemas::rollup::{ROLLUP_TABLE, SeriesKey, decode_sketch, resolution_label};
use datafusion::prelude::{Expr as DfExpr, cast, col, lit};
use promql_parser::parser::Expr;

use super::PromError;
use crate::AppState;
use crate::series_query::date_of;

/// Most points a series may have in one answer (Prometheus' limit).
pub const MAX_POINTS: i64 = 11_000;
/// Windows of raw samples when the workers write no roll-ups.
const RAW_RESOLUTION_MS: i64 = 10_000;

/// What an evaluation gives: a scalar per step, or series of points.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Scalar(Vec<(i64, f64)>),
    Series(BTreeMap<LabelSet, Vec<(i64, f64)>>),
}

/// Parses `query` and checks it is in the subset.
pub fn parse(query: &str) -> Result<Expr, PromError> {
    let expr =
        promql_parser::parser::parse(query).map_err(|e| PromError::bad_data(format!("invalid expression: {e}")))?;
    check_subset(&expr).map_err(|e| PromError::bad_data(e.to_string()))?;
    Ok(expr)
}

/// Evaluates `expr` at `start`, `start + step`, … up to `end` (unix ms).
pub async fn evaluate(state: &AppState, expr: &Expr, start: i64, end: i64, step: i64) -> Result<Answer, PromError> {
    if step <= 0 {
        return Err(PromError::bad_data(
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if end < start {
        return Err(PromError::bad_data("end timestamp must not be before start time"));
    }
    if (end - start) / step + 1 > MAX_POINTS {
        return Err(PromError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let names: Vec<String> = metric_names(expr).map_err(|e| PromError::bad_data(e.0))?.into_iter().collect();
    let shortest = shortest_range_ms(expr).unwrap_or(eval::LOOKBACK_MS);
    // Windows no longer than the step (or the finest) nor than the shortest range, else the
    // finest: span metrics (`traces_spanmetrics_*`) exist only as roll-ups, never as raw
    // samples, so a 15 s step with 1-minute roll-ups still reads 1-minute windows.
    let finest = state.resolutions_ms.iter().copied().min();
    let r = state
        .resolutions_ms
        .iter()
        .copied()
        .filter(|r| *r <= step.max(finest.unwrap_or(0)) && *r <= shortest)
        .max()
        .or(finest);
    let from = start - longest_range_ms(expr) - r.unwrap_or(RAW_RESOLUTION_MS);
    let mut store = WindowStore::new(r.unwrap_or(RAW_RESOLUTION_MS), i64::MAX / 4);
    if !names.is_empty() {
        // Hours whose roll-ups of `r` the lifecycle deleted (downsampled, kept for less
        // time than raw samples), or dropped a name from as sparse, are read from raw
        // samples, per name.
        let deleted = match r {
            Some(r) => deleted_hour_ranges(state, r, &names, from, end).await?,
            None => BTreeMap::new(),
        };
        let reach = match r {
            Some(r) => load_rollups(state, &mut store, &names, r, &deleted, from, end).await?,
            None => HashMap::new(),
        };
        load_raw(state, &mut store, &names, &reach, &deleted, from, end).await?;
    }
    let mut scalar = Vec::new();
    let mut series: BTreeMap<LabelSet, Vec<(i64, f64)>> = BTreeMap::new();
    let mut t = start;
    while t <= end {
        match eval::evaluate(&store, expr, t).map_err(|e| PromError::execution(e.0))? {
            Value::Scalar(v) => scalar.push((t, v)),
            Value::Vector(samples) => {
                for s in samples {
                    series.entry(s.labels).or_default().push((t, s.value));
                }
            }
        }
        t += step;
    }
    Ok(if scalar.is_empty() || !series.is_empty() { Answer::Series(series) } else { Answer::Scalar(scalar) })
}

/// Per name of `names`, the hours in `[from, to]` without its roll-ups of `r` (deleted, or
/// the name dropped as sparse), as `[start, end)` ranges of consecutive hours; names with
/// none are left out.
async fn deleted_hour_ranges(
    state: &AppState,
    r: i64,
    names: &[String],
    from: i64,
    to: i64,
) -> Result<Deleted, PromError> {
    use callscope_storage::layout::HOUR_MS;
    let catalog = callscope_storage::FileCatalog::new(state.tiers.clone());
    let gaps = catalog
        .rollup_gaps(r, callscope_storage::TimeRange::new(from, to.saturating_add(1)))
        .await
        .map_err(|e| PromError::internal(format!("storage: {e}")))?;
    let mut out = BTreeMap::new();
    for name in names {
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for hour in gaps.hours_without(name) {
            match ranges.last_mut() {
                Some((_, end)) if *end == hour => *end = hour + HOUR_MS,
                _ => ranges.push((hour, hour + HOUR_MS)),
            }
        }
        if !ranges.is_empty() {
            out.insert(name.clone(), ranges);
        }
    }
    Ok(out)
}

/// Per metric name, the `[start, end)` ranges whose roll-ups are gone.
type Deleted = BTreeMap<String, Vec<(i64, i64)>>;

/// Rows of a name in one of its ranges of `deleted`, by `column`.
fn in_deleted(column: &str, deleted: &Deleted) -> DfExpr {
    deleted.iter().fold(lit(false), |any, (name, ranges)| {
        any.or(col("name").eq(lit(name.clone())).and(in_ranges(column, ranges)))
    })
}

/// `column` in any of `ranges` (`[start, end)`).
fn in_ranges(column: &str, ranges: &[(i64, i64)]) -> DfExpr {
    ranges
        .iter()
        .fold(lit(false), |any, (start, end)| any.or(col(column).gt_eq(lit(*start)).and(col(column).lt(lit(*end)))))
}

fn strings(names: &[String]) -> Vec<DfExpr> {
    names.iter().map(|n| lit(n.clone())).collect()
}

fn text<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a arrow::array::StringArray, PromError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| PromError::internal(format!("column {name}")))
}

fn labels_of(key: &str) -> BTreeMap<String, String> {
    serde_json::from_str(key).unwrap_or_default()
}

/// The series keys of the rows read, made once per series: a row's key is looked up by its
/// name, service and labels in a reused buffer, so a row of a known series allocates nothing.
#[derive(Default)]
struct SeriesKeys {
    by_id: HashMap<String, SeriesKey>,
    id: String,
}

impl SeriesKeys {
    /// Calls `f` with every row of `batch` and its series key (from the columns `name`,
    /// `service`, `labels_key`, `kind` and `unit`).
    fn for_each_row(
        &mut self,
        batch: &RecordBatch,
        mut f: impl FnMut(usize, &SeriesKey) -> Result<(), PromError>,
    ) -> Result<(), PromError> {
        let (name, service, labels, kind, unit) = (
            text(batch, "name")?,
            text(batch, "service")?,
            text(batch, "labels_key")?,
            text(batch, "kind")?,
            text(batch, "unit")?,
        );
        for i in 0..batch.num_rows() {
            self.id.clear();
            for part in [name.value(i), "\0", service.value(i), "\0", labels.value(i)] {
                self.id.push_str(part);
            }
            if !self.by_id.contains_key(&self.id) {
                let key = SeriesKey {
                    name: name.value(i).to_string(),
                    service: service.value(i).to_string(),
                    labels: labels_of(labels.value(i)),
                    kind: MetricKind::parse(kind.value(i)).unwrap_or(MetricKind::Gauge),
                    unit: (!unit.is_null(i)).then(|| unit.value(i).to_string()),
                };
                self.by_id.insert(self.id.clone(), key);
            }
            f(i, &self.by_id[&self.id])?;
        }
        Ok(())
    }
}

/// Loads the roll-ups of resolution `r` with windows in `[from, to]`; returns, per Kafka
/// partition, where its closed windows end (its raw samples answer after that: samples can
/// arrive long after their time, so no age makes a window closed that no roll-up shows).
async fn load_rollups(
    state: &AppState,
    store: &mut WindowStore,
    names: &[String],
    r: i64,
    deleted: &Deleted,
    from: i64,
    to: i64,
) -> Result<HashMap<i32, i64>, PromError> {
    let filter = col("name")
        .in_list(strings(names), false)
        .and(!in_deleted("window_start_ms", deleted))
        .and(col("resolution").eq(lit(resolution_label(r))))
        .and(col("resolution_ms").eq(lit(r)))
        .and(col("window_start_ms").gt_eq(lit(from.div_euclid(r) * r)))
        .and(col("window_start_ms").lt_eq(lit(to)))
        .and(col("date").gt_eq(lit(date_of(from))))
        .and(col("date").lt_eq(lit(date_of(to))));
    let utf8 = |c: &str| cast(col(c), DataType::Utf8).alias(c);
    let df = state.engine.session().table(ROLLUP_TABLE).await?.filter(filter)?.select(vec![
        utf8("name"),
        utf8("service"),
        utf8("labels_key"),
        utf8("kind"),
        utf8("unit"),
        col("window_start_ms"),
        col("count"),
        col("sum"),
        col("min"),
        col("max"),
        col("last"),
        col("last_time_ms"),
        col("sketch"),
        col("kafka_partition"),
    ])?;
    let batches = df.collect().await?;
    let mut reach: HashMap<i32, i64> = HashMap::new();
    for batch in &batches {
        let starts = batch.column(5).as_primitive::<Int64Type>();
        let partitions = batch.column(13).as_primitive::<Int32Type>();
        for i in 0..batch.num_rows() {
            let end = starts.value(i) + r;
            let slot = reach.entry(partitions.value(i)).or_insert(end);
            *slot = (*slot).max(end);
        }
    }
    let mut keys = SeriesKeys::default();
    for batch in &batches {
        let i64s = |i: usize| batch.column(i).as_primitive::<Int64Type>();
        let f64s = |i: usize| batch.column(i).as_primitive::<Float64Type>();
        let (starts, counts, last_times) = (i64s(5), i64s(6), i64s(11));
        let (sums, mins, maxs, lasts) = (f64s(7), f64s(8), f64s(9), f64s(10));
        let sketches = batch.column(12).as_binary::<i32>();
        keys.for_each_row(batch, |i, key| {
            let mut partial = callscope_schemas::rollup::Partial::empty(key.kind);
            partial.count = counts.value(i).max(0) as u64;
            partial.sum = sums.value(i);
            partial.min = mins.value(i);
            partial.max = maxs.value(i);
            partial.last = lasts.value(i);
            partial.last_time_ms = last_times.value(i);
            partial.sketch = if sketches.is_null(i) {
                None
            } else {
                Some(Box::new(decode_sketch(sketches.value(i)).map_err(|e| PromError::internal(e.to_string()))?))
            };
            store.correct(key, starts.value(i), &partial);
            Ok(())
        })?;
    }
    Ok(reach)
}

/// Adds the raw samples of `names` in `[from, to]` that no roll-up of their partition holds
/// (`reach`: where each partition's closed windows end).
async fn load_raw(
    state: &AppState,
    store: &mut WindowStore,
    names: &[String],
    reach: &HashMap<i32, i64>,
    deleted: &Deleted,
    from: i64,
    to: i64,
) -> Result<(), PromError> {
    // Each partition from where its roll-ups end; partitions without roll-ups from `from`;
    // and the hours whose roll-ups were deleted. Data files hold one partition each, so
    // their statistics skip the others' files.
    let known: Vec<DfExpr> = reach.keys().map(|p| lit(*p)).collect();
    let mut unrolled = if known.is_empty() { lit(true) } else { col("kafka_partition").in_list(known, true) };
    unrolled = unrolled.or(in_deleted("timestamp_ms", deleted));
    for (p, end) in reach {
        unrolled = unrolled.or(col("kafka_partition").eq(lit(*p)).and(col("timestamp_ms").gt_eq(lit(*end))));
    }
    let filter = col("name")
        .in_list(strings(names), false)
        .and(unrolled)
        .and(col("timestamp_ms").gt_eq(lit(from)))
        .and(col("timestamp_ms").lt_eq(lit(to)))
        .and(col("date").gt_eq(lit(date_of(from))))
        .and(col("date").lt_eq(lit(date_of(to))));
    let utf8 = |c: &str| cast(col(c), DataType::Utf8).alias(c);
    let df = state.engine.session().table("metrics").await?.filter(filter)?.select(vec![
        utf8("name"),
        utf8("service"),
        utf8("labels_key"),
        utf8("kind"),
        utf8("unit"),
        col("value"),
        col("timestamp_ms"),
    ])?;
    let mut keys = SeriesKeys::default();
    for batch in df.collect().await? {
        let values = batch.column(5).as_primitive::<Float64Type>();
        let times = batch.column(6).as_primitive::<Int64Type>();
        keys.for_each_row(&batch, |i, key| {
            store.add_sample(key, values.value(i), times.value(i));
            Ok(())
        })?;
    }
    Ok(())
}
