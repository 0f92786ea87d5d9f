use super::*;

#[test]
fn ad_hoc_filters_reach_every_selector() {
    let filters = vec![
        AdhocFilter { key: "service".into(), operator: "=".into(), value: "call-gateway".into() },
        AdhocFilter { key: "outcome".into(), operator: "=~".into(), value: "ans.*".into() },
    ];
    let matchers = filter_matchers(&filters).expect("matchers");
    let mut expr =
        promql_parser::parser::parse("sum(rate(a[5m])) / sum(rate(b[5m])) + histogram_quantile(0.9, c)").unwrap();
    add_matchers(&mut expr, &matchers);
    let text = expr.to_string();
    for name in ["a", "b", "c"] {
        assert!(text.contains(&format!("{name}{{outcome=~\"ans.*\",service=\"call-gateway\"}}")), "{text}");
    }
    let bad = vec![AdhocFilter { key: "x".into(), operator: ">".into(), value: "1".into() }];
    assert!(matches!(filter_matchers(&bad), Err(ApiError::BadRequest { field: Some(f), .. }) if f == "filters[0]"));
    let bad = vec![AdhocFilter { key: "x y".into(), operator: "=".into(), value: "1".into() }];
    assert!(filter_matchers(&bad).is_err());
}

#[test]
fn metric_targets_build_the_expected_expression() {
    let p = json!({"by": ["outcome"]});
    assert_eq!(
        metric_expression("calls_total", Some("counter"), &p, 30_000, "t").unwrap(),
        "sum by (outcome) (rate(calls_total[60s]))"
    );
    assert_eq!(
        metric_expression("latency", Some("histogram"), &json!({}), 120_000, "t").unwrap(),
        "histogram_quantile(0.95, sum (rate(latency[240s])))"
    );
    assert_eq!(
        metric_expression("queue", Some("gauge"), &json!({"aggregation": "max"}), 1_000, "t").unwrap(),
        "max (avg_over_time(queue[60s]))"
    );
    let err = metric_expression("q", None, &json!({"by": ["a b"]}), 1_000, "targets[2]").unwrap_err();
    assert!(matches!(err, ApiError::BadRequest { field: Some(f), .. } if f == "targets[2].payload.by"));
    for expr in [
        metric_expression("x", Some("counter"), &json!({"function": "increase", "by": "a,b"}), 1, "t").unwrap(),
        metric_expression("x", Some("summary"), &json!({"function": "p99", "by": ["a"]}), 1, "t").unwrap(),
        metric_expression("x", Some("gauge"), &json!({"function": "last"}), 1, "t").unwrap(),
    ] {
        evaluate::parse(&expr).unwrap_or_else(|e| panic!("{expr}: {e:?}"));
    }
}

#[test]
fn steps_respect_interval_points_and_the_series_limit() {
    assert_eq!(step_ms(0, 3_600_000, Some(15_000), Some(1_000)), 15_000);
    assert_eq!(step_ms(0, 3_600_000, Some(1_000), Some(100)), 36_000);
    assert_eq!(step_ms(0, 60_000, None, None), 1_000);
    let year = 365 * 86_400_000i64;
    assert!(year / step_ms(0, year, Some(1), Some(i64::MAX)) < MAX_POINTS);
    assert_eq!(legend(Some("{{outcome}} calls"), &BTreeMap::from([("outcome".into(), "ok".into())])), "ok calls");
    assert_eq!(
        legend(None, &BTreeMap::from([("__name__".into(), "x".into()), ("a".into(), "b".into())])),
        "x{a=\"b\"}"
    );
}
