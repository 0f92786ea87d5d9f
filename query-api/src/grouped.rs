//! Query results grouped by their keys and time bucket: typed columns, groups found without
//! allocating per row, and quantiles merged from roll-up sketches on every partition of
//! the scan at once.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use callscope_schemas::rollup::{decode_sketch, merge_sketch};
use datafusion::dataframe::DataFrame;
use futures::StreamExt;
use sketches_ddsketch::DDSketch;

use crate::error::{ApiError, ApiResult};

/// Values per group (the group keys' values) and bucket start.
pub type Grouped = BTreeMap<Vec<String>, BTreeMap<i64, f64>>;

/// The typed columns of one result batch: `groups` string keys, then the bucket (Int64),
/// then one more column (the value or the sketch).
struct Columns {
    keys: Vec<StringArray>,
    bucket: Int64Array,
    last: ArrayRef,
}

impl Columns {
    fn of(batch: &RecordBatch, groups: usize) -> ApiResult<Columns> {
        let typed = |i: usize, to: &DataType| {
            arrow::compute::cast(batch.column(i), to).map_err(|e| ApiError::internal(format!("column {i}: {e}")))
        };
        let keys = (0..groups)
            .map(|i| typed(i, &DataType::Utf8).map(|a| a.as_string::<i32>().clone()))
            .collect::<ApiResult<Vec<_>>>()?;
        let bucket = typed(groups, &DataType::Int64)?.as_primitive::<Int64Type>().clone();
        Ok(Columns { keys, bucket, last: batch.column(groups + 1).clone() })
    }
}

/// Groups seen so far, each with an index, found by the keys of a row without allocating.
#[derive(Default)]
struct GroupIndex {
    by_key: HashMap<String, usize>,
    groups: Vec<Vec<String>>,
    buffer: String,
}

impl GroupIndex {
    fn of_row(&mut self, keys: &[StringArray], row: usize) -> usize {
        self.buffer.clear();
        for k in keys {
            // Separated by a byte that cannot start a UTF-8 character of a key.
            self.buffer.push_str(if k.is_null(row) { "" } else { k.value(row) });
            self.buffer.push('\u{0}');
        }
        if let Some(i) = self.by_key.get(self.buffer.as_str()) {
            return *i;
        }
        let i = self.groups.len();
        self.groups
            .push(keys.iter().map(|k| if k.is_null(row) { String::new() } else { k.value(row).to_string() }).collect());
        self.by_key.insert(self.buffer.clone(), i);
        i
    }
}

pub(crate) async fn collect_values(df: DataFrame, groups: usize, out: &mut Grouped) -> ApiResult<()> {
    let mut index = GroupIndex::default();
    let mut points: Vec<BTreeMap<i64, f64>> = Vec::new();
    for batch in df.collect().await? {
        let columns = Columns::of(&batch, groups)?;
        let values = arrow::compute::cast(&columns.last, &DataType::Float64)
            .map_err(|e| ApiError::internal(format!("value column: {e}")))?;
        let values = values.as_primitive::<Float64Type>();
        for row in 0..batch.num_rows() {
            if columns.bucket.is_null(row) || values.is_null(row) {
                continue;
            }
            let g = index.of_row(&columns.keys, row);
            if g == points.len() {
                points.push(BTreeMap::new());
            }
            points[g].insert(columns.bucket.value(row), values.value(row));
        }
    }
    for (group, values) in index.groups.into_iter().zip(points) {
        out.entry(group).or_default().extend(values);
    }
    Ok(())
}

/// Sketches merged per (group, bucket) on one partition of a scan.
type MergedSketches = (GroupIndex, HashMap<(usize, i64), DDSketch>);

async fn merge_partition(
    mut stream: datafusion::physical_plan::SendableRecordBatchStream,
    groups: usize,
) -> ApiResult<MergedSketches> {
    let mut index = GroupIndex::default();
    let mut merged: HashMap<(usize, i64), DDSketch> = HashMap::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let columns = Columns::of(&batch, groups)?;
        let sketches = columns.last.as_binary_opt::<i32>().ok_or_else(|| ApiError::internal("sketch column"))?;
        for row in 0..batch.num_rows() {
            if columns.bucket.is_null(row) || sketches.is_null(row) {
                continue;
            }
            let sketch = decode_sketch(sketches.value(row)).map_err(|e| ApiError::internal(e.to_string()))?;
            let key = (index.of_row(&columns.keys, row), columns.bucket.value(row));
            match merged.entry(key) {
                std::collections::hash_map::Entry::Occupied(mut into) => {
                    merge_sketch(into.get_mut(), &sketch).map_err(|e| ApiError::internal(e.to_string()))?
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(sketch);
                }
            }
        }
    }
    Ok((index, merged))
}

/// The `quantile` of the sketches of `df` (the group keys, the bucket, then the sketch
/// column) merged per group and bucket, into `out`. Each partition of the scan decodes and
/// merges its own sketches on a task of its own; the partitions' results are merged last.
pub(crate) async fn collect_quantiles(df: DataFrame, groups: usize, quantile: f64, out: &mut Grouped) -> ApiResult<()> {
    let tasks: Vec<_> = df
        .execute_stream_partitioned()
        .await?
        .into_iter()
        .map(|stream| tokio::spawn(merge_partition(stream, groups)))
        .collect();
    let mut all: HashMap<Vec<String>, HashMap<i64, DDSketch>> = HashMap::new();
    for task in tasks {
        let (index, merged) = task.await.map_err(|e| ApiError::internal(format!("sketch merge: {e}")))??;
        let mut per_group: Vec<HashMap<i64, DDSketch>> = vec![HashMap::new(); index.groups.len()];
        for ((g, t), sketch) in merged {
            per_group[g].insert(t, sketch);
        }
        for (group, sketches) in index.groups.into_iter().zip(per_group) {
            let into = all.entry(group).or_default();
            for (t, sketch) in sketches {
                match into.entry(t) {
                    std::collections::hash_map::Entry::Occupied(mut slot) => {
                        merge_sketch(slot.get_mut(), &sketch).map_err(|e| ApiError::internal(e.to_string()))?
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(sketch);
                    }
                }
            }
        }
    }
    for (group, sketches) in all {
        let points = out.entry(group).or_default();
        for (t, sketch) in sketches {
            if let Ok(Some(v)) = sketch.quantile(quantile) {
                points.insert(t, v);
            }
        }
    }
    Ok(())
}
