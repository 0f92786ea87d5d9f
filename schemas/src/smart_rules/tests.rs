use super::*;

fn rule(json: serde_json::Value) -> SmartRule {
    serde_json::from_value(json).expect("parses")
}

fn base() -> serde_json::Value {
    serde_json::json!({
        "name": "CallFailureRate",
        "query": {"metric": "calls_total", "filter": {"outcome": "failed"}, "aggregate": "rate", "by": ["service"], "window": "2m"},
        "condition": {"type": "threshold", "op": ">", "value": 5.0, "resolve_value": 3.0},
        "for": "1m"
    })
}

#[test]
fn queries_become_promql_of_the_subset() {
    let r = rule(base());
    r.validate().expect("valid");
    assert_eq!(r.promql(), r#"sum by (service) (rate(calls_total{outcome="failed"}[2m]))"#);
    let mut j = base();
    j["query"]["aggregate"] = "p95".into();
    j["query"]["by"] = serde_json::json!([]);
    assert_eq!(rule(j.clone()).promql(), r#"histogram_quantile(0.95, sum (rate(calls_total{outcome="failed"}[2m])))"#);
    j["query"]["aggregate"] = "avg".into();
    assert!(rule(j.clone()).promql().contains(" / sum (count_over_time("));
    j["condition"] = serde_json::json!({"type": "absence", "lookback": "30m"});
    assert_eq!(
        rule(j).absence_promql(),
        r#"count (count_over_time(calls_total{outcome="failed"}[30m])) unless count (count_over_time(calls_total{outcome="failed"}[2m]))"#
    );
}

#[test]
fn bad_fields_are_named() {
    let field = |patch: &dyn Fn(&mut serde_json::Value)| {
        let mut j = base();
        patch(&mut j);
        rule(j).validate().expect_err("invalid").field
    };
    assert_eq!(field(&|j| j["name"] = "bad name".into()), "name");
    assert_eq!(field(&|j| j["query"]["aggregate"] = "median".into()), "query.aggregate");
    assert_eq!(field(&|j| j["query"]["window"] = "soon".into()), "query.window");
    assert_eq!(field(&|j| j["query"]["by"] = serde_json::json!(["a-b"])), "query.by");
    assert_eq!(field(&|j| j["condition"]["resolve_value"] = 9.0.into()), "condition.resolve_value");
    assert_eq!(field(&|j| j["condition"] = serde_json::json!({"type": "anomaly", "alpha": 2.0})), "condition.alpha");
    assert_eq!(field(&|j| j["schedule"] = serde_json::json!({"timezone": "Mars/Olympus"})), "schedule.timezone");
    assert_eq!(
        field(
            &|j| j["schedule"] = serde_json::json!({"timezone": "UTC", "maintenance": [{"days": ["funday"], "start": "01:00", "end": "02:00"}]})
        ),
        "schedule.maintenance[0].days"
    );
    assert!(
        serde_json::from_value::<SmartRule>(
            serde_json::json!({"name": "x", "query": {}, "condition": {"type": "psychic"}})
        )
        .is_err()
    );
}

#[test]
fn schedules_follow_the_time_zone() {
    let mut j = base();
    j["schedule"] = serde_json::json!({
        "timezone": "Asia/Shanghai",
        "peak_hours": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00", "value": 10.0}],
        "maintenance": [{"days": ["sun"], "start": "23:00", "end": "02:00"}]
    });
    let r = rule(j);
    r.validate().expect("valid");
    // 2026-11-30 is a Monday. 02:00 UTC = 10:00 in Shanghai: peak.
    let monday_10_local = 1_796_004_000_000; // 2026-11-30T02:00:00Z
    assert_eq!(r.threshold_at(monday_10_local, 5.0), 10.0);
    assert_eq!(r.threshold_at(monday_10_local + 10 * 3_600_000, 5.0), 5.0, "20:00 local is off-peak");
    // Sunday 23:30 local and Monday 01:30 local are in the window that crosses midnight.
    let sunday_2330_local = monday_10_local - (10 * 60 + 30) * 60_000;
    assert!(r.in_maintenance(sunday_2330_local));
    assert!(r.in_maintenance(sunday_2330_local + 2 * 3_600_000));
    assert!(!r.in_maintenance(sunday_2330_local + 3 * 3_600_000));
}

#[test]
fn builtin_rules_parse_validate_and_give_way_to_stored_ones() {
    let builtins = builtin_smart_rules().expect("the built-in rules parse");
    assert!(!builtins.is_empty());
    for r in &builtins {
        r.validate().unwrap_or_else(|e| panic!("{}: {}: {}", r.id, e.field, e.message));
        assert!(r.builtin && !r.id.is_empty(), "{}", r.id);
    }
    let mut replaced = builtins[0].clone();
    replaced.enabled = false;
    replaced.builtin = true;
    let mut added = rule(base());
    added.id = "a-stored-rule".into();
    let merged = merge_with_builtin_rules(builtins.clone(), vec![replaced, added]);
    assert_eq!(merged.len(), builtins.len() + 1);
    let first = merged.iter().find(|r| r.id == builtins[0].id).expect("still listed");
    assert!(!first.enabled && !first.builtin, "a stored copy replaces the built-in and is not built in");
    assert!(merged.iter().any(|r| r.id == "a-stored-rule" && !r.builtin));
}
