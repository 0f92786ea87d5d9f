//! `callscope pipeline`: the stream workers (and, unless turned off, an alert evaluator)
//! against an external Kafka cluster, with an optional /metrics and /health endpoint.
//! [`Workers`] is shared with `standalone`.

use anyhow::Context;
use callscope_pipeline::Worker;
use callscope_runtime::KafkaConnection;
use callscope_runtime::shutdown::stop_signal;
use callscope_storage::{Tier, Tiers};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::{PipelineConfig, WorkersArgs};

pub async fn run(config: PipelineConfig) -> anyhow::Result<()> {
    let args = &config.workers;
    let brokers = args.kafka.brokers.clone().context("--brokers (or CALLSCOPE_BROKERS) is required for `pipeline`")?;
    let tiers = args.storage.tiers()?;
    let hot = tiers.hot.clone();
    let workers = Workers::start(args, &args.kafka.connection(&brokers), &tiers, "pipeline").await?;
    let http_cancel = CancellationToken::new();
    let http = match config.metrics_addr {
        Some(addr) => Some(serve_metrics(addr, http_cancel.clone()).await?),
        None => None,
    };
    println!(
        "callscope pipeline is running: brokers {brokers}, group {}, hot tier {}",
        args.ingest.group_id,
        hot.dir_url("")
    );
    stop_signal().await;
    workers.stop().await;
    http_cancel.cancel();
    if let Some(h) = http {
        let _ = h.await;
    }
    Ok(())
}

/// The stream workers and the alert evaluator of a process, running.
pub(super) struct Workers {
    tasks: Vec<JoinHandle<()>>,
    cancel: CancellationToken,
}

impl Workers {
    /// Creates the topics, then starts the `--workers` workers, unless `--no-alerting` the
    /// alert evaluator (named by `--worker-id`, or `<kind>-<process id>`), and unless
    /// `--lifecycle-interval 0s` the storage lifecycle's schedule.
    pub(super) async fn start(
        args: &WorkersArgs,
        connection: &KafkaConnection,
        tiers: &Tiers,
        kind: &str,
    ) -> anyhow::Result<Workers> {
        let hot = &tiers.hot;
        warn_about_request_costs(args, hot);
        crate::topics::create_all(connection, args.kafka.partitions, &args.kafka.otlp_topics()).await?;
        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();
        for config in args.ingest.worker_configs(connection, &args.windows)? {
            let config = config.with_otlp_topics(&args.kafka.otlp_topics());
            let id = config.worker_id.clone();
            let worker = Worker::new(config, hot.clone()).with_context(|| format!("cannot start worker {id}"))?;
            let cancel = cancel.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = worker.run(cancel).await {
                    tracing::error!(worker = %id, error = %e, "worker failed");
                }
            }));
        }
        let instance = args.ingest.worker_id.clone().unwrap_or_else(|| format!("{kind}-{}", std::process::id()));
        if let Some(config) = args.alerts.config(connection, &args.windows, &instance) {
            let (hot, cancel) = (hot.clone(), cancel.clone());
            tasks.push(tokio::spawn(supervise_evaluator(config, hot, cancel)));
        }
        if let Some(schedule) =
            super::lifecycle::spawn_schedule(&args.lifecycle, tiers, instance, cancel.clone()).await?
        {
            tasks.push(schedule);
        }
        Ok(Workers { tasks, cancel })
    }

    /// Stops them in order: each worker flushes its windows and batches and commits its
    /// offsets; waits for all.
    pub(super) async fn stop(self) {
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// On S3 each flush of each partition writes a batch file with about eleven requests around
/// it, whatever the traffic: says at start what the flush interval costs the cluster in
/// requests when that is $50 a month or more (metrics and spans flushing on every partition,
/// at the cost report's default prices).
fn warn_about_request_costs(args: &WorkersArgs, hot: &Tier) {
    if hot.store_url().scheme() != "s3" {
        return;
    }
    let interval = args.ingest.flush_interval.as_secs_f64().max(0.001);
    let partitions = args.kafka.partitions.max(1);
    let files_per_day = (f64::from(partitions) * 2.0 * 86_400.0 / interval) as u64;
    let requests = callscope_storage::costs::CostModel::default().requests(files_per_day);
    if requests.usd_per_month >= 50.0 {
        tracing::warn!(
            flush_interval = %args.ingest.flush_interval,
            partitions,
            usd_per_month = requests.usd_per_month.round(),
            "the hot tier is on S3: at this flush interval the workers' object-store requests cost about ${:.0} a month \
             at S3 Standard prices (each flush of each partition writes a batch file with about 11 requests); a longer \
             --flush-interval divides that (dashboards lag by it, alerts do not); GET /monitoring/storage/costs shows the measured figure",
            requests.usd_per_month
        );
    }
}

/// Runs the alert evaluator until `cancel`, starting it again (with backoff, up to 30 s)
/// when it stops on a transient error, such as a broker that does not answer at start-up;
/// a configuration error stops it for good, with its message.
async fn supervise_evaluator(config: callscope_alerting::AlertingConfig, hot: Tier, cancel: CancellationToken) {
    let mut backoff = std::time::Duration::from_secs(1);
    loop {
        match callscope_alerting::run(config.clone(), hot.clone(), cancel.clone()).await {
            Ok(()) => return,
            Err(e) if e.is_transient() && !cancel.is_cancelled() => {
                tracing::warn!(error = %e, retry_in = ?backoff, "alert evaluator stopped on a transient error; starting it again");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
            }
            Err(e) => {
                tracing::error!(error = %e, "alert evaluator stopped");
                return;
            }
        }
    }
}

/// Serves this process's /metrics and /health on `addr` until `cancel` is cancelled.
async fn serve_metrics(addr: std::net::SocketAddr, cancel: CancellationToken) -> anyhow::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "pipeline metrics endpoint listening");
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(callscope_query_api::health::prometheus_text))
        .route("/health", axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }));
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, router).with_graceful_shutdown(async move { cancel.cancelled().await }).await;
    }))
}
