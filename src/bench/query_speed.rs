//! Query speed after compaction, next to DuckDB on the same Parquet files (`bench storage
//! --queries`): each query runs once untimed (caches warm, as on a serving process), then
//! `runs` times on each side, in one process each, with two threads each; medians are
//! printed with their ratio (callscope / DuckDB).
//!
//! * **raw SQL**: an aggregate over every sample (`GROUP BY name, service`), through the
//!   query API's own DataFusion session over the file catalog, against DuckDB's
//!   `read_parquet` over the warm tier's files.
//! * **dashboard**: p95 of `asr_latency_ms` per series (service and labels) per minute over
//!   the whole range, answered as `/monitoring/metrics?agg=p95&step=1m` answers it (from the
//!   compacted 1-minute roll-ups, merging their sketches), against DuckDB's `quantile_cont`
//!   over the raw samples with the same grouping.
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
import duckdb, json, statistics, sys, time
files, runs = sys.argv[1], int(sys.argv[2])
con = duckdb.connect()
con.sql("SET threads = 2")
con.sql(f"CREATE VIEW metrics AS SELECT * FROM read_parquet('{files}', hive_partitioning = true)")
queries = {
    "raw": sys.argv[3],
    "dashboard": """SELECT service, labels_key, time_bucket(INTERVAL '1 minute', event_time) AS t,
                           quantile_cont(value, 0.95) AS p95
                    FROM metrics WHERE name = 'asr_latency_ms' GROUP BY 1, 2, 3""",
}
out = {}
for name, q in queries.items():
    times, rows = [], 0
    con.sql(q).fetchall()
    for _ in range(runs):
        started = time.perf_counter()
        rows = len(con.sql(q).fetchall())
        times.append(time.perf_counter() - started)
    out[name] = {"median_s": statistics.median(times), "rows": rows}
print(json.dumps(out))
"#;

pub(super) fn state(tiers: &Tiers) -> anyhow::Result<AppState> {
    Ok(AppState {
        engine: QueryEngine::new(tiers, EngineOptions { target_partitions: 2, ..EngineOptions::default() })?,
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

/// Times both queries on both sides and prints the table.
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
    // Ours: the raw aggregate, then the dashboard query as the series endpoint answers it.
    let mut raw_times = Vec::new();
    let mut raw_rows = 0;
    state.engine.session().sql(RAW_SQL).await?.collect().await?;
    for _ in 0..runs {
        let started = Instant::now();
        let batches = state.engine.session().sql(RAW_SQL).await?.collect().await?;
        raw_times.push(started.elapsed().as_secs_f64());
        raw_rows = batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    let (start, end) = time_range(&state).await?;
    let mut dashboard_times = Vec::new();
    let mut dashboard_points = 0;
    let mut source = String::new();
    for run in 0..=runs {
        let params = vec![
            ("name".to_string(), "asr_latency_ms".to_string()),
            ("agg".to_string(), "p95".to_string()),
            ("step".to_string(), "1m".to_string()),
            ("start".to_string(), start.to_string()),
            ("end".to_string(), end.to_string()),
        ];
        let query = SeriesQuery::parse(params, end).map_err(|e| anyhow::anyhow!("{e}"))?;
        let started = Instant::now();
        let (series, sources) = answer(&state, &query).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        if run > 0 {
            dashboard_times.push(started.elapsed().as_secs_f64());
        }
        dashboard_points = series.iter().map(|s| s.points.len()).sum::<usize>();
        source = sources;
    }
    // DuckDB over the warm tier's files.
    let files = dir.join("warm/metrics/*/*/*.parquet");
    let out = std::process::Command::new(&python)
        .args(["-c", DUCKDB, files.to_str().context("path")?, &runs.to_string(), RAW_SQL])
        .output()
        .context("run DuckDB")?;
    anyhow::ensure!(out.status.success(), "DuckDB: {}", String::from_utf8_lossy(&out.stderr));
    let duck: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let duck_s = |q: &str| duck[q]["median_s"].as_f64().unwrap_or(f64::NAN);
    let (raw, dashboard) = (median(&mut raw_times), median(&mut dashboard_times));
    println!();
    println!("query speed after compaction (medians of {runs}; ratio = callscope / DuckDB):");
    println!("{:<54} {:>12} {:>12} {:>7}", "query", "callscope s", "DuckDB s", "ratio");
    println!(
        "{:<54} {raw:>12.4} {:>12.4} {:>7.2}",
        format!("raw SQL aggregate ({raw_rows} groups)"),
        duck_s("raw"),
        raw / duck_s("raw")
    );
    println!(
        "{:<54} {dashboard:>12.4} {:>12.4} {:>7.2}",
        format!("p95 per series per minute ({dashboard_points} points, {source})"),
        duck_s("dashboard"),
        dashboard / duck_s("dashboard")
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
