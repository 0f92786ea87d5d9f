//! `callscope bench ingest`: preloads a topic with metric events, then measures (a) a bare
//! rdkafka consumer reading the topic and (b) the full pipeline reading, decoding and
//! durably writing Parquet with offset commits, each run with a fresh consumer group.
//! Prints events per second of both and the ratio b/a, end to end and steady (10 % to 90 % of
//! the events), per run and as medians; with Avro, then the datum decoders alone (the
//! reader specialised to the writer schema against apache-avro's generic one).
//!
//! `callscope bench aggregate`: the pipeline on the same kind of preloaded topic with window
//! aggregation off and on (alternating which goes first), then the window state of
//! `--series` active series: its size per series, its checkpoint, and peak memory.
//!
//! The pipeline under test runs with the defaults of `callscope pipeline` except for its
//! batching (`--flush-rows`, 200 ms flush interval) and its topic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use callscope_pipeline::AggregationConfig;
use callscope_pipeline::Worker;
use callscope_runtime::KafkaConnection;
use callscope_schemas::{DLQ_TOPIC, Dataset, Metric, MetricKind};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use super::common::{RunTable, bench_metric, cores, memory, rate, scratch_dir};
use crate::cli::{self, BenchAggregateConfig, BenchIngestConfig, IngestArgs, WindowArgs};
use crate::event_sink::EventSink;

/// Longest a bench waits for one run.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

pub async fn ingest(config: BenchIngestConfig) -> anyhow::Result<()> {
    let aggregation = cli::defaults::<WindowArgs>()?.aggregation()?;
    let preloaded = preload(&config, "ingest").await?;
    let (connection, topic) = (preloaded.connection.clone(), preloaded.topic.clone());
    println!("end to end: from the first message read to the last event read (bare) or stored (pipeline)");
    let mut table = RunTable::new(16, "bare events/s", "pipeline ev/s", "ratio");
    let mut steady = Vec::new();
    for run in 1..=config.runs {
        let bare = bare_consumer(&connection, &topic, config.events).await.context("bare consumer")?;
        let pipe = pipeline(&connection, &topic, &config, aggregation.clone()).await.context("pipeline")?;
        table.row(run, rate(config.events, bare.total), rate(config.events, pipe.total));
        steady.push((bare.steady, pipe.steady));
    }
    table.medians();
    println!("steady: events between 10 % and 90 % of the total over the time between (no start-up, no last flush)");
    let mut table = RunTable::new(16, "bare events/s", "pipeline ev/s", "ratio");
    for (run, (bare, pipe)) in steady.into_iter().enumerate() {
        table.row(run + 1, bare, pipe);
    }
    table.medians();
    preloaded.stop();
    if config.encoding != crate::cli::EncodingArg::Json {
        avro_decoders(config.events.min(200_000));
    }
    Ok(())
}

