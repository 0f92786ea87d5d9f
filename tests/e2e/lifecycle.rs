//! The storage lifecycle against a running `standalone`: `callscope lifecycle run` compacts
//! hours the workers wrote, queries see the same rows before, during and after, and a
//! `kill -9` in the middle of a step is finished by the next run.

use std::process::Command;
use std::time::{Duration, Instant};

use callscope_schemas::Event;
use serde_json::{Value, json};

use crate::support::*;

const EVENTS: usize = 6000;
const HOUR_MS: i64 = 3_600_000;

fn lifecycle(data_dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["lifecycle", "run", "--data-dir", data_dir.to_str().expect("path")])
        .args(extra)
        .output()
        .expect("run callscope lifecycle")
}

fn totals(client: &Http, base: &str) -> (i64, f64) {
    let rows = sql(client, base, "SELECT COUNT(*), SUM(value) FROM metrics");
    (rows[0][0].as_i64().expect("count"), rows[0][1].as_f64().unwrap_or(0.0))
}

/// A standalone (lifecycle schedule off) holding `EVENTS` samples of an hour that ended
/// more than 2 h ago, written as many small batch files; returns it and the hour's start.
fn standalone_with_an_old_hour(dir: &std::path::Path, client: &Http) -> (Node, i64) {
    standalone_with_an_old_hour_every(dir, client, "0s")
}

/// The same, with the lifecycle's schedule running every `interval`.
fn standalone_with_an_old_hour_every(dir: &std::path::Path, client: &Http, interval: &str) -> (Node, i64) {
    standalone_with_an_old_hour_valued(dir, client, interval, |i| i as f64 + 0.5)
}

/// The same, sample `i` (each its own series) having the value `value(i)`.
fn standalone_with_an_old_hour_valued(
    dir: &std::path::Path,
    client: &Http,
    interval: &str,
    value: fn(usize) -> f64,
) -> (Node, i64) {
    standalone_with_an_hour_ago(dir, client, interval, 4, value)
}

/// The same, the hour starting `hours_ago` hours before the current one.
fn standalone_with_an_hour_ago(
    dir: &std::path::Path,
    client: &Http,
    interval: &str,
    hours_ago: i64,
    value: fn(usize) -> f64,
) -> (Node, i64) {
    // Events further than --max-time-skew (default a day) from now are dead-lettered.
    let node = Node::standalone(dir)
        .args(["--flush-rows", "500", "--flush-interval", "100ms", "--lifecycle-interval", interval])
        .args(["--max-time-skew", "30d"])
        .spawn();
    let hour = (callscope_runtime::now_ms() / HOUR_MS - hours_ago) * HOUR_MS;
    let payloads: Vec<(String, Vec<u8>)> = (0..EVENTS)
        .map(|i| {
            let mut event = metric(i);
            if let Event::Metric(m) = &mut event {
                m.timestamp_ms = hour + (i as i64 * 577) % HOUR_MS;
                m.value = value(i);
            }
            (format!("k{i}"), encode_mixed(i, &event))
        })
        .collect();
    let rt = runtime();
    let acked = rt.block_on(async { produce_all(&producer(&node.brokers), "callscope.metrics", &payloads).await });
    assert_eq!(acked, EVENTS);
    let stored =
        wait_for_count(client, &node.http, "SELECT COUNT(*) FROM metrics", EVENTS as i64, Duration::from_secs(90));
    assert_eq!(stored, EVENTS as i64, "every sample stored");
    (node, hour)
}

