//! `callscope query-api`: the query API alone over a hot tier (with Kafka, it also accepts
//! events over HTTP and reports the workers' consumer lag). Its state and server are shared
//! with `standalone`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use callscope_query_api::{AppState, KafkaProbe, QueryEngine};
use callscope_runtime::KafkaConnection;
use callscope_runtime::shutdown::stop_signal;
use callscope_schemas::Dataset;
use callscope_schemas::otlp::OtlpTopics;
use callscope_storage::Tiers;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::{QueryApiConfig, QueryArgs, WindowArgs};

pub async fn run(config: QueryApiConfig) -> anyhow::Result<()> {
    let tiers = config.storage.tiers()?;
    let connection = config.kafka.brokers.as_ref().map(|b| config.kafka.connection(b));
    let kafka = connection.as_ref().map(|c| (c, config.group_id.as_str()));
    let state = api_state(&tiers, kafka, &config.kafka.otlp_topics(), &config.query, &config.windows)?;
    let cancel = CancellationToken::new();
    let (addr, handle) = serve_api(config.http.http_addr, state, cancel.clone()).await?;
    println!("callscope query API listening on http://{addr} over {}", tiers.hot.dir_url(""));
    stop_signal().await;
    cancel.cancel();
    let _ = handle.await;
    Ok(())
}

/// What the handlers share. With `kafka` (the cluster and the workers' consumer group),
/// the ingest endpoints produce to it (OTLP to `otlp`) and health reports the group's lag.
pub(super) fn api_state(
    tiers: &Tiers,
    kafka: Option<(&KafkaConnection, &str)>,
    otlp: &OtlpTopics,
    query: &QueryArgs,
    windows: &WindowArgs,
) -> anyhow::Result<AppState> {
    let engine = QueryEngine::new(tiers, query.into())?;
    let (producer, kafka_probe) = match kafka {
        Some((connection, group)) => (
            Some(connection.producer()?),
            Some(Arc::new(KafkaProbe::new(connection.client_config(), group, {
                let mut topics = crate::topics::input_topics();
                topics.extend(otlp.names());
                topics
            })?)),
        ),
        None => (None, None),
    };
    Ok(AppState {
        engine,
        hot: tiers.hot.clone(),
        trace_index: callscope_storage::trace_index::TraceIndex::new(tiers.hot.clone()),
        tiers: tiers.clone(),
        costs: query.cost_model()?,
        producer,
        kafka_probe,
        topics: Dataset::ALL.iter().map(|d| (*d, d.default_topic().to_string())).collect(),
        otlp_topics: otlp.clone(),
        sql_limits: query.into(),
        started: Instant::now(),
        resolutions_ms: windows.rollup_resolutions_ms(),
        rollups_settled_after_ms: windows.rollups_settled_after_ms(),
        anonymous: callscope_schemas::dashboards::Caller { user: String::new(), roles: query.anonymous_roles.clone() },
    })
}

/// Serves the query API on `addr` until `cancel` is cancelled; returns the bound address.
pub(super) async fn serve_api(
    addr: SocketAddr,
    state: AppState,
    cancel: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
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
