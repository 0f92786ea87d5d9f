use super::*;
use crate::rules::load_rule_file;
use callscope_schemas::MetricKind;

const T0: i64 = 1_800_000_000_000;

fn rules(yaml: &str) -> Vec<AlertRule> {
    load_rule_file(yaml).expect("rules load")
}

fn counter(name: &str, service: &str, value: f64, t: i64) -> Metric {
    Metric {
        name: name.into(),
        kind: MetricKind::Counter,
        value,
        timestamp_ms: t,
        service: service.into(),
        labels: Default::default(),
        unit: None,
    }
}

const FAILURE_RATIO: &str = r#"
groups:
  - name: calls
    rules:
      - alert: CallFailureRateHigh
        expr: sum by (service) (increase(calls_failed_total[30s])) / sum by (service) (increase(calls_total[30s])) > 0.1
        for: 20s
        labels: {severity: critical}
        annotations:
          summary: "{{ $labels.service }} fails {{ $value | humanizePercentage }} of calls"
"#;

/// One second of traffic at `t`: `calls` calls of which `failed` failed.
fn second(engine: &mut AlertEngine, t: i64, calls: u32, failed: u32) {
    for i in 0..calls {
        engine.ingest(&counter("calls_total", "gw", 1.0, t + i64::from(i)), t);
    }
    for i in 0..failed {
        engine.ingest(&counter("calls_failed_total", "gw", 1.0, t + i64::from(i)), t);
    }
}

#[test]
fn pending_for_the_for_duration_in_event_time_then_firing_then_resolved() {
    let mut engine = AlertEngine::new(EngineConfig::default(), rules(FAILURE_RATIO));
    let mut changes = Vec::new();
    for s in 0..120 {
        let t = T0 + s * 1000;
        let failed = if (30..70).contains(&s) { 50 } else { 1 };
        second(&mut engine, t, 100, failed);
        changes.extend(engine.evaluate(t));
    }
    let states: Vec<(AlertState, i64)> = changes.iter().map(|c| (c.to, (c.at_ms - T0) / 1000)).collect();
    assert_eq!(states.len(), 3, "{states:?}");
    assert_eq!(states[0].0, AlertState::Pending);
    assert_eq!(states[1].0, AlertState::Firing);
    assert!(states[1].1 - states[0].1 >= 20, "for is respected in event time: {states:?}");
    assert_eq!(states[2].0, AlertState::Resolved);
    let firing = &changes[1];
    assert_eq!(firing.labels.get("alertname").map(String::as_str), Some("CallFailureRateHigh"));
    assert_eq!(firing.labels.get("service").map(String::as_str), Some("gw"));
    assert!(firing.annotations["summary"].starts_with("gw fails "), "{:?}", firing.annotations);
    let event = firing.to_event().expect("firing is an event");
    assert_eq!((event.status, event.severity), (AlertStatus::Firing, Severity::Critical));
    assert_eq!(event.service, "gw");
    let resolved = changes[2].to_event().expect("resolved is an event");
    assert_eq!(resolved.ends_at_ms, Some(changes[2].at_ms));
    assert!(changes[0].to_event().is_none(), "pending is internal");
}

#[test]
fn a_clear_breach_fires_early_in_an_open_window() {
    let rule = r#"
groups:
  - name: g
    rules:
      - alert: QueueLong
        expr: max_over_time(queue_length[1m]) > 100
"#;
    let mut engine = AlertEngine::new(EngineConfig::default(), rules(rule));
    let mut m = counter("queue_length", "dialogue", 5.0, T0);
    m.kind = MetricKind::Gauge;
    engine.ingest(&m, T0);
    assert!(engine.evaluate(T0).is_empty());
    m.value = 500.0;
    m.timestamp_ms = T0 + 1;
    engine.ingest(&m, T0 + 1);
    // The 10 s window is still open (and far from the allowed lateness): it fires anyway.
    let changes = engine.evaluate(T0 + 1);
    assert_eq!(changes.iter().map(|c| c.to).collect::<Vec<_>>(), [AlertState::Firing]);
}