#[test]
fn lifecycle_run_compacts_beside_live_ingestion_and_a_kill_9_mid_step_is_finished_by_a_rerun() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = http();
    // Samples of an hour that ended more than 2 h ago: due for compaction by the default policy.
    let (node, hour) = standalone_with_an_old_hour(dir.path(), &client);
    let before = totals(&client, &node.http);
    let unit = node.data_dir.join("hot/metrics").join(format!(
        "date={}/hour={}",
        chrono::DateTime::from_timestamp_millis(hour).expect("time").format("%Y-%m-%d"),
        chrono::DateTime::from_timestamp_millis(hour).expect("time").format("%H")
    ));
    let small_files = walk(&unit).len();
    assert!(small_files > 1, "the workers wrote several small files ({small_files})");

    // A dry run changes nothing and says what it would do.
    let dry = lifecycle(&node.data_dir, &["--dry-run"]);
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    assert!(stdout.contains("dry run: policy default") && stdout.contains("changed"), "{stdout}");
    assert!(walk(&node.data_dir.join("warm")).is_empty());

    // kill -9 while the step waits at its commit (the manifest PUT is held back 60 s).
    let mut job = Proc::spawn_program(
        "lifecycle-killed",
        dir.path(),
        BIN,
        &[
            "lifecycle",
            "run",
            "--data-dir",
            node.data_dir.to_str().expect("path"),
            "--storage-option",
            "fault_spec=put:_catalog/manifests/:latency:60s",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while walk(&node.data_dir.join("warm")).is_empty() {
        job.assert_running();
        assert!(Instant::now() < deadline, "the compacted file never appeared:\n{}", job.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    job.kill9();
    assert_eq!(totals(&client, &node.http), before, "a step killed before its commit changes nothing");

    let rerun = lifecycle(&node.data_dir, &[]);
    let stdout = String::from_utf8_lossy(&rerun.stdout);
    assert!(rerun.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&rerun.stderr));
    assert!(stdout.contains("Finished"), "{stdout}");
    assert_eq!(totals(&client, &node.http), before, "the same rows, once each, after compaction");
    assert_eq!(sql_direct(&node.data_dir), EVENTS as i64);
    let manifests = walk(&node.data_dir.join("hot/_catalog/manifests/metrics"));
    assert_eq!(manifests.len(), 1, "one committed generation: {manifests:?}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifests[0]).expect("read")).expect("json");
    let rows: i64 = manifest["files"].as_array().expect("files").iter().map(|f| f["rows"].as_i64().unwrap_or(0)).sum();
    assert_eq!(rows, EVENTS as i64);
    assert_eq!(manifest["replaced_hot"].as_array().expect("replaced").len(), small_files);

    // Nothing left to do; the replaced files wait out the grace (queries may still read them).
    let again = lifecycle(&node.data_dir, &[]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains(": 0 of"), "{stdout}");
    assert_eq!(walk(&unit).len(), small_files);
    assert_eq!(totals(&client, &node.http), before);
}

fn wait_for_job(client: &Http, base: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = client.call("GET", &format!("{base}/monitoring/storage/jobs/{id}"), None);
        if reply.status == 200 && reply.json()["state"] != "running" {
            return reply.json();
        }
        assert!(Instant::now() < deadline, "job {id} did not finish: {}", reply.body);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn table_usage<'a>(stats: &'a Value, tier: &str, table: &str) -> Option<&'a Value> {
    stats["tables"].as_array()?.iter().find(|u| u["tier"] == tier && u["table"] == table)
}

#[test]
fn the_storage_api_shows_policies_jobs_statistics_costs_and_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = http();
    let (node, hour) = standalone_with_an_old_hour(dir.path(), &client);
    let base = &node.http;
    let before = totals(&client, base);

    let stats = client.call("GET", &format!("{base}/monitoring/storage/statistics"), None).json();
    let hot = table_usage(&stats, "hot", "metrics").expect("hot metrics");
    assert_eq!(hot["rows"], EVENTS as i64, "{stats}");
    assert!(hot["files"].as_i64().expect("files") > 1);
    let tiers = client.call("GET", &format!("{base}/monitoring/storage/tiers"), None).json();
    let names: Vec<&str> = tiers.as_array().expect("tiers").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["hot", "warm", "cold", "archive"]);
    assert!(tiers.as_array().expect("tiers").iter().all(|t| t["health"]["reachable"] == true), "{tiers}");

    // Policies: the built-in default, validation naming the field, create, conflict.
    let policies = client.call("GET", &format!("{base}/monitoring/storage/policies"), None).json();
    assert_eq!(policies[0]["id"], "default");
    let bad = client.call(
        "POST",
        &format!("{base}/monitoring/storage/policies"),
        Some(&json!({"id": "p", "tables": ["calls"], "steps": [{"action": "compact", "after": "1h"}]})),
    );
    assert_eq!((bad.status, bad.json()["field"].as_str()), (400, Some("tables[0]")), "{}", bad.body);
    let bad = client.call(
        "POST",
        &format!("{base}/monitoring/storage/policies"),
        Some(&json!({"id": "p", "steps": [{"action": "compact", "after": "soon"}]})),
    );
    assert_eq!((bad.status, bad.json()["field"].as_str()), (400, Some("steps[0].after")), "{}", bad.body);
    let policy = json!({"id": "metrics-fast", "tables": ["metrics"], "enabled": false,
        "steps": [{"action": "compact", "after": "1h"}]});
    let created = client.call("POST", &format!("{base}/monitoring/storage/policies"), Some(&policy));
    assert_eq!(created.status, 201, "{}", created.body);
    let again = client.call("POST", &format!("{base}/monitoring/storage/policies"), Some(&policy));
    assert_eq!(again.status, 409);

    // Trigger it; the job reports progress and figures, and the rows are now in warm.
    let triggered = client.call("POST", &format!("{base}/monitoring/storage/policies/metrics-fast/trigger"), None);
    assert_eq!(triggered.status, 202, "{}", triggered.body);
    let job = wait_for_job(&client, base, triggered.json()["job_id"].as_str().expect("id"));
    assert_eq!((job["state"].as_str(), job["units_changed"].as_i64()), (Some("finished"), Some(1)), "{job}");
    assert_eq!(job["progress"], 1.0);
    assert!(job["bytes_written"].as_i64().expect("bytes") > 0);
    let jobs = client.call("GET", &format!("{base}/monitoring/storage/jobs"), None).json();
    assert!(jobs.as_array().expect("jobs").iter().any(|j| j["id"] == job["id"]));
    assert_eq!(totals(&client, base), before);
    let stats = client.call("GET", &format!("{base}/monitoring/storage/statistics"), None).json();
    let warm = table_usage(&stats, "warm", "metrics").expect("warm metrics");
    assert_eq!((warm["rows"].as_i64(), warm["files"].as_i64()), (Some(EVENTS as i64), Some(1)), "{stats}");
    assert!(warm["compression_ratio"].as_f64().expect("ratio") > 1.0, "{warm}");
    assert!(table_usage(&stats, "hot", "metrics").is_none(), "no hot metrics rows left visible: {stats}");

    let costs = client.call("GET", &format!("{base}/monitoring/storage/costs"), None).json();
    assert_eq!(costs["policy"], "default");
    assert!(costs["current_usd_per_month"].as_f64().expect("cost") > 0.0, "{costs}");
    assert!(costs["projected_saving_usd_per_month"].as_f64().expect("saving") > 0.0, "{costs}");
    // The workers' batch files of the day are counted and their requests priced.
    let hot_files = hot["files"].as_u64().expect("files");
    assert!(costs["requests"]["batch_files_per_day"].as_u64().is_some_and(|n| n >= hot_files), "{costs}");
    let requests = costs["requests"]["usd_per_month"].as_f64().expect("request cost");
    let storage = costs["projected_usd_per_month"].as_f64().expect("storage cost");
    assert!(requests > 0.0, "{costs}");
    // The lifecycle's own requests, per tier at its class: compaction read the batch files
    // in hot and wrote warm; the later steps write cold and archive.
    let lifecycle = &costs["lifecycle_requests"];
    let tier_usd = |t: &str| lifecycle["by_tier"][t]["usd_per_month"].as_f64().unwrap_or(0.0);
    assert!(["hot", "warm", "cold", "archive"].iter().all(|t| tier_usd(t) > 0.0), "{costs}");
    let lifecycle_usd = lifecycle["usd_per_month"].as_f64().expect("lifecycle request cost");
    let total = costs["projected_total_usd_per_month"].as_f64().expect("total");
    assert!((total - (storage + requests + lifecycle_usd)).abs() < 1e-9, "{costs}");

    // A legal hold keeps the hour from a delete policy until it is released.
    let hold = client.call(
        "POST",
        &format!("{base}/monitoring/storage/holds"),
        Some(&json!({"id": "case-9", "tables": ["metrics"], "start": hour.to_string(),
            "end": (hour + HOUR_MS).to_string(), "reason": "regulator request"})),
    );
    assert_eq!(hold.status, 201, "{}", hold.body);
    let delete = json!({"id": "purge", "tables": ["metrics"], "enabled": false,
        "steps": [{"action": "delete", "after": "1h"}]});
    assert_eq!(client.call("POST", &format!("{base}/monitoring/storage/policies"), Some(&delete)).status, 201);
    let trigger = |path: &str| {
        let reply = client.call("POST", &format!("{base}/monitoring/storage/policies/{path}/trigger"), None);
        wait_for_job(&client, base, reply.json()["job_id"].as_str().expect("id"))
    };
    let held = trigger("purge");
    assert_eq!((held["units_held"].as_i64(), held["units_changed"].as_i64()), (Some(1), Some(0)), "{held}");
    assert_eq!(totals(&client, base), before);
    let released = client.call("DELETE", &format!("{base}/monitoring/storage/holds/case-9"), None);
    assert!(released.json()["released_at_ms"].is_i64(), "{}", released.body);
    let purged = trigger("purge");
    assert_eq!(purged["units_changed"].as_i64(), Some(1), "{purged}");
    assert_eq!(totals(&client, base).0, 0);
    let log = client.call("GET", &format!("{base}/monitoring/storage/deletions"), None).json();
    assert_eq!(log[0]["policy"], "purge", "{log}");
    assert!(log[0]["reason"].as_str().expect("reason").contains("purge"));
    let bad_hold = client.call(
        "POST",
        &format!("{base}/monitoring/storage/holds"),
        Some(&json!({"reason": "x", "start": "now", "end": "now-1h"})),
    );
    assert_eq!((bad_hold.status, bad_hold.json()["field"].as_str()), (400, Some("end")));
}

