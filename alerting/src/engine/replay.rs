//! Reading back history. While it lasts the engine only ingests, and event time is the
//! newest event time of the *slowest* partition being replayed, so that a fast partition
//! does not move time past samples a slow one has yet to deliver (a sum across partitions
//! would otherwise be evaluated short, and `for` timers started at a time other partitions
//! have not reached).
//!
//! Once caught up, [`AlertEngine::end_replay`] evaluates the rules in event-time steps of
//! the window resolution from the oldest sample read back, then at the caught-up event
//! time. That is what rebuilds `for` (and `keep_firing_for`) timers from the history: an
//! instance's timer starts at the first evaluation that sees its condition, so a single
//! evaluation at the end would restart every `for` of an alert that has long been
//! firing. The walk is bounded to [`MAX_REPLAY_STEPS`] steps back from the caught-up time.

use std::collections::{BTreeSet, HashMap};

use callscope_schemas::Metric;

use super::{AlertChange, AlertEngine};

/// At most this many evaluations rebuild the state after a replay.
pub const MAX_REPLAY_STEPS: i64 = 2_000;

/// Per-partition event-time maxima of a replay.
#[derive(Debug, Default)]
pub(super) struct ReplayClock {
    /// The partitions being replayed, by topic; `None` once the replay is over.
    replaying: Option<HashMap<String, BTreeSet<i32>>>,
    /// Newest event time ingested per replayed partition.
    newest: HashMap<String, HashMap<i32, i64>>,
    /// Oldest event time ingested during the replay.
    oldest: Option<i64>,
}

impl ReplayClock {
    fn begin(&mut self, partitions: impl IntoIterator<Item = (String, i32)>) {
        let mut replaying: HashMap<String, BTreeSet<i32>> = HashMap::new();
        for (topic, partition) in partitions {
            replaying.entry(topic).or_default().insert(partition);
        }
        self.replaying = Some(replaying);
        self.newest.clear();
        self.oldest = None;
    }

    /// Ends the replay; returns the oldest event time it ingested.
    fn end(&mut self) -> Option<i64> {
        self.replaying = None;
        self.newest.clear();
        self.oldest.take()
    }

    pub(super) fn is_replaying(&self) -> bool {
        self.replaying.is_some()
    }

    /// Records a sample's event time from a partition (ignored outside a replay, and from
    /// partitions not being replayed).
    fn observe(&mut self, topic: &str, partition: i32, t: i64) {
        let Some(replaying) = &self.replaying else { return };
        if !replaying.get(topic).is_some_and(|ps| ps.contains(&partition)) {
            return;
        }
        self.oldest = Some(self.oldest.map_or(t, |o| o.min(t)));
        let newest = match self.newest.get_mut(topic) {
            Some(by_partition) => by_partition,
            None => self.newest.entry(topic.to_string()).or_default(),
        };
        let slot = newest.entry(partition).or_insert(t);
        *slot = (*slot).max(t);
    }

    /// The minimum over the replayed partitions that delivered samples of their newest
    /// event time; `None` outside a replay or before any sample.
    pub(super) fn now(&self) -> Option<i64> {
        self.replaying.as_ref()?;
        self.newest.values().flat_map(|ps| ps.values().copied()).min()
    }
}

impl AlertEngine {
    /// [`AlertEngine::ingest`] of a sample read from `partition` of `topic` (which a replay
    /// needs to keep event time at its slowest partition).
    pub fn ingest_from(&mut self, m: &Metric, wall_ms: i64, topic: &str, partition: i32) {
        if self.wants(&m.name) {
            self.replay.observe(topic, partition, m.timestamp_ms);
        }
        self.ingest(m, wall_ms);
    }

    /// Starts reading back history from `partitions` (topic, partition): ingest only, no
    /// evaluation, event time at the slowest of them.
    pub fn begin_replay(&mut self, partitions: impl IntoIterator<Item = (String, i32)>) {
        self.replay.begin(partitions);
    }

    pub fn replaying(&self) -> bool {
        self.replay.is_replaying()
    }

    /// The history is read back: evaluates the rules over it in steps of the window
    /// resolution, then at the caught-up event time; returns every change on the way, in
    /// event-time order. Outside a replay, one evaluation.
    pub fn end_replay(&mut self, wall_ms: i64) -> Vec<AlertChange> {
        let Some(oldest) = self.replay.end() else { return self.evaluate(wall_ms) };
        let end = self.event_time(wall_ms);
        let step = self.config.resolution_ms.max(1);
        let from = oldest.max(end.saturating_sub(step.saturating_mul(MAX_REPLAY_STEPS)));
        let mut changes = Vec::new();
        let mut t = from.div_euclid(step).saturating_add(1).saturating_mul(step);
        while t < end {
            changes.extend(self.evaluate_at(t));
            t = t.saturating_add(step);
        }
        changes.extend(self.evaluate_at(end));
        changes
    }
}