#[test]
fn a_late_correction_resolves_an_early_fired_alert() {
    let rule = FAILURE_RATIO.replace("for: 20s", "for: 0s");
    let mut engine = AlertEngine::new(EngineConfig::default(), rules(&rule));
    second(&mut engine, T0, 10, 5);
    let fired = engine.evaluate(T0);
    assert_eq!(fired.iter().map(|c| c.to).collect::<Vec<_>>(), [AlertState::Firing]);
    // The successful calls of that second arrive late (a slow producer), and time moves on.
    second(&mut engine, T0 + 1000, 1, 0);
    for i in 0..200 {
        engine.ingest(&counter("calls_total", "gw", 1.0, T0 + 5 + i), T0 + 1000);
    }
    let resolved = engine.evaluate(T0 + 1000);
    assert_eq!(resolved.iter().map(|c| c.to).collect::<Vec<_>>(), [AlertState::Resolved]);
}

#[test]
fn absence_fires_on_the_idle_wall_clock_when_the_stream_stops() {
    let rule = r#"
groups:
  - name: g
    rules:
      - alert: ServiceDown
        expr: absent_over_time(heartbeat_total{service="call-gateway"}[30s])
        for: 10s
"#;
    let config = EngineConfig { resolution_ms: 10_000, idle_after_ms: 5_000 };
    let mut engine = AlertEngine::new(config, rules(rule));
    engine.ingest(&counter("heartbeat_total", "call-gateway", 1.0, T0), T0);
    assert!(engine.evaluate(T0).is_empty());
    // Nothing else ever arrives: time advances with the wall clock after the idle delay.
    let mut changes = Vec::new();
    for s in 1..=60 {
        changes.extend(engine.evaluate(T0 + s * 1000));
    }
    let states: Vec<AlertState> = changes.iter().map(|c| c.to).collect();
    assert_eq!(states, [AlertState::Pending, AlertState::Firing]);
    assert_eq!(changes[1].labels.get("service").map(String::as_str), Some("call-gateway"));
    assert!(changes[1].at_ms - T0 >= 40_000, "30 s of absence then 10 s pending");
}

#[test]
fn reloading_rules_keeps_the_state_of_unchanged_rules() {
    let rule = FAILURE_RATIO.replace("for: 20s", "for: 0s");
    let mut engine = AlertEngine::new(EngineConfig::default(), rules(&rule));
    assert!(engine.wants("calls_total") && engine.wants("calls_failed_total") && !engine.wants("cpu"));
    second(&mut engine, T0, 10, 5);
    assert_eq!(engine.evaluate(T0).len(), 1);
    engine.set_rules(rules(&rule));
    second(&mut engine, T0 + 1000, 10, 5);
    assert!(engine.evaluate(T0 + 1000).is_empty(), "still firing, no new transition");
    assert_eq!(engine.status()[0].state, AlertState::Firing);
    // An edited expression keeps the alert while it still holds, and resolves it when not.
    engine.set_rules(rules(&rule.replace("> 0.1", "> 0.2")));
    second(&mut engine, T0 + 2000, 10, 5);
    assert!(engine.evaluate(T0 + 2000).is_empty());
    engine.set_rules(rules(&rule.replace("> 0.1", "> 0.9")));
    second(&mut engine, T0 + 3000, 10, 5);
    assert_eq!(engine.evaluate(T0 + 3000).iter().map(|c| c.to).collect::<Vec<_>>(), [AlertState::Resolved]);
    // A removed rule resolves its firing alerts.
    engine.set_rules(rules(&rule));
    second(&mut engine, T0 + 4000, 10, 5);
    assert_eq!(engine.evaluate(T0 + 4000).len(), 1);
    engine.set_rules(Vec::new());
    let gone = engine.evaluate(T0 + 5000);
    assert_eq!(
        gone.iter().map(|c| (c.rule.as_str(), c.to)).collect::<Vec<_>>(),
        [("CallFailureRateHigh", AlertState::Resolved)]
    );
}