/// The DuckDB recipe of the README, run by DuckDB's Python package.
const DUCKDB_READ_ARCHIVE: &str = r#"
import duckdb, json, sys
rows = duckdb.sql(f"""
    SELECT kafka_partition, kafka_offset, name, service, value, timestamp_ms, CAST(date AS VARCHAR), CAST(hour AS INTEGER)
    FROM read_parquet('{sys.argv[1]}/metrics/*/*/*.parquet', hive_partitioning = true)
    ORDER BY kafka_partition, kafka_offset""").fetchall()
print(json.dumps([list(r) for r in rows]))
"#;

/// Runs `policy` (JSON, its id `id`) once now with `callscope lifecycle run`.
fn run_policy_now(node: &Node, dir: &std::path::Path, id: &str, policy: &str) {
    let file = dir.join(format!("{id}.json"));
    std::fs::write(&file, policy).expect("write policy");
    let out = lifecycle(&node.data_dir, &["--policy", id, "--policy-file", file.to_str().expect("path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs a Python `script` with `dir` as its argument; the rows it prints as JSON.
fn python_rows(python: &std::path::Path, script: &str, dir: &std::path::Path, reader: &str) -> Vec<Vec<Value>> {
    let out = Command::new(python).args(["-c", script, dir.to_str().expect("path")]).output().expect("run python");
    assert!(out.status.success(), "{reader}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{reader} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The Parquet files under `dir`, at any depth.
fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                found.push(path);
            }
        }
    }
    found
}

/// DuckDB's recipe for the cold tier (docs/storage.md): the files of one hour hold values
/// at different decimal scales, and `union_by_name` reads each file at its own.
const DUCKDB_READ_COLD: &str = r#"
import duckdb, json, sys
rows = duckdb.sql(f"""
    SELECT kafka_partition, kafka_offset, CAST(value AS DOUBLE)
    FROM read_parquet('{sys.argv[1]}/metrics/*/*/*.parquet', hive_partitioning = true, union_by_name = true)
    ORDER BY kafka_partition, kafka_offset""").fetchall()
print(json.dumps([list(r) for r in rows]))
"#;

#[test]
fn duckdb_reads_the_cold_tier_exactly_as_the_api_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let python = python_with("import duckdb");
    let client = http();
    // Integers, two-digit and four-digit decimals: cold files of several scales in the hour.
    let (node, _) = standalone_with_an_old_hour_valued(dir.path(), &client, "0s", |i| match i % 3 {
        0 => i as f64,
        1 => i as f64 / 100.0,
        _ => i as f64 / 10_000.0,
    });
    run_policy_now(
        &node,
        dir.path(),
        "cold-now",
        r#"{"id": "cold-now", "tables": ["metrics"], "steps": [{"action": "cold", "after": "1h"}]}"#,
    );
    let cold = node.data_dir.join("cold");
    let files = walk_files(&cold.join("metrics"));
    assert!(files.len() >= 3, "one cold file per decimal scale: {files:?}");

    let api = sql(&client, &node.http, "SELECT kafka_partition, kafka_offset, value FROM metrics ORDER BY 1, 2");
    assert_eq!(api.len(), EVENTS);
    let duck = python_rows(&python, DUCKDB_READ_COLD, &cold, "duckdb");
    assert_eq!(duck.len(), api.len());
    for (d, a) in duck.iter().zip(&api) {
        assert_eq!((d[0].as_i64(), d[1].as_i64()), (a[0].as_i64(), a[1].as_i64()));
        assert_eq!(d[2].as_f64().map(f64::to_bits), a[2].as_f64().map(f64::to_bits), "bit for bit: {d:?} {a:?}");
    }
}

/// The Spark recipe of docs/storage.md, run by PySpark in local mode: the archive's Hive
/// partitions discovered by Spark itself.
const SPARK_READ_ARCHIVE: &str = r#"
import json, sys
from pyspark.sql import SparkSession
from pyspark.sql.functions import col
spark = (SparkSession.builder.master("local[1]").appName("callscope-archive")
         .config("spark.ui.enabled", "false").config("spark.sql.session.timeZone", "UTC").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
df = spark.read.parquet(f"{sys.argv[1]}/metrics")
rows = (df.select("kafka_partition", "kafka_offset", "name", "service", "value", "timestamp_ms",
                  col("date").cast("string"), col("hour").cast("int"))
          .orderBy("kafka_partition", "kafka_offset").collect())
print(json.dumps([list(r) for r in rows]))
spark.stop()
"#;

#[test]
fn duckdb_and_spark_read_the_archive_exactly_as_the_api_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let python = python_with("import duckdb, pyspark");
    let java = Command::new("java").arg("-version").output();
    assert!(
        java.is_ok_and(|o| o.status.success()),
        "Spark needs a Java runtime: apt-get install default-jre-headless (as .ci/run does)"
    );
    let client = http();
    let (node, hour) = standalone_with_an_old_hour(dir.path(), &client);
    run_policy_now(
        &node,
        dir.path(),
        "archive-now",
        r#"{"id": "archive-now", "tables": ["metrics"], "steps": [{"action": "archive", "after": "1h"}]}"#,
    );

    let api = sql(
        &client,
        &node.http,
        "SELECT kafka_partition, kafka_offset, name, service, value, timestamp_ms FROM metrics \
         ORDER BY kafka_partition, kafka_offset",
    );
    assert_eq!(api.len(), EVENTS);
    let archive = node.data_dir.join("archive");
    let duck = python_rows(&python, DUCKDB_READ_ARCHIVE, &archive, "duckdb");
    let spark = python_rows(&python, SPARK_READ_ARCHIVE, &archive, "spark");
    let date = chrono::DateTime::from_timestamp_millis(hour).expect("time").format("%Y-%m-%d").to_string();
    let hour_of_day: i64 =
        chrono::DateTime::from_timestamp_millis(hour).expect("time").format("%H").to_string().parse().expect("hour");
    for (reader, rows) in [("DuckDB", &duck), ("Spark", &spark)] {
        assert_eq!(rows.len(), api.len(), "{reader} reads as many rows as the API answers");
        for (d, a) in rows.iter().zip(&api) {
            assert_eq!(d[0].as_i64(), a[0].as_i64(), "{reader}");
            assert_eq!(d[1].as_i64(), a[1].as_i64(), "{reader}");
            assert_eq!((&d[2], &d[3]), (&a[2], &a[3]), "{reader}");
            assert_eq!(
                d[4].as_f64().map(f64::to_bits),
                a[4].as_f64().map(f64::to_bits),
                "{reader}: values bit for bit: {d:?} {a:?}"
            );
            assert_eq!(d[5].as_i64(), a[5].as_i64(), "{reader}");
            assert_eq!(
                (d[6].as_str(), d[7].as_i64()),
                (Some(date.as_str()), Some(hour_of_day)),
                "{reader}: Hive columns"
            );
        }
    }
}

#[test]
fn the_schedule_compacts_old_hours_while_the_system_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = http();
    let (node, _) = standalone_with_an_old_hour_every(dir.path(), &client, "1s");
    let before = totals(&client, &node.http);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = client.call("GET", &format!("{}/monitoring/storage/statistics", node.http), None).json();
        let warm = stats["tables"]
            .as_array()
            .and_then(|t| t.iter().find(|u| u["tier"] == "warm" && u["table"] == "metrics").cloned());
        if warm.is_some_and(|w| w["rows"] == EVENTS as i64) {
            break;
        }
        assert!(Instant::now() < deadline, "the schedule did not compact the old hour: {stats}");
        assert_eq!(totals(&client, &node.http), before, "queries see the same rows meanwhile");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(totals(&client, &node.http), before);
    let metrics = client.call("GET", &format!("{}/metrics", node.http), None).body;
    assert!(
        metrics.lines().any(|l| l.starts_with("callscope_lifecycle_units_total{outcome=\"done\",step=\"compact\"}")),
        "lifecycle metrics are exported"
    );
}

