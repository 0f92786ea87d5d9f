//! The evaluator task: start-up (rules, notification config, the durable state and its
//! notification log, history replay, the lease), then one loop that reads messages (only
//! ingesting them until the history is read back), evaluates after every batch and every
//! tick once caught up, takes over or hands back leadership, and reloads what changed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use callscope_runtime::kafka::ensure_topics;
use callscope_runtime::now_ms;
use callscope_storage::{CatalogKey, Tier};
use futures::FutureExt;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use super::{AlertingStatus, Evaluator, LEADER_SILENCE, RECENT_TRANSITIONS, failure_sink};
use crate::Result;
use crate::config::{AlertingConfig, files_version, load_notify, load_rules};
use crate::engine::AlertEngine;
use crate::lease::Lease;
use crate::metrics::AlertingMetrics;
use crate::notify::config::NotifyConfig;
use crate::notify::dispatch::Dispatcher;
use crate::notify::notifier::Notifier;
use crate::publisher::{Backoff, KafkaSink, Publisher};
use crate::replay::assign_from;
use crate::state::read_state;

/// Nothing read for this long while reading back history: the history is taken as read.
const REPLAY_STALL: Duration = Duration::from_secs(30);

/// Runs the evaluator until `shutdown`.
pub async fn run(config: AlertingConfig, tier: Tier, shutdown: CancellationToken) -> Result<()> {
    let rules = load_rules(&config)?;
    let notify = load_notify(&config)?;
    ensure_topics(&config.kafka, std::slice::from_ref(&config.lease_topic), 1, Duration::from_secs(60)).await?;
    let metrics = AlertingMetrics::global();
    metrics.rules_loaded.set(rules.len() as i64);
    let replay_ms = i64::try_from(config.replay.as_millis()).unwrap_or(i64::MAX);
    let engine = AlertEngine::new(config.engine, rules);
    let (reports, mut delivered) = tokio::sync::mpsc::unbounded_channel();
    let (dispatcher, notifier, config_inhibit) = match notify {
        Some((nc, route)) => {
            let notifier = Notifier::start(&nc, failure_sink(tier.clone()), reports.clone())?;
            let inhibit = nc.inhibit_rules()?;
            (Dispatcher::new(route), Some(notifier), inhibit)
        }
        None => {
            let (_, route) = NotifyConfig::parse("route: {receiver: none}\nreceivers: [{name: none}]")?;
            (Dispatcher::new(route), None, Vec::new())
        }
    };
    // Partitions are assigned, not subscribed: the group id only names the client.
    let source: StreamConsumer = config
        .kafka
        .consumer_config(&format!("{}-reader", config.lease_group))
        .set("fetch.wait.max.ms", "20")
        .create()?;
    let mut topics = config.metric_topics.clone();
    topics.push(config.alerts_topic.clone());
    // Every instance restores the notification log before reading back history: a
    // resolution read back of an alert that fired before the replay window is then news.
    let state = read_state(&tier).await;
    let ends = assign_from(&source, &topics, now_ms() - replay_ms).await?;
    let lease = Lease::join(&config.kafka, &config.lease_topic, &config.lease_group, shutdown.clone())?;
    let publisher = Publisher::start(
        KafkaSink::new(config.kafka.producer()?, config.alerts_topic.clone()),
        RECENT_TRANSITIONS,
        Backoff::default(),
    );
    let mut ev = Evaluator::new(config, tier, engine, dispatcher, notifier, reports, publisher, state);
    ev.config_inhibit = config_inhibit;
    ev.apply_inhibitions();
    ev.load_silences().await;
    ev.load_acks().await;
    ev.load_smart_rules().await;
    let mut positions: HashMap<(String, i32), i64> = HashMap::new();
    let mut caught_up = ends.is_empty();
    if caught_up {
        ev.catch_up(now_ms());
    } else {
        ev.engine.begin_replay(ends.keys().cloned());
    }
    let mut ticker = tokio::time::interval(ev.config.eval_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut slow = tokio::time::interval(Duration::from_secs(2));
    let mut last_resend = Instant::now();
    let mut last_rejoin = Instant::now();
    // When the history read back was read: a partition whose end offset is never reached
    // (say, a record gone from the log) must not keep the evaluator from evaluating.
    let mut last_read = Instant::now();
    let mut version = files_version(&ev.config);
    tracing::info!(instance = %ev.config.instance_id, rules = ev.engine.rule_count(), replay_ms, "alert evaluator started");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(report) = delivered.recv() => ev.on_delivery(report, now_ms()),
            first = source.recv() => {
                let wall = now_ms();
                last_read = Instant::now();
                let mut batch = vec![first];
                // Drain what is already fetched: one evaluation per batch.
                while batch.len() < 5000 {
                    match source.recv().now_or_never() {
                        Some(m) => batch.push(m),
                        None => break,
                    }
                }
                for m in batch {
                    match m {
                        Ok(m) => {
                            positions.insert((m.topic().to_string(), m.partition()), m.offset());
                            ev.on_message(m.topic(), m.partition(), m.key(), m.payload().unwrap_or_default(), wall);
                        }
                        Err(e) => tracing::warn!(error = %e, "alert evaluator read failed"),
                    }
                }
                if caught_up {
                    ev.after_batch(wall);
                } else {
                    caught_up = ends.iter().all(|(k, end)| positions.get(k).is_some_and(|p| *p + 1 >= *end));
                    if caught_up {
                        tracing::info!("alert evaluator read back its history");
                        ev.catch_up(wall);
                    }
                }
            }
            _ = ticker.tick() => {
                let wall = now_ms();
                if !caught_up && last_read.elapsed() >= REPLAY_STALL {
                    tracing::warn!(
                        stalled_s = REPLAY_STALL.as_secs(),
                        "the history read back stopped short of its end offsets; evaluating what was read"
                    );
                    caught_up = true;
                    ev.catch_up(wall);
                }
                let leader = lease.is_leader();
                if leader != ev.leader {
                    let changed = if leader {
                        ev.take_over(wall).await
                    } else {
                        ev.publisher.deactivate();
                        tracing::info!(instance = %ev.config.instance_id, "another process sends alert notifications now");
                        true
                    };
                    if changed {
                        ev.leader = leader;
                        metrics.leader.set(i64::from(leader));
                    }
                }
                if caught_up {
                    ev.evaluate("interval", wall);
                    ev.resolve_missing_if_due(wall);
                    ev.flush(wall);
                }
                if caught_up && last_resend.elapsed() >= Duration::from_secs(60) && ev.leader {
                    ev.resend_to_alertmanagers(wall);
                    last_resend = Instant::now();
                }
                ev.save_state(wall).await;
            }
            _ = slow.tick() => {
                ev.check_superseded(now_ms()).await;
                // Tansu 0.6 can leave a dead member's partition unassigned (see the worker's
                // orphan watchdog): when no leader has published status for 10 s, rejoin.
                if !ev.leader && last_rejoin.elapsed() >= LEADER_SILENCE {
                    let silent_for = match ev.tier.get(&CatalogKey::AlertingStatus.path()).await {
                        Ok(bytes) => serde_json::from_slice::<AlertingStatus>(&bytes)
                            .map_or(i64::MAX, |s| now_ms() - s.updated_at_ms),
                        Err(_) => i64::MAX,
                    };
                    if silent_for > LEADER_SILENCE.as_millis() as i64 {
                        tracing::warn!(silent_for_ms = silent_for, "no alerting leader is publishing; rejoining the lease group");
                        lease.rejoin();
                        last_rejoin = Instant::now();
                    }
                }
                ev.load_silences().await;
                ev.load_acks().await;
                ev.load_smart_rules().await;
                ev.self_samples().await;
                let now_version = files_version(&ev.config);
                if now_version != version {
                    version = now_version;
                    ev.reload();
                }
                if ev.leader {
                    ev.probe_alertmanagers().await;
                }
                ev.publish_status(now_ms()).await;
            }
        }
    }
    ev.save_state(now_ms()).await;
    Ok(())
}
