//! Event-time window aggregation of metric samples, one aggregator per topic partition.
//!
//! Every sample updates one tumbling window per resolution (default 10 s, 1 min, 1 h) of
//! its series (name, service, kind, unit, labels). Windows live in a
//! `BTreeMap<window_start, …>` per resolution and close when the partition's **watermark**
//! (largest event time seen minus the allowed lateness) passes their end — never by wall
//! clock. A partition that stays idle is moved on by [`PartitionAggregator::close_idle`],
//! which the writer calls with the combined watermark of the worker's other partitions
//! (see [`super::watermarks`]).
//!
//! Late data: a sample whose window has already closed is never dropped. It is stored raw
//! like any event, counted (`late_events_total`), and, with `late_corrections` on, becomes a
//! *correction row* (`late = true`) for its window. Roll-up rows are partial aggregates that
//! merge (see `callscope_schemas::rollup`), so a window's rows plus its corrections equal
//! the aggregate over every raw sample.
//!
//! Determinism is what makes restarts exact: what a partition's aggregator emits depends
//! only on the partition's events in offset order (and on idle closes, which the writer
//! checkpoints before it writes them). The writer checkpoints this state together with the
//! offset it reflects ([`PartitionAggregator::checkpoint`]), commits the Kafka offset only up
//! to the newest checkpoint, and after a restart or rebalance restores the checkpoint and
//! replays the events after it, dropping what they emit up to the already durable offset.
//!
//! Memory is bounded by a cardinality limit per metric name: a sample that would open a new
//! series beyond it is not aggregated (the writer dead-letters it; it is still stored raw).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use callscope_schemas::rollup::{Partial, RollupRow, SeriesKey, rollups_from_record_batch, rollups_to_record_batch};
use callscope_schemas::{Metric, Span};
// foldhash instead of SipHash: a sample's series identity and its window cells are hashed
// several times per event (about 3 % of the pipeline's CPU with SipHash). The maps keep a
// per-process random seed; identities that collide share a bucket of ids, which the series
// limit per metric bounds.
use foldhash::{HashMap, HashMapExt};

use super::span_metrics::{SpanPairing, red_samples};

/// Settings of the windowed aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregationConfig {
    /// Window lengths in milliseconds, ascending.
    pub resolutions_ms: Vec<i64>,
    /// How far behind the largest event time seen a window stays open.
    pub allowed_lateness_ms: i64,
    /// A partition without events for this long stops holding its windows open.
    pub idle_timeout: Duration,
    /// Emit correction rows for events that arrive after their window closed.
    pub late_corrections: bool,
    /// Most active series per metric name and partition.
    pub max_series_per_metric: usize,
    /// Checkpoint window state at most this often while data flows (and whenever the
    /// partition goes quiet).
    pub checkpoint_interval: Duration,
}

impl AggregationConfig {
    // The defaults, stated once (the CLI's flags show and use these).
    /// 1 minute and 1 hour. Finer windows are opt-in: for series sampled every 10 s or
    /// more slowly (scrape intervals of 15 s and up) a 10 s roll-up holds one sample per
    /// row, stores more bytes than the raw sample and answers nothing raw samples cannot.
    pub const DEFAULT_RESOLUTIONS: [Duration; 2] = [Duration::from_secs(60), Duration::from_secs(3600)];
    pub const DEFAULT_ALLOWED_LATENESS: Duration = Duration::from_secs(30);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_LATE_CORRECTIONS: bool = true;
    pub const DEFAULT_MAX_SERIES_PER_METRIC: usize = 10_000;
    pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);
}

impl Default for AggregationConfig {
    fn default() -> Self {
        AggregationConfig {
            resolutions_ms: Self::DEFAULT_RESOLUTIONS.iter().map(|d| d.as_millis() as i64).collect(),
            allowed_lateness_ms: Self::DEFAULT_ALLOWED_LATENESS.as_millis() as i64,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            late_corrections: Self::DEFAULT_LATE_CORRECTIONS,
            max_series_per_metric: Self::DEFAULT_MAX_SERIES_PER_METRIC,
            checkpoint_interval: Self::DEFAULT_CHECKPOINT_INTERVAL,
        }
    }
}