/// The Avro datum decoders alone, in this process: the reader specialised to the writer
/// schema (what the pipeline runs) against apache-avro's generic decoding, on the same
/// encoded metric events, three runs each; prints events/s and the ratio of the medians.
fn avro_decoders(events: usize) {
    let registered = callscope_schemas::avro::SchemaRegistry::builtin().by_dataset(Dataset::Metrics);
    let mut rng = StdRng::seed_from_u64(7);
    let now = callscope_runtime::now_ms();
    let datums: Vec<Vec<u8>> =
        (0..events).filter_map(|_| callscope_schemas::avro::encode_datum(&bench_metric(&mut rng, now)).ok()).collect();
    let time = |decode: &dyn Fn(&[u8]) -> bool| -> f64 {
        let mut rates: Vec<f64> = (0..3)
            .map(|_| {
                let started = Instant::now();
                let ok = datums.iter().filter(|d| decode(d)).count();
                assert_eq!(ok, datums.len(), "every datum decodes");
                datums.len() as f64 / started.elapsed().as_secs_f64()
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[1]
    };
    let specialised = time(&|d| {
        callscope_schemas::avro_reader::decode(registered.dataset, registered.version, registered.subject, d).is_ok()
    });
    let generic = time(&|d| callscope_schemas::avro::decode_datum_generic(registered, d).is_ok());
    println!(
        "avro datum decoding, {} metric events, median of 3: specialised {:.0} events/s, apache-avro generic {:.0} events/s ({:.1}x)",
        datums.len(),
        specialised,
        generic,
        specialised / generic
    );
}

pub async fn aggregate(config: BenchAggregateConfig) -> anyhow::Result<()> {
    let stream = &config.stream;
    anyhow::ensure!(stream.events > 0 && stream.runs > 0 && config.series > 0, "counts must be positive");
    let windows: WindowArgs = cli::defaults()?;
    let aggregation = windows.aggregation()?;
    let preloaded = preload(stream, "aggregate").await?;
    let mut table = RunTable::new(18, "aggregation off/s", "aggregation on/s", "on/off");
    for run in 1..=stream.runs {
        // Alternate which goes first, so that warm-up favours neither.
        let measure = |aggregation: Option<AggregationConfig>| {
            pipeline(&preloaded.connection, &preloaded.topic, stream, aggregation)
        };
        let (off, on) = if run % 2 == 1 {
            let off = measure(None).await.context("off")?;
            (off, measure(aggregation.clone()).await.context("on")?)
        } else {
            let on = measure(aggregation.clone()).await.context("on")?;
            (measure(None).await.context("off")?, on)
        };
        table.row(run, rate(stream.events, off.total), rate(stream.events, on.total));
    }
    table.medians();
    preloaded.stop();
    window_state(WindowArgs { max_series_per_metric: config.series, ..windows }, config.series)
}

/// Window state at many active series: one sample per series (a third each counters,
/// gauges, histograms), all in open windows of every resolution.
fn window_state(windows: WindowArgs, series: usize) -> anyhow::Result<()> {
    let config = windows.aggregation()?.context("window aggregation is off")?;
    let mut agg = callscope_pipeline::windows::PartitionAggregator::new(std::sync::Arc::new(config), 0);
    let now = callscope_runtime::now_ms();
    let (rss_before, _) = memory();
    let started = Instant::now();
    for i in 0..series {
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

/// How long a run took from its first message, and its steady rate: the events between
/// 10 % and 90 % of the total over the time between the two.
struct Timing {
    total: Duration,
    steady: f64,
}

/// Records when a count passes 10 % and 90 % of `events`.
struct SteadyClock {
    events: usize,
    low: Option<(Instant, usize)>,
    high: Option<(Instant, usize)>,
}

impl SteadyClock {
    fn new(events: usize) -> SteadyClock {
        SteadyClock { events, low: None, high: None }
    }

    fn observe(&mut self, count: usize) {
        if self.low.is_none() && count >= self.events / 10 {
            self.low = Some((Instant::now(), count));
        }
        if self.high.is_none() && count >= self.events - self.events / 10 {
            self.high = Some((Instant::now(), count));
        }
    }

    fn rate(&self) -> f64 {
        match (self.low, self.high) {
            (Some((t0, n0)), Some((t1, n1))) if n1 > n0 => {
                (n1 - n0) as f64 / t1.duration_since(t0).as_secs_f64().max(1e-9)
            }
            _ => f64::NAN,
        }
    }
}

/// Time for a consumer of a fresh group that only counts bytes to read `events` messages.
async fn bare_consumer(connection: &KafkaConnection, topic: &str, events: usize) -> anyhow::Result<Timing> {
    let consumer: StreamConsumer = connection
        .consumer_config(&format!("bench-bare-{}", uuid::Uuid::new_v4().simple()))
        .set("fetch.wait.max.ms", "100")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut seen = 0usize;
    let mut bytes = 0usize;
    let mut clock = SteadyClock::new(events);
    let mut started = None;
    let deadline = Instant::now() + RUN_TIMEOUT;
    while seen < events {
        anyhow::ensure!(Instant::now() < deadline, "bare consumer read only {seen} of {events} events in 10 minutes");
        let m = consumer.recv().await?;
        started.get_or_insert_with(Instant::now);
        bytes += m.payload().map_or(0, <[u8]>::len);
        seen += 1;
        clock.observe(seen);
    }
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    tracing::debug!(bytes, "bare consumer done");
    Ok(Timing { total: elapsed, steady: clock.rate() })
}

/// Time for a pipeline worker of a fresh group, writing to a scratch hot tier, to store
/// every preloaded event (from its first consumed message).
async fn pipeline(
    connection: &KafkaConnection,
    topic: &str,
    config: &BenchIngestConfig,
    aggregation: Option<AggregationConfig>,
) -> anyhow::Result<Timing> {
    let events = config.events;
    let mut clock = SteadyClock::new(events);
    let dir = scratch_dir("bench")?;
    let hot = callscope_storage::Tier::open(&callscope_storage::TierConfig::local_dir(&dir)?)?;
    let ingest = IngestArgs {
        group_id: format!("bench-pipeline-{}", uuid::Uuid::new_v4().simple()),
        flush_rows: config.flush_rows,
        flush_interval: Duration::from_millis(200).into(),
        ..cli::defaults()?
    };
    let mut worker_config = ingest.worker_config(connection, aggregation, ingest.worker_id_prefix());
    worker_config.topics = BTreeMap::from([(topic.to_string(), Dataset::Metrics)]);
    let worker = Worker::new(worker_config, hot)?;
    let status = worker.status();
    let consumed = callscope_pipeline::metrics::PipelineMetrics::global().consumed.with_label_values(&[topic]);
    let baseline = consumed.get();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(worker.run(cancel.clone()));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut started = None;
    loop {
        if started.is_none() && consumed.get() > baseline {
            started = Some(Instant::now());
        }
        let stored = status.snapshot().stored as usize;
        clock.observe(stored);
        if stored >= events {
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
    Ok(Timing { total: elapsed, steady: clock.rate() })
}

/// A topic preloaded with `config.events` metric events, on a broker of its own unless
/// `--brokers` names one.
pub(super) struct Preloaded {
    pub(super) connection: KafkaConnection,
    pub(super) topic: String,
    data_dir: std::path::PathBuf,
    #[cfg(feature = "embedded-broker")]
    embedded: Option<crate::broker::EmbeddedBroker>,
}

impl Preloaded {
    pub(super) fn stop(self) {
        #[cfg(feature = "embedded-broker")]
        if let Some(b) = self.embedded {
            b.stop();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Preloads a topic of a random name, or `topic`.
pub(super) async fn preload_topic(
    config: &BenchIngestConfig,
    what: &str,
    topic: Option<&str>,
) -> anyhow::Result<Preloaded> {
    anyhow::ensure!(config.events > 0 && config.runs > 0, "--events and --runs must be positive");
    let data_dir = scratch_dir("bench")?;
    #[cfg(feature = "embedded-broker")]
    let mut embedded = None;
    let (brokers, broker_desc) = match &config.brokers {
        Some(b) => (b.clone(), format!("external {b}")),
        None => {
            #[cfg(feature = "embedded-broker")]
            {
                let broker =
                    crate::broker::EmbeddedBroker::start_on_free_port(&data_dir, config.broker_storage).await?;
                let addr = broker.addr.to_string();
                embedded = Some(broker);
                (addr, format!("embedded Tansu ({}) in this process", config.broker_storage))
            }
            #[cfg(not(feature = "embedded-broker"))]
            anyhow::bail!("this build has no embedded broker: pass --brokers");
        }
    };
    let connection = KafkaConnection::new(&brokers);
    let topic = match topic {
        Some(t) => t.to_string(),
        None => format!("bench.metrics.{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
    };
    crate::topics::create(&connection, &[topic.clone(), DLQ_TOPIC.to_string()], config.partitions).await?;

    println!(
        "bench {what}: {} metric events ({:?}), topic {topic} with {} partitions, broker: {broker_desc}, {} cores",
        config.events,
        config.encoding,
        config.partitions,
        cores()
    );
    let mut sink = EventSink::new(&connection, config.encoding)?;
    let mut rng = StdRng::seed_from_u64(42);
    let now = callscope_runtime::now_ms();
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
    let acked = sink.finish().await.acked() as usize;
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

async fn preload(config: &BenchIngestConfig, what: &str) -> anyhow::Result<Preloaded> {
    preload_topic(config, what, None).await
}
