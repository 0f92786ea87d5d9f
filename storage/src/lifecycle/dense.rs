//! The cold tier's dense encoding of measurement columns: a column of doubles whose every
//! value is an exact decimal with at most [`MAX_SCALE`] digits after the point is stored
//! as `DECIMAL(18, scale)` (a Parquet INT64, delta-encoded), which a stock reader turns
//! back into exactly the same doubles. Real metrics are mostly integers (counters, byte
//! counts, queue lengths) or decimals with 2–4 digits (latencies, ratios): sorted by series
//! and time, their deltas take a few bits where a double takes 64.
//!
//! Scales are chosen per series: the cold writer sends each series (its rows are
//! contiguous, sorted) to a file of series that share its scales, so a counter is not
//! stored in ten-thousandths because a ratio in the same table-hour needed four digits.
//!
//! Within a file, the series of one metric name are written in a **chain**: each series
//! is followed by the one whose first value is nearest to its last value. A delta-encoded
//! column pays for every jump between series (one large delta widens the bit width of its
//! whole block of 128 values); chained, the jumps are about as small as the steps inside a
//! series. Rows stay clustered by name and by series, so reads by name and series still
//! find their row groups; the file's declared sort order is then the name only.
//!
//! A series whose values only grow (a counter) is written **newest first**. Its steps are
//! then ≤ 0, and the jump to the next series (up by about what a series grows in the
//! hour, since counters' levels overlap) widens only its own miniblock of 32 values;
//! written oldest first, each such jump went down, set the minimum delta of its whole
//! block of 128 and widened all of it.
//!
//! "Exactly" is checked value by value, bit for bit, with the very arithmetic readers use
//! (`unscaled as f64 / 10^scale`): a column with one value that does not come back
//! identical (`-0.0`, `NaN`, `0.1 + 0.2`, a value past 10^15) stays a column of doubles.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Decimal128Array, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use callscope_schemas::decimal::exact_unscaled;

use crate::Result;

/// Most digits after the decimal point a dense column keeps.
pub const MAX_SCALE: i8 = 4;
/// Digits of a dense column (fits a Parquet INT64).
pub const PRECISION: u8 = 18;

fn reads_back(v: f64, scale: i8) -> Option<i128> {
    exact_unscaled(v, scale).map(i128::from)
}

/// The smallest scale at which every value of the column reads back exactly, if any.
pub fn decimal_scale<'a>(arrays: impl Iterator<Item = &'a Float64Array> + Clone) -> Option<i8> {
    (0..=MAX_SCALE).find(|&scale| {
        arrays.clone().all(|a| (0..a.len()).all(|i| a.is_null(i) || reads_back(a.value(i), scale).is_some()))
    })
}

fn to_decimal(array: &Float64Array, scale: i8) -> Result<ArrayRef> {
    let mut values = Vec::with_capacity(array.len());
    for i in 0..array.len() {
        if array.is_null(i) {
            values.push(None);
            continue;
        }
        let v = array.value(i);
        let unscaled = reads_back(v, scale).ok_or_else(|| {
            arrow::error::ArrowError::InvalidArgumentError(format!("{v} is not exact at {scale} decimal digits"))
        })?;
        values.push(Some(unscaled));
    }
    Ok(Arc::new(Decimal128Array::from(values).with_precision_and_scale(PRECISION, scale)?))
}

/// Per column of `schema`: the decimal scale every value of that double column in
/// `batches` allows (`None`: not a double column, or no exact scale).
pub fn scales_of(schema: &SchemaRef, batches: &[RecordBatch]) -> Vec<Option<i8>> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            if field.data_type() != &DataType::Float64 {
                return None;
            }
            decimal_scale(batches.iter().filter_map(|b| b.column(i).as_any().downcast_ref::<Float64Array>()))
        })
        .collect()
}

