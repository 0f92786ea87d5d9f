//! Roll-ups: per-window aggregates of metric series, the `metric_rollups` dataset.
//!
//! A roll-up row is a *partial* aggregate: the samples of one series, in one window of one
//! resolution, read from one Kafka partition. Every field merges associatively and
//! commutatively (counts add, min/max, the newest `last`, DDSketches merge; sums of decimals
//! add exactly, [`crate::decimal::exact_sum`], so their bits do not depend on the order
//! either), so rows of several partitions, late-data corrections, finer windows (10 s into
//! 1 min into 1 h) and several series combine without going back to raw samples.
//!
//! Quantiles come from a DDSketch with 1 % relative accuracy, stored in the row in the
//! DataDog binary format (`sketch` column; histograms and summaries only; see
//! [`sketch_bytes`]).

use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, MapBuilder,
    RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use sketches_ddsketch::{Config, DDSketch};

use crate::decimal::exact_sum;
use crate::events::{Labels, Metric, MetricKind, labels_key};

pub mod sketch_bytes;
pub use sketch_bytes::{SketchReader, encode_sketch};

/// Name of the roll-up dataset (directory and query table).
pub const ROLLUP_TABLE: &str = "metric_rollups";

/// Relative accuracy of the quantile sketches.
pub const SKETCH_RELATIVE_ACCURACY: f64 = 0.01;

fn sketch_config() -> Config {
    Config::new(SKETCH_RELATIVE_ACCURACY, 2048, 1.0e-9)
}

/// An empty quantile sketch with callscope's settings.
pub fn new_sketch() -> DDSketch {
    DDSketch::new(sketch_config())
}

/// Reads a stored sketch.
pub fn decode_sketch(bytes: &[u8]) -> Result<DDSketch, ArrowError> {
    DDSketch::from_java_bytes(bytes).map_err(|e| ArrowError::ParseError(format!("invalid sketch: {e}")))
}

/// Merges `other` into `into`; sketches of callscope always share one configuration.
pub fn merge_sketch(into: &mut DDSketch, other: &DDSketch) -> Result<(), ArrowError> {
    into.merge(other).map_err(|e| ArrowError::ComputeError(format!("cannot merge sketches: {e}")))
}

/// `10s`, `1m`, `1h`: the label of a resolution (the `resolution=` directory).
pub fn resolution_label(resolution_ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(resolution_ms.max(0) as u64))
        .to_string()
        .replace(' ', "")
}

/// What identifies a series: metric name, service, kind, unit and label set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub name: String,
    pub service: String,
    pub labels: Labels,
    pub kind: MetricKind,
    pub unit: Option<String>,
}

impl SeriesKey {
    pub fn of(metric: &Metric) -> SeriesKey {
        SeriesKey {
            name: metric.name.clone(),
            service: metric.service.clone(),
            labels: metric.labels.clone(),
            kind: metric.kind,
            unit: metric.unit.clone(),
        }
    }

    /// Whether `metric` belongs to this series.
    pub fn matches(&self, metric: &Metric) -> bool {
        self.kind == metric.kind
            && self.name == metric.name
            && self.service == metric.service
            && self.labels == metric.labels
            && self.unit == metric.unit
    }

    /// Approximate heap and inline size, for state accounting.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.name.len()
            + self.service.len()
            + self.unit.as_ref().map_or(0, String::len)
            + self.labels.iter().map(|(k, v)| k.len() + v.len() + 64).sum::<usize>()
    }
}

/// A mergeable aggregate of samples.
#[derive(Clone)]
pub struct Partial {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The newest sample's value; ties in time go to the larger value, which keeps merging
    /// independent of order.
    pub last: f64,
    pub last_time_ms: i64,
    /// Quantile sketch (histograms and summaries).
    pub sketch: Option<Box<DDSketch>>,
}

impl std::fmt::Debug for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partial")
            .field("count", &self.count)
            .field("sum", &self.sum)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("last", &self.last)
            .field("last_time_ms", &self.last_time_ms)
            .field("sketch_bins", &self.sketch.as_ref().map(|s| s.length()))
            .finish()
    }
}

impl Partial {
    /// An empty aggregate for a series of `kind`.
    pub fn empty(kind: MetricKind) -> Partial {
        let sketch = matches!(kind, MetricKind::Histogram | MetricKind::Summary).then(|| Box::new(new_sketch()));
        Partial {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: f64::NAN,
            last_time_ms: i64::MIN,
            sketch,
        }
    }

