//! `callscope bench alert-latency`: the whole pipeline (an embedded broker, a worker that
//! writes Parquet, and the alert evaluator, both with the defaults of `callscope pipeline`)
//! under background metric traffic at `--rate` events/s, plus, in each trial, one breaching
//! event. Reports the latency from the breaching event's produce call to the webhook
//! receiving its notification: every trial, then p50 / p99 / max, with the background rate
//! actually reached.

use std::time::{Duration, Instant};

use anyhow::Context;
use callscope_alerting::metrics::AlertingMetrics;
use callscope_pipeline::Worker;
use callscope_runtime::KafkaConnection;
use callscope_runtime::kafka::ProducerProfile;
use callscope_runtime::now_ms;
use callscope_schemas::{Dataset, Event, Metric, MetricKind};
use callscope_storage::Tier;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rdkafka::producer::FutureRecord;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::common::{bench_metric, cores, percentile, scratch_dir};
use crate::broker::EmbeddedBroker;
use crate::cli::{self, AlertArgs, BenchAlertConfig, EncodingArg, IngestArgs, WindowArgs};
use crate::event_sink::EventSink;

/// The rules: group `bench` of the shared fixture (`BenchBreach`: a trial's breach counter
/// increased).
const RULES: &str = include_str!("../../tests/fixtures/alert-rules.yaml");

/// Longest wait for one trial's notification.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(config: BenchAlertConfig) -> anyhow::Result<()> {
    anyhow::ensure!(config.trials > 0, "--trials must be positive");
    let data_dir = scratch_dir("bench-alert")?;
    let broker = EmbeddedBroker::start_on_free_port(&data_dir, config.broker_storage).await?;
    let brokers = broker.addr.to_string();
    let connection = KafkaConnection::new(&brokers);
    crate::topics::create_all(&connection, config.partitions, &Default::default()).await?;
    let hot = Tier::open(&callscope_storage::TierConfig::local_dir(&data_dir.join("hot"))?).context("hot tier")?;

    let (hook, mut receipts) = receiver().await?;
    let rules = data_dir.join("rules.yaml");
    std::fs::write(&rules, RULES)?;
    let notify = data_dir.join("notify.yaml");
    std::fs::write(
        &notify,
        format!(
            "route:\n  receiver: bench\n  group_by: [alertname, trial]\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: bench\n    webhook_configs: [{{url: \"{hook}\"}}]\n"
        ),
    )?;
    let cancel = CancellationToken::new();
    let windows: WindowArgs = cli::defaults()?;
    let ingest: IngestArgs = cli::defaults()?;
    let worker =
        Worker::new(ingest.worker_config(&connection, windows.aggregation()?, "bench-worker".into()), hot.clone())?;
    let worker_cancel = cancel.clone();
    let worker_task = tokio::spawn(async move { worker.run(worker_cancel).await });
    let alerts = AlertArgs {
        alert_rules: vec![rules],
        notify_config: Some(notify),
        no_default_rules: config.no_default_rules,
        ..cli::defaults()?
    };
    let alerting_config = alerts.config(&connection, &windows, "bench-evaluator").context("alerting is off")?;
    let evaluator_cancel = cancel.clone();
    let evaluator_hot = hot.clone();
    let evaluator =
        tokio::spawn(async move { callscope_alerting::run(alerting_config, evaluator_hot, evaluator_cancel).await });
    let deadline = Instant::now() + Duration::from_secs(60);
    while AlertingMetrics::global().leader.get() != 1 {
        anyhow::ensure!(Instant::now() < deadline, "the evaluator did not become leader within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!(
        "bench alert-latency: background {} events/s, {} trials, {} partitions, broker: embedded Tansu ({}), {} cores, default rules {}",
        config.rate,
        config.trials,
        config.partitions,
        config.broker_storage,
        cores(),
        if config.no_default_rules { "off" } else { "on" }
    );
    let bg_cancel = CancellationToken::new();
    let bg = tokio::spawn(background(connection.clone(), config.rate, bg_cancel.clone()));
    tokio::time::sleep(config.warmup).await;

    let producer = connection.producer_with(ProducerProfile::Immediate)?;
    let bg_started = Instant::now();
    let mut latencies = Vec::new();
    println!("{:>5} {:>12}", "trial", "latency ms");
    for trial in 0..config.trials {
        let event = breach(trial);
        let payload = callscope_schemas::json::encode(&event);
        let key = event.partition_key();
        let produced = Instant::now();
        producer
            .send(
                FutureRecord::to(Dataset::Metrics.default_topic()).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("producing the breach: {e}"))?;
        let wanted = trial.to_string();
        let got = tokio::time::timeout(TRIAL_TIMEOUT, async {
            while let Some((t, at)) = receipts.recv().await {
                if t == wanted {
                    return Some(at);
                }
            }
            None
        })
        .await;
        match got {
            Ok(Some(at)) => {
                let ms = at.duration_since(produced).as_secs_f64() * 1000.0;
                latencies.push(ms);
                println!("{trial:>5} {ms:>12.1}");
            }
            _ => println!("{trial:>5} {:>12}", "timeout (30 s)"),
        }
        tokio::time::sleep(config.pause).await;
    }
    let bg_elapsed = bg_started.elapsed();
    bg_cancel.cancel();
    let sent = bg.await.context("background producer")??;
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "latency produce -> webhook over {} of {} trials: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        sorted.len(),
        config.trials,
        percentile(&sorted, 50.0),
        percentile(&sorted, 99.0),
        sorted.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "background reached {:.0} events/s ({} events; target {})",
        sent as f64 / (bg_elapsed + config.warmup).as_secs_f64(),
        sent,
        config.rate
    );
    let m = AlertingMetrics::global();
    println!(
        "evaluator: {} samples decoded, {} skipped by key, {} evaluation rounds",
        m.samples_ingested.with_label_values(&["read"]).get(),
        m.samples_ingested.with_label_values(&["skipped"]).get(),
        m.evaluations.with_label_values(&["batch"]).get() + m.evaluations.with_label_values(&["interval"]).get()
    );
    cancel.cancel();
    let _ = evaluator.await;
    let _ = worker_task.await;
    broker.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
    anyhow::ensure!(sorted.len() == config.trials, "{} trials timed out", config.trials - sorted.len());
    Ok(())
}

