//! Query speed after compaction, next to DuckDB on the same Parquet files (`bench storage
//! --queries`): each query runs once untimed on each side (caches warm, as on a serving
//! process), then `runs` times, a run of ours then one of DuckDB's (in a Python process
//! of its own), so a noisy machine slows both alike; two threads each side; medians are
//! printed with their ratio (callscope / DuckDB).
//!
//! * **raw SQL**: an aggregate over every sample (`GROUP BY name, service`), through the
//!   query API's own DataFusion session over the file catalog, against DuckDB's
//!   `read_parquet` over the warm tier's files; and once more with DataFusion's own partial
//!   aggregation instead of callscope's by runs ([`callscope_query_api::run_aggregate`]).
//! * **dashboard**: p95 of `asr_latency_ms` per series (service and labels) per minute over
//!   the whole range, answered as `/monitoring/metrics?agg=p95&step=1m` answers it (from the
//!   compacted 1-minute roll-ups, merging their sketches), against DuckDB's `quantile_cont`
//!   over the raw samples with the same grouping; and once more from the raw samples
//!   (`resolution=raw`, exact quantiles), as it is answered for hours whose 1-minute roll-ups
//!   the built-in policy dropped as sparse.
//!
//! DuckDB runs in the Python named by `CALLSCOPE_BENCH_PYTHON` (default `python3`).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use callscope_query_api::engine::EngineOptions;
use callscope_query_api::series_query::{SeriesQuery, answer};
use callscope_query_api::{AppState, QueryEngine, SqlLimits};
use callscope_storage::Tiers;

use super::common::median;

const RAW_SQL: &str = "SELECT name, service, COUNT(*) AS n, AVG(value) AS mean, MAX(value) AS top \
                       FROM metrics GROUP BY name, service ORDER BY name, service";

const DUCKDB: &str = r#"
import duckdb, sys, time
files, raw = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.sql("SET threads = 2")
con.sql(f"CREATE VIEW metrics AS SELECT * FROM read_parquet('{files}', hive_partitioning = true)")
queries = {
    "raw": raw,
    "dashboard": """SELECT service, labels_key, time_bucket(INTERVAL '1 minute', event_time) AS t,
                           quantile_cont(value, 0.95) AS p95
                    FROM metrics WHERE name = 'asr_latency_ms' GROUP BY 1, 2, 3""",
}
print("ready", flush=True)
for line in sys.stdin:
    started = time.perf_counter()
    rows = len(con.sql(queries[line.strip()]).fetchall())
    print(time.perf_counter() - started, rows, flush=True)
"#;

/// DuckDB in a Python process of its own, answering one query per request.
struct DuckDb {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl DuckDb {
    fn start(python: &str, files: &Path) -> anyhow::Result<DuckDb> {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = std::process::Command::new(python)
            .args(["-c", DUCKDB, files.to_str().context("path")?, RAW_SQL])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("run DuckDB")?;
        let input = child.stdin.take().context("stdin")?;
        let mut output = std::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
        anyhow::ensure!(output.next().transpose()?.as_deref() == Some("ready"), "DuckDB did not start");
        Ok(DuckDb { child, input, output })
    }

