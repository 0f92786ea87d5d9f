//! The query API: an axum router over a DataFusion session whose tables are the Parquet
//! datasets of the storage tiers.
//!
//! * [`engine`]: the DataFusion session and table registration.
//! * [`sql`]: the read-only SQL endpoint and its guard.
//! * [`metrics_query`]: `GET /monitoring/metrics`, one metric or custom metric as series.
//! * [`series_query`]: the grouped query path over roll-ups and raw samples that every
//!   time-series answer shares; [`grouped`]: its results grouped by keys and bucket.
//! * [`custom_metrics`]: CRUD of custom metric definitions; [`derived`]: evaluating them.
//! * [`prometheus_api`]: the Prometheus HTTP API (`/api/v1/query`, `query_range`, series,
//!   labels, metadata), for Grafana's Prometheus data source and `promtool`.
//! * [`prometheus_export`]: business and own metrics in the Prometheus text format.
//! * [`tracing_health`]: whether tracing works end to end.
//! * [`trace_dependencies`]: service dependency edges (calls, errors, latency).
//! * [`trace_search`]: trace search by service, operation, kind, attributes, errors and
//!   duration.
//! * [`traces`]: trace lookup and analysis; [`trace_analysis`]: critical path, self times,
//!   bottlenecks and error chains.
//! * [`jaeger`]: the Jaeger query API (v1 and v3) for Jaeger UI and Grafana.
//! * [`ingest`]: HTTP producers of metric and span events.
//! * [`otlp_http`]: the OTLP/HTTP receivers (`/v1/traces`, `/v1/metrics`).
//! * [`schema_registry`]: the read side of the Confluent Schema Registry API.
//! * [`health`]: liveness and component health.
//! * [`storage`]: statistics, tiers, costs, lifecycle policies and jobs, legal holds.
//! * [`alerting`]: active alerts, incidents, history, silences, acknowledgements, rules and
//!   Alertmanager health, read from what the leading evaluator publishes.
//! * [`smart_rules`]: CRUD and insights of smart alert rules.
//! * [`error`]: the JSON error shape every route answers with, panics included.
//! * [`extract`]: query and path extractors that refuse in that shape.
//! * [`time_params`]: the one parser of times and durations in parameters.
//! * [`json_rows`]: Arrow values as JSON.

pub mod alerting;
pub mod custom_metrics;
pub mod dashboards;
pub mod derived;
pub mod engine;
pub mod error;
pub mod extract;
pub mod grafana_json;
pub mod grouped;
pub mod health;
pub mod ingest;
pub mod jaeger;
pub mod json_rows;
pub mod metrics_query;
pub mod otlp_http;
pub mod prometheus_api;
pub mod prometheus_export;
pub mod run_aggregate;
pub mod schema_registry;
pub mod series_query;
pub mod service_health;
pub mod smart_rules;
pub mod sql;
pub mod storage;
pub mod time_params;
pub mod trace_analysis;
pub mod trace_dependencies;
pub mod trace_search;
pub mod traces;
pub mod tracing_health;
pub mod viewer;

#[cfg(test)]
mod route_tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use callscope_schemas::Dataset;
use callscope_storage::costs::CostModel;
use callscope_storage::{Tier, Tiers};
use rdkafka::producer::FutureProducer;

pub use engine::QueryEngine;
pub use error::ApiError;
pub use health::KafkaProbe;

/// Limits of ad-hoc SQL.
#[derive(Debug, Clone, Copy)]
pub struct SqlLimits {
    pub max_rows: usize,
    pub timeout: Duration,
}

