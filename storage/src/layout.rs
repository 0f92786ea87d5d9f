//! Typed object keys. Data files live at
//! `<dataset>/date=YYYY-MM-DD/hour=HH/<topic>-p<partition>-<first offset>-<last offset>.parquet`
//! (Hive-style partitions that DuckDB and Spark read as columns); the offsets are the Kafka
//! range of the batch that wrote the file, zero-padded so that names sort by offset.

use callscope_schemas::Dataset;
use chrono::{DateTime, Datelike, Timelike, Utc};

/// The length of an hour partition, in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// The `date=…/hour=…` partition of an event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HourPartition {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
}

impl HourPartition {
    /// The partition of a unix-millisecond time (UTC). Times outside chrono's range fall
    /// back to the epoch rather than failing: validation rejects them before this point.
    pub fn of_unix_ms(ms: i64) -> HourPartition {
        let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        HourPartition { year: t.year(), month: t.month(), day: t.day(), hour: t.hour() }
    }

    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `date=YYYY-MM-DD/hour=HH`
    pub fn dir(&self) -> String {
        format!("date={}/hour={:02}", self.date(), self.hour)
    }

    /// The partition a directory names: the last `date=…/hour=…` pair of a path, if any.
    pub fn parse_dir(path: &str) -> Option<HourPartition> {
        let mut date = None;
        let mut hour = None;
        for part in path.split('/') {
            if let Some(d) = part.strip_prefix("date=") {
                date = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
            } else if let Some(h) = part.strip_prefix("hour=") {
                hour = h.parse::<u32>().ok().filter(|h| *h < 24);
            }
        }
        let date = date?;
        Some(HourPartition { year: date.year(), month: date.month(), day: date.day(), hour: hour? })
    }

    /// Unix milliseconds of the first instant of this hour (UTC).
    pub fn start_ms(&self) -> i64 {
        chrono::NaiveDate::from_ymd_opt(self.year, self.month, self.day)
            .and_then(|d| d.and_hms_opt(self.hour, 0, 0))
            .map(|t| t.and_utc().timestamp_millis())
            .unwrap_or_default()
    }

    /// Unix milliseconds just after this hour.
    pub fn end_ms(&self) -> i64 {
        self.start_ms() + HOUR_MS
    }
}

/// The key of one data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFileKey {
    pub dataset: Dataset,
    pub hour: HourPartition,
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

impl DataFileKey {
    pub fn path(&self) -> String {
        format!(
            "{}/{}/{}-p{}-{:020}-{:020}.parquet",
            self.dataset.name(),
            self.hour.dir(),
            sanitize(&self.topic),
            self.partition,
            self.first_offset,
            self.last_offset
        )
    }
}

/// The key of one roll-up file:
/// `metric_rollups/resolution=<10s|1m|1h>/date=…/hour=…/<topic>-p<partition>-<first>-<last>.parquet`
/// for windows emitted by a batch, or `…-p<partition>-idle-<offset>-w<watermark>.parquet` for
/// windows an idle partition closed after `offset` by moving its watermark to `watermark`
/// (see the pipeline's window state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupFileKey {
    pub resolution_ms: i64,
    pub hour: HourPartition,
    pub topic: String,
    pub partition: i32,
    pub source: RollupSource,
}

/// What emitted a roll-up file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollupSource {
    Batch { first_offset: i64, last_offset: i64 },
    Idle { after_offset: i64, watermark_ms: i64 },
}

impl RollupFileKey {
    pub fn path(&self) -> String {
        let name = match self.source {
            RollupSource::Batch { first_offset, last_offset } => format!("{first_offset:020}-{last_offset:020}"),
            RollupSource::Idle { after_offset, watermark_ms } => format!("idle-{after_offset:020}-w{watermark_ms}"),
        };
        format!(
            "{}/resolution={}/{}/{}-p{}-{name}.parquet",
            callscope_schemas::rollup::ROLLUP_TABLE,
            callscope_schemas::rollup::resolution_label(self.resolution_ms),
            self.hour.dir(),
            sanitize(&self.topic),
            self.partition,
        )
    }
}

/// The resolution (ms) a roll-up path names (`…/resolution=1m/…`, a unit, a file or a
/// manifest directory), as [`RollupFileKey::path`] writes it.
pub fn rollup_resolution_ms(path: &str) -> Option<i64> {
    let label = path.split('/').find_map(|d| d.strip_prefix("resolution="))?;
    humantime::parse_duration(label).ok().map(|d| d.as_millis() as i64)
}

/// Keeps a topic name safe as part of an object name.
pub fn sanitize(topic: &str) -> String {
    topic.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_partition_of_time() {
        // 2026-11-29T01:53:40Z
        let p = HourPartition::of_unix_ms(1_795_917_220_000);
        assert_eq!(p.dir(), "date=2026-11-29/hour=01");
        assert_eq!(HourPartition::of_unix_ms(0).dir(), "date=1970-01-01/hour=00");
        assert_eq!(HourPartition::parse_dir("metrics/date=2026-11-29/hour=01"), Some(p));
        assert_eq!(p.start_ms(), 1_795_917_220_000 - (53 * 60 + 40) * 1000);
        assert_eq!(p.end_ms() - p.start_ms(), 3_600_000);
        assert_eq!(HourPartition::parse_dir("metrics/date=2026-11-29"), None);
        assert_eq!(HourPartition::parse_dir("metrics/date=2026-13-29/hour=01"), None);
        assert_eq!(HourPartition::parse_dir("metrics/date=2026-11-29/hour=24"), None);
    }

    #[test]
    fn data_file_names_sort_by_offset() {
        let key = |first, last| DataFileKey {
            dataset: Dataset::Metrics,
            hour: HourPartition::of_unix_ms(0),
            topic: "callscope.metrics".into(),
            partition: 3,
            first_offset: first,
            last_offset: last,
        };
        assert_eq!(
            key(5, 99).path(),
            "metrics/date=1970-01-01/hour=00/callscope.metrics-p3-00000000000000000005-00000000000000000099.parquet"
        );
        assert!(key(100, 200).path() > key(5, 99).path());
    }

    #[test]
    fn rollup_file_names() {
        let key = RollupFileKey {
            resolution_ms: 60_000,
            hour: HourPartition::of_unix_ms(0),
            topic: "callscope.metrics".into(),
            partition: 1,
            source: RollupSource::Batch { first_offset: 7, last_offset: 9 },
        };
        assert_eq!(
            key.path(),
            "metric_rollups/resolution=1m/date=1970-01-01/hour=00/callscope.metrics-p1-00000000000000000007-00000000000000000009.parquet"
        );
        let idle = RollupFileKey { source: RollupSource::Idle { after_offset: 9, watermark_ms: 60_000 }, ..key };
        assert!(idle.path().ends_with("-p1-idle-00000000000000000009-w60000.parquet"));
        for resolution_ms in [10_000, 60_000, 900_000, 3_600_000] {
            assert_eq!(
                rollup_resolution_ms(&RollupFileKey { resolution_ms, ..idle.clone() }.path()),
                Some(resolution_ms)
            );
        }
        assert_eq!(rollup_resolution_ms("_catalog/manifests/metric_rollups/resolution=15m"), Some(900_000));
        assert_eq!(rollup_resolution_ms("metrics/date=1970-01-01/hour=00"), None);
    }

    #[test]
    fn topic_names_are_sanitized() {
        assert_eq!(sanitize("a/b c"), "a_b_c");
    }
}