/// [`scales_of`] for the rows of one series, with one scale shared by its decimal columns
/// where the values allow it: the largest any of them needs. A series of a few rows (an
/// hour-long roll-up window is one row) needs a scale per column by chance (a two-digit
/// latency of 120.50 needs one digit), and as the cold writer sends each combination of
/// scales to a file of its own, that made dozens of tiny files per hour. A larger scale
/// stores the same values exactly for a few more bits; a column whose values would pass
/// [`callscope_schemas::decimal::MAX_UNSCALED`] at it keeps its own.
pub fn series_scales(schema: &SchemaRef, batches: &[RecordBatch]) -> Vec<Option<i8>> {
    let scales = scales_of(schema, batches);
    let Some(shared) = scales.iter().flatten().max().copied() else { return scales };
    scales
        .into_iter()
        .enumerate()
        .map(|(i, scale)| {
            let fits = || {
                batches
                    .iter()
                    .filter_map(|b| b.column(i).as_any().downcast_ref::<Float64Array>())
                    .all(|a| (0..a.len()).all(|j| a.is_null(j) || reads_back(a.value(j), shared).is_some()))
            };
            scale.map(|own| if own == shared || fits() { shared } else { own })
        })
        .collect()
}

/// The batches with every column that has a scale in `scales` (from [`scales_of`]) as
/// decimals; an error if a value does not read back exactly at its column's scale.
pub fn densify_with(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    scales: &[Option<i8>],
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(scales)
        .map(|(field, scale)| match scale {
            Some(scale) => Field::new(field.name(), DataType::Decimal128(PRECISION, *scale), field.is_nullable())
                .with_metadata(field.metadata().clone()),
            None => field.as_ref().clone(),
        })
        .collect();
    let dense: SchemaRef = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for (i, scale) in scales.iter().enumerate() {
            if let (Some(scale), Some(a)) = (scale, batch.column(i).as_any().downcast_ref::<Float64Array>()) {
                columns[i] = to_decimal(a, *scale)?;
            }
        }
        out.push(RecordBatch::try_new(dense.clone(), columns)?);
    }
    Ok((dense, out))
}

/// Dense batches, their schema, and the columns converted (name, scale).
pub type Densified = (SchemaRef, Vec<RecordBatch>, Vec<(String, i8)>);

