//! Merging roll-up rows: **folding** (every row of one window, series and Kafka partition
//! — the window's first emission and its late corrections — merged into one) and
//! **downsampling** (the windows of a finer resolution merged into the windows of a coarser
//! one). Both merge the partials themselves (counts, sums, minima, maxima, last values and
//! quantile sketches), so quantiles of the result are exactly as mergeable as the input's.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use callscope_schemas::rollup::{RollupRow, SeriesKey, rollups_from_record_batch, rollups_to_record_batch};

use crate::Result;

/// Rows of `batches` with every (resolution, window, series, partition) merged into one, at
/// `resolution_ms` (the rows' own resolution when folding, a coarser one that it divides
/// when downsampling). Returns one batch sorted by name, service, labels and window, and
/// how many input rows there were.
pub fn merge_rollups(batches: &[RecordBatch], resolution_ms: Option<i64>) -> Result<(Option<RecordBatch>, usize)> {
    let mut interned: BTreeMap<SeriesKey, Arc<SeriesKey>> = BTreeMap::new();
    let mut intern = |key: SeriesKey| interned.entry(key.clone()).or_insert_with(|| Arc::new(key)).clone();
    let mut merged: BTreeMap<(Arc<SeriesKey>, i64, i64, i32), RollupRow> = BTreeMap::new();
    let mut rows_in = 0;
    for batch in batches {
        for mut row in rollups_from_record_batch(batch, &mut intern)? {
            rows_in += 1;
            if let Some(coarse) = resolution_ms {
                row.window_start_ms = row.window_start_ms.div_euclid(coarse) * coarse;
                row.resolution_ms = coarse;
            }
            let key = (row.series.clone(), row.resolution_ms, row.window_start_ms, row.partition);
            match merged.get_mut(&key) {
                Some(into) => {
                    into.partial.merge(&row.partial)?;
                    into.late = false;
                }
                None => {
                    row.late = false;
                    merged.insert(key, row);
                }
            }
        }
    }
    if merged.is_empty() {
        return Ok((None, rows_in));
    }
    let batch = rollups_to_record_batch(merged.values())?;
    let sort: Vec<SortColumn> = ["name", "service", "labels_key", "window_start_ms"]
        .iter()
        .filter_map(|c| batch.column_by_name(c))
        .map(|values| SortColumn { values: values.clone(), options: None })
        .collect();
    let order = lexsort_to_indices(&sort, None)?;
    Ok((Some(take_record_batch(&batch, &order)?), rows_in))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, Int64Array};
    use callscope_schemas::MetricKind;
    use callscope_schemas::events::Labels;
    use callscope_schemas::rollup::{Partial, new_sketch};

    use super::*;

    fn row(window: i64, values: &[f64], late: bool) -> RollupRow {
        let mut partial = Partial::empty(MetricKind::Histogram);
        for (i, v) in values.iter().enumerate() {
            partial.add(*v, window + i as i64);
        }
        RollupRow {
            resolution_ms: 60_000,
            window_start_ms: window,
            series: Arc::new(SeriesKey {
                name: "ai_response_time_ms".into(),
                service: "ai-engine".into(),
                labels: Labels::new(),
                kind: MetricKind::Histogram,
                unit: None,
            }),
            partial,
            partition: 0,
            late,
        }
    }

    fn counts(batch: &RecordBatch) -> Vec<i64> {
        let c = batch.column_by_name("count").expect("count");
        let c = c.as_any().downcast_ref::<Int64Array>().expect("i64");
        (0..c.len()).map(|i| c.value(i)).collect()
    }

    #[test]
    fn late_corrections_fold_into_their_window_and_windows_downsample() {
        let rows = [row(0, &[1.0, 2.0], false), row(0, &[3.0], true), row(60_000, &[10.0], false)];
        let batch = rollups_to_record_batch(rows.iter()).expect("batch");
        let (folded, n) = merge_rollups(std::slice::from_ref(&batch), None).expect("fold");
        let folded = folded.expect("rows");
        assert_eq!((n, folded.num_rows()), (3, 2));
        assert_eq!(counts(&folded), vec![3, 1]);
        let (coarse, _) = merge_rollups(&[batch], Some(300_000)).expect("downsample");
        let coarse = coarse.expect("rows");
        assert_eq!(counts(&coarse), vec![4]);
        let back = rollups_from_record_batch(&coarse, &mut |k| Arc::new(k)).expect("read");
        assert_eq!((back[0].resolution_ms, back[0].window_start_ms, back[0].late), (300_000, 0, false));
        // The merged sketch answers like a sketch of all four samples.
        let mut all = new_sketch();
        for v in [1.0, 2.0, 3.0, 10.0] {
            all.add(v);
        }
        assert_eq!(back[0].partial.quantile(0.5), all.quantile(0.5).ok().flatten());
        assert_eq!((back[0].partial.min, back[0].partial.max, back[0].partial.sum), (1.0, 10.0, 16.0));
    }
}