/// A local webhook receiver: reports (trial, receipt time) of every firing alert.
async fn receiver() -> anyhow::Result<(String, mpsc::UnboundedReceiver<(String, Instant)>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let at = Instant::now();
            let tx = tx.clone();
            async move {
                for a in body["alerts"].as_array().into_iter().flatten() {
                    if a["status"] == "firing"
                        && let Some(trial) = a["labels"]["trial"].as_str()
                    {
                        let _ = tx.send((trial.to_string(), at));
                    }
                }
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok((url, rx))
}

/// The breaching event of one trial.
fn breach(trial: usize) -> Event {
    Event::Metric(Metric {
        name: "bench_breach_total".into(),
        kind: MetricKind::Counter,
        value: 1.0,
        timestamp_ms: now_ms(),
        service: "bench".into(),
        labels: [("trial".to_string(), trial.to_string())].into_iter().collect(),
        unit: None,
    })
}

/// Produces background metrics at `rate` events/s until cancelled; returns how many.
async fn background(connection: KafkaConnection, rate: u64, cancel: CancellationToken) -> anyhow::Result<u64> {
    let mut sink = EventSink::new(&connection, EncodingArg::Avro)?;
    let mut rng = StdRng::seed_from_u64(7);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !cancel.is_cancelled() {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            sink.send(&bench_metric(&mut rng, now_ms())).await?;
            sent += 1;
        }
    }
    sink.finish().await;
    Ok(sent)
}
