use super::*;
use crate::MetricKind;
use promql_parser::parser;

const R: i64 = 10_000;
const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000;

fn key(name: &str, service: &str, kind: MetricKind, labels: &[(&str, &str)]) -> SeriesKey {
    SeriesKey {
        name: name.into(),
        service: service.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        kind,
        unit: None,
    }
}

/// Puts `values` as samples into consecutive windows from `start`, one value per window.
fn fill(store: &mut WindowStore, k: &SeriesKey, start: i64, values: &[f64]) {
    for (i, v) in values.iter().enumerate() {
        let w = start + i as i64 * R;
        let mut p = Partial::empty(k.kind);
        p.add(*v, w + 1);
        store.replace(k, w, p);
    }
}

fn eval(store: &WindowStore, expr: &str, at: i64) -> Vec<Sample> {
    match evaluate(store, &parser::parse(expr).expect("parses"), at).expect("evaluates") {
        Value::Vector(v) => v,
        Value::Scalar(s) => panic!("scalar {s}"),
    }
}

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn failure_ratio_by_service_crosses_a_threshold() {
    let mut store = WindowStore::new(R, 600_000);
    let total = key("calls_total", "call-gateway", MetricKind::Counter, &[]);
    let failed = key("calls_failed_total", "call-gateway", MetricKind::Counter, &[]);
    fill(&mut store, &total, T0, &[100.0; 6]);
    fill(&mut store, &failed, T0, &[2.0, 2.0, 2.0, 30.0, 30.0, 30.0]);
    let expr = "sum by (service) (rate(calls_failed_total[30s])) / sum by (service) (rate(calls_total[30s])) > 0.05";
    // At the end of the third window only the healthy windows are covered.
    assert!(eval(&store, expr, T0 + 3 * R - 1).is_empty());
    let breach = eval(&store, expr, T0 + 6 * R - 1);
    assert_eq!(breach.len(), 1);
    assert_eq!(breach[0].labels, labels(&[("service", "call-gateway")]));
    assert!((breach[0].value - 0.3).abs() < 1e-9, "{}", breach[0].value);
}

#[test]
fn rate_divides_by_the_seconds_covered_and_increase_sums() {
    let mut store = WindowStore::new(R, 600_000);
    let k = key("calls_total", "gw", MetricKind::Counter, &[]);
    fill(&mut store, &k, T0, &[10.0, 10.0, 10.0, 10.0, 10.0, 10.0]);
    let at = T0 + 6 * R - 1;
    let rate = eval(&store, "rate(calls_total[1m])", at);
    assert!((rate[0].value - 60.0 / 59.999).abs() < 1e-6, "{}", rate[0].value);
    assert_eq!(eval(&store, "increase(calls_total[1m])", at)[0].value, 60.0);
    // Early in an open window the span is at least one resolution.
    let early = eval(&store, "rate(calls_total[5s])", T0 + 5 * R + 1);
    assert_eq!(early[0].value, 1.0);
    assert_eq!(eval(&store, "count_over_time(calls_total[30s])", at)[0].value, 3.0);
}

