//! `callscope bench ingest`: preloads a topic with metric events, then measures (a) a bare
//! rdkafka consumer reading the topic and (b) the full pipeline reading, decoding and
//! durably writing Parquet with offset commits, each run with a fresh consumer group.
//! Prints events per second of both, and the ratio b/a, per run and as medians.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use callscope_pipeline::kafka::{KafkaConnection, ensure_topics};
use callscope_pipeline::{Worker, WorkerConfig};
use callscope_schemas::{DLQ_TOPIC, Dataset, Event, Metric, MetricKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::cli::{BenchAggregateConfig, BenchCommand, BenchIngestConfig};
use crate::loadgen::EventSink;

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest(c) => ingest(c).await,
        BenchCommand::Aggregate(c) => aggregate(c).await,
        #[cfg(feature = "embedded-broker")]
        BenchCommand::AlertLatency(c) => crate::bench_alert::alert_latency(c).await,
        #[cfg(not(feature = "embedded-broker"))]
        BenchCommand::AlertLatency(_) => anyhow::bail!("bench alert-latency needs the embedded broker feature"),
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

pub(crate) fn bench_metric(rng: &mut StdRng, now_ms: i64) -> Event {
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

async fn bare_consumer(connection: &KafkaConnection, topic: &str, events: usize) -> anyhow::Result<Duration> {
    let consumer: StreamConsumer = connection
        .client_config()
        .set("group.id", format!("bench-bare-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut seen = 0usize;
    let mut bytes = 0usize;
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < events {
        anyhow::ensure!(Instant::now() < deadline, "bare consumer read only {seen} of {events} events in 10 minutes");
        let m = consumer.recv().await?;
        started.get_or_insert_with(Instant::now);
        bytes += m.payload().map_or(0, <[u8]>::len);
        seen += 1;
    }
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    tracing::debug!(bytes, "bare consumer done");
    Ok(elapsed)
}

async fn pipeline(
    connection: &KafkaConnection,
    topic: &str,
    events: usize,
    config: &BenchIngestConfig,
    aggregation: Option<callscope_pipeline::AggregationConfig>,
) -> anyhow::Result<Duration> {
    let dir = tempfile_dir()?;
    let hot = callscope_storage::Tier::open(&callscope_storage::TierConfig::local_dir(&dir)?)?;
    let mut worker_config =
        WorkerConfig::new(connection.clone(), format!("bench-pipeline-{}", uuid::Uuid::new_v4().simple()));
    worker_config.topics = BTreeMap::from([(topic.to_string(), Dataset::Metrics)]);
    worker_config.flush_rows = config.flush_rows;
    worker_config.flush_interval = Duration::from_millis(200);
    worker_config.aggregation = aggregation;
    let worker = Worker::new(worker_config, hot)?;
    let status = worker.status();
    let consumed = callscope_pipeline::metrics::PipelineMetrics::global().consumed.with_label_values(&[topic]);
    let baseline = consumed.get();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(worker.run(cancel.clone()));
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut started = None;
    loop {
        if started.is_none() && consumed.get() > baseline {
            started = Some(Instant::now());
        }
        if status.snapshot().stored as usize >= events {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "pipeline stored only {} of {events} events in 10 minutes",
            status.snapshot().stored
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    cancel.cancel();
    task.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(elapsed)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("callscope-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A topic preloaded with `config.events` metric events, on a broker of its own unless
/// `--brokers` names one.
struct Preloaded {
    connection: KafkaConnection,
    topic: String,
    data_dir: std::path::PathBuf,
    #[cfg(feature = "embedded-broker")]
    embedded: Option<crate::broker::EmbeddedBroker>,
}

impl Preloaded {
    fn stop(self) {
        #[cfg(feature = "embedded-broker")]
        if let Some(b) = self.embedded {
            b.stop();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

async fn preload(config: &BenchIngestConfig, what: &str) -> anyhow::Result<Preloaded> {
    anyhow::ensure!(config.events > 0 && config.runs > 0, "--events and --runs must be positive");
    let data_dir = tempfile_dir()?;
    #[cfg(feature = "embedded-broker")]
    let mut embedded = None;
    let (brokers, broker_desc) = match &config.brokers {
        Some(b) => (b.clone(), format!("external {b}")),
        None => {
            #[cfg(feature = "embedded-broker")]
            {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
                let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
                let broker = crate::broker::EmbeddedBroker::start(addr, &data_dir, &config.broker_storage).await?;
                embedded = Some(broker);
                (addr.to_string(), format!("embedded Tansu ({}) in this process", config.broker_storage))
            }
            #[cfg(not(feature = "embedded-broker"))]
            anyhow::bail!("this build has no embedded broker: pass --brokers");
        }
    };
    let connection = KafkaConnection::new(&brokers);
    let topic = format!("bench.metrics.{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    ensure_topics(&connection, &[topic.clone(), DLQ_TOPIC.to_string()], config.partitions, Duration::from_secs(60))
        .await?;

    println!(
        "bench {what}: {} metric events ({:?}), topic {topic} with {} partitions, broker: {broker_desc}, {} cores",
        config.events,
        config.encoding,
        config.partitions,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let mut sink = EventSink::new(&brokers, &[], config.encoding)?;
    let mut rng = StdRng::seed_from_u64(42);
    let now = callscope_pipeline::now_ms();
    let started = Instant::now();
    let mut bytes = 0usize;
    for i in 0..config.events {
        let event = bench_metric(&mut rng, now);
        let payload = sink.encode(&event)?;
        bytes += payload.len();
        sink.send_bytes(&topic, &i.to_string(), &payload).await?;
        if (i + 1) % (config.events / 10).max(1) == 0 {
            eprintln!("  preloading: {}/{}", i + 1, config.events);
        }
    }
    let counts = sink.finish().await;
    let acked = counts.acked.load(std::sync::atomic::Ordering::Relaxed) as usize;
    anyhow::ensure!(acked == config.events, "only {acked} of {} preload events acknowledged", config.events);
    let preload = started.elapsed();
    println!(
        "preload: {} events ({:.1} MB) in {:.2} s = {:.0} events/s",
        config.events,
        bytes as f64 / 1e6,
        preload.as_secs_f64(),
        config.events as f64 / preload.as_secs_f64()
    );

    Ok(Preloaded {
        connection,
        topic,
        data_dir,
        #[cfg(feature = "embedded-broker")]
        embedded,
    })
}

async fn ingest(config: BenchIngestConfig) -> anyhow::Result<()> {
    let preloaded = preload(&config, "ingest").await?;
    let (connection, topic) = (preloaded.connection.clone(), preloaded.topic.clone());
    println!("{:>4} {:>16} {:>16} {:>8}", "run", "bare events/s", "pipeline ev/s", "ratio");
    let (mut bare_rates, mut pipe_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=config.runs {
        let bare = bare_consumer(&connection, &topic, config.events).await.context("bare consumer")?;
        let pipe = pipeline(&connection, &topic, config.events, &config, Some(Default::default()))
            .await
            .context("pipeline")?;
        let bare_rate = config.events as f64 / bare.as_secs_f64().max(1e-9);
        let pipe_rate = config.events as f64 / pipe.as_secs_f64().max(1e-9);
        println!("{run:>4} {bare_rate:>16.0} {pipe_rate:>16.0} {:>8.3}", pipe_rate / bare_rate);
        bare_rates.push(bare_rate);
        pipe_rates.push(pipe_rate);
        ratios.push(pipe_rate / bare_rate);
    }
    println!("median {:>13.0} {:>16.0} {:>8.3}", median(&mut bare_rates), median(&mut pipe_rates), median(&mut ratios));
    preloaded.stop();
    Ok(())
}

/// Resident and peak resident memory of this process, in bytes (Linux).
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
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

async fn aggregate(config: BenchAggregateConfig) -> anyhow::Result<()> {
    let stream = &config.stream;
    anyhow::ensure!(stream.events > 0 && stream.runs > 0 && config.series > 0, "counts must be positive");
    let preloaded = preload(stream, "aggregate").await?;
    println!("{:>4} {:>18} {:>18} {:>8}", "run", "aggregation off/s", "aggregation on/s", "on/off");
    let (mut offs, mut ons, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=stream.runs {
        // Alternate which goes first, so that warm-up favours neither.
        let measure = |aggregation: Option<callscope_pipeline::AggregationConfig>| {
            pipeline(&preloaded.connection, &preloaded.topic, stream.events, stream, aggregation)
        };
        let (off, on) = if run % 2 == 1 {
            let off = measure(None).await.context("off")?;
            (off, measure(Some(Default::default())).await.context("on")?)
        } else {
            let on = measure(Some(Default::default())).await.context("on")?;
            (measure(None).await.context("off")?, on)
        };
        let (off, on) =
            (stream.events as f64 / off.as_secs_f64().max(1e-9), stream.events as f64 / on.as_secs_f64().max(1e-9));
        println!("{run:>4} {off:>18.0} {on:>18.0} {:>8.3}", on / off);
        offs.push(off);
        ons.push(on);
        ratios.push(on / off);
    }
    println!("median {:>15.0} {:>18.0} {:>8.3}", median(&mut offs), median(&mut ons), median(&mut ratios));
    preloaded.stop();

    // Window state at many active series: one sample per series (a third each counters,
    // gauges, histograms), all in open windows of the three default resolutions.
    let agg_config = std::sync::Arc::new(callscope_pipeline::AggregationConfig {
        max_series_per_metric: config.series,
        ..Default::default()
    });
    let mut agg = callscope_pipeline::aggregate::PartitionAggregator::new(agg_config, 0);
    let now = callscope_pipeline::now_ms();
    let (rss_before, _) = memory();
    let started = Instant::now();
    for i in 0..config.series {
        let (name, kind) = match i % 3 {
            0 => ("bench_calls_total", MetricKind::Counter),
            1 => ("bench_active_calls", MetricKind::Gauge),
            _ => ("bench_latency_ms", MetricKind::Histogram),
        };
        let metric = Metric {
            name: name.into(),
            kind,
            value: (i % 1000) as f64 + 1.5,
            timestamp_ms: now,
            service: format!("svc-{}", i % 20),
            labels: [("pod".to_string(), format!("pod-{i}")), ("region".to_string(), "cn-east".to_string())].into(),
            unit: None,
        };
        agg.process(i as i64, &metric);
    }
    let elapsed = started.elapsed();
    let (rss_after, peak) = memory();
    let series = agg.active_series();
    println!(
        "state: {series} active series ({} open windows) built in {:.2} s; estimated {} B/series; resident growth {} B/series",
        agg.open_windows(),
        elapsed.as_secs_f64(),
        agg.state_bytes() / series.max(1),
        rss_after.saturating_sub(rss_before) / series.max(1) as u64
    );
    let (batch, metadata) = agg.checkpoint(&[])?;
    let checkpoint = callscope_storage::parquet_file::encode_with_metadata(&[batch], metadata)?;
    println!(
        "checkpoint of that state: {:.1} MB ({} B/series)",
        checkpoint.len() as f64 / 1e6,
        checkpoint.len() / series.max(1)
    );
    println!("peak resident memory of this process: {:.1} MB", peak as f64 / 1e6);
    Ok(())
}