    pub fn add(&mut self, value: f64, time_ms: i64) {
        self.count += 1;
        self.sum = exact_sum(self.sum, value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if newer(time_ms, value, self.last_time_ms, self.last) {
            self.last = value;
            self.last_time_ms = time_ms;
        }
        if let Some(sketch) = &mut self.sketch {
            sketch.add(value);
        }
    }

    pub fn merge(&mut self, other: &Partial) -> Result<(), ArrowError> {
        if other.count == 0 {
            return Ok(());
        }
        self.count += other.count;
        self.sum = exact_sum(self.sum, other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if newer(other.last_time_ms, other.last, self.last_time_ms, self.last) {
            self.last = other.last;
            self.last_time_ms = other.last_time_ms;
        }
        match (&mut self.sketch, &other.sketch) {
            (Some(mine), Some(theirs)) => merge_sketch(mine, theirs)?,
            (None, Some(theirs)) => self.sketch = Some(theirs.clone()),
            _ => {}
        }
        Ok(())
    }

    /// Approximate size in memory.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.sketch.as_ref().map_or(0, |s| std::mem::size_of::<DDSketch>() + s.length() * 8 + 256)
    }

    /// The `q` quantile from the sketch; the extremes are the exact `min` and `max` (a
    /// stored sketch leaves those to the row's columns).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let sketch = self.sketch.as_ref().filter(|_| self.count > 0)?;
        match q {
            q if q <= 0.0 => Some(self.min),
            q if q >= 1.0 => Some(self.max),
            q => sketch.quantile(q).ok().flatten(),
        }
    }
}

fn newer(time: i64, value: f64, than_time: i64, than_value: f64) -> bool {
    time > than_time || (time == than_time && (than_value.is_nan() || value > than_value))
}

/// One row of `metric_rollups`.
#[derive(Debug, Clone)]
pub struct RollupRow {
    pub resolution_ms: i64,
    pub window_start_ms: i64,
    pub series: Arc<SeriesKey>,
    pub partial: Partial,
    pub partition: i32,
    /// A correction from events that arrived after the window had closed; it merges with
    /// the window's other rows like any partial.
    pub late: bool,
}

fn string_map_type() -> DataType {
    let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    builder.finish().data_type().clone()
}

/// The Arrow schema of `metric_rollups` files (the table adds `resolution`, `date`, `hour`).
pub fn rollup_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("resolution_ms", DataType::Int64, false),
                Field::new("window_start_ms", DataType::Int64, false),
                Field::new("window_start", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
                Field::new("name", DataType::Utf8, false),
                Field::new("service", DataType::Utf8, false),
                Field::new("labels", string_map_type(), false),
                Field::new("labels_key", DataType::Utf8, false),
                Field::new("kind", DataType::Utf8, false),
                Field::new("unit", DataType::Utf8, true),
                Field::new("count", DataType::Int64, false),
                Field::new("sum", DataType::Float64, false),
                Field::new("min", DataType::Float64, false),
                Field::new("max", DataType::Float64, false),
                Field::new("last", DataType::Float64, false),
                Field::new("last_time_ms", DataType::Int64, false),
                Field::new("sketch", DataType::Binary, true),
                Field::new("late", DataType::Boolean, false),
                Field::new("kafka_partition", DataType::Int32, false),
            ]))
        })
        .clone()
}

