use crate::engine::{AlertEngine, EngineConfig, RuleKind};
use crate::lifecycle::AlertState;
use callscope_schemas::smart_rules::SmartRule;
use callscope_schemas::{Metric, MetricKind};

/// 2026-11-30T02:00:00Z, a Monday (10:00 in Shanghai).
const T0: i64 = 1_796_004_000_000;

fn gauge(name: &str, service: &str, value: f64, t: i64) -> Metric {
    Metric {
        name: name.into(),
        kind: MetricKind::Gauge,
        value,
        timestamp_ms: t,
        service: service.into(),
        labels: Default::default(),
        unit: None,
    }
}

fn smart(json: serde_json::Value) -> SmartRule {
    let mut r: SmartRule = serde_json::from_value(json).expect("rule");
    r.id = "r1".into();
    r
}

fn engine(rule: SmartRule) -> AlertEngine {
    let mut e = AlertEngine::new(EngineConfig { resolution_ms: 10_000, idle_after_ms: 3_600_000 }, Vec::new());
    assert!(e.set_smart_rules(vec![rule]).is_empty());
    e
}

/// Feeds one gauge value per second from `start` and collects (second, new state).
fn run(e: &mut AlertEngine, name: &str, start_s: i64, values: &[f64]) -> Vec<(i64, AlertState)> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let t = T0 + (start_s + i as i64) * 1000;
        e.ingest(&gauge(name, "gw", *v, t), t);
        out.extend(e.evaluate(t).into_iter().map(|c| ((c.at_ms - T0) / 1000, c.to)));
    }
    out
}

fn threshold_rule() -> SmartRule {
    smart(serde_json::json!({
        "name": "QueueLong",
        "query": {"metric": "queue", "aggregate": "last", "by": ["service"], "window": "10s"},
        "condition": {"type": "threshold", "op": ">", "value": 50.0, "resolve_value": 30.0},
        "for": "2s",
        "annotations": {"summary": "queue {{ $value }} on {{ $labels.service }}"}
    }))
}

#[test]
fn threshold_with_for_and_hysteresis() {
    let mut e = engine(threshold_rule());
    let states = run(&mut e, "queue", 0, &[10.0, 60.0, 60.0, 60.0, 40.0, 40.0, 45.0, 20.0]);
    assert_eq!(
        states,
        [(1, AlertState::Pending), (3, AlertState::Firing), (7, AlertState::Resolved)],
        "40–45 is between the levels: it holds"
    );
}

#[test]
fn peak_hours_raise_the_threshold_and_maintenance_mutes() {
    let mut rule = threshold_rule();
    rule.for_ = None;
    rule.schedule = Some(
        serde_json::from_value(serde_json::json!({
            "timezone": "Asia/Shanghai",
            "peak_hours": [{"start": "09:00", "end": "12:00", "value": 100.0}],
            "maintenance": [{"start": "12:00", "end": "13:00"}]
        }))
        .expect("schedule"),
    );
    let mut e = engine(rule);
    // 10:00 local: peak threshold 100, so 60 does not fire; 150 does.
    assert!(run(&mut e, "queue", 0, &[60.0, 60.0]).is_empty());
    assert_eq!(run(&mut e, "queue", 2, &[150.0]), [(2, AlertState::Firing)]);
    // 12:00 local (two hours later): maintenance, the firing alert resolves and nothing fires.
    let states = run(&mut e, "queue", 7200, &[500.0, 500.0]);
    assert_eq!(states, [(7200, AlertState::Resolved)]);
    // 13:00 local: off-peak threshold 50.
    assert_eq!(run(&mut e, "queue", 10_800, &[60.0]), [(10_800, AlertState::Firing)]);
}

#[test]
fn rate_of_change_compares_with_the_value_a_window_ago() {
    let rule = smart(serde_json::json!({
        "name": "LatencyJump",
        "query": {"metric": "latency", "aggregate": "avg", "by": ["service"], "window": "10s"},
        "condition": {"type": "rate_of_change", "op": ">", "percent": 50.0, "over": "30s"}
    }));
    let mut e = engine(rule);
    let mut values = vec![100.0; 60];
    values.extend(vec![400.0; 20]);
    let states = run(&mut e, "latency", 0, &values);
    assert_eq!(states.first().map(|s| s.1), Some(AlertState::Firing));
    assert!(states[0].0 >= 60, "no alert while steady: {states:?}");
}

#[test]
fn absence_fires_for_a_group_that_stopped_reporting() {
    let rule = smart(serde_json::json!({
        "name": "ServiceSilent",
        "query": {"metric": "heartbeat", "aggregate": "count", "by": ["service"], "window": "20s"},
        "condition": {"type": "absence", "lookback": "5m"}
    }));
    let mut e = engine(rule);
    let mut states = Vec::new();
    for s in 0..60 {
        let t = T0 + s * 1000;
        e.ingest(&gauge("heartbeat", "asr", 1.0, t), t);
        if s < 10 {
            e.ingest(&gauge("heartbeat", "tts", 1.0, t), t);
        }
        states.extend(e.evaluate(t).into_iter().map(|c| (c.labels["service"].clone(), c.to)));
    }
    assert_eq!(states, [("tts".to_string(), AlertState::Firing)]);
}

#[test]
fn anomaly_waits_for_its_warm_up_and_then_flags_a_spike() {
    let rule = smart(serde_json::json!({
        "name": "SpamSpike",
        "query": {"metric": "spam_rate", "aggregate": "avg", "by": ["service"], "window": "10s"},
        "condition": {"type": "anomaly", "z": 4.0, "alpha": 0.2, "warmup": "2m", "min_samples": 10, "direction": "up"}
    }));
    let mut e = engine(rule);
    // A spike during the warm-up is not flagged.
    let mut values: Vec<f64> = (0..60).map(|i| 100.0 + (i % 7) as f64).collect();
    values[30] = 1000.0;
    assert!(run(&mut e, "spam_rate", 0, &values).is_empty(), "warm-up");
    let steady: Vec<f64> = (0..120).map(|i| 100.0 + (i % 7) as f64).collect();
    assert!(run(&mut e, "spam_rate", 60, &steady).is_empty(), "normal variation is not an anomaly");
    let states = run(&mut e, "spam_rate", 180, &[900.0, 900.0, 900.0]);
    assert_eq!(states.first().map(|s| s.1), Some(AlertState::Firing));
    let down = run(&mut e, "spam_rate", 183, &[100.0; 20]);
    assert!(down.iter().any(|s| s.1 == AlertState::Resolved), "{down:?}");
}

#[test]
fn smart_alerts_carry_rule_labels_and_suppressions() {
    let mut rule = threshold_rule();
    rule.for_ = None;
    rule.suppresses =
        vec![serde_json::from_value(serde_json::json!({"alertname": "CallsSlow", "equal": ["service"]})).expect("s")];
    let mut e = engine(rule);
    let mut changes = Vec::new();
    e.ingest(&gauge("queue", "gw", 70.0, T0), T0);
    changes.extend(e.evaluate(T0));
    let event = changes[0].to_event().expect("firing");
    assert_eq!(event.alert_name, "QueueLong");
    assert_eq!(event.labels.get("rule_id").map(String::as_str), Some("r1"));
    assert_eq!(event.annotations.get("summary").map(String::as_str), Some("queue 70 on gw"));
    assert_eq!(e.suppressions(), [("QueueLong".to_string(), "CallsSlow".to_string(), vec!["service".to_string()])]);
    let status = e.status();
    assert_eq!((status[0].kind, status[0].state), (RuleKind::Smart, AlertState::Firing));
}
