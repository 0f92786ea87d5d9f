//! `callscope bench alert-latency`: the whole pipeline (an embedded broker, a worker that
//! writes Parquet, and the alert evaluator) under background metric traffic at `--rate`
//! events/s, plus, in each trial, one breaching event. Reports the latency from the
//! breaching event's produce call to the webhook receiving its notification: every trial,
//! then p50 / p99 / max, with the background rate actually reached.

use std::time::{Duration, Instant};

use anyhow::Context;
use callscope_pipeline::alerting::{self, AlertingConfig};
use callscope_pipeline::alerting_metrics::AlertingMetrics;
use callscope_pipeline::kafka::{KafkaConnection, ensure_topics};
use callscope_pipeline::{Worker, WorkerConfig, now_ms};
use callscope_schemas::{Event, Metric, MetricKind};
use callscope_storage::Tier;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::BenchAlertConfig;
use crate::loadgen::EventSink;

const RULES: &str = r#"
groups:
  - name: bench
    rules:
      - alert: BenchBreach
        expr: sum by (trial) (increase(bench_breach_total[1m])) > 0
        labels: {severity: critical}
"#;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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
async fn background(brokers: String, rate: u64, cancel: CancellationToken) -> anyhow::Result<u64> {
    let mut sink = EventSink::new(&brokers, &[], crate::cli::EncodingArg::Avro)?;
    let mut rng = StdRng::seed_from_u64(7);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !cancel.is_cancelled() {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            sink.send(&crate::bench::bench_metric(&mut rng, now_ms())).await?;
            sent += 1;
        }
    }
    sink.finish().await;
    Ok(sent)
}

pub async fn alert_latency(config: BenchAlertConfig) -> anyhow::Result<()> {
    anyhow::ensure!(config.trials > 0, "--trials must be positive");
    let data_dir = std::env::temp_dir().join(format!("callscope-bench-alert-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&data_dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let broker = crate::broker::EmbeddedBroker::start(addr, &data_dir, &config.broker_storage).await?;
    let brokers = addr.to_string();
    let connection = KafkaConnection::new(&brokers);
    ensure_topics(&connection, &crate::run::all_topics(), config.partitions, Duration::from_secs(60)).await?;
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
    let mut worker_config = WorkerConfig::new(connection.clone(), "callscope-pipeline");
    worker_config.worker_id = "bench-worker".into();
    let worker = Worker::new(worker_config, hot.clone())?;
    let worker_cancel = cancel.clone();
    let worker_task = tokio::spawn(async move { worker.run(worker_cancel).await });
    let mut alerting_config = AlertingConfig::new(connection.clone(), "bench-evaluator");
    alerting_config.rule_files = vec![rules];
    alerting_config.notify_file = Some(notify);
    alerting_config.default_rules = !config.no_default_rules;
    let evaluator_cancel = cancel.clone();
    let evaluator_hot = hot.clone();
    let evaluator = tokio::spawn(async move { alerting::run(alerting_config, evaluator_hot, evaluator_cancel).await });
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
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        if config.no_default_rules { "off" } else { "on" }
    );
    let bg_cancel = CancellationToken::new();
    let bg = tokio::spawn(background(brokers.clone(), config.rate, bg_cancel.clone()));
    tokio::time::sleep(config.warmup).await;

    let producer: FutureProducer = connection.client_config().set("linger.ms", "0").set("acks", "all").create()?;
    let bg_started = Instant::now();
    let mut latencies = Vec::new();
    println!("{:>5} {:>12}", "trial", "latency ms");
    for trial in 0..config.trials {
        let event = breach(trial);
        let payload = callscope_schemas::json::encode(&event);
        let key = event.partition_key();
        let produced = Instant::now();
        producer
            .send(FutureRecord::to("callscope.metrics").key(&key).payload(&payload), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("producing the breach: {e}"))?;
        let wanted = trial.to_string();
        let got = tokio::time::timeout(Duration::from_secs(30), async {
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
