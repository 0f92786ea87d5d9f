//! Parquet encoding of what a writer stores: events as one data file per `date/hour` (and,
//! for spans, the batch's segment of the trace-id index), window rows as one roll-up file
//! per resolution and `date/hour`. Every name derives from the
//! partition and the offset range (or idle close) that produced the rows, so a replay
//! writes the same names.

use std::collections::BTreeMap;

use bytes::Bytes;
use callscope_schemas::arrow_schema::{SourcedEvent, to_record_batch};
use callscope_schemas::rollup::{RollupRow, rollups_to_record_batch};
use callscope_schemas::{Dataset, Event};
use callscope_storage::{
    DataFileKey, HourPartition, RollupFileKey, RollupSource, StorageError, parquet_file, trace_index,
};

use crate::error::Result;

/// Encodes events as one Parquet file per `date/hour` partition.
pub(super) fn encode_files<'a>(
    dataset: Dataset,
    topic: &str,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
    events: impl IntoIterator<Item = &'a SourcedEvent>,
) -> Result<Vec<(String, Bytes)>> {
    let mut by_hour: BTreeMap<HourPartition, Vec<&SourcedEvent>> = BTreeMap::new();
    for e in events {
        by_hour.entry(HourPartition::of_unix_ms(e.event.event_time_ms())).or_default().push(e);
    }
    // Spans also write the batch's level-0 segment of the trace-id index: committed with
    // the data files, so the index is never behind them and never counts a batch twice.
    let segment = (dataset == Dataset::Spans)
        .then(|| {
            trace_index::l0_segment(by_hour.values().flatten().filter_map(|e| match &e.event {
                Event::Span(s) => Some((s.trace_id.as_str(), s.start_time_us)),
                _ => None,
            }))
        })
        .flatten()
        .map(|bytes| (trace_index::l0_key(topic, partition, first_offset, last_offset), bytes));
    let mut files = by_hour
        .into_iter()
        .map(|(hour, rows)| {
            let record_batch = to_record_batch(dataset, rows).map_err(StorageError::from)?;
            let bytes = parquet_file::encode(&[record_batch])?;
            let key = DataFileKey { dataset, hour, topic: topic.to_string(), partition, first_offset, last_offset };
            Ok((key.path(), bytes))
        })
        .collect::<Result<Vec<_>>>()?;
    files.extend(segment);
    Ok(files)
}

/// Encodes roll-up rows as one Parquet file per resolution and `date/hour` of the window.
pub(super) fn encode_rollups(
    topic: &str,
    partition: i32,
    source: RollupSource,
    rows: &[RollupRow],
) -> Result<Vec<(String, Bytes)>> {
    let mut groups: BTreeMap<(i64, HourPartition), Vec<&RollupRow>> = BTreeMap::new();
    for row in rows {
        groups.entry((row.resolution_ms, HourPartition::of_unix_ms(row.window_start_ms))).or_default().push(row);
    }
    groups
        .into_iter()
        .map(|((resolution_ms, hour), rows)| {
            let batch = rollups_to_record_batch(rows).map_err(StorageError::from)?;
            let bytes = parquet_file::encode(&[batch])?;
            let key = RollupFileKey { resolution_ms, hour, topic: topic.to_string(), partition, source };
            Ok((key.path(), bytes))
        })
        .collect()
}
