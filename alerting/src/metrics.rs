//! Metrics of alert evaluation and notification, in the process-wide registry.

use std::sync::OnceLock;

use callscope_runtime::telemetry::{counter as plain_counter, counter_vec as counter, gauge, gauge_vec, histogram};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

#[derive(Debug)]
pub struct AlertingMetrics {
    pub rules_loaded: IntGauge,
    pub rule_reloads: IntCounterVec,
    pub evaluations: IntCounterVec,
    pub evaluation_seconds: Histogram,
    pub evaluation_errors: IntCounterVec,
    pub transitions: IntCounterVec,
    pub transitions_published: IntCounter,
    pub transition_publish_failures: IntCounter,
    pub transition_publish_backlog: IntGauge,
    pub transitions_dropped: IntCounter,
    pub alerts_active: IntGaugeVec,
    pub window_series: IntGauge,
    pub samples_ingested: IntCounterVec,
    pub leader: IntGauge,
    pub notifications: IntCounterVec,
    pub notification_attempts: IntCounterVec,
    pub notification_seconds: Histogram,
    pub notification_queue: IntGaugeVec,
    pub outbox_pending: IntGauge,
    pub flushes_held: IntCounter,
}

impl AlertingMetrics {
    pub fn global() -> &'static AlertingMetrics {
        static METRICS: OnceLock<AlertingMetrics> = OnceLock::new();
        METRICS.get_or_init(|| AlertingMetrics::new(prometheus::default_registry()))
    }

    fn new(registry: &Registry) -> AlertingMetrics {
        let metrics = AlertingMetrics {
            rules_loaded: gauge(registry, "callscope_alerting_rules_loaded", "Alert rules the evaluator runs"),
            rule_reloads: counter(
                registry,
                "callscope_alerting_rule_reloads_total",
                "Rule and notification config reloads by outcome",
                &["outcome"],
            ),
            evaluations: counter(
                registry,
                "callscope_alerting_evaluations_total",
                "Evaluation rounds of all rules by trigger",
                &["trigger"],
            ),
            evaluation_seconds: histogram(
                registry,
                "callscope_alerting_evaluation_seconds",
                "Time to evaluate all rules once",
                vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5],
            ),
            evaluation_errors: counter(
                registry,
                "callscope_alerting_evaluation_errors_total",
                "Rule evaluations that failed, by rule",
                &["rule"],
            ),
            transitions: counter(
                registry,
                "callscope_alerting_transitions_total",
                "Alert state changes, by new state",
                &["state"],
            ),
            transitions_published: plain_counter(
                registry,
                "callscope_alerting_transitions_published_total",
                "Alert transitions confirmed on the alerts topic",
            ),
            transition_publish_failures: plain_counter(
                registry,
                "callscope_alerting_transition_publish_failures_total",
                "Failed attempts to publish an alert transition (each is retried)",
            ),
            transition_publish_backlog: gauge(
                registry,
                "callscope_alerting_transition_publish_backlog",
                "Alert transitions waiting to be published by the leader",
            ),
            transitions_dropped: plain_counter(
                registry,
                "callscope_alerting_transitions_dropped_total",
                "Alert transitions the leader dropped unpublished because too many were waiting",
            ),
            alerts_active: gauge_vec(registry, "callscope_alerting_alerts", "Alert instances by state", &["state"]),
            window_series: gauge(
                registry,
                "callscope_alerting_window_series",
                "Series held in the evaluator's windows",
            ),
            samples_ingested: counter(
                registry,
                "callscope_alerting_samples_total",
                "Samples read by the evaluator, by outcome",
                &["outcome"],
            ),
            outbox_pending: gauge(
                registry,
                "callscope_alerting_outbox_pending",
                "Notifications logged that some channel has not delivered yet",
            ),
            flushes_held: plain_counter(
                registry,
                "callscope_alerting_flushes_held_total",
                "Leader flushes held because storage had not confirmed the leadership recently (or a takeover waits for the old leader's lease)",
            ),
            leader: gauge(
                registry,
                "callscope_alerting_leader",
                "1 while this process sends notifications (holds the alerting lease)",
            ),
            notifications: counter(
                registry,
                "callscope_notifications_total",
                "Notifications by receiver, channel and outcome (sent, failed, dropped, skipped)",
                &["receiver", "channel", "outcome"],
            ),
            notification_attempts: counter(
                registry,
                "callscope_notification_attempts_total",
                "Delivery attempts by channel and result (ok, retry, permanent)",
                &["channel", "result"],
            ),
            notification_seconds: histogram(
                registry,
                "callscope_notification_seconds",
                "Time to deliver a notification, retries included",
                vec![0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0],
            ),
            notification_queue: gauge_vec(
                registry,
                "callscope_notification_queue",
                "Notifications waiting per receiver channel",
                &["receiver", "channel"],
            ),
        };
        for state in ["pending", "firing"] {
            metrics.alerts_active.with_label_values(&[state]);
        }
        metrics
    }
}