/// Why a set of window settings was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregationConfigError {
    #[error("at least one window resolution is needed")]
    NoResolution,
    #[error("window resolution {0} ms must be a whole number of seconds")]
    ResolutionNotWholeSeconds(i64),
    #[error("allowed lateness must not be negative")]
    NegativeLateness,
    #[error("the series limit per metric must be at least 1")]
    ZeroSeriesLimit,
}

impl AggregationConfig {
    /// Checks the settings; resolutions are sorted and deduplicated.
    pub fn validated(mut self) -> Result<Self, AggregationConfigError> {
        self.resolutions_ms.sort_unstable();
        self.resolutions_ms.dedup();
        if self.resolutions_ms.is_empty() {
            return Err(AggregationConfigError::NoResolution);
        }
        if let Some(bad) = self.resolutions_ms.iter().find(|r| **r < 1000 || **r % 1000 != 0) {
            return Err(AggregationConfigError::ResolutionNotWholeSeconds(*bad));
        }
        if self.allowed_lateness_ms < 0 {
            return Err(AggregationConfigError::NegativeLateness);
        }
        if self.max_series_per_metric == 0 {
            return Err(AggregationConfigError::ZeroSeriesLimit);
        }
        Ok(self)
    }
}

/// What happened to one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Went into open windows.
    Aggregated,
    /// Its finest window had closed (see the module's late-data policy).
    Late,
    /// Its series would exceed the cardinality limit of its metric name.
    OverLimit,
    /// Already reflected in the state (an offset replayed after a restart).
    Replayed,
}

struct SeriesEntry {
    key: Arc<SeriesKey>,
    hash: u64,
    /// Open (resolution, window) cells holding this series.
    open: usize,
}

type Window = HashMap<u64, Partial>;

/// Window state of one topic partition.
pub struct PartitionAggregator {
    config: Arc<AggregationConfig>,
    partition: i32,
    /// Highest offset whose sample is reflected in the state.
    offset: Option<i64>,
    max_event_ms: Option<i64>,
    watermark_ms: Option<i64>,
    /// One map per resolution: window start → series id → partial.
    windows: Vec<BTreeMap<i64, Window>>,
    series: HashMap<u64, SeriesEntry>,
    by_hash: HashMap<u64, Vec<u64>>,
    per_name: HashMap<String, usize>,
    next_id: u64,
    closed: Vec<RollupRow>,
    corrections: HashMap<(usize, i64, u64), (Arc<SeriesKey>, Partial)>,
    /// Windows closed since the last [`take_closed_counts`](Self::take_closed_counts), per resolution.
    closed_counts: Vec<u64>,
    /// Parent/child pairing of a span partition (service graph edges).
    pairing: SpanPairing,
}

/// Hash of a series identity; samples and stored keys must hash alike.
fn identity_hash(
    name: &str,
    service: &str,
    kind: callscope_schemas::MetricKind,
    unit: &Option<String>,
    labels: &callscope_schemas::events::Labels,
) -> u64 {
    let mut h = foldhash::fast::FixedState::default().build_hasher();
    (name, service, kind, unit, labels).hash(&mut h);
    h.finish()
}

fn series_hash(m: &Metric) -> u64 {
    identity_hash(&m.name, &m.service, m.kind, &m.unit, &m.labels)
}

fn key_hash(k: &SeriesKey) -> u64 {
    identity_hash(&k.name, &k.service, k.kind, &k.unit, &k.labels)
}

const META_OFFSET: &str = "callscope.offset";
const META_WATERMARK: &str = "callscope.watermark_ms";
const META_MAX_EVENT: &str = "callscope.max_event_ms";
const META_OPEN_ROWS: &str = "callscope.open_rows";
const META_SPAN_PAIRS: &str = "callscope.span_pairs";

/// A decoded checkpoint: the state, and closed windows whose files may not be written yet.
pub struct Restored {
    pub aggregator: PartitionAggregator,
    pub pending: Vec<RollupRow>,
}