/// Builds a record batch of roll-up rows.
pub fn rollups_to_record_batch<'a>(rows: impl IntoIterator<Item = &'a RollupRow>) -> Result<RecordBatch, ArrowError> {
    let (mut res, mut start_ms, mut start) =
        (Int64Builder::new(), Int64Builder::new(), TimestampMillisecondBuilder::new());
    let (mut name, mut service, mut key, mut kind, mut unit) =
        (StringBuilder::new(), StringBuilder::new(), StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
    let mut labels = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let (mut count, mut last_time) = (Int64Builder::new(), Int64Builder::new());
    let (mut sum, mut min, mut max, mut last) =
        (Float64Builder::new(), Float64Builder::new(), Float64Builder::new(), Float64Builder::new());
    let mut sketch = BinaryBuilder::new();
    let mut late = BooleanBuilder::new();
    let mut partition = Int32Builder::new();
    for row in rows {
        let s = &row.series;
        let p = &row.partial;
        res.append_value(row.resolution_ms);
        start_ms.append_value(row.window_start_ms);
        start.append_value(row.window_start_ms);
        name.append_value(&s.name);
        service.append_value(&s.service);
        for (k, v) in &s.labels {
            labels.keys().append_value(k);
            labels.values().append_value(v);
        }
        labels.append(true)?;
        key.append_value(labels_key(&s.labels));
        kind.append_value(s.kind.as_str());
        unit.append_option(s.unit.as_deref());
        count.append_value(p.count as i64);
        sum.append_value(p.sum);
        min.append_value(p.min);
        max.append_value(p.max);
        last.append_value(p.last);
        last_time.append_value(p.last_time_ms);
        sketch.append_option(p.sketch.as_ref().map(|s| encode_sketch(s)));
        late.append_value(row.late);
        partition.append_value(row.partition);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(res.finish()),
        Arc::new(start_ms.finish()),
        Arc::new(start.finish().with_timezone("UTC")),
        Arc::new(name.finish()),
        Arc::new(service.finish()),
        Arc::new(labels.finish()),
        Arc::new(key.finish()),
        Arc::new(kind.finish()),
        Arc::new(unit.finish()),
        Arc::new(count.finish()),
        Arc::new(sum.finish()),
        Arc::new(min.finish()),
        Arc::new(max.finish()),
        Arc::new(last.finish()),
        Arc::new(last_time.finish()),
        Arc::new(sketch.finish()),
        Arc::new(late.finish()),
        Arc::new(partition.finish()),
    ];
    RecordBatch::try_new(rollup_schema(), columns)
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ArrowError> {
    batch.column_by_name(name).ok_or_else(|| ArrowError::SchemaError(format!("roll-up column {name} is missing")))
}

/// Reads roll-up rows back (window-state checkpoints, tools). Series keys are shared
/// between rows of the same series through `intern`.
pub fn rollups_from_record_batch(
    batch: &RecordBatch,
    intern: &mut dyn FnMut(SeriesKey) -> Arc<SeriesKey>,
) -> Result<Vec<RollupRow>, ArrowError> {
    let i64s =
        |n: &str| column(batch, n).and_then(|c| c.as_primitive_opt::<Int64Type>().cloned().ok_or_else(|| bad(n)));
    let f64s =
        |n: &str| column(batch, n).and_then(|c| c.as_primitive_opt::<Float64Type>().cloned().ok_or_else(|| bad(n)));
    let strs = |n: &str| column(batch, n).and_then(|c| c.as_string_opt::<i32>().cloned().ok_or_else(|| bad(n)));
    let (res, start, count, last_time) =
        (i64s("resolution_ms")?, i64s("window_start_ms")?, i64s("count")?, i64s("last_time_ms")?);
    let (sum, min, max, last) = (f64s("sum")?, f64s("min")?, f64s("max")?, f64s("last")?);
    let (name, service, kind, unit) = (strs("name")?, strs("service")?, strs("kind")?, strs("unit")?);
    let labels = column(batch, "labels")?.as_map_opt().cloned().ok_or_else(|| bad("labels"))?;
    let sketch = column(batch, "sketch")?.as_binary_opt::<i32>().cloned().ok_or_else(|| bad("sketch"))?;
    let late = column(batch, "late")?.as_boolean_opt().cloned().ok_or_else(|| bad("late"))?;
    let partition = column(batch, "kafka_partition")?
        .as_primitive_opt::<Int32Type>()
        .cloned()
        .ok_or_else(|| bad("kafka_partition"))?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let entries = labels.value(i);
        let keys = entries.column(0).as_string::<i32>();
        let values = entries.column(1).as_string::<i32>();
        let label_map: Labels =
            (0..entries.len()).map(|j| (keys.value(j).to_string(), values.value(j).to_string())).collect();
        let kind = MetricKind::parse(kind.value(i))
            .ok_or_else(|| ArrowError::ParseError(format!("unknown metric kind {:?}", kind.value(i))))?;
        let series = intern(SeriesKey {
            name: name.value(i).to_string(),
            service: service.value(i).to_string(),
            labels: label_map,
            kind,
            unit: (!unit.is_null(i)).then(|| unit.value(i).to_string()),
        });
        let sketch = if sketch.is_null(i) { None } else { Some(Box::new(decode_sketch(sketch.value(i))?)) };
        rows.push(RollupRow {
            resolution_ms: res.value(i),
            window_start_ms: start.value(i),
            series,
            partial: Partial {
                count: count.value(i).max(0) as u64,
                sum: sum.value(i),
                min: min.value(i),
                max: max.value(i),
                last: last.value(i),
                last_time_ms: last_time.value(i),
                sketch,
            },
            partition: partition.value(i),
            late: late.value(i),
        });
    }
    Ok(rows)
}

fn bad(name: &str) -> ArrowError {
    ArrowError::SchemaError(format!("roll-up column {name} has an unexpected type"))
}

#[cfg(test)]
mod tests;
