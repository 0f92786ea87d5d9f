//! The event-time progress of every partition a worker process aggregates.
//!
//! Each partition's writer publishes its watermark here after every batch. The *combined*
//! watermark of a topic is the smallest watermark among its partitions that are active
//! (had events within the idle timeout): an idle partition is left out, so it cannot hold
//! the combination back, and an idle partition with open windows moves its own watermark
//! up to the combination (see [`super::aggregate::PartitionAggregator::close_idle`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Progress {
    watermark_ms: Option<i64>,
    last_event: Instant,
}

/// Watermarks of the partitions of one process.
#[derive(Debug, Default)]
pub struct WatermarkBoard {
    partitions: Mutex<HashMap<(String, i32), Progress>>,
}

impl WatermarkBoard {
    /// Records a partition's watermark; `had_events` marks it active now.
    pub fn update(&self, topic: &str, partition: i32, watermark_ms: Option<i64>, had_events: bool) {
        let Ok(mut map) = self.partitions.lock() else { return };
        let entry = map
            .entry((topic.to_string(), partition))
            .or_insert(Progress { watermark_ms: None, last_event: Instant::now() });
        entry.watermark_ms = watermark_ms;
        if had_events {
            entry.last_event = Instant::now();
        }
    }

    /// Forgets a partition (revoked from this process).
    pub fn remove(&self, topic: &str, partition: i32) {
        if let Ok(mut map) = self.partitions.lock() {
            map.remove(&(topic.to_string(), partition));
        }
    }

    /// The smallest watermark of the topic's partitions other than `except` that had events
    /// within `idle_timeout`; `None` when no other partition is active.
    pub fn combined_active(&self, topic: &str, except: i32, idle_timeout: Duration) -> Option<i64> {
        let map = self.partitions.lock().ok()?;
        map.iter()
            .filter(|((t, p), progress)| t == topic && *p != except && progress.last_event.elapsed() < idle_timeout)
            .filter_map(|(_, progress)| progress.watermark_ms)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_partitions_do_not_hold_the_combination_back() {
        let board = WatermarkBoard::default();
        board.update("m", 0, Some(100), true);
        board.update("m", 1, Some(50), true);
        board.update("x", 0, Some(10), true);
        assert_eq!(board.combined_active("m", 2, Duration::from_secs(60)), Some(50));
        assert_eq!(board.combined_active("m", 1, Duration::from_secs(60)), Some(100));
        // With a zero idle timeout every partition counts as idle.
        assert_eq!(board.combined_active("m", 2, Duration::ZERO), None);
        board.remove("m", 1);
        assert_eq!(board.combined_active("m", 2, Duration::from_secs(60)), Some(100));
    }
}