    /// Runs `query` (`raw` or `dashboard`) once; its seconds.
    fn time(&mut self, query: &str) -> anyhow::Result<f64> {
        use std::io::Write;
        writeln!(self.input, "{query}")?;
        let line = self.output.next().transpose()?.context("DuckDB stopped")?;
        line.split_whitespace().next().and_then(|s| s.parse().ok()).context("DuckDB answer")
    }
}

impl Drop for DuckDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn state(tiers: &Tiers) -> anyhow::Result<AppState> {
    state_with(tiers, EngineOptions { target_partitions: 2, ..EngineOptions::default() })
}

fn state_with(tiers: &Tiers, options: EngineOptions) -> anyhow::Result<AppState> {
    Ok(AppState {
        engine: QueryEngine::new(tiers, options)?,
        hot: tiers.hot.clone(),
        trace_index: callscope_storage::trace_index::TraceIndex::new(tiers.hot.clone()),
        tiers: tiers.clone(),
        costs: Default::default(),
        producer: None,
        kafka_probe: None,
        topics: Default::default(),
        otlp_topics: Default::default(),
        sql_limits: SqlLimits::default(),
        started: Instant::now(),
        resolutions_ms: vec![60_000],
        rollups_settled_after_ms: 0,
        anonymous: Default::default(),
    })
}

/// Times both queries on both sides, a run of ours then one of DuckDB's (so both see the
/// same machine), and prints the table.
pub async fn compare(tiers: &Tiers, dir: &Path, runs: usize) -> anyhow::Result<()> {
    let runs = runs.max(1);
    let python = std::env::var("CALLSCOPE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_duckdb =
        std::process::Command::new(&python).args(["-c", "import duckdb"]).output().is_ok_and(|o| o.status.success());
    if !has_duckdb {
        println!(
            "query speed: skipped ({python} cannot import duckdb: pip install duckdb, or set CALLSCOPE_BENCH_PYTHON)"
        );
        return Ok(());
    }
    let state = state(tiers)?;
    // The same raw SQL through DataFusion's own partial aggregation, for the ratio of ours.
    let hashed =
        state_with(tiers, EngineOptions { target_partitions: 2, run_aggregation: false, ..Default::default() })?;
    let mut duck = DuckDb::start(&python, &dir.join("warm/metrics/*/*/*.parquet"))?;
    let (start, end) = time_range(&state).await?;
    let dashboard_query = |resolution: &str| {
        let params = vec![
            ("resolution".to_string(), resolution.to_string()),
            ("name".to_string(), "asr_latency_ms".to_string()),
            ("agg".to_string(), "p95".to_string()),
            ("step".to_string(), "1m".to_string()),
            ("start".to_string(), start.to_string()),
            ("end".to_string(), end.to_string()),
        ];
        SeriesQuery::parse(params, end).map_err(|e| anyhow::anyhow!("{e}"))
    };
    let (mut raw_times, mut duck_raw, mut hashed_times) = (Vec::new(), Vec::new(), Vec::new());
    let (mut dashboard_times, mut duck_dashboard, mut from_raw_times) = (Vec::new(), Vec::new(), Vec::new());
    let (mut raw_rows, mut dashboard_points, mut source) = (0, 0, String::new());
    // Run 0 warms both sides and is not counted.
    for run in 0..=runs {
        let started = Instant::now();
        let batches = state.engine.session().sql(RAW_SQL).await?.collect().await?;
        let ours = started.elapsed().as_secs_f64();
        raw_rows = batches.iter().map(|b| b.num_rows()).sum::<usize>();
        let theirs = duck.time("raw")?;
        let started = Instant::now();
        let hashed_rows = hashed.engine.session().sql(RAW_SQL).await?.collect().await?;
        let hashed_time = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            hashed_rows.iter().map(|b| b.num_rows()).sum::<usize>() == raw_rows,
            "the two plans returned different numbers of groups"
        );
        if run > 0 {
            raw_times.push(ours);
            duck_raw.push(theirs);
            hashed_times.push(hashed_time);
        }
    }
    for run in 0..=runs {
        let started = Instant::now();
        let (series, sources) = answer(&state, &dashboard_query("auto")?).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let ours = started.elapsed().as_secs_f64();
        dashboard_points = series.iter().map(|s| s.points.len()).sum::<usize>();
        source = sources;
        let theirs = duck.time("dashboard")?;
        let started = Instant::now();
        let (from_raw, _) = answer(&state, &dashboard_query("raw")?).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let from_raw_time = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            from_raw.iter().map(|s| s.points.len()).sum::<usize>() == dashboard_points,
            "the dashboard query from raw samples returned a different number of points"
        );
        if run > 0 {
            dashboard_times.push(ours);
            duck_dashboard.push(theirs);
            from_raw_times.push(from_raw_time);
        }
    }
    let (raw, dashboard, hashed) = (median(&mut raw_times), median(&mut dashboard_times), median(&mut hashed_times));
    let (duck_raw, duck_dashboard) = (median(&mut duck_raw), median(&mut duck_dashboard));
    let from_raw = median(&mut from_raw_times);
    println!();
    println!("query speed after compaction (medians of {runs}, runs alternating; ratio = callscope / DuckDB):");
    println!("{:<54} {:>12} {:>12} {:>7}", "query", "callscope s", "DuckDB s", "ratio");
    println!(
        "{:<54} {raw:>12.4} {duck_raw:>12.4} {:>7.2}",
        format!("raw SQL aggregate ({raw_rows} groups)"),
        raw / duck_raw
    );
    println!(
        "{:<54} {hashed:>12.4} {duck_raw:>12.4} {:>7.2}",
        "  the same with DataFusion's own partial aggregation",
        hashed / duck_raw
    );
    println!(
        "{:<54} {dashboard:>12.4} {duck_dashboard:>12.4} {:>7.2}",
        format!("p95 per series per minute ({dashboard_points} points, {source})"),
        dashboard / duck_dashboard
    );
    println!(
        "{:<54} {from_raw:>12.4} {duck_dashboard:>12.4} {:>7.2}",
        "  the same from raw samples (resolution=raw)",
        from_raw / duck_dashboard
    );
    Ok(())
}

/// The samples' time range (the first and last minute of the metrics table).
async fn time_range(state: &AppState) -> anyhow::Result<(i64, i64)> {
    let batches =
        state.engine.session().sql("SELECT MIN(timestamp_ms), MAX(timestamp_ms) FROM metrics").await?.collect().await?;
    let row = callscope_query_api::json_rows::rows(&batches).into_iter().next().context("no samples")?;
    let (Some(min), Some(max)) = (row[0].as_i64(), row[1].as_i64()) else { anyhow::bail!("no samples") };
    Ok((min, max + 1))
}
