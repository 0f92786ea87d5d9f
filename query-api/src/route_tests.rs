//! Random parameters against every GET route of the router (over a real tier in a temporary
//! directory and a real DataFusion session): never a panic, never a 5xx for a bad parameter,
//! and every refusal in the JSON error shape.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use callscope_storage::{Tier, Tiers};
use proptest::prelude::*;
use serde_json::json;
use tower::ServiceExt;

use crate::engine::EngineOptions;
use crate::{AppState, QueryEngine, SqlLimits, router};

/// Every GET route, path parameters as `{}` (filled with generated values).
const ROUTES: &[&str] = &[
    "/",
    "/ui/{}",
    "/health",
    "/metrics",
    "/monitoring/health",
    "/monitoring/health/comprehensive",
    "/monitoring/health/{}",
    "/monitoring/services",
    "/monitoring/dashboards",
    "/monitoring/dashboards/export",
    "/monitoring/dashboards/grafana/templates",
    "/monitoring/dashboards/{}",
    "/monitoring/dashboards/{}/versions",
    "/monitoring/dashboards/{}/versions/{}",
    "/monitoring/metrics",
    "/monitoring/metrics/prometheus",
    "/monitoring/metrics/custom",
    "/monitoring/metrics/custom/{}",
    "/monitoring/tracing/health",
    "/monitoring/tracing/traces",
    "/monitoring/tracing/traces/{}",
    "/monitoring/tracing/traces/{}/analyze",
    "/monitoring/tracing/services/{}/dependencies",
    "/jaeger/api/services",
    "/jaeger/api/services/{}/operations",
    "/jaeger/api/operations",
    "/jaeger/api/traces",
    "/jaeger/api/traces/{}",
    "/jaeger/api/dependencies",
    "/jaeger/api/v3/services",
    "/jaeger/api/v3/operations",
    "/jaeger/api/v3/trace-summaries",
    "/monitoring/alerts",
    "/monitoring/alerts/history",
    "/monitoring/alerts/failures",
    "/monitoring/alerts/smart",
    "/monitoring/alerts/smart/{}",
    "/monitoring/alerts/smart/{}/insights",
    "/monitoring/alerts/smart/r1/insights",
    "/monitoring/alerts/silences",
    "/monitoring/alerts/silences/{}",
    "/monitoring/alertmanager/rules",
    "/monitoring/alertmanager/health",
    "/monitoring/storage/statistics",
    "/monitoring/storage/tiers",
    "/monitoring/storage/costs",
    "/monitoring/storage/policies",
    "/monitoring/storage/policies/{}",
    "/monitoring/storage/jobs",
    "/monitoring/storage/jobs/{}",
    "/monitoring/storage/holds",
    "/monitoring/storage/holds/{}",
    "/monitoring/storage/deletions",
    "/subjects",
    "/subjects/{}/versions",
    "/subjects/{}/versions/{}",
    "/schemas/ids/{}",
    "/schemas/ids/{}/schema",
    "/api/v1/query",
    "/api/v1/query_range",
    "/api/v1/series",
    "/api/v1/labels",
    "/api/v1/label/{}/values",
    "/api/v1/metadata",
    "/api/v1/status/buildinfo",
    "/grafana/json",
    "/grafana/infinity/query",
    "/grafana/infinity/sql",
];

const NAMES: &[&str] = &[
    "name",
    "source",
    "query",
    "time",
    "match[]",
    "metric",
    "service",
    "start",
    "end",
    "step",
    "agg",
    "resolution",
    "label.region",
    "from",
    "to",
    "sql",
    "down_after",
    "overwrite",
    "p95_slo_ms",
    "alertname",
    "status",
    "limit",
    "window",
    "match[]",
    "query",
    "time",
    "x",
    "operation",
    "kind",
    "attr",
    "errors",
    "min_duration",
    "max_duration",
    "order",
    "tags",
    "tag",
    "traceID",
    "minDuration",
    "endTs",
    "lookback",
    "spanKind",
    "query.serviceName",
    "query.startTimeMin",
    "query.startTimeMax",
    "query.durationMin",
    "query.attributes",
    "query.searchDepth",
];

const NASTY: &[&str] = &[
    "",
    "-9223372036854775808",
    "9223372036854775807",
    "18446744073709551616",
    "-1",
    "0",
    "1",
    "1e308",
    "-1e308",
    "NaN",
    "inf",
    "1700000000",
    "1700000000.5",
    "1700000000000",
    "now",
    "now-1000000y",
    "now-1h",
    "now+",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2026-13-45T99:99:99Z",
    "1ms",
    "100y",
    "101y",
    "p99",
    "rate",
    "raw",
    "auto",
    "1m",
    "'; DROP TABLE metrics; --",
    "%FF%FE",
    "..%2F..%2Fetc%2Fpasswd",
    "calls_total",
    "{}",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(NASTY).prop_map(str::to_string),
        1 => "\\PC{0,40}",
        1 => proptest::num::i64::ANY.prop_map(|n| n.to_string()),
    ]
}

fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(
        (prop_oneof![4 => proptest::sample::select(NAMES).prop_map(str::to_string), 1 => "[a-z.]{1,12}"], value()),
        0..6,
    )
}

struct Api {
    router: axum::Router,
    /// Status of each route without parameters: components this test does not run
    /// (Kafka) may answer 503 there, which is not a parameter's fault.
    baseline: BTreeMap<&'static str, StatusCode>,
    runtime: tokio::runtime::Runtime,
    hot: Tier,
    tiers: Tiers,
    _dir: tempfile::TempDir,
}

async fn call(router: &axum::Router, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await.expect("body");
    (status, bytes.to_vec())
}

fn api() -> Api {
    api_with(120_000)
}

/// An application state over `tiers` for tests (no Kafka); windows older than
/// `settled_after_ms` count as closed.
pub(crate) fn test_state(tiers: Tiers, settled_after_ms: i64) -> AppState {
    AppState {
        engine: QueryEngine::new(&tiers, EngineOptions::default()).expect("engine"),
        hot: tiers.hot.clone(),
        trace_index: callscope_storage::trace_index::TraceIndex::new(tiers.hot.clone()),
        tiers,
        costs: Default::default(),
        producer: None,
        kafka_probe: None,
        topics: BTreeMap::new(),
        otlp_topics: Default::default(),
        sql_limits: SqlLimits { max_rows: 1000, timeout: Duration::from_secs(20) },
        started: Instant::now(),
        resolutions_ms: vec![10_000, 60_000],
        rollups_settled_after_ms: settled_after_ms,
        anonymous: callscope_schemas::dashboards::Caller {
            user: String::new(),
            roles: vec!["viewer".into(), "editor".into()],
        },
    }
}

/// The API over an empty hot tier; windows older than `settled_after_ms` count as closed.
fn api_with(settled_after_ms: i64) -> Api {
    api_with_resolutions(settled_after_ms, None)
}

/// [`api_with`], reading roll-ups of `resolutions_ms` when given.
fn api_with_resolutions(settled_after_ms: i64, resolutions_ms: Option<Vec<i64>>) -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let tiers = Tiers::local(dir.path()).expect("tiers");
    let mut state = test_state(tiers, settled_after_ms);
    if let Some(resolutions_ms) = resolutions_ms {
        state.resolutions_ms = resolutions_ms;
    }
    let state_hot = state.hot.clone();
    let state_tiers = state.tiers.clone();
    let router = router(state);
    let baseline = runtime.block_on(async {
        let rule = r#"{"id": "r1", "name": "CallFailureRate",
            "query": {"metric": "calls_total", "aggregate": "rate", "by": ["service"], "window": "2m"},
            "condition": {"type": "threshold", "op": ">", "value": 5.0}}"#;
        let (status, body) = call(&router, "POST", "/monitoring/alerts/smart", Some(rule)).await;
        assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
        let mut baseline = BTreeMap::new();
        for route in ROUTES {
            let uri = route.replace("{}", "r1");
            baseline.insert(*route, call(&router, "GET", &uri, None).await.0);
        }
        baseline
    });
    Api { router, baseline, runtime, hot: state_hot, tiers: state_tiers, _dir: dir }
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn check(api: &Api, route: &'static str, segment: &str, params: &[(String, String)]) {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    // Required parameters first, so that the generated ones reach the code behind them.
    if route == "/monitoring/metrics" {
        query.append_pair("name", "calls_total");
    }
    for (k, v) in params {
        query.append_pair(k, v);
    }
    // A raw `%FF` segment reaches the path extractor as bytes that are not UTF-8 (only
    // well-formed escapes are sent raw: anything else would not be a URI at all).
    let raw = segment.starts_with('%') && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '%');
    let segment = if raw { segment.to_string() } else { encode(segment) };
    let uri = format!("{}?{}", route.replace("{}", &segment), query.finish());
    let (status, body) = api.runtime.block_on(call(&api.router, "GET", &uri, None));
    let baseline = api.baseline[route];
    assert!(
        !status.is_server_error() || status == baseline,
        "GET {uri} answered {status} (without parameters: {baseline}): {}",
        String::from_utf8_lossy(&body)
    );
    if status.is_client_error() || status.is_server_error() {
        let json: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("GET {uri} answered {status} with a body that is not JSON ({e}): {body:?}"));
        // The Jaeger API answers in Jaeger's error shapes (v1 envelope, v3 `error` object).
        let message = if route.starts_with("/jaeger/api/v3/") {
            &json["error"]["message"]
        } else if route.starts_with("/jaeger/") {
            &json["errors"][0]["msg"]
        } else {
            &json["error"]
        };
        assert!(message.is_string(), "GET {uri}: {json}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_parameters_never_panic_or_answer_5xx(segment in value(), params in params()) {
        thread_local!(static API: Api = api());
        API.with(|api| {
            for route in ROUTES {
                check(api, route, &segment, &params);
            }
        });
    }
}

