//! Wiring of the long-running subcommands: standalone, pipeline, query-api, broker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use callscope_pipeline::kafka::{KafkaConnection, ensure_topics};
use callscope_pipeline::{Worker, WorkerConfig};
use callscope_query_api::engine::EngineOptions;
use callscope_query_api::{AppState, KafkaProbe, QueryEngine, SqlLimits};
use callscope_schemas::{DLQ_TOPIC, Dataset};
use callscope_storage::Tier;
use tokio_util::sync::CancellationToken;

use crate::cli::{Command, IngestArgs, QueryArgs, WindowArgs};

pub async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Standalone(c) => standalone(c).await,
        Command::Pipeline(c) => pipeline(c).await,
        Command::QueryApi(c) => query_api(c).await,
        #[cfg(feature = "embedded-broker")]
        Command::Broker(c) => broker(c).await,
        Command::Produce(c) => crate::produce::run(c).await,
        Command::Loadgen(c) => crate::loadgen::run_command(c).await,
        Command::Sql(c) => crate::sql_cmd::run(c).await,
        Command::Bench(c) => crate::bench::run(c).await,
    }
}

/// The topics the stream workers consume.
pub fn input_topics() -> Vec<String> {
    Dataset::ALL.iter().map(|d| d.default_topic().to_string()).collect()
}

/// Every topic callscope reads or writes.
pub fn all_topics() -> Vec<String> {
    let mut topics = input_topics();
    topics.push(DLQ_TOPIC.to_string());
    topics
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn worker_configs(
    connection: &KafkaConnection,
    ingest: &IngestArgs,
    windows: &WindowArgs,
) -> anyhow::Result<Vec<WorkerConfig>> {
    let aggregation = windows.aggregation()?;
    let prefix = ingest
        .worker_id
        .clone()
        .unwrap_or_else(|| format!("worker-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    Ok((0..ingest.workers.max(1))
        .map(|i| {
            let mut c = WorkerConfig::new(connection.clone(), ingest.group_id.clone());
            c.flush_rows = ingest.flush_rows.max(1);
            c.flush_interval = ingest.flush_interval;
            c.max_time_skew = ingest.max_time_skew;
            c.worker_id = if ingest.workers > 1 { format!("{prefix}-{i}") } else { prefix.clone() };
            c.aggregation = aggregation.clone();
            c
        })
        .collect())
}

/// Starts the alert evaluator of this process (unless turned off).
fn spawn_alerting(
    config: Option<callscope_pipeline::alerting::AlertingConfig>,
    hot: &Tier,
    cancel: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let config = config?;
    let (hot, cancel) = (hot.clone(), cancel.clone());
    Some(tokio::spawn(async move {
        if let Err(e) = callscope_pipeline::alerting::run(config, hot, cancel).await {
            tracing::error!(error = %e, "alert evaluator stopped");
        }
    }))
}

/// Starts the workers; each stops when `cancel` is cancelled.
fn spawn_workers(
    configs: Vec<WorkerConfig>,
    hot: &Tier,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut handles = Vec::new();
    for config in configs {
        let id = config.worker_id.clone();
        let worker = Worker::new(config, hot.clone()).with_context(|| format!("cannot start worker {id}"))?;
        let cancel = cancel.clone();
        handles.push(tokio::spawn(async move {
            if let Err(e) = worker.run(cancel).await {
                tracing::error!(worker = %id, error = %e, "worker failed");
            }
        }));
    }
    Ok(handles)
}

fn api_state(
    hot: &Tier,
    kafka: Option<(&KafkaConnection, &str)>,
    query: &QueryArgs,
    windows: &WindowArgs,
) -> anyhow::Result<AppState> {
    let engine =
        QueryEngine::new(hot, EngineOptions { memory_limit: query.query_memory_mb << 20, ..Default::default() })?;
    let (producer, kafka_probe) = match kafka {
        Some((connection, group)) => (
            Some(connection.producer()?),
            Some(Arc::new(KafkaProbe::new(connection.client_config(), group, input_topics())?)),
        ),
        None => (None, None),
    };
    Ok(AppState {
        engine,
        hot: hot.clone(),
        producer,
        kafka_probe,
        topics: Dataset::ALL.iter().map(|d| (*d, d.default_topic().to_string())).collect::<BTreeMap<_, _>>(),
        sql_limits: SqlLimits { max_rows: query.sql_max_rows, timeout: query.sql_timeout },
        started: Instant::now(),
        resolutions_ms: if windows.no_aggregation { Vec::new() } else { windows.resolutions_ms() },
        rollups_settled_after_ms: (windows.allowed_lateness + windows.idle_timeout).as_millis() as i64 + 5_000,
    })
}

async fn serve_api(
    addr: std::net::SocketAddr,
    state: AppState,
    cancel: CancellationToken,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the query API (choose another with --http-addr)"))?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(e) = callscope_query_api::serve(listener, state, async move { cancel.cancelled().await }).await {
            tracing::error!(error = %e, "query API stopped");
        }
    });
    Ok((bound, handle))
}

