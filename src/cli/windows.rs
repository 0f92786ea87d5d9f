//! Event-time windows of the stream workers (and the resolutions the query API reads).

use callscope_pipeline::AggregationConfig;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct WindowArgs {
    /// Window lengths of the metric roll-ups, comma separated.
    #[arg(long, env = "CALLSCOPE_WINDOW_RESOLUTIONS", value_delimiter = ',',
          default_values_t = AggregationConfig::DEFAULT_RESOLUTIONS.map(humantime::Duration::from))]
    pub window_resolutions: Vec<humantime::Duration>,
    /// How far behind the newest event time of a partition its windows stay open.
    #[arg(long, env = "CALLSCOPE_ALLOWED_LATENESS", default_value_t = AggregationConfig::DEFAULT_ALLOWED_LATENESS.into())]
    pub allowed_lateness: humantime::Duration,
    /// A partition without events for this long stops holding its windows open.
    #[arg(long, env = "CALLSCOPE_IDLE_TIMEOUT", default_value_t = AggregationConfig::DEFAULT_IDLE_TIMEOUT.into())]
    pub idle_timeout: humantime::Duration,
    /// Write correction rows for events that arrive after their window closed
    /// (they are stored raw and counted either way).
    #[arg(long, env = "CALLSCOPE_LATE_CORRECTIONS", default_value_t = AggregationConfig::DEFAULT_LATE_CORRECTIONS, action = clap::ArgAction::Set)]
    pub late_corrections: bool,
    /// Most active series per metric name and partition; samples of further series are
    /// dead-lettered (and stored raw).
    #[arg(long, env = "CALLSCOPE_MAX_SERIES_PER_METRIC", default_value_t = AggregationConfig::DEFAULT_MAX_SERIES_PER_METRIC)]
    pub max_series_per_metric: usize,
    /// Checkpoint window state at most this often while data flows.
    #[arg(long, env = "CALLSCOPE_CHECKPOINT_INTERVAL", default_value_t = AggregationConfig::DEFAULT_CHECKPOINT_INTERVAL.into())]
    pub checkpoint_interval: humantime::Duration,
    /// Store raw events only, without windows.
    #[arg(long, env = "CALLSCOPE_NO_AGGREGATION")]
    pub no_aggregation: bool,
}

impl WindowArgs {
    /// The workers' aggregation settings, checked; `None` with `--no-aggregation`.
    pub fn aggregation(&self) -> anyhow::Result<Option<AggregationConfig>> {
        if self.no_aggregation {
            return Ok(None);
        }
        let config = AggregationConfig {
            resolutions_ms: self.resolutions_ms(),
            allowed_lateness_ms: self.allowed_lateness.as_millis() as i64,
            idle_timeout: *self.idle_timeout,
            late_corrections: self.late_corrections,
            max_series_per_metric: self.max_series_per_metric,
            checkpoint_interval: *self.checkpoint_interval,
        };
        config.validated().map(Some).map_err(|e| anyhow::anyhow!("window settings: {e}"))
    }

    /// The window lengths in milliseconds, ascending, without repeats.
    pub fn resolutions_ms(&self) -> Vec<i64> {
        let mut r: Vec<i64> = self.window_resolutions.iter().map(|d| d.as_millis() as i64).collect();
        r.sort_unstable();
        r.dedup();
        r
    }

    /// The resolutions of the roll-ups the workers write (none with `--no-aggregation`).
    pub fn rollup_resolutions_ms(&self) -> Vec<i64> {
        if self.no_aggregation { Vec::new() } else { self.resolutions_ms() }
    }

    /// How long after its end a window is surely closed and written: allowed lateness, idle
    /// timeout and 5 s of flush slack.
    pub fn rollups_settled_after_ms(&self) -> i64 {
        (*self.allowed_lateness + *self.idle_timeout).as_millis() as i64 + 5_000
    }
}
