//! `callscope bench chaos`: a soak of the exactly-once path. Two `callscope pipeline`
//! processes of one consumer group write one hot tier whose store injects faults
//! (`--fault-spec`, see the storage crate's `fault_store`), while one of them is killed with
//! SIGKILL and restarted every `--kill-every`, and a producer sends metric events numbered
//! 0, 1, 2, … at `--rate`. After `--duration` production stops; when the stored events stop
//! changing (or after `--settle`), the Parquet files are counted directly and the program
//! prints events produced, stored, duplicated and lost, and fails unless the last two are 0.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use callscope_query_api::QueryEngine;
use callscope_query_api::engine::EngineOptions;
use callscope_runtime::KafkaConnection;
use callscope_schemas::{Event, Metric, MetricKind};
use callscope_storage::Tiers;

use super::common::{cores, scratch_dir};
use crate::cli::BenchChaosConfig;
use crate::event_sink::EventSink;

/// The consumer group of the two pipelines.
const GROUP: &str = "callscope-chaos";

/// One pipeline process, restarted after each kill.
struct Pipeline {
    name: &'static str,
    child: Child,
    starts: usize,
}

fn spawn_pipeline(name: &str, brokers: &str, data_dir: &Path, spec: &str, start: usize) -> anyhow::Result<Child> {
    let log = std::fs::File::create(data_dir.join(format!("{name}-{start}.log")))?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args([
            "pipeline",
            "--brokers",
            brokers,
            "--group-id",
            GROUP,
            "--flush-rows",
            "500",
            "--flush-interval",
            "100ms",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--worker-id")
        .arg(format!("{name}-{start}"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if !spec.is_empty() {
        command.arg("--storage-option").arg(format!("fault_spec={spec}"));
    }
    command.spawn().context("starting a pipeline process")
}

/// Counts of the stored metric events: rows, distinct (partition, offset), distinct
/// event numbers, and the sum of their values.
struct Stored {
    rows: i64,
    distinct_offsets: i64,
    distinct_events: i64,
}

async fn stored(engine: &QueryEngine) -> anyhow::Result<Stored> {
    let batches = engine
        .session()
        .sql(
            "SELECT COUNT(*), COUNT(DISTINCT concat(CAST(kafka_partition AS VARCHAR), '/', CAST(kafka_offset AS VARCHAR))), \
             COUNT(DISTINCT labels['seq']) FROM metrics WHERE name = 'chaos_event'",
        )
        .await?
        .collect()
        .await?;
    let values: Vec<i64> = batches
        .first()
        .map(|b| {
            (0..3)
                .map(|i| callscope_query_api::json_rows::column_values(b.column(i).as_ref())[0].as_i64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(values.len() == 3, "counting the stored events returned no row");
    Ok(Stored { rows: values[0], distinct_offsets: values[1], distinct_events: values[2] })
}

fn event(seq: u64, now_ms: i64) -> Event {
    Event::Metric(Metric {
        name: "chaos_event".into(),
        kind: MetricKind::Counter,
        value: 1.0,
        timestamp_ms: now_ms,
        service: "chaos".into(),
        labels: [("seq".to_string(), seq.to_string())].into_iter().collect(),
        unit: None,
    })
}

pub async fn run(config: BenchChaosConfig) -> anyhow::Result<()> {
    anyhow::ensure!(config.rate > 0, "--rate must be positive");
    let dir: PathBuf = scratch_dir("chaos")?;
    let broker = crate::broker::EmbeddedBroker::start_on_free_port(&dir, config.broker_storage).await?;
    let brokers = broker.addr.to_string();
    let connection = KafkaConnection::new(&brokers);
    crate::topics::create_all(&connection, config.partitions, &Default::default()).await?;
    let duration: Duration = config.duration.into();
    let kill_every: Duration = config.kill_every.into();
    println!(
        "bench chaos: {} s, {} events/s, {} partitions, 2 pipelines, one killed every {} s, faults {:?}, {} cores; logs in {}",
        duration.as_secs(),
        config.rate,
        config.partitions,
        kill_every.as_secs_f64(),
        config.fault_spec,
        cores(),
        dir.display()
    );
    let mut pipelines = Vec::new();
    for name in ["a", "b"] {
        let child = spawn_pipeline(name, &brokers, &dir, &config.fault_spec, 0)?;
        pipelines.push(Pipeline { name, child, starts: 0 });
    }
    let engine = QueryEngine::new(&Tiers::local(&dir)?, EngineOptions::default())?;

    let mut sink = EventSink::new(&connection, config.encoding)?;
    let started = Instant::now();
    let mut next_kill = started + kill_every;
    let mut kills = 0usize;
    let mut seq = 0u64;
    let tick = Duration::from_millis(100);
    let per_tick = (config.rate / 10).max(1);
    while started.elapsed() < duration {
        let now = callscope_runtime::now_ms();
        for _ in 0..per_tick {
            sink.send(&event(seq, now)).await?;
            seq += 1;
        }
        if Instant::now() >= next_kill {
            let p = &mut pipelines[kills % 2];
            p.child.kill().context("SIGKILL")?;
            let _ = p.child.wait();
            p.starts += 1;
            p.child = spawn_pipeline(p.name, &brokers, &dir, &config.fault_spec, p.starts)?;
            kills += 1;
            next_kill += kill_every;
            let s = stored(&engine).await?;
            eprintln!(
                "  t={:>4.0}s produced {seq} stored {} (distinct {}) kills {kills}",
                started.elapsed().as_secs_f64(),
                s.rows,
                s.distinct_events
            );
        }
        tokio::time::sleep(tick).await;
    }
    let counts = sink.finish().await;
    let produced = counts.acked() as i64;
    anyhow::ensure!(counts.failed() == 0, "{} events were not acknowledged by the broker", counts.failed());

    // Settle: wait until every event is stored, or nothing changes for a while.
    let settle: Duration = config.settle.into();
    let deadline = Instant::now() + settle;
    let mut last = stored(&engine).await?;
    while last.distinct_events < produced && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = stored(&engine).await?;
    }
    // Late duplicates (a zombie's batch) would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = stored(&engine).await?;
    for p in &mut pipelines {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
    broker.stop();
    let duplicated = s.rows - s.distinct_offsets;
    let lost = produced - s.distinct_events;
    println!("kills                  {kills}");
    println!("events produced        {produced}");
    println!("events stored          {}", s.distinct_events);
    println!("rows stored            {}", s.rows);
    println!("duplicated             {duplicated}");
    println!("lost                   {lost}");
    anyhow::ensure!(
        duplicated == 0 && lost == 0,
        "exactly-once violated: {duplicated} duplicated, {lost} lost (logs in {})",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