async fn standalone(config: crate::cli::StandaloneConfig) -> anyhow::Result<()> {
    let hot = config.storage.hot_tier()?;
    #[cfg(feature = "embedded-broker")]
    let mut embedded = None;
    let brokers = match &config.kafka.brokers {
        Some(b) => b.clone(),
        None => {
            #[cfg(feature = "embedded-broker")]
            {
                let broker = crate::broker::EmbeddedBroker::start(
                    config.kafka_addr,
                    &config.storage.data_dir,
                    &config.broker_storage,
                )
                .await?;
                let addr = broker.addr.to_string();
                embedded = Some(broker);
                addr
            }
            #[cfg(not(feature = "embedded-broker"))]
            anyhow::bail!("this build has no embedded broker: pass --brokers HOST:PORT");
        }
    };
    let connection = config.kafka.connection(&brokers);
    ensure_topics(&connection, &all_topics(), config.kafka.partitions, Duration::from_secs(60)).await?;

    let workers_cancel = CancellationToken::new();
    let workers = spawn_workers(worker_configs(&connection, &config.ingest, &config.windows)?, &hot, &workers_cancel)?;
    let instance = config.ingest.worker_id.clone().unwrap_or_else(|| format!("standalone-{}", std::process::id()));
    let alerting = spawn_alerting(config.alerts.config(&connection, &config.windows, &instance), &hot, &workers_cancel);
    let state = api_state(&hot, Some((&connection, &config.ingest.group_id)), &config.query, &config.windows)?;
    let http_cancel = CancellationToken::new();
    let (http_addr, http) = serve_api(config.http_addr, state, http_cancel.clone()).await?;

    let demo_cancel = CancellationToken::new();
    let demo = if config.demo {
        let generator = crate::loadgen::LoadGenerator::new(&brokers, &[], crate::cli::EncodingArg::Mixed, None)?;
        let cancel = demo_cancel.clone();
        let rate = config.demo_rate;
        Some(tokio::spawn(async move {
            if let Err(e) = generator.run(rate, None, cancel).await {
                tracing::error!(error = %e, "traffic generator stopped");
            }
        }))
    } else {
        None
    };

    println!("callscope standalone is running");
    println!("  Kafka bootstrap : {brokers}");
    println!("  query API       : http://{http_addr}  (try /monitoring/health, /monitoring/sql)");
    println!("  hot tier        : {}", hot.dir_url(""));
    if config.demo {
        println!("  demo traffic    : {} simulated calls/s", config.demo_rate);
    }
    println!("Press Ctrl-C to stop.");

    stop_signal().await;
    tracing::info!("stopping: traffic generator, workers (flush and commit), query API, broker");
    demo_cancel.cancel();
    if let Some(d) = demo {
        let _ = d.await;
    }
    workers_cancel.cancel();
    for w in workers.into_iter().chain(alerting) {
        let _ = w.await;
    }
    http_cancel.cancel();
    let _ = http.await;
    #[cfg(feature = "embedded-broker")]
    if let Some(b) = embedded {
        b.stop();
    }
    Ok(())
}

async fn pipeline(config: crate::cli::PipelineConfig) -> anyhow::Result<()> {
    let brokers =
        config.kafka.brokers.clone().context("--brokers (or CALLSCOPE_BROKERS) is required for `pipeline`")?;
    let hot = config.storage.hot_tier()?;
    let connection = config.kafka.connection(&brokers);
    ensure_topics(&connection, &all_topics(), config.kafka.partitions, Duration::from_secs(60)).await?;
    let cancel = CancellationToken::new();
    let workers = spawn_workers(worker_configs(&connection, &config.ingest, &config.windows)?, &hot, &cancel)?;
    let instance = config.ingest.worker_id.clone().unwrap_or_else(|| format!("pipeline-{}", std::process::id()));
    let alerting = spawn_alerting(config.alerts.config(&connection, &config.windows, &instance), &hot, &cancel);
    let http_cancel = CancellationToken::new();
    let http = match config.metrics_addr {
        Some(addr) => {
            let listener =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "pipeline metrics endpoint listening");
            let router = axum::Router::new()
                .route("/metrics", axum::routing::get(callscope_query_api::health::prometheus_text))
                .route("/health", axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }));
            let c = http_cancel.clone();
            Some(tokio::spawn(async move {
                let _ = axum::serve(listener, router).with_graceful_shutdown(async move { c.cancelled().await }).await;
            }))
        }
        None => None,
    };
    println!(
        "callscope pipeline is running: brokers {brokers}, group {}, hot tier {}",
        config.ingest.group_id,
        hot.dir_url("")
    );
    stop_signal().await;
    cancel.cancel();
    for w in workers.into_iter().chain(alerting) {
        let _ = w.await;
    }
    http_cancel.cancel();
    if let Some(h) = http {
        let _ = h.await;
    }
    Ok(())
}

async fn query_api(config: crate::cli::QueryApiConfig) -> anyhow::Result<()> {
    let hot = config.storage.hot_tier()?;
    let connection = config.kafka.brokers.as_ref().map(|b| config.kafka.connection(b));
    let state =
        api_state(&hot, connection.as_ref().map(|c| (c, config.group_id.as_str())), &config.query, &config.windows)?;
    let cancel = CancellationToken::new();
    let (addr, handle) = serve_api(config.http_addr, state, cancel.clone()).await?;
    println!("callscope query API listening on http://{addr} over {}", hot.dir_url(""));
    stop_signal().await;
    cancel.cancel();
    let _ = handle.await;
    Ok(())
}

#[cfg(feature = "embedded-broker")]
async fn broker(config: crate::cli::BrokerConfig) -> anyhow::Result<()> {
    let broker =
        crate::broker::EmbeddedBroker::start(config.kafka_addr, &config.data_dir, &config.broker_storage).await?;
    let connection = KafkaConnection::new(broker.addr.to_string());
    ensure_topics(&connection, &all_topics(), config.partitions, Duration::from_secs(60)).await?;
    println!("callscope broker (Tansu) listening on {}", broker.addr);
    stop_signal().await;
    broker.stop();
    Ok(())
}