impl SqlLimits {
    pub const DEFAULT_MAX_ROWS: usize = 10_000;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits { max_rows: Self::DEFAULT_MAX_ROWS, timeout: Self::DEFAULT_TIMEOUT }
    }
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub engine: QueryEngine,
    pub hot: Tier,
    /// The trace-id index of the hot tier (lookups by trace id read only the hours it names).
    pub trace_index: callscope_storage::trace_index::TraceIndex,
    /// All four tiers (`hot` is `tiers.hot`).
    pub tiers: Tiers,
    /// Prices of the cost report.
    pub costs: CostModel,
    /// Producer for the ingest endpoints; `None` when no Kafka cluster is configured.
    pub producer: Option<FutureProducer>,
    pub kafka_probe: Option<Arc<KafkaProbe>>,
    /// Dataset → topic events of that dataset are produced to.
    pub topics: BTreeMap<Dataset, String>,
    /// Topics the OTLP/HTTP receivers produce export requests to.
    pub otlp_topics: callscope_schemas::otlp::OtlpTopics,
    pub sql_limits: SqlLimits,
    pub started: Instant,
    /// Window lengths of the `metric_rollups` the workers write (ascending); empty when
    /// aggregation is off.
    pub resolutions_ms: Vec<i64>,
    /// Windows that ended longer ago than this are closed (allowed lateness + idle
    /// timeout + flush slack): queries read them from roll-ups even when no row exists.
    pub rollups_settled_after_ms: i64,
    /// Who a request that names no user nor roles acts as (dashboard access).
    pub anonymous: callscope_schemas::dashboards::Caller,
}

impl AppState {
    pub fn topic(&self, dataset: Dataset) -> String {
        self.topics.get(&dataset).cloned().unwrap_or_else(|| dataset.default_topic().to_string())
    }
}

/// Every request ends within the query time limit: a JSON 408 when it does not.
async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}

