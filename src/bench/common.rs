//! What the benchmarks share: generated metric events, statistics over runs and trials,
//! scratch directories and the process's memory.

use std::path::PathBuf;
use std::time::Duration;

use callscope_schemas::arrow_schema::{SourcedEvent, to_record_batch};
use callscope_schemas::{Dataset, Event, Metric, MetricKind};
use callscope_storage::layout::{DataFileKey, HourPartition};
use callscope_storage::{Tiers, trace_index};
use rand::Rng;
use rand::rngs::StdRng;

/// A metric event like the platform's: one of five series names, three regions and eight
/// pods per service, with an event time up to 5 s before `now_ms`.
pub fn bench_metric(rng: &mut StdRng, now_ms: i64) -> Event {
    const NAMES: [(&str, &str); 5] = [
        ("ai_response_time_ms", "ai-engine"),
        ("asr_latency_ms", "asr"),
        ("calls_total", "call-gateway"),
        ("whitelist_check_latency_ms", "whitelist-service"),
        ("tts_latency_ms", "tts"),
    ];
    let (name, service) = NAMES[rng.random_range(0..NAMES.len())];
    let region = ["cn-east", "cn-north", "cn-south"][rng.random_range(0..3)];
    Event::Metric(Metric {
        name: name.into(),
        kind: if name == "calls_total" { MetricKind::Counter } else { MetricKind::Histogram },
        value: rng.random_range(1.0..1500.0),
        timestamp_ms: now_ms - rng.random_range(0..5000),
        service: service.into(),
        labels: [
            ("region".to_string(), region.to_string()),
            ("pod".to_string(), format!("{service}-{}", rng.random_range(0..8))),
        ]
        .into_iter()
        .collect(),
        unit: None,
    })
}

/// Events per second.
pub fn rate(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Two rates per run and their ratio (second / first), printed as a table: a row per run,
/// then the medians.
pub struct RunTable {
    width: usize,
    first: Vec<f64>,
    second: Vec<f64>,
    ratios: Vec<f64>,
}

impl RunTable {
    /// Prints the header; the rate columns are `width` wide.
    pub fn new(width: usize, first: &str, second: &str, ratio: &str) -> RunTable {
        println!("{:>4} {first:>width$} {second:>width$} {ratio:>8}", "run");
        RunTable { width, first: Vec::new(), second: Vec::new(), ratios: Vec::new() }
    }

    pub fn row(&mut self, run: usize, first: f64, second: f64) {
        let width = self.width;
        println!("{run:>4} {first:>width$.0} {second:>width$.0} {:>8.3}", second / first);
        self.first.push(first);
        self.second.push(second);
        self.ratios.push(second / first);
    }

    /// Prints the medians of every column.
    pub fn medians(mut self) {
        let (width, first_width) = (self.width, self.width.saturating_sub(3));
        println!(
            "median {:>first_width$.0} {:>width$.0} {:>8.3}",
            median(&mut self.first),
            median(&mut self.second),
            median(&mut self.ratios)
        );
    }
}

/// The median (0 for no values); sorts `values`.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

/// The nearest-rank `p`-th percentile of sorted values (NaN for none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Writes `events` of `dataset` (one hour, partition 0) as the workers' encoder writes a
/// batch: one hot Parquet file named by its offsets.
pub async fn write_hot_file(
    tiers: &Tiers,
    dataset: Dataset,
    hour: HourPartition,
    events: &[SourcedEvent],
) -> anyhow::Result<()> {
    let batch = to_record_batch(dataset, events)?;
    let key = DataFileKey {
        dataset,
        hour,
        topic: dataset.default_topic().into(),
        partition: 0,
        first_offset: events.first().map_or(0, |e| e.offset),
        last_offset: events.last().map_or(0, |e| e.offset),
    };
    tiers.hot.put_durable(&key.path(), callscope_storage::parquet_file::encode(&[batch])?, false).await?;
    // As the workers do, spans also write the batch's segment of the trace-id index.
    let spans = events.iter().filter_map(|e| match &e.event {
        Event::Span(s) => Some((s.trace_id.as_str(), s.start_time_us)),
        _ => None,
    });
    if let Some(segment) = trace_index::l0_segment(spans) {
        let segment_key = trace_index::l0_key(&key.topic, key.partition, key.first_offset, key.last_offset);
        tiers.hot.put_durable(&segment_key, segment, false).await?;
    }
    Ok(())
}

/// Writes roll-up rows as the workers do: one file per resolution and hour of the window,
/// named after the batch `first..=last` that emitted them.
pub async fn write_rollup_files(
    tiers: &Tiers,
    topic: &str,
    first: i64,
    last: i64,
    rows: &[callscope_schemas::rollup::RollupRow],
) -> anyhow::Result<usize> {
    let mut groups: std::collections::BTreeMap<(i64, HourPartition), Vec<&callscope_schemas::rollup::RollupRow>> =
        Default::default();
    for row in rows {
        groups.entry((row.resolution_ms, HourPartition::of_unix_ms(row.window_start_ms))).or_default().push(row);
    }
    let files = groups.len();
    for ((resolution_ms, hour), rows) in groups {
        let batch = callscope_schemas::rollup::rollups_to_record_batch(rows)?;
        let source = callscope_storage::RollupSource::Batch { first_offset: first, last_offset: last };
        let key = callscope_storage::RollupFileKey { resolution_ms, hour, topic: topic.into(), partition: 0, source };
        tiers.hot.put_durable(&key.path(), callscope_storage::parquet_file::encode(&[batch])?, false).await?;
    }
    Ok(files)
}

/// A new, empty directory `callscope-<kind>-<random>` under the system's temporary directory.
pub fn scratch_dir(kind: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("callscope-{kind}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Processor cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Resident and peak resident memory of this process, in bytes (Linux).
pub fn memory() -> (u64, u64) {
    memory_of("self")
}

/// Resident and peak resident memory of process `pid` (a number, or `self`), in bytes
/// (Linux; 0 elsewhere or when it is gone).
pub fn memory_of(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
