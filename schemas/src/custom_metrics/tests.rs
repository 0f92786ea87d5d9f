use super::*;

fn parse(json: serde_json::Value) -> Result<CustomMetric, String> {
    serde_json::from_value::<CustomMetric>(json).map_err(|e| e.to_string())
}

#[test]
fn builtins_are_valid_and_consistent() {
    let defs = builtin_definitions();
    for d in &defs {
        d.validate().unwrap_or_else(|e| panic!("{}: {e:?}", d.name));
    }
    validate_set(&defs).expect("set");
}

#[test]
fn expressions_parse_and_evaluate() {
    let e = Expr::parse("(a + b) / c * 100 - -2").expect("parse");
    assert_eq!(e.variables(), vec!["a", "b", "c"]);
    let v = e.eval(&|m| {
        Some(match m {
            "a" => 1.0,
            "b" => 3.0,
            _ => 8.0,
        })
    });
    assert_eq!(v, Some(52.0));
    assert_eq!(Expr::parse("a / b").expect("parse").eval(&|m| Some(if m == "a" { 1.0 } else { 0.0 })), None);
    for bad in ["", "a +", "(a", "a b", "1 + 2", "a $ b"] {
        assert!(Expr::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn invalid_definitions_name_the_field() {
    let base = serde_json::json!({"name": "x_ratio", "type": "gauge", "rule": {"expr": "a / b"}});
    let ok = parse(base.clone()).expect("parses");
    ok.validate().expect("valid");
    let cases = [
        (serde_json::json!({"name": "9x"}), "name"),
        (serde_json::json!({"name": "calls_total"}), "name"),
        (serde_json::json!({"name": "callscope_x"}), "name"),
        (serde_json::json!({"labels": ["a", "a"]}), "labels"),
        (serde_json::json!({"rule": {"expr": "a /"}}), "rule.expr"),
        (serde_json::json!({"rule": {"expr": "x_ratio * 2"}}), "rule.expr"),
        (serde_json::json!({"rule": {}}), "rule"),
        (serde_json::json!({"rule": {"source": "a", "expr": "a"}}), "rule"),
        (serde_json::json!({"rule": {"source": "a", "aggregate": "p95"}}), "rule.aggregate"),
    ];
    for (patch, field) in cases {
        let mut json = base.clone();
        for (k, v) in patch.as_object().expect("object") {
            json[k] = v.clone();
        }
        let def = parse(json.clone()).expect("parses");
        let err = def.validate().expect_err(&json.to_string());
        assert_eq!(err.field, field, "{json}: {err:?}");
    }
    assert!(parse(serde_json::json!({"name": "x", "type": "gauge", "rule": {"source": "a"}, "extra": 1})).is_err());
    assert!(parse(serde_json::json!({"name": "x", "type": "meter", "rule": {"source": "a"}})).is_err());
}

#[test]
fn cycles_and_missing_group_labels_are_refused() {
    let d = |name: &str, labels: &[&str], expr: &str| CustomMetric {
        name: name.into(),
        kind: MetricKind::Gauge,
        help: String::new(),
        unit: None,
        labels: labels.iter().map(|l| l.to_string()).collect(),
        rule: Rule { source: None, filter: BTreeMap::new(), aggregate: Aggregate::Sum, expr: Some(expr.into()) },
        builtin: false,
    };
    assert_eq!(validate_set(&[d("a", &[], "b + 1"), d("b", &[], "a * 2")]).expect_err("cycle").field, "rule.expr");
    assert_eq!(validate_set(&[d("a", &["region"], "b"), d("b", &[], "x")]).expect_err("label").field, "labels");
    validate_set(&[d("a", &["region"], "b"), d("b", &["region", "model"], "x")]).expect("ok");
}

#[test]
fn derived_samples_keep_only_the_kept_labels() {
    let mut def = builtin_definitions().into_iter().find(|d| d.name == "whitelist_hits").expect("builtin");
    def.labels = vec!["service".into()];
    let m = |result: &str| Metric {
        name: "whitelist_checks_total".into(),
        kind: MetricKind::Counter,
        value: 1.0,
        timestamp_ms: 5,
        service: "whitelist-service".into(),
        labels: [("result".to_string(), result.to_string()), ("node".to_string(), "n1".to_string())].into(),
        unit: None,
    };
    let derived = def.derive(&m("hit")).expect("matches");
    assert_eq!(derived.name, "whitelist_hits");
    assert_eq!(derived.service, "whitelist-service");
    assert!(derived.labels.is_empty());
    assert!(def.derive(&m("miss")).is_none());
}