/// The router with every endpoint: a time limit on every request, and a panicking handler
/// answers a JSON 500 (and is logged) instead of dropping the connection.
pub fn router(state: AppState) -> Router {
    let limit = state.sql_limits.timeout;
    Router::new()
        .route("/", get(viewer::index))
        .route("/ui/{file}", get(viewer::file))
        .route("/health", get(health::liveness))
        .route("/metrics", get(health::prometheus_text))
        .route("/api/v1/query", get(prometheus_api::query).post(prometheus_api::query))
        .route("/api/v1/query_range", get(prometheus_api::query_range).post(prometheus_api::query_range))
        .route("/api/v1/series", get(prometheus_api::series_route).post(prometheus_api::series_route))
        .route("/api/v1/labels", get(prometheus_api::labels).post(prometheus_api::labels))
        .route("/api/v1/label/{name}/values", get(prometheus_api::label_values))
        .route("/api/v1/metadata", get(prometheus_api::metadata))
        .route("/api/v1/status/buildinfo", get(prometheus_api::buildinfo))
        .route("/grafana/json", get(grafana_json::test_connection))
        .route("/grafana/json/", get(grafana_json::test_connection))
        .route("/grafana/json/metrics", post(grafana_json::metrics))
        .route("/grafana/json/metric-payload-options", post(grafana_json::metric_payload_options))
        .route("/grafana/json/query", post(grafana_json::query))
        .route("/grafana/json/variable", post(grafana_json::variable))
        .route("/grafana/json/tag-keys", post(grafana_json::tag_keys))
        .route("/grafana/json/tag-values", post(grafana_json::tag_values))
        .route("/grafana/infinity/query", get(grafana_json::infinity::query))
        .route("/grafana/infinity/sql", get(grafana_json::infinity::sql).post(grafana_json::infinity::sql))
        .route("/monitoring/dashboards", get(dashboards::list).post(dashboards::create))
        .route("/monitoring/dashboards/export", get(dashboards::export))
        .route("/monitoring/dashboards/import", post(dashboards::import))
        .route("/monitoring/dashboards/grafana/templates", get(dashboards::grafana_templates))
        .route("/monitoring/dashboards/grafana/deploy", post(dashboards::grafana_deploy))
        .route("/monitoring/dashboards/{id}", get(dashboards::get).put(dashboards::replace).delete(dashboards::delete))
        .route("/monitoring/dashboards/{id}/versions", get(dashboards::versions))
        .route("/monitoring/dashboards/{id}/versions/{version}", get(dashboards::version))
        .route("/monitoring/health", get(health::component_health))
        .route("/monitoring/health/comprehensive", get(service_health::comprehensive))
        .route("/monitoring/health/{service}", get(service_health::service))
        .route("/monitoring/services", get(service_health::services))
        .route("/monitoring/metrics", get(metrics_query::get_series).post(ingest::post_metrics))
        .route("/monitoring/metrics/prometheus", get(prometheus_export::exposition))
        .route("/monitoring/metrics/custom", get(custom_metrics::list).post(custom_metrics::create))
        .route(
            "/monitoring/metrics/custom/{name}",
            get(custom_metrics::get_one).put(custom_metrics::replace).delete(custom_metrics::delete),
        )
        .route("/monitoring/tracing/traces", get(trace_search::get_traces).post(ingest::post_spans))
        .route(
            "/v1/traces",
            post(otlp_http::post_traces).layer(axum::extract::DefaultBodyLimit::max(otlp_http::MAX_BODY_BYTES)),
        )
        .route(
            "/v1/metrics",
            post(otlp_http::post_metrics).layer(axum::extract::DefaultBodyLimit::max(otlp_http::MAX_BODY_BYTES)),
        )
        .route("/monitoring/tracing/traces/{trace_id}", get(traces::get_trace))
        .route("/monitoring/tracing/health", get(tracing_health::tracing_health))
        .route("/monitoring/tracing/traces/{trace_id}/analyze", get(traces::analyze_trace))
        .route("/monitoring/tracing/services/{service}/dependencies", get(trace_dependencies::service_dependencies))
        .route("/jaeger/api/services", get(jaeger::v1_services))
        .route("/jaeger/api/services/{service}/operations", get(jaeger::v1_service_operations))
        .route("/jaeger/api/operations", get(jaeger::v1_operations))
        .route("/jaeger/api/traces", get(jaeger::v1_traces))
        .route("/jaeger/api/traces/{trace_id}", get(jaeger::v1_trace))
        .route("/jaeger/api/dependencies", get(jaeger::v1_dependencies))
        .route("/jaeger/api/v3/services", get(jaeger::v3_services))
        .route("/jaeger/api/v3/operations", get(jaeger::v3_operations))
        .route("/jaeger/api/v3/trace-summaries", get(jaeger::v3_trace_summaries))
        .route("/jaeger/{*rest}", axum::routing::any(jaeger::not_found))
        .route("/monitoring/sql", post(sql::post_sql))
        .route("/monitoring/alerts", get(alerting::active_alerts))
        .route("/monitoring/alerts/history", get(alerting::history))
        .route("/monitoring/alerts/failures", get(alerting::failures))
        .route("/monitoring/alerts/{fingerprint}/ack", post(alerting::acknowledge).delete(alerting::unacknowledge))
        .route("/monitoring/alerts/smart", get(smart_rules::list).post(smart_rules::create))
        .route(
            "/monitoring/alerts/smart/{id}",
            get(smart_rules::get).put(smart_rules::replace).delete(smart_rules::delete),
        )
        .route("/monitoring/alerts/smart/{id}/insights", get(smart_rules::insights))
        .route("/monitoring/alerts/silences", get(alerting::list_silences).post(alerting::create_silence))
        .route("/monitoring/alerts/silences/{id}", get(alerting::get_silence).delete(alerting::expire_silence))
        .route("/monitoring/alertmanager/rules", get(alerting::rules))
        .route("/monitoring/alertmanager/health", get(alerting::alertmanager_health))
        .route("/monitoring/storage/statistics", get(storage::statistics))
        .route("/monitoring/storage/tiers", get(storage::tiers))
        .route("/monitoring/storage/costs", get(storage::costs))
        .route("/monitoring/storage/policies", get(storage::list_policies).post(storage::create_policy))
        .route(
            "/monitoring/storage/policies/{id}",
            get(storage::get_policy).put(storage::replace_policy).delete(storage::delete_policy),
        )
        .route("/monitoring/storage/policies/{id}/trigger", post(storage::trigger))
        .route("/monitoring/storage/jobs", get(storage::list_jobs))
        .route("/monitoring/storage/jobs/{id}", get(storage::get_job))
        .route("/monitoring/storage/holds", get(storage::list_holds).post(storage::create_hold))
        .route("/monitoring/storage/holds/{id}", get(storage::get_hold).delete(storage::release_hold))
        .route("/monitoring/storage/deletions", get(storage::deletions))
        .route("/subjects", get(schema_registry::subjects))
        .route("/subjects/{subject}", post(schema_registry::lookup_schema))
        .route("/subjects/{subject}/versions", get(schema_registry::versions).post(schema_registry::register_schema))
        .route("/subjects/{subject}/versions/{version}", get(schema_registry::subject_version))
        .route("/schemas/ids/{id}", get(schema_registry::schema_by_id))
        .route("/schemas/ids/{id}/schema", get(schema_registry::raw_schema_by_id))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(limit, time_limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(error::panic_response))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "query API listening");
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