impl PartitionAggregator {
    pub fn new(config: Arc<AggregationConfig>, partition: i32) -> PartitionAggregator {
        let n = config.resolutions_ms.len();
        PartitionAggregator {
            config,
            partition,
            offset: None,
            max_event_ms: None,
            watermark_ms: None,
            windows: (0..n).map(|_| BTreeMap::new()).collect(),
            series: HashMap::new(),
            by_hash: HashMap::new(),
            per_name: HashMap::new(),
            next_id: 0,
            closed: Vec::new(),
            corrections: HashMap::new(),
            closed_counts: vec![0; n],
            pairing: SpanPairing::default(),
        }
    }

    pub fn config(&self) -> &AggregationConfig {
        &self.config
    }

    /// Highest offset reflected in the state.
    pub fn offset(&self) -> Option<i64> {
        self.offset
    }

    /// Marks offsets up to `offset` as seen (dead letters and other datasets' messages
    /// advance the partition without samples).
    pub fn advance_offset(&mut self, offset: i64) {
        if self.offset.is_none_or(|o| offset > o) {
            self.offset = Some(offset);
        }
    }

    pub fn watermark_ms(&self) -> Option<i64> {
        self.watermark_ms
    }

    pub fn active_series(&self) -> usize {
        self.series.len()
    }

    pub fn open_windows(&self) -> usize {
        self.windows.iter().map(BTreeMap::len).sum()
    }

    pub fn has_open_windows(&self) -> bool {
        self.windows.iter().any(|w| !w.is_empty())
    }

    /// Approximate bytes of window state (series keys, open partials, map overhead).
    pub fn state_bytes(&self) -> usize {
        let keys: usize = self.series.values().map(|s| s.key.size_bytes() + 48).sum();
        let cells: usize =
            self.windows.iter().flat_map(|w| w.values()).flat_map(|w| w.values()).map(|p| p.size_bytes() + 16).sum();
        keys + cells
    }

    fn series_id(&mut self, m: &Metric) -> Option<u64> {
        let hash = series_hash(m);
        if let Some(ids) = self.by_hash.get(&hash) {
            for id in ids {
                if self.series.get(id).is_some_and(|s| s.key.matches(m)) {
                    return Some(*id);
                }
            }
        }
        let count = self.per_name.get(&m.name).copied().unwrap_or(0);
        if count >= self.config.max_series_per_metric {
            return None;
        }
        Some(self.insert_series(Arc::new(SeriesKey::of(m)), hash))
    }

    fn insert_series(&mut self, key: Arc<SeriesKey>, hash: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        *self.per_name.entry(key.name.clone()).or_default() += 1;
        self.by_hash.entry(hash).or_default().push(id);
        self.series.insert(id, SeriesEntry { key, hash, open: 0 });
        id
    }