/// Every parameter a route reads with every nasty value, one at a time (the random test
/// above combines them).
#[test]
fn every_nasty_value_of_every_parameter_is_answered_without_a_5xx() {
    const READERS: &[(&str, &[&str])] = &[
        ("/monitoring/metrics", &["start", "end", "step", "agg", "resolution", "name", "service", "label.region"]),
        ("/monitoring/alerts/history", &["from", "to", "limit", "alertname", "status"]),
        ("/monitoring/alerts/failures", &["limit"]),
        ("/monitoring/alerts/smart/r1/insights", &["window"]),
        ("/grafana/infinity/query", &["query", "from", "to", "step"]),
        ("/monitoring/services", &["window", "down_after", "p95_slo_ms"]),
    ];
    let api = api();
    for (route, names) in READERS {
        for name in *names {
            for value in NASTY {
                check(&api, route, "", &[(name.to_string(), value.to_string())]);
            }
        }
    }
}

/// Grafana's JSON data source posts bodies: every nasty value in every field of them is
/// a 4xx naming the problem or an answer, never a 5xx.
#[test]
fn json_datasource_bodies_are_answered_without_a_5xx() {
    let api = api();
    let routes = ["metrics", "metric-payload-options", "query", "variable", "tag-keys", "tag-values"];
    let mut bodies: Vec<String> =
        vec![String::new(), "{}".into(), "[]".into(), "nul".into(), "{\"targets\": 1}".into()];
    for value in NASTY {
        let v = serde_json::Value::String(value.to_string());
        bodies.push(
            json!({"range": {"from": v, "to": "now"}, "targets": [{"target": "promql", "payload": {"expr": v}}]})
                .to_string(),
        );
        bodies.push(
            json!({"range": {"from": "now-1h", "to": v}, "intervalMs": 1, "maxDataPoints": -1,
                           "targets": [{"target": v, "payload": {"function": v, "by": [v], "aggregation": v}}]})
            .to_string(),
        );
        bodies.push(json!({"targets": [{"target": "sql", "payload": {"sql": v}}], "filters": [{"key": v, "operator": "=~", "value": v}]}).to_string());
        bodies.push(
            json!({"payload": {"target": format!("label_values({value})")}, "metric": v, "name": v, "key": v})
                .to_string(),
        );
        bodies.push(json!({"payload": {"target": format!("metrics({value})")}}).to_string());
    }
    for route in routes {
        for body in &bodies {
            let uri = format!("/grafana/json/{route}");
            let (status, reply) = api.runtime.block_on(call(&api.router, "POST", &uri, Some(body)));
            assert!(!status.is_server_error(), "POST {uri} {body}: {status} {}", String::from_utf8_lossy(&reply));
        }
    }
}

/// A path id too long to be a stored object's name (a local disk refuses names over 255
/// bytes) is an id that does not exist, never a 503 from the store.
#[test]
fn overlong_ids_are_absent_not_store_errors() {
    let api = api();
    let long = encode(&"睡".repeat(90));
    for route in ROUTES.iter().filter(|r| r.contains("{}")) {
        check(&api, route, &long, &[]);
        let uri = route.replace("{}", &long);
        let (status, _) = api.runtime.block_on(call(&api.router, "GET", &uri, None));
        assert!(status.is_client_error() || status.is_success(), "GET {uri}: {status}");
    }
}

#[test]
fn overflowing_times_are_refused_by_name() {
    let api = api();
    for (uri, field) in [
        ("/monitoring/metrics?name=x&end=-9223372036854775808", "end"),
        ("/monitoring/metrics?name=x&start=0&end=9223372036854775807&step=1", "end"),
        ("/monitoring/metrics?name=x&start=0001-01-01T00:00:00Z&end=9999-12-31T00:00:00Z&step=1ms", "step"),
        ("/monitoring/alerts/history?from=-9223372036854775808", "from"),
        ("/monitoring/alerts/smart/r1/insights?window=-1", "window"),
    ] {
        let (status, body) = api.runtime.block_on(call(&api.router, "GET", uri, None));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {}", String::from_utf8_lossy(&body));
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["field"], field, "{uri}: {json}");
    }
    // A query string axum cannot decode is a JSON 400 too.
    // Its message names the parameter.
    let (status, body) = api.runtime.block_on(call(&api.router, "GET", "/monitoring/alerts/failures?limit=many", None));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(json["error"].as_str().is_some_and(|e| e.contains("limit")), "the error names `limit`: {json}");
}

#[test]
fn a_panicking_handler_answers_a_json_500() {
    async fn boom() -> StatusCode {
        panic!("handler bug")
    }
    let router = axum::Router::new()
        .route("/boom", axum::routing::get(boom))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(crate::error::panic_response));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (status, body) = runtime.block_on(call(&router, "GET", "/boom", None));
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(json["error"].as_str().is_some_and(|e| e.contains("internal error")), "{json}");
}

mod series;
