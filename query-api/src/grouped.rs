//! Query results grouped by their keys and time bucket: typed columns, groups found without
//! allocating per row (and without hashing while rows stay in one group, as rows sorted by
//! series do), and quantiles from roll-up sketches collected on every partition of the scan
//! at once, read in place where a bucket holds one sketch.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, StringViewArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use callscope_schemas::rollup::{SketchReader, decode_sketch, merge_sketch};
use datafusion::dataframe::DataFrame;
use futures::StreamExt;
use sketches_ddsketch::DDSketch;

use crate::error::{ApiError, ApiResult};

/// Values per group (the group keys' values) and bucket start.
pub type Grouped = BTreeMap<Vec<String>, BTreeMap<i64, f64>>;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The typed columns of one result batch: `groups` string keys, then the bucket (Int64),
/// then one more column (the value or the sketch).
struct Columns {
    keys: Vec<StringViewArray>,
    bucket: Int64Array,
    last: ArrayRef,
}

impl Columns {
    fn of(batch: &RecordBatch, groups: usize) -> ApiResult<Columns> {
        let typed = |i: usize, to: &DataType| {
            arrow::compute::cast(batch.column(i), to).map_err(|e| ApiError::internal(format!("column {i}: {e}")))
        };
        let keys = (0..groups)
            .map(|i| typed(i, &DataType::Utf8View).map(|a| a.as_string_view().clone()))
            .collect::<ApiResult<Vec<_>>>()?;
        let bucket = typed(groups, &DataType::Int64)?.as_primitive::<Int64Type>().clone();
        Ok(Columns { keys, bucket, last: batch.column(groups + 1).clone() })
    }
}

/// Groups seen so far, each with an index, found by the keys of a row without allocating.
#[derive(Default)]
struct GroupIndex {
    by_key: FastMap<String, usize>,
    groups: Vec<Vec<String>>,
    buffer: String,
    /// The group of the row before (rows of one series come in runs).
    last: Option<usize>,
}

fn key_of(k: &StringViewArray, row: usize) -> &str {
    if k.is_null(row) { "" } else { k.value(row) }
}

impl GroupIndex {
    fn of_row(&mut self, keys: &[StringViewArray], row: usize) -> usize {
        if let Some(last) = self.last
            && keys.iter().zip(&self.groups[last]).all(|(k, g)| key_of(k, row) == g)
        {
            return last;
        }
        self.buffer.clear();
        for k in keys {
            // Separated by a byte that cannot start a UTF-8 character of a key.
            self.buffer.push_str(key_of(k, row));
            self.buffer.push('\u{0}');
        }
        let i = match self.by_key.get(self.buffer.as_str()) {
            Some(i) => *i,
            None => {
                let i = self.groups.len();
                self.groups.push(keys.iter().map(|k| key_of(k, row).to_string()).collect());
                self.by_key.insert(self.buffer.clone(), i);
                i
            }
        };
        self.last = Some(i);
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

/// The sketches of one (group, bucket): the one stored sketch (partition of the scan, batch,
/// row), read in place when the quantile is asked, or the merge of several (decoded only
/// when a second one arrives).
enum Bucket {
    One { part: u32, batch: u32, row: u32 },
    Merged(Box<DDSketch>),
}

/// The sketch columns each partition of the scan read, by partition and batch.
type SketchColumns = [Vec<BinaryArray>];

/// The stored bytes of the sketch at (partition, batch, row).
fn stored(columns: &SketchColumns, part: u32, batch: u32, row: u32) -> &[u8] {
    columns[part as usize][batch as usize].value(row as usize)
}

fn decode(columns: &SketchColumns, part: u32, batch: u32, row: u32) -> ApiResult<DDSketch> {
    decode_sketch(stored(columns, part, batch, row)).map_err(|e| ApiError::internal(e.to_string()))
}

/// Adds `incoming` to the bucket in `slot`.
fn combine(columns: &SketchColumns, slot: &mut Bucket, incoming: Bucket) -> ApiResult<()> {
    let incoming = match incoming {
        Bucket::Merged(sketch) => *sketch,
        Bucket::One { part, batch, row } => decode(columns, part, batch, row)?,
    };
    let merge = |into: &mut DDSketch| merge_sketch(into, &incoming).map_err(|e| ApiError::internal(e.to_string()));
    let mut sketch = match slot {
        Bucket::Merged(sketch) => return merge(sketch),
        Bucket::One { part, batch, row } => decode(columns, *part, *batch, *row)?,
    };
    merge(&mut sketch)?;
    *slot = Bucket::Merged(Box::new(sketch));
    Ok(())
}

/// One partition of a scan: its groups, the sketch columns it read and its buckets.
struct PartitionSketches {
    index: GroupIndex,
    columns: Vec<BinaryArray>,
    buckets: FastMap<(usize, i64), Bucket>,
}

async fn merge_partition(
    mut stream: datafusion::physical_plan::SendableRecordBatchStream,
    groups: usize,
    part: u32,
) -> ApiResult<PartitionSketches> {
    let (mut index, mut buckets) = (GroupIndex::default(), FastMap::default());
    // This partition's columns, at its own index among the partitions (the others empty).
    let mut columns: Vec<Vec<BinaryArray>> = (0..=part).map(|_| Vec::new()).collect();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let typed = Columns::of(&batch, groups)?;
        let sketches = typed.last.as_binary_opt::<i32>().ok_or_else(|| ApiError::internal("sketch column"))?;
        let b = columns[part as usize].len() as u32;
        columns[part as usize].push(sketches.clone());
        for row in 0..batch.num_rows() {
            if typed.bucket.is_null(row) || sketches.is_null(row) {
                continue;
            }
            let key = (index.of_row(&typed.keys, row), typed.bucket.value(row));
            let this = Bucket::One { part, batch: b, row: row as u32 };
            match buckets.entry(key) {
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(this);
                }
                std::collections::hash_map::Entry::Occupied(mut slot) => combine(&columns, slot.get_mut(), this)?,
            }
        }
    }
    let columns = columns.pop().unwrap_or_default();
    Ok(PartitionSketches { index, columns, buckets })
}