    fn release_if_unused(&mut self, id: u64) {
        let Some(entry) = self.series.get(&id) else { return };
        if entry.open > 0 {
            return;
        }
        let (hash, name) = (entry.hash, entry.key.name.clone());
        self.series.remove(&id);
        if let Some(ids) = self.by_hash.get_mut(&hash) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_hash.remove(&hash);
            }
        }
        if let Some(n) = self.per_name.get_mut(&name) {
            *n -= 1;
            if *n == 0 {
                self.per_name.remove(&name);
            }
        }
    }

    /// Aggregates the sample at `offset`.
    pub fn process(&mut self, offset: i64, m: &Metric) -> Outcome {
        if self.offset.is_some_and(|o| offset <= o) {
            return Outcome::Replayed;
        }
        self.offset = Some(offset);
        self.aggregate(m)
    }

    /// Aggregates the metrics the span at `offset` derives (its RED samples and the service
    /// graph edges it completes, see [`super::span_metrics`]); the outcome is its RED
    /// sample's.
    pub fn process_span(&mut self, offset: i64, span: &Span) -> Outcome {
        if self.offset.is_some_and(|o| offset <= o) {
            return Outcome::Replayed;
        }
        self.offset = Some(offset);
        let [calls, latency] = red_samples(span);
        let outcome = self.aggregate(&calls);
        self.aggregate(&latency);
        for edge in self.pairing.observe(span, self.watermark_ms) {
            self.aggregate(&edge);
        }
        outcome
    }

    /// Span children that expired without meeting their parent since the last call.
    pub fn take_unpaired(&mut self) -> u64 {
        self.pairing.take_unpaired()
    }

    /// Aggregates a sample derived from the one just processed (a custom metric's series):
    /// same windows and watermark, no offset of its own.
    pub fn process_derived(&mut self, m: &Metric) -> Outcome {
        self.aggregate(m)
    }

    fn aggregate(&mut self, m: &Metric) -> Outcome {
        let t = m.timestamp_ms;
        let Some(id) = self.series_id(m) else {
            self.observe_event_time(t);
            return Outcome::OverLimit;
        };
        let mut late = false;
        for (ri, &r) in self.config.resolutions_ms.iter().enumerate() {
            let start = t.div_euclid(r) * r;
            if self.watermark_ms.is_some_and(|w| start + r <= w) {
                late |= ri == 0;
                if self.config.late_corrections {
                    let key = self.series.get(&id).map(|s| s.key.clone());
                    if let Some(key) = key {
                        self.corrections
                            .entry((ri, start, id))
                            .or_insert_with(|| (key, Partial::empty(m.kind)))
                            .1
                            .add(m.value, t);
                    }
                }
                continue;
            }
            let cell = self.windows[ri].entry(start).or_default();
            match cell.entry(id) {
                std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().add(m.value, t),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Partial::empty(m.kind)).add(m.value, t);
                    if let Some(s) = self.series.get_mut(&id) {
                        s.open += 1;
                    }
                }
            }
        }
        self.release_if_unused(id);
        self.observe_event_time(t);
        if late { Outcome::Late } else { Outcome::Aggregated }
    }

    fn observe_event_time(&mut self, t: i64) {
        if self.max_event_ms.is_none_or(|max| t > max) {
            self.max_event_ms = Some(t);
            self.advance_watermark(t.saturating_sub(self.config.allowed_lateness_ms));
        }
    }

    /// Moves the watermark to `watermark` (never back) and closes the windows it passes.
    pub fn advance_watermark(&mut self, watermark: i64) {
        if self.watermark_ms.is_some_and(|w| watermark <= w) {
            return;
        }
        self.watermark_ms = Some(watermark);
        for ri in 0..self.windows.len() {
            let r = self.config.resolutions_ms[ri];
            while let Some(entry) = self.windows[ri].first_entry() {
                if *entry.key() + r > watermark {
                    break;
                }
                let (start, cells) = entry.remove_entry();
                self.closed_counts[ri] += 1;
                for (id, partial) in cells {
                    let Some(s) = self.series.get_mut(&id) else { continue };
                    s.open -= 1;
                    self.closed.push(RollupRow {
                        resolution_ms: r,
                        window_start_ms: start,
                        series: s.key.clone(),
                        partial,
                        partition: self.partition,
                        late: false,
                    });
                    self.release_if_unused(id);
                }
            }
        }
    }

    /// Closes the windows of an idle partition: up to `combined` (the watermark of the
    /// worker's active partitions) when there is one, else all of them. Returns whether a
    /// window closed.
    pub fn close_idle(&mut self, combined: Option<i64>) -> bool {
        let before: u64 = self.closed_counts.iter().sum();
        let target = match combined {
            Some(w) => w,
            None => {
                let ends = self.config.resolutions_ms.iter().zip(&self.windows);
                let Some(end) = ends.filter_map(|(r, w)| w.last_key_value().map(|(s, _)| s + r)).max() else {
                    return false;
                };
                end
            }
        };
        self.advance_watermark(target);
        self.closed_counts.iter().sum::<u64>() > before
    }

    /// Takes the rows of closed windows and late corrections, in a deterministic order.
    pub fn take_emitted(&mut self) -> Vec<RollupRow> {
        let mut rows = std::mem::take(&mut self.closed);
        rows.extend(self.corrections.drain().map(|((ri, start, _), (series, partial))| RollupRow {
            resolution_ms: self.config.resolutions_ms[ri],
            window_start_ms: start,
            series,
            partial,
            partition: self.partition,
            late: true,
        }));
        rows.sort_by(|a, b| {
            (a.resolution_ms, a.window_start_ms, a.late, &a.series).cmp(&(
                b.resolution_ms,
                b.window_start_ms,
                b.late,
                &b.series,
            ))
        });
        rows
    }

    /// Windows closed per resolution since the last call.
    pub fn take_closed_counts(&mut self) -> Vec<u64> {
        std::mem::replace(&mut self.closed_counts, vec![0; self.config.resolutions_ms.len()])
    }

    /// The state as a record batch of roll-up rows (open windows first, then `pending`
    /// closed rows whose files are not known to be written) and footer metadata.
    pub fn checkpoint(&self, pending: &[RollupRow]) -> Result<(RecordBatch, Vec<(String, String)>), ArrowError> {
        let mut rows: Vec<RollupRow> = Vec::new();
        for (ri, windows) in self.windows.iter().enumerate() {
            for (start, cells) in windows {
                for (id, partial) in cells {
                    let Some(s) = self.series.get(id) else { continue };
                    rows.push(RollupRow {
                        resolution_ms: self.config.resolutions_ms[ri],
                        window_start_ms: *start,
                        series: s.key.clone(),
                        partial: partial.clone(),
                        partition: self.partition,
                        late: false,
                    });
                }
            }
        }
        let open_rows = rows.len();
        let batch = rollups_to_record_batch(rows.iter().chain(pending))?;
        let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        let metadata = vec![
            (META_OFFSET.to_string(), opt(self.offset)),
            (META_WATERMARK.to_string(), opt(self.watermark_ms)),
            (META_MAX_EVENT.to_string(), opt(self.max_event_ms)),
            (META_OPEN_ROWS.to_string(), open_rows.to_string()),
            (META_SPAN_PAIRS.to_string(), self.pairing.to_json()),
        ];
        Ok((batch, metadata))
    }

    /// Rebuilds an aggregator from a checkpoint. Rows of resolutions that are no longer
    /// configured are dropped; new resolutions start empty.
    pub fn restore(
        config: Arc<AggregationConfig>,
        partition: i32,
        batches: &[RecordBatch],
        metadata: &[(String, String)],
    ) -> Result<Restored, ArrowError> {
        let meta = |k: &str| -> Result<Option<i64>, ArrowError> {
            match metadata.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()) {
                None | Some("") => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| ArrowError::ParseError(format!("checkpoint {k}={v:?}"))),
            }
        };
        let mut agg = PartitionAggregator::new(config, partition);
        agg.offset = meta(META_OFFSET)?;
        agg.watermark_ms = meta(META_WATERMARK)?;
        agg.max_event_ms = meta(META_MAX_EVENT)?;
        let open_rows = meta(META_OPEN_ROWS)?.unwrap_or(0).max(0) as usize;
        if let Some((_, pairs)) = metadata.iter().find(|(k, _)| k == META_SPAN_PAIRS) {
            agg.pairing = SpanPairing::from_json(pairs).map_err(ArrowError::ParseError)?;
        }
        let mut interned: HashMap<SeriesKey, Arc<SeriesKey>> = HashMap::new();
        let mut intern = |k: SeriesKey| interned.entry(k.clone()).or_insert_with(|| Arc::new(k)).clone();
        let mut rows = Vec::new();
        for batch in batches {
            rows.extend(rollups_from_record_batch(batch, &mut intern)?);
        }
        let pending = rows.split_off(open_rows.min(rows.len()));
        let mut ids: HashMap<Arc<SeriesKey>, u64> = HashMap::new();
        for row in rows {
            let Some(ri) = agg.config.resolutions_ms.iter().position(|r| *r == row.resolution_ms) else { continue };
            let id = match ids.get(&row.series) {
                Some(id) => *id,
                None => {
                    let id = agg.insert_series(row.series.clone(), key_hash(&row.series));
                    ids.insert(row.series.clone(), id);
                    id
                }
            };
            agg.windows[ri].entry(row.window_start_ms).or_default().insert(id, row.partial);
            if let Some(s) = agg.series.get_mut(&id) {
                s.open += 1;
            }
        }
        Ok(Restored { aggregator: agg, pending })
    }
}

#[cfg(test)]
mod tests;