/// [`scales_of`] then [`densify_with`].
pub fn densify(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Densified> {
    let scales = scales_of(schema, batches);
    let (dense, out) = densify_with(schema, batches, &scales)?;
    let names = scales.iter().enumerate().filter_map(|(i, s)| s.map(|s| (schema.field(i).name().clone(), s))).collect();
    Ok((dense, out, names))
}

/// A total order of doubles (`-NaN < -inf < … < -0.0 < 0.0 < … < inf < NaN`) as integers.
fn order_key(v: f64) -> i64 {
    let bits = v.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

/// First and last non-null value of a run of rows in column `column` (a double column).
fn run_ends(run: &[RecordBatch], column: usize) -> (f64, f64) {
    let values = || {
        run.iter()
            .filter_map(move |b| b.column(column).as_any().downcast_ref::<Float64Array>())
            .flat_map(|a| (0..a.len()).filter(|i| !a.is_null(*i)).map(|i| a.value(i)).collect::<Vec<_>>())
    };
    (values().next().unwrap_or(0.0), values().last().unwrap_or(0.0))
}

/// Whether the values of `run` in `column` (a double column) never go down and do go up.
pub fn only_grows(run: &[RecordBatch], column: usize) -> bool {
    let mut previous: Option<f64> = None;
    let mut grew = false;
    for a in run.iter().filter_map(|b| b.column(column).as_any().downcast_ref::<Float64Array>()) {
        for v in a.iter().flatten() {
            if let Some(p) = previous {
                if v < p || v.is_nan() {
                    return false;
                }
                grew |= v > p;
            }
            previous = Some(v);
        }
    }
    grew
}

/// The rows of `run`, last first.
pub fn newest_first(run: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let Some(first) = run.first() else { return Ok(run) };
    let all = arrow::compute::concat_batches(&first.schema(), &run)?;
    let indices = arrow::array::UInt32Array::from_iter_values((0..all.num_rows() as u32).rev());
    Ok(vec![arrow::compute::take_record_batch(&all, &indices)?])
}

/// The order to write `runs` (whole series, in sorted order) in: runs with the same
/// `group` stay together, in their order; within a group each run is followed by the one
/// whose first value in `column` is nearest to its last (see the module docs).
pub fn chain_order(runs: &[Vec<RecordBatch>], group: &[String], column: usize) -> Vec<usize> {
    let ends: Vec<(f64, f64)> = runs.iter().map(|run| run_ends(run, column)).collect();
    let mut order = Vec::with_capacity(runs.len());
    let mut from = 0;
    while from < runs.len() {
        let to = (from..runs.len()).find(|i| group[*i] != group[from]).unwrap_or(runs.len());
        let mut by_start: std::collections::BTreeSet<(i64, usize)> =
            (from..to).map(|i| (order_key(ends[i].0), i)).collect();
        let mut next = by_start.pop_first();
        while let Some((_, i)) = next {
            order.push(i);
            let end = ends[i].1;
            let below = by_start.range(..(order_key(end), 0)).next_back().copied();
            let above = by_start.range((order_key(end), 0)..).next().copied();
            let distance = |c: Option<(i64, usize)>| c.map(|(_, j)| (ends[j].0 - end).abs()).unwrap_or(f64::INFINITY);
            next = match (below, above) {
                (Some(b), Some(a)) => Some(if distance(Some(b)) <= distance(Some(a)) { b } else { a }),
                (b, a) => b.or(a),
            };
            if let Some(taken) = next {
                by_start.remove(&taken);
            }
        }
        from = to;
    }
    order
}

#[cfg(test)]
mod tests {
    use arrow::compute::cast;

    use super::*;

    fn column(values: &[f64]) -> Float64Array {
        Float64Array::from(values.to_vec())
    }

    fn run(values: &[f64]) -> Vec<RecordBatch> {
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("value", DataType::Float64, true)]));
        vec![RecordBatch::try_new(schema, vec![Arc::new(column(values))]).expect("batch")]
    }

    #[test]
    fn growing_series_are_recognised_and_turned_newest_first() {
        let counter = run(&[1.0, 1.0, 3.0, 7.0]);
        assert!(only_grows(&counter, 0));
        assert!(!only_grows(&run(&[5.0, 5.0]), 0), "flat is not growing");
        assert!(!only_grows(&run(&[1.0, 3.0, 2.0]), 0), "a step down");
        assert!(!only_grows(&run(&[1.0, f64::NAN]), 0));
        let two_batches = vec![counter[0].slice(0, 2), counter[0].slice(2, 2)];
        let back = newest_first(two_batches).expect("reversed");
        let values: Vec<f64> = back
            .iter()
            .flat_map(|b| b.column(0).as_any().downcast_ref::<Float64Array>().expect("f64").values().to_vec())
            .collect();
        assert_eq!(values, [7.0, 3.0, 1.0, 1.0]);
    }

    #[test]
    fn series_are_chained_within_their_group() {
        let runs = [run(&[500.0, 510.0]), run(&[100.0, 120.0]), run(&[515.0, 90.0]), run(&[121.0, 130.0]), run(&[1.0])];
        let group: Vec<String> = ["a", "a", "a", "a", "b"].iter().map(|s| s.to_string()).collect();
        // Starts at the lowest first value (100), then the nearest start to each end.
        assert_eq!(chain_order(&runs, &group, 0), vec![1, 3, 0, 2, 4]);
        assert_eq!(order_key(-1.0).cmp(&order_key(0.5)), std::cmp::Ordering::Less);
        assert_eq!(order_key(-2.0).cmp(&order_key(-1.0)), std::cmp::Ordering::Less);
    }

    #[test]
    fn the_smallest_exact_scale_is_chosen() {
        assert_eq!(decimal_scale([&column(&[1.0, 42.0, 1e12])].into_iter()), Some(0));
        assert_eq!(decimal_scale([&column(&[12.5, 3.25, 0.001])].into_iter()), Some(3));
        assert_eq!(decimal_scale([&column(&[0.1 + 0.2])].into_iter()), None, "0.30000000000000004");
        assert_eq!(decimal_scale([&column(&[-0.0])].into_iter()), None, "the sign of zero would be lost");
        assert_eq!(decimal_scale([&column(&[f64::NAN])].into_iter()), None);
        assert_eq!(decimal_scale([&column(&[1e16])].into_iter()), None);
        assert_eq!(decimal_scale([&Float64Array::from(vec![None, Some(2.5)])].into_iter()), Some(1));
    }

    #[test]
    fn a_series_shares_the_largest_scale_its_columns_allow() {
        let columns = |values: &[(f64, f64, &str)]| {
            let schema: SchemaRef = Arc::new(Schema::new(vec![
                Field::new("sum", DataType::Float64, false),
                Field::new("last", DataType::Float64, false),
                Field::new("name", DataType::Utf8, false),
            ]));
            let (sums, lasts, names): (Vec<f64>, Vec<f64>, Vec<&str>) =
                values.iter().fold((vec![], vec![], vec![]), |(mut a, mut b, mut c), (x, y, z)| {
                    a.push(*x);
                    b.push(*y);
                    c.push(*z);
                    (a, b, c)
                });
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(column(&sums)),
                    Arc::new(column(&lasts)),
                    Arc::new(arrow::array::StringArray::from(names)),
                ],
            )
            .expect("batch");
            (schema, vec![batch])
        };
        // One hour-long window: a sum needing one digit, a last value needing two.
        let (schema, one_row) = columns(&[(28734.5, 101.37, "asr")]);
        assert_eq!(scales_of(&schema, &one_row), vec![Some(1), Some(2), None]);
        assert_eq!(series_scales(&schema, &one_row), vec![Some(2), Some(2), None]);
        let (dense, batches) = densify_with(&schema, &one_row, &series_scales(&schema, &one_row)).expect("dense");
        let back = cast(batches[0].column(0), &DataType::Float64).expect("cast");
        assert_eq!(back.as_any().downcast_ref::<Float64Array>().expect("f64").value(0), 28734.5);
        assert_eq!(dense.field(0).data_type(), &DataType::Decimal128(18, 2));
        // A value too large for the shared scale keeps its column's own.
        let (schema, big) = columns(&[(2e12, 0.0125, "bytes")]);
        assert_eq!(series_scales(&schema, &big), vec![Some(0), Some(4), None]);
        // A column of doubles stays one.
        let (schema, inexact) = columns(&[(0.1 + 0.2, 1.5, "x")]);
        assert_eq!(series_scales(&schema, &inexact), vec![None, Some(1), None]);
    }

    #[test]
    fn values_read_back_bit_for_bit_through_a_stock_cast() {
        // As a producer writes them: `-37.50`, `-37.49`, … parsed into the nearest doubles.
        let values: Vec<f64> = (-3750..6250).map(|i| f64::from(i) / 100.0).collect();
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("value", DataType::Float64, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(column(&values))]).expect("batch");
        let (dense, batches, converted) = densify(&schema, &[batch]).expect("densify");
        assert_eq!(converted, vec![("value".to_string(), 2)]);
        assert_eq!(dense.field(0).data_type(), &DataType::Decimal128(18, 2));
        let back = cast(batches[0].column(0), &DataType::Float64).expect("cast");
        let back = back.as_any().downcast_ref::<Float64Array>().expect("f64");
        assert!(values.iter().enumerate().all(|(i, v)| back.value(i).to_bits() == v.to_bits()));
    }
}