/// The `quantile` of the sketches of `df` (the group keys, the bucket, then the sketch
/// column) merged per group and bucket, into `out`. Each partition of the scan collects its
/// own sketches on a task of its own; the partitions' buckets are merged last. A bucket with
/// one stored sketch (a compacted roll-up read at its own resolution) is never decoded: its
/// quantile is read from the stored bytes.
pub(crate) async fn collect_quantiles(df: DataFrame, groups: usize, quantile: f64, out: &mut Grouped) -> ApiResult<()> {
    let tasks: Vec<_> = df
        .execute_stream_partitioned()
        .await?
        .into_iter()
        .enumerate()
        .map(|(p, stream)| tokio::spawn(merge_partition(stream, groups, p as u32)))
        .collect();
    let mut parts = Vec::with_capacity(tasks.len());
    for task in tasks {
        parts.push(task.await.map_err(|e| ApiError::internal(format!("sketch merge: {e}")))??);
    }
    let columns: Vec<Vec<BinaryArray>> = parts.iter_mut().map(|p| std::mem::take(&mut p.columns)).collect();
    // Every bucket, merged across partitions.
    let mut all: HashMap<Vec<String>, FastMap<i64, Bucket>> = HashMap::new();
    for part in parts {
        let mut per_group: Vec<Vec<(i64, Bucket)>> = (0..part.index.groups.len()).map(|_| Vec::new()).collect();
        for ((g, t), bucket) in part.buckets {
            per_group[g].push((t, bucket));
        }
        for (group, buckets) in part.index.groups.into_iter().zip(per_group) {
            let into = all.entry(group).or_default();
            for (t, bucket) in buckets {
                match into.entry(t) {
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(bucket);
                    }
                    std::collections::hash_map::Entry::Occupied(mut slot) => combine(&columns, slot.get_mut(), bucket)?,
                }
            }
        }
    }
    let mut reader = SketchReader::default();
    for (group, buckets) in all {
        let points = out.entry(group).or_default();
        for (t, bucket) in buckets {
            let value = match bucket {
                Bucket::One { part, batch, row } => reader
                    .quantile(stored(&columns, part, batch, row), quantile)
                    .map_err(|e| ApiError::internal(e.to_string()))?,
                Bucket::Merged(sketch) => sketch.quantile(quantile).ok().flatten(),
            };
            if let Some(v) = value {
                points.insert(t, v);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BinaryArray, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use callscope_schemas::rollup::{encode_sketch, new_sketch};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn sketch_of(values: &[f64]) -> Vec<u8> {
        let mut s = new_sketch();
        values.iter().for_each(|v| s.add(*v));
        encode_sketch(&s)
    }

    /// Buckets with one stored sketch (read in place), several in one partition of the scan,
    /// and in both partitions: every quantile equals that of one sketch of all the values.
    #[tokio::test]
    async fn quantiles_of_single_and_merged_buckets_equal_one_sketch_of_their_values() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g0", DataType::Utf8, false),
            Field::new("bucket", DataType::Int64, false),
            Field::new("sketch", DataType::Binary, true),
        ]));
        // (group, bucket, values) per row, by partition.
        let rows: [&[(&str, i64, &[f64])]; 2] = [
            &[("a", 0, &[1.0, 2.0, 3.0]), ("a", 60, &[10.0]), ("a", 60, &[20.0, 30.0]), ("b", 0, &[5.0, 7.0])],
            &[("b", 0, &[100.0, 200.0]), ("b", 60, &[42.0]), ("a", 0, &[4.0]), ("a", 60, &[40.0])],
        ];
        let partitions: Vec<Vec<RecordBatch>> = rows
            .iter()
            .map(|part| {
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(StringArray::from(part.iter().map(|r| r.0).collect::<Vec<_>>())),
                    Arc::new(Int64Array::from(part.iter().map(|r| r.1).collect::<Vec<_>>())),
                    Arc::new(BinaryArray::from_iter_values(part.iter().map(|r| sketch_of(r.2)))),
                ];
                vec![RecordBatch::try_new(schema.clone(), columns).expect("batch")]
            })
            .collect();
        let ctx = SessionContext::new();
        ctx.register_table("t", Arc::new(MemTable::try_new(schema.clone(), partitions).expect("table")))
            .expect("register");
        for q in [0.5, 0.95, 0.99] {
            let mut out = Grouped::new();
            collect_quantiles(ctx.table("t").await.expect("table"), 1, q, &mut out).await.expect("quantiles");
            let mut want: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
            for (g, t, values) in rows.iter().flat_map(|p| p.iter()) {
                want.entry((g.to_string(), *t)).or_default().extend(*values);
            }
            let got: Vec<((String, i64), f64)> =
                out.iter().flat_map(|(g, points)| points.iter().map(move |(t, v)| ((g[0].clone(), *t), *v))).collect();
            let expected: Vec<((String, i64), f64)> = want
                .into_iter()
                .map(|(key, values)| {
                    let mut s = new_sketch();
                    values.iter().for_each(|v| s.add(*v));
                    (key, s.quantile(q).expect("q").expect("not empty"))
                })
                .collect();
            assert_eq!(got, expected, "q {q}");
        }
    }
}