#[test]
fn matchers_select_series() {
    let mut store = WindowStore::new(R, 600_000);
    for (svc, code) in [("gw", "200"), ("gw", "500"), ("asr", "503"), ("tts", "200")] {
        fill(&mut store, &key("http_requests_total", svc, MetricKind::Counter, &[("code", code)]), T0, &[1.0]);
    }
    let at = T0 + R - 1;
    let count = |e: &str| eval(&store, e, at).len();
    assert_eq!(count(r#"http_requests_total{code=~"5.."}"#), 2);
    assert_eq!(count(r#"http_requests_total{code!~"5..", service!="tts"}"#), 1);
    assert_eq!(count(r#"http_requests_total{service="gw"}"#), 2);
    assert_eq!(count(r#"{__name__="http_requests_total", code="200"}"#), 2);
    assert_eq!(count("nothing_here"), 0);
    let grouped = eval(&store, r#"count without (code) (http_requests_total)"#, at);
    assert_eq!(grouped.len(), 3);
    let total = eval(&store, "sum(http_requests_total)", at);
    assert_eq!(total, vec![Sample { labels: LabelSet::new(), value: 4.0 }]);
}

#[test]
fn gauges_use_the_newest_sample_within_the_lookback() {
    let mut store = WindowStore::new(R, 600_000);
    let q = key("queue_length", "dialogue", MetricKind::Gauge, &[]);
    fill(&mut store, &q, T0, &[5.0, 7.0, 90.0]);
    assert_eq!(eval(&store, "queue_length > 50", T0 + 3 * R)[0].value, 90.0);
    assert_eq!(eval(&store, "queue_length", T0 + 2 * R - 1)[0].value, 7.0);
    assert!(eval(&store, "queue_length", T0 + 3 * R + LOOKBACK_MS).is_empty());
    assert_eq!(eval(&store, "max_over_time(queue_length[30s])", T0 + 3 * R - 1)[0].value, 90.0);
    assert_eq!(eval(&store, "min_over_time(queue_length[30s])", T0 + 3 * R - 1)[0].value, 5.0);
    assert_eq!(eval(&store, "avg_over_time(queue_length[30s])", T0 + 3 * R - 1)[0].value, 34.0);
    // `bool` keeps every element as 0/1 and drops the name.
    let b = eval(&store, "queue_length > bool 50", T0 + 2 * R - 1);
    assert_eq!(b, vec![Sample { labels: labels(&[("service", "dialogue")]), value: 0.0 }]);
    let neg = eval(&store, "-queue_length + 100", T0 + 2 * R - 1);
    assert_eq!(neg[0].value, 93.0);
}

#[test]
fn absence_is_labelled_with_the_equality_matchers() {
    let mut store = WindowStore::new(R, 600_000);
    let up = key("heartbeat", "call-gateway", MetricKind::Counter, &[]);
    fill(&mut store, &up, T0, &[1.0, 1.0]);
    let expr = r#"absent_over_time(heartbeat{service="call-gateway"}[30s])"#;
    assert!(eval(&store, expr, T0 + 2 * R).is_empty());
    let absent = eval(&store, expr, T0 + 2 * R + 40_000);
    assert_eq!(absent, vec![Sample { labels: labels(&[("service", "call-gateway")]), value: 1.0 }]);
    assert_eq!(eval(&store, r#"absent_over_time(heartbeat{service="billing"}[1m])"#, T0 + R).len(), 1);
}

#[test]
fn quantiles_come_from_the_merged_sketches() {
    let mut store = WindowStore::new(R, 600_000);
    for (svc, base) in [("ai-engine", 1000.0), ("tts", 100.0)] {
        let k = key("ai_response_time_ms", svc, MetricKind::Histogram, &[]);
        for w in 0..3 {
            let mut p = Partial::empty(MetricKind::Histogram);
            for i in 0..100 {
                p.add(base + f64::from(i), T0 + w * R + 1);
            }
            store.replace(&k, T0 + w * R, p);
        }
    }
    let at = T0 + 3 * R - 1;
    let p95 = eval(&store, "histogram_quantile(0.95, sum by (service, le) (rate(ai_response_time_ms_bucket[1m])))", at);
    assert_eq!(p95.len(), 2);
    let ai = p95.iter().find(|s| s.labels.get("service").map(String::as_str) == Some("ai-engine")).expect("ai");
    assert!((ai.value - 1095.0).abs() < 1095.0 * 0.02, "{}", ai.value);
    let all = eval(&store, "histogram_quantile(0.5, sum(rate(ai_response_time_ms[1m])))", at);
    assert_eq!(all.len(), 1);
    let q = eval(&store, r#"quantile_over_time(0.99, ai_response_time_ms{service="tts"}[1m]) > 150"#, at);
    assert!((q[0].value - 199.0).abs() < 199.0 * 0.02, "{}", q[0].value);
    // Gauges have no sketch: no quantile rather than a wrong one.
    fill(&mut store, &key("queue_length", "x", MetricKind::Gauge, &[]), T0, &[1.0]);
    assert!(eval(&store, "quantile_over_time(0.9, queue_length[1m])", at).is_empty());
}

#[test]
fn set_operators_and_vector_matching() {
    let mut store = WindowStore::new(R, 600_000);
    for (svc, model, lat, conf) in
        [("ai", "gpt", 2000.0, 0.5), ("ai", "small", 2000.0, 0.9), ("ai", "tiny", 100.0, 0.1)]
    {
        fill(&mut store, &key("latency_ms", svc, MetricKind::Gauge, &[("model", model)]), T0, &[lat]);
        fill(&mut store, &key("confidence", svc, MetricKind::Gauge, &[("model", model)]), T0, &[conf]);
    }
    let at = T0 + R - 1;
    let models = |e: &str| {
        let mut m: Vec<String> = eval(&store, e, at).iter().filter_map(|s| s.labels.get("model").cloned()).collect();
        m.sort();
        m
    };
    assert_eq!(models("latency_ms > 1500 and on (model) confidence < 0.7"), ["gpt"]);
    assert_eq!(models("latency_ms > 1500 unless confidence < 0.7"), ["small"]);
    assert_eq!(models("latency_ms > 1500 or confidence < 0.2"), ["gpt", "small", "tiny"]);
    let ratio = eval(&store, r#"latency_ms / ignoring (x) confidence"#, at);
    assert_eq!(ratio.len(), 3);
    assert!(ratio.iter().all(|s| !s.labels.contains_key("__name__")));
    let on = eval(&store, r#"latency_ms{model="gpt"} * on (model) confidence"#, at);
    assert_eq!(on, vec![Sample { labels: labels(&[("model", "gpt")]), value: 1000.0 }]);
    let many = evaluate(&store, &parser::parse("latency_ms * on (service) confidence").expect("parses"), at);
    assert!(many.expect_err("ambiguous").0.contains("several right-hand series"));
}

#[test]
fn late_corrections_add_and_eviction_keeps_the_rule_ranges() {
    let mut store = WindowStore::new(R, 60_000);
    let k = key("calls_total", "gw", MetricKind::Counter, &[]);
    fill(&mut store, &k, T0, &[10.0]);
    let mut delta = Partial::empty(MetricKind::Counter);
    delta.add(5.0, T0 + 2);
    store.correct(&k, T0, &delta);
    assert_eq!(eval(&store, "increase(calls_total[10s])", T0 + R - 1)[0].value, 15.0);
    store.evict(T0 + 60_000 + 2 * R);
    assert_eq!(store.series_count(), 0);
    assert_eq!(longest_range_ms(&parser::parse("rate(a[5m]) / b > 1").expect("parses")), 300_000);
}