#[test]
fn a_replay_only_ingests_and_keeps_event_time_at_the_slowest_partition() {
    let rule = FAILURE_RATIO.replace("for: 20s", "for: 0s");
    let mut engine = AlertEngine::new(EngineConfig::default(), rules(&rule));
    engine.begin_replay([("m".to_string(), 0), ("m".to_string(), 1), ("alerts".to_string(), 0)]);
    // Partition 0 carries the calls and is read back to 60 s; partition 1 carries the
    // failures and lags at 20 s (the alerts partition delivers no samples).
    let wall = T0 + 3_600_000;
    for s in 0..60 {
        for i in 0..10 {
            engine.ingest_from(&counter("calls_total", "gw", 1.0, T0 + s * 1000 + i), wall, "m", 0);
        }
    }
    for s in 0..20 {
        for i in 0..5 {
            engine.ingest_from(&counter("calls_failed_total", "gw", 1.0, T0 + s * 1000 + i), wall, "m", 1);
        }
    }
    assert_eq!(engine.event_time(wall), T0 + 19_004, "the slowest partition's newest sample");
    assert!(engine.evaluate(wall).is_empty(), "no evaluation while replaying");
    assert!(engine.status()[0].active.is_empty());
    // Partition 1 catches up (half the calls fail until 60 s): evaluated once, at the
    // caught-up event time, the alert fires.
    for s in 20..60 {
        for i in 0..5 {
            engine.ingest_from(&counter("calls_failed_total", "gw", 1.0, T0 + s * 1000 + i), wall, "m", 1);
        }
    }
    assert_eq!(engine.event_time(wall), T0 + 59_004);
    assert!(engine.evaluate(wall).is_empty());
    let changes = engine.end_replay(wall);
    assert!(!engine.replaying());
    assert_eq!(engine.event_time(wall), T0 + 59_009, "the newest event time once caught up");
    assert_eq!(changes.iter().map(|c| (c.to, c.at_ms)).collect::<Vec<_>>(), [(AlertState::Firing, T0 + 10_000)]);
    assert!(engine.evaluate(wall).is_empty(), "still firing");
}

#[test]
fn catching_up_rebuilds_for_timers_from_the_history_read_back() {
    let mut engine = AlertEngine::new(EngineConfig::default(), rules(FAILURE_RATIO));
    engine.begin_replay([("m".to_string(), 0)]);
    // Half the calls fail for the whole minute read back: longer than `for: 20s`.
    let wall = T0 + 3_600_000;
    for s in 0..60 {
        for i in 0..10 {
            engine.ingest_from(&counter("calls_total", "gw", 1.0, T0 + s * 1000 + i), wall, "m", 0);
        }
        for i in 0..5 {
            engine.ingest_from(&counter("calls_failed_total", "gw", 1.0, T0 + s * 1000 + i), wall, "m", 0);
        }
    }
    let changes = engine.end_replay(wall);
    let states: Vec<(AlertState, i64)> = changes.iter().map(|c| (c.to, c.at_ms - T0)).collect();
    assert_eq!(states, [(AlertState::Pending, 10_000), (AlertState::Firing, 30_000)], "{states:?}");
    assert_eq!(engine.status()[0].state, AlertState::Firing, "firing when caught up, not pending again");
}

#[test]
fn samples_outside_a_replay_or_its_partitions_do_not_hold_event_time_back() {
    let mut engine = AlertEngine::new(EngineConfig::default(), rules(FAILURE_RATIO));
    engine.ingest_from(&counter("calls_total", "gw", 1.0, T0), T0, "m", 0);
    engine.begin_replay([("m".to_string(), 1)]);
    engine.ingest_from(&counter("calls_total", "gw", 1.0, T0 + 5_000), T0, "m", 0);
    engine.ingest_from(&counter("calls_total", "gw", 1.0, T0 + 2_000), T0, "m", 1);
    engine.ingest_from(&counter("unread_metric", "gw", 1.0, T0 + 1), T0, "m", 1);
    assert_eq!(engine.event_time(T0), T0 + 2_000);
    assert!(engine.end_replay(T0).is_empty());
    assert_eq!(engine.event_time(T0), T0 + 5_000);
}