/// An hour eight days old, run through the built-in policy: its 1-minute roll-ups are
/// downsampled to 15 minutes and deleted (the deletion log says why), and the series API
/// and PromQL answer exactly as before: a 1-minute step from raw samples, a 15-minute step
/// from the 15-minute roll-ups.
#[test]
fn the_default_policy_thins_old_minute_roll_ups_and_queries_answer_as_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = http();
    let (node, hour) = standalone_with_an_hour_ago(dir.path(), &client, "0s", 8 * 24, |i| ((i * 37) % 500) as f64);
    let base = node.http.clone();
    // The workers also roll up derived series, by `model`: only the samples' own are counted.
    let minute_samples = "SELECT SUM(count) FROM metric_rollups WHERE resolution = '1m' AND labels_key LIKE '%seq%'";
    let stored = wait_for_count(&client, &base, minute_samples, EVENTS as i64, Duration::from_secs(90));
    assert_eq!(stored, EVENTS as i64, "the roll-ups of every sample");
    let series = |agg: &str, step: &str| {
        let url = format!(
            "{base}/monitoring/metrics?name=ai_response_time_ms&service=asr&label.region=cn-east&agg={agg}&step={step}&start={hour}&end={}",
            hour + HOUR_MS
        );
        let reply = client.call("GET", &url, None);
        assert_eq!(reply.status, 200, "{}", reply.body);
        (reply.headers.get("x-callscope-source").cloned().unwrap_or_default(), reply.json())
    };
    let promql = || {
        let query = "sum%20by%20(service)%20(sum_over_time(ai_response_time_ms%7Bregion%3D%22cn-east%22%7D%5B1m%5D))";
        let url = format!(
            "{base}/api/v1/query_range?query={query}&start={}&end={}&step=60",
            hour / 1000,
            (hour + HOUR_MS) / 1000 - 60
        );
        let reply = client.call("GET", &url, None);
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    };
    let (minutes, quarters, prom) = (series("sum", "1m"), series("max", "15m"), promql());
    assert_eq!((minutes.0.as_str(), quarters.0.as_str()), ("rollup:1m", "rollup:1m"));
    assert_eq!(minutes.1.as_array().map_or(0, |s| s.len()), EVENTS / 3, "every asr series");
    assert_eq!(prom["data"]["result"].as_array().map_or(0, |r| r.len()), 3, "{prom}");

    let run = lifecycle(&node.data_dir, &[]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success() && stdout.contains("Finished"), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let left = sql(
        &client,
        &base,
        "SELECT resolution, SUM(count) FROM metric_rollups WHERE labels_key LIKE '%seq%' GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(left, vec![vec![json!("15m"), json!(EVENTS)], vec![json!("1h"), json!(EVENTS)]], "1m deleted");
    let deletions = client.call("GET", &format!("{base}/monitoring/storage/deletions"), None).json();
    let reasons: Vec<&str> = deletions.as_array().expect("log").iter().filter_map(|d| d["reason"].as_str()).collect();
    assert_eq!(reasons, ["policy default: 1m roll-ups downsampled to 15m and kept 7d"], "{deletions}");

    let after = series("sum", "1m");
    assert_eq!(after.0, "raw", "the hour's 1-minute roll-ups are gone");
    assert_eq!(after.1, minutes.1, "the same points from raw samples");
    let after = series("max", "15m");
    assert_eq!(after.0, "rollup:15m");
    assert_eq!(after.1, quarters.1, "the same points from the 15-minute roll-ups");
    assert_eq!(promql(), prom, "PromQL reads raw samples where the roll-ups went");
}
