//! History replay: the evaluator reads back the metric and alert topics from a point in
//! time, so windows, pending timers and firing alerts are rebuilt in event time after a
//! restart.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::Result;

/// Assigns every partition of `topics` at the first offset at or after `since_ms`.
/// Returns, for each partition that has history to read back, the end offset at start (to
/// know when the history has been read).
pub async fn assign_from(
    consumer: &StreamConsumer,
    topics: &[String],
    since_ms: i64,
) -> Result<HashMap<(String, i32), i64>> {
    let mut by_time = TopicPartitionList::new();
    let mut watermarks = HashMap::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                by_time.add_partition_offset(topic, p.id(), Offset::Offset(since_ms))?;
                let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
                watermarks.insert((topic.clone(), p.id()), (low, high));
            }
        }
    }
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    match consumer.offsets_for_times(by_time.clone(), Duration::from_secs(10)) {
        Ok(found) => {
            for e in found.elements() {
                let key = (e.topic().to_string(), e.partition());
                let offset = match e.offset() {
                    Offset::Offset(o) => {
                        if let Some((_, high)) = watermarks.get(&key).filter(|(_, high)| o < *high) {
                            ends.insert(key, *high);
                        }
                        Offset::Offset(o)
                    }
                    // Nothing at or after `since_ms`: only new messages matter.
                    _ => Offset::End,
                };
                assignment.add_partition_offset(e.topic(), e.partition(), offset)?;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "the broker cannot look up offsets by time; the evaluator reads history from the start of each partition");
            for e in by_time.elements() {
                let key = (e.topic().to_string(), e.partition());
                if let Some((_, high)) = watermarks.get(&key).filter(|(low, high)| low < high) {
                    ends.insert(key, *high);
                }
                assignment.add_partition_offset(e.topic(), e.partition(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&assignment)?;
    Ok(ends)
}
