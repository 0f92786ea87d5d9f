//! Simulated phone-platform traffic. Every call arrives at the call gateway, is checked
//! against the whitelist and the spam detector, is transcribed (ASR), answered by the AI
//! dialogue engine, spoken (TTS) and billed. Each call emits one trace (spans with real
//! parent/child links) and the metrics an operator watches; now and then a service raises
//! or resolves an alert. Failures, spam and slow AI answers happen at realistic rates.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use callscope_runtime::KafkaConnection;
use callscope_schemas::{Alert, AlertStatus, Event, Metric, MetricKind, Severity, Span, SpanKind, SpanStatus};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

mod platform;

use crate::cli::EncodingArg;
use crate::event_sink::EventSink;

/// Simulated traffic of the phone platform, produced to Kafka.
pub struct LoadGenerator {
    sink: EventSink,
    sim: CallSimulator,
}

/// The simulated calls themselves (events only, nowhere sent): also the generator of
/// `bench traces`.
pub struct CallSimulator {
    rng: StdRng,
    calls: u64,
    open_alert: Option<(Alert, u64)>,
    /// The second of the last host and security samples.
    last_second: i64,
}

fn hex(rng: &mut StdRng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes * 2);
    loop {
        s.clear();
        for _ in 0..bytes {
            s.push_str(&format!("{:02x}", rng.random::<u8>()));
        }
        if s.bytes().any(|b| b != b'0') {
            return s;
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn metric(
    name: &str,
    kind: MetricKind,
    value: f64,
    ts: i64,
    service: &str,
    l: &[(&str, &str)],
    unit: Option<&str>,
) -> Event {
    Event::Metric(Metric {
        name: name.into(),
        kind,
        value,
        timestamp_ms: ts,
        service: service.into(),
        labels: labels(l),
        unit: unit.map(str::to_string),
    })
}

const REGIONS: [&str; 3] = ["cn-east", "cn-north", "cn-south"];
const MODELS: [&str; 2] = ["dialogue-large", "dialogue-fast"];

impl CallSimulator {
    pub fn new(seed: u64) -> CallSimulator {
        CallSimulator { rng: StdRng::seed_from_u64(seed), calls: 0, open_alert: None, last_second: i64::MIN }
    }

    /// The events of one simulated call ending now.
    pub fn call_events(&mut self, now_ms: i64) -> Vec<Event> {
        let rng = &mut self.rng;
        self.calls += 1;
        let region = REGIONS[rng.random_range(0..REGIONS.len())];
        let model = MODELS[rng.random_range(0..MODELS.len())];
        let trace_id = hex(rng, 16);
        let call_id = format!("call-{}", hex(rng, 6));
        let whitelisted = rng.random::<f64>() < 0.15;
        let spam = !whitelisted && rng.random::<f64>() < 0.08;
        let ai_failed = !spam && rng.random::<f64>() < 0.02;
        let whitelist_ms = rng.random_range(2.0..12.0) + if rng.random::<f64>() < 0.01 { 80.0 } else { 0.0 };
        let spam_ms = rng.random_range(5.0..35.0);
        let asr_ms = rng.random_range(80.0..320.0);
        let ai_ms =
            if model == "dialogue-large" { rng.random_range(350.0..1400.0) } else { rng.random_range(150.0..600.0) }
                * if rng.random::<f64>() < 0.03 { 3.0 } else { 1.0 };
        let tts_ms = rng.random_range(60.0..220.0);
        let billing_ms = rng.random_range(4.0..25.0);
        let talk_s = if spam { 0.0 } else { rng.random_range(20.0..240.0) };
        let confidence = if ai_failed { rng.random_range(0.1..0.5) } else { rng.random_range(0.72..0.99) };

        // Spans: the gateway's root span, then each downstream step in sequence.
        let root_id = hex(rng, 8);
        let mut steps: Vec<(&str, &str, SpanKind, f64, bool)> = vec![
            ("whitelist-service", "check_whitelist", SpanKind::Server, whitelist_ms, false),
            ("spam-detector", "spam_check", SpanKind::Server, spam_ms, false),
        ];
        if !spam {
            steps.push(("asr", "transcribe", SpanKind::Server, asr_ms, false));
            steps.push(("ai-engine", "generate_response", SpanKind::Server, ai_ms, ai_failed));
            if !ai_failed {
                steps.push(("tts", "synthesize", SpanKind::Server, tts_ms, false));
            }
            steps.push(("billing", "charge", SpanKind::Server, billing_ms, false));
        }
        let total_ms: f64 = steps.iter().map(|s| s.3).sum::<f64>() + 3.0;
        let root_start_us = (now_ms as f64 * 1000.0 - total_ms * 1000.0) as i64;
        let outcome = if spam {
            "spam_blocked"
        } else if ai_failed {
            "failed"
        } else {
            "answered"
        };
        let mut events = Vec::with_capacity(24);
        events.push(Event::Span(Span {
            trace_id: trace_id.clone(),
            span_id: root_id.clone(),
            parent_span_id: None,
            service: "call-gateway".into(),
            operation: "inbound_call".into(),
            kind: SpanKind::Server,
            start_time_us: root_start_us,
            duration_us: (total_ms * 1000.0) as i64,
            status: if ai_failed { SpanStatus::Error } else { SpanStatus::Ok },
            attributes: labels(&[
                ("call.id", &call_id),
                ("call.outcome", outcome),
                ("region", region),
                ("caller.whitelisted", if whitelisted { "true" } else { "false" }),
            ]),
            status_message: None,
            resource_attributes: Default::default(),
            events: Vec::new(),
        }));
        let mut cursor_us = root_start_us + 1000;
        for (service, operation, kind, ms, failed) in &steps {
            let client_id = hex(rng, 8);
            let server_id = hex(rng, 8);
            let dur = (*ms * 1000.0) as i64;
            let mut attrs = labels(&[("call.id", &call_id)]);
            if *service == "ai-engine" {
                attrs.insert("ai.model".into(), model.into());
                attrs.insert("ai.confidence".into(), format!("{confidence:.3}"));
            }
            if *failed {
                attrs.insert("error.message".into(), "dialogue engine timed out waiting for the model".into());
            }
            events.push(Event::Span(Span {
                trace_id: trace_id.clone(),
                span_id: client_id.clone(),
                parent_span_id: Some(root_id.clone()),
                service: "call-gateway".into(),
                operation: format!("call {service}"),
                kind: SpanKind::Client,
                start_time_us: cursor_us,
                duration_us: dur + 400,
                status: if *failed { SpanStatus::Error } else { SpanStatus::Ok },
                attributes: labels(&[("peer.service", service)]),
                status_message: None,
                resource_attributes: Default::default(),
                events: Vec::new(),
            }));
            events.push(Event::Span(Span {
                trace_id: trace_id.clone(),
                span_id: server_id,
                parent_span_id: Some(client_id),
                service: (*service).into(),
                operation: (*operation).into(),
                kind: *kind,
                start_time_us: cursor_us + 200,
                duration_us: dur,
                status: if *failed { SpanStatus::Error } else { SpanStatus::Ok },
                attributes: attrs,
                status_message: None,
                resource_attributes: Default::default(),
                events: Vec::new(),
            }));
            cursor_us += dur + 500;
        }

        // Metrics.
        let t = now_ms;
        events.push(metric(
            "calls_total",
            MetricKind::Counter,
            1.0,
            t,
            "call-gateway",
            &[("outcome", outcome), ("region", region)],
            None,
        ));
        events.push(metric(
            "whitelist_checks_total",
            MetricKind::Counter,
            1.0,
            t,
            "whitelist-service",
            &[("result", if whitelisted { "hit" } else { "miss" })],
            None,
        ));
        events.push(metric(
            "whitelist_check_latency_ms",
            MetricKind::Histogram,
            whitelist_ms,
            t,
            "whitelist-service",
            &[],
            Some("milliseconds"),
        ));
        events.push(metric(
            "spam_check_latency_ms",
            MetricKind::Histogram,
            spam_ms,
            t,
            "spam-detector",
            &[],
            Some("milliseconds"),
        ));
        if spam {
            events.push(metric(
                "spam_detections_total",
                MetricKind::Counter,
                1.0,
                t,
                "spam-detector",
                &[("region", region)],
                None,
            ));
            events.push(metric(
                "blocked_calls_total",
                MetricKind::Counter,
                1.0,
                t,
                "spam-detector",
                &[("reason", "spam"), ("region", region)],
                None,
            ));
        } else {
            events.push(metric(
                "asr_latency_ms",
                MetricKind::Histogram,
                asr_ms,
                t,
                "asr",
                &[("region", region)],
                Some("milliseconds"),
            ));
            events.push(metric(
                "ai_response_time_ms",
                MetricKind::Histogram,
                ai_ms,
                t,
                "ai-engine",
                &[("model", model)],
                Some("milliseconds"),
            ));
            events.push(metric(
                "ai_confidence",
                MetricKind::Gauge,
                confidence,
                t,
                "ai-engine",
                &[("model", model)],
                Some("ratio"),
            ));
            // The engine falls back to a scripted answer when it fails or is unsure.
            let fallback = if ai_failed { Some("error") } else { (confidence < 0.8).then_some("low_confidence") };
            if let Some(reason) = fallback {
                events.push(metric(
                    "ai_fallbacks_total",
                    MetricKind::Counter,
                    1.0,
                    t,
                    "ai-engine",
                    &[("model", model), ("reason", reason)],
                    None,
                ));
            }
            if ai_failed {
                events.push(metric(
                    "ai_errors_total",
                    MetricKind::Counter,
                    1.0,
                    t,
                    "ai-engine",
                    &[("model", model), ("reason", "timeout")],
                    None,
                ));
            } else {
                // One answered call in ten is graded by a reviewer; one in eight is handed
                // to a human agent (not resolved by the AI).
                if rng.random::<f64>() < 0.1 {
                    let correct = rng.random::<f64>() < if confidence > 0.8 { 0.94 } else { 0.7 };
                    events.push(metric(
                        "ai_answers_graded_total",
                        MetricKind::Counter,
                        1.0,
                        t,
                        "ai-engine",
                        &[("model", model), ("grade", if correct { "correct" } else { "incorrect" })],
                        None,
                    ));
                }
                if rng.random::<f64>() < 0.125 {
                    events.push(metric(
                        "calls_transferred_total",
                        MetricKind::Counter,
                        1.0,
                        t,
                        "call-gateway",
                        &[("region", region)],
                        None,
                    ));
                }
                events.push(metric(
                    "tts_latency_ms",
                    MetricKind::Histogram,
                    tts_ms,
                    t,
                    "tts",
                    &[],
                    Some("milliseconds"),
                ));
                events.push(metric(
                    "calls_answered_total",
                    MetricKind::Counter,
                    1.0,
                    t,
                    "call-gateway",
                    &[("region", region)],
                    None,
                ));
                events.push(metric(
                    "call_duration_seconds",
                    MetricKind::Histogram,
                    talk_s,
                    t,
                    "call-gateway",
                    &[("region", region)],
                    Some("seconds"),
                ));
                let revenue = (talk_s / 60.0).ceil() * 0.12;
                events.push(metric(
                    "billing_revenue_cny_total",
                    MetricKind::Counter,
                    revenue,
                    t,
                    "billing",
                    &[("region", region)],
                    Some("cny"),
                ));
                events.push(metric(
                    "call_cost_cny_total",
                    MetricKind::Counter,
                    revenue * 0.35,
                    t,
                    "billing",
                    &[("region", region)],
                    Some("cny"),
                ));
                if rng.random::<f64>() < 0.2 {
                    let score = rng.random_range(2.0..5.0_f64).round();
                    events.push(metric(
                        "user_satisfaction_score",
                        MetricKind::Gauge,
                        score,
                        t,
                        "ai-engine",
                        &[("model", model)],
                        None,
                    ));
                }
                if rng.random::<f64>() < 0.1 {
                    events.push(metric(
                        "conversions_total",
                        MetricKind::Counter,
                        1.0,
                        t,
                        "billing",
                        &[("region", region)],
                        None,
                    ));
                }
            }
        }
        events
    }

    /// The metrics and alerts a tick of `active_calls` concurrent calls adds: gauges
    /// sampled every tick, host, database, cache and security samples once a second (load
    /// relative to 1 000 concurrent calls), and the occasional alert.
    pub fn tick_events(&mut self, now_ms: i64, active_calls: f64) -> Vec<Event> {
        let rng = &mut self.rng;
        let mut events = Vec::new();
        if now_ms.div_euclid(1000) != self.last_second {
            self.last_second = now_ms.div_euclid(1000);
            events.extend(platform::second_events(rng, now_ms, active_calls / 1000.0));
        }
        events.extend([
            metric("active_calls", MetricKind::Gauge, active_calls, now_ms, "call-gateway", &[], None),
            metric(
                "call_queue_length",
                MetricKind::Gauge,
                (active_calls * rng.random_range(0.0..0.1)).round(),
                now_ms,
                "call-gateway",
                &[],
                None,
            ),
        ]);
        match self.open_alert.take() {
            Some((mut alert, until)) if self.calls >= until => {
                alert.status = AlertStatus::Resolved;
                alert.ends_at_ms = Some(now_ms);
                events.push(Event::Alert(alert));
            }
            Some(open) => self.open_alert = Some(open),
            None if rng.random::<f64>() < 0.01 => {
                let alert = Alert {
                    alert_name: "ASRLatencyHigh".into(),
                    severity: Severity::Warning,
                    status: AlertStatus::Firing,
                    service: "asr".into(),
                    labels: labels(&[("region", REGIONS[rng.random_range(0..REGIONS.len())]), ("team", "speech")]),
                    annotations: labels(&[("summary", "ASR p95 latency above 300 ms")]),
                    starts_at_ms: now_ms,
                    ends_at_ms: None,
                    value: Some(rng.random_range(300.0..450.0)),
                    source: "asr".into(),
                };
                events.push(Event::Alert(alert.clone()));
                self.open_alert = Some((alert, self.calls + 200));
            }
            None => {}
        }
        events
    }
}

impl LoadGenerator {
    /// A generator that produces to `connection`; `seed` (default: the clock) makes the
    /// traffic repeatable.
    pub fn new(connection: &KafkaConnection, encoding: EncodingArg, seed: Option<u64>) -> anyhow::Result<Self> {
        let seed = seed.unwrap_or_else(|| callscope_runtime::now_ms() as u64);
        Ok(LoadGenerator { sink: EventSink::new(connection, encoding)?, sim: CallSimulator::new(seed) })
    }

    /// Generates `rate` calls per second until cancelled or `duration` passed.
    pub async fn run(mut self, rate: f64, duration: Option<Duration>, cancel: CancellationToken) -> anyhow::Result<()> {
        anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate must be a positive number of calls per second");
        let started = Instant::now();
        let tick = Duration::from_millis(100);
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut owed = 0.0f64;
        let mut last_report = Instant::now();
        let counts = self.sink.counts();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = interval.tick() => {}
            }
            if duration.is_some_and(|d| started.elapsed() >= d) {
                break;
            }
            owed += rate * tick.as_secs_f64();
            let now_ms = callscope_runtime::now_ms();
            let calls = owed.floor() as u64;
            owed -= calls as f64;
            let mut batch = Vec::new();
            for _ in 0..calls {
                batch.extend(self.sim.call_events(now_ms));
            }
            batch.extend(self.sim.tick_events(now_ms, rate * 90.0));
            for event in &batch {
                self.sink.send(event).await?;
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                last_report = Instant::now();
                tracing::info!(
                    calls = self.sim.calls,
                    sent = counts.sent(),
                    acked = counts.acked(),
                    failed = counts.failed(),
                    "traffic generator progress"
                );
            }
        }
        let calls = self.sim.calls;
        let counts = self.sink.finish().await;
        tracing::info!(calls, sent = counts.sent(), acked = counts.acked(), "traffic generator stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_calls_are_valid_events_with_linked_traces() {
        let mut generator = CallSimulator::new(7);
        let now = callscope_runtime::now_ms();
        let options = callscope_schemas::DecodeOptions { max_time_skew_ms: 60_000, now_ms: now };
        for _ in 0..200 {
            let events = generator.call_events(now);
            let spans: Vec<&Span> =
                events.iter().filter_map(|e| if let Event::Span(s) = e { Some(s) } else { None }).collect();
            let roots = spans.iter().filter(|s| s.parent_span_id.is_none()).count();
            assert_eq!(roots, 1, "one root span per call");
            for s in &spans {
                if let Some(p) = &s.parent_span_id {
                    assert!(spans.iter().any(|o| &o.span_id == p), "parent {p} present");
                }
            }
            for e in &events {
                callscope_schemas::decode::check(e, &options).expect("valid event");
            }
            assert!(events.iter().any(|e| e.dataset() == callscope_schemas::Dataset::Metrics));
        }
    }
}
