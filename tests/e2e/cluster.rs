//! A cluster on one machine, as an operator would run it: an external `callscope broker`,
//! an S3-compatible server (moto) as the shared tiers, three `pipeline` processes in one
//! consumer group (each evaluating alerts and running the lifecycle schedule) and two
//! `query-api` replicas. Three producers write a known load in three rounds; one pipeline
//! is killed with -9 during the second round and a fourth takes its place before the third.
//! Then: every event is stored exactly once (raw rows and roll-ups), both replicas answer
//! the same queries identically, the alert is notified once (and resolved once) although
//! three processes evaluate it, and the compaction of an old hour is done by one process.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::alerting::fixture::{failed_calls, heartbeat, is_leader, notify_config, with_alerting};
use crate::alerting::peers::Receivers;
use crate::support::*;

/// Events per producer per round, producers, rounds.
const PER_PRODUCER: usize = 1500;
const PRODUCERS: usize = 3;
const ROUNDS: usize = 3;
/// Events of an hour long past, for the lifecycle to compact.
const OLD_HOUR_EVENTS: usize = 600;
const COMPACT_POLICY: &str = "cluster-compact";

#[test]
fn three_pipelines_and_two_query_replicas_on_s3_store_once_answer_alike_and_notify_once() {
    let s3 = MotoS3::start("callscope-cluster");
    let storage = s3.storage_args("cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let receivers = Receivers::start();
    let broker = Node::broker(dir.path()).spawn();
    // The built-in lifecycle policy is off, so that only the policy created below (once
    // the old hour is stored) compacts anything.
    let policies = dir.path().join("policies.json");
    let default_off = json!({"id": "default", "steps": [{"action": "compact", "after": "2h"}], "enabled": false});
    std::fs::write(&policies, default_off.to_string()).expect("policy file");
    let pipeline = |name: &str| {
        let node = Node::pipeline(dir.path(), name)
            .broker(&broker)
            .data_dir(&dir.path().join(name))
            .args(&storage)
            .args(["--group-id", "cluster", "--lifecycle-interval", "2s", "--window-resolutions", "10s,1m,1h"])
            .args(["--policy-file", policies.to_str().expect("path")])
            .metrics_endpoint();
        with_alerting(node, dir.path(), &notify_config(&receivers.base)).spawn()
    };
    let mut pipelines = vec![pipeline("pipeline-a"), pipeline("pipeline-b"), pipeline("pipeline-c")];
    let replica = |name: &str| {
        Node::query_api(dir.path())
            .broker(&broker)
            .data_dir(&dir.path().join(name))
            .args(&storage)
            .args(["--group-id", "cluster"])
            .spawn()
    };
    let replicas = [replica("query-1"), replica("query-2")];
    let base = replicas[0].http.clone();
    let client = http();
    let leader = wait_for_one_leader(&client, &mut pipelines);

    // Round 1, the old hour and the failing calls.
    let rt = runtime();
    let started = Instant::now();
    produce_round(&broker.brokers, 0);
    let alerting_producer = producer(&broker.brokers);
    let t0 = now_ms();
    let mut batch = failed_calls("gw", t0);
    batch.push(heartbeat(t0 + 1500));
    batch.extend(old_hour_events());
    assert_eq!(rt.block_on(produce_all(&alerting_producer, "callscope.metrics", &batch)), batch.len());
    let old_hour = "SELECT COUNT(*) FROM metrics WHERE name = 'cluster_backfill'";
    let backfilled = wait_for_count(&client, &base, old_hour, OLD_HOUR_EVENTS as i64, Duration::from_secs(120));
    assert_eq!(backfilled, OLD_HOUR_EVENTS as i64);
    let firing = receivers.wait_for("hook", 1, Duration::from_secs(90), &mut pipelines[leader]);
    assert_eq!(firing[0]["status"], "firing", "{}", firing[0]);

    // The old hour is complete: a policy compacts it into warm, on whichever process gets it.
    let policy = json!({"id": COMPACT_POLICY, "tables": ["metrics"], "steps": [{"action": "compact", "after": "1h"}]});
    let created = client.call("POST", &format!("{base}/monitoring/storage/policies"), Some(&policy));
    assert_eq!(created.status, 201, "{}", created.body);

    // Round 2 with a pipeline (not the alert leader) killed with -9 while it consumes the
    // round; round 3 after a replacement joined.
    let victim = (leader + 1) % pipelines.len();
    let victim_metrics = format!("{}/metrics", pipelines[victim].http);
    let consumed = "callscope_pipeline_events_consumed_total";
    let before = counter_total(&client, &victim_metrics, consumed);
    let round = std::thread::spawn({
        let brokers = broker.brokers.clone();
        move || produce_round(&brokers, 1)
    });
    // Killed once it has consumed some of the round (unless it holds no partition, which
    // the group's assignment may leave it with).
    let deadline = Instant::now() + Duration::from_secs(20);
    while counter_total(&client, &victim_metrics, consumed) <= before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    pipelines[victim].proc.kill9();
    round.join().expect("round 2");
    pipelines.push(pipeline("pipeline-d"));
    produce_round(&broker.brokers, 2);
    let events = (PER_PRODUCER * PRODUCERS * ROUNDS) as i64;
    let load = "SELECT COUNT(*) FROM metrics WHERE name = 'ai_response_time_ms'";
    assert_eq!(wait_for_count(&client, &base, load, events, Duration::from_secs(180)), events);
    let elapsed = started.elapsed();
    eprintln!(
        "cluster: {events} events through 3 pipelines (one killed, one added) in {:.1} s, producing included",
        elapsed.as_secs_f64()
    );

    // Exactly once: every event once, no (partition, offset) twice, roll-ups counted once.
    let rows = sql(
        &client,
        &base,
        "SELECT COUNT(*), COUNT(DISTINCT labels['seq']), SUM(value) FROM metrics WHERE name = 'ai_response_time_ms'",
    );
    let value_sum: f64 = (0..events as usize).map(|i| i as f64 + 0.5).sum();
    assert_eq!(rows[0], vec![json!(events), json!(events), json!(value_sum)], "every event stored exactly once");
    let twice =
        "SELECT COUNT(*) FROM (SELECT kafka_partition, kafka_offset FROM metrics GROUP BY 1, 2 HAVING COUNT(*) > 1)";
    assert_eq!(sql(&client, &base, twice)[0][0], json!(0), "no Kafka record stored twice");
    for resolution in [10_000, 60_000] {
        let q = format!(
            "SELECT COALESCE(SUM(count), 0) FROM metric_rollups WHERE name = 'ai_response_time_ms' AND resolution_ms = {resolution}"
        );
        assert_eq!(
            wait_for_count(&client, &base, &q, events, Duration::from_secs(120)),
            events,
            "every event in exactly one {resolution} ms window"
        );
    }

    // One notification per state although three processes evaluate the rule.
    let hooks = receivers.wait_for("hook", 2, Duration::from_secs(90), &mut pipelines[leader]);
    assert_eq!(hooks[1]["status"], "resolved", "{}", hooks[1]);
    // Deliberate quiet window: a second process's copy would arrive in it.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receivers.received("hook").len(), 2, "one firing and one resolved notification");

    // The old hour was compacted once, by one process, with the same rows.
    let compacted = wait_for_compaction_runs(&client, &base);
    assert_eq!(compacted.changed, 1, "one process compacted the hour, once: {compacted:?}");
    assert_eq!(compacted.changed_by.len(), 1, "{compacted:?}");
    eprintln!(
        "cluster: the old hour compacted by {:?}; {} processes ran the policy after it",
        compacted.changed_by,
        compacted.runners_after.len()
    );
    assert_eq!(sql(&client, &base, old_hour)[0][0], json!(OLD_HOUR_EVENTS), "the compacted hour's rows");
    let stats = client.call("GET", &format!("{base}/monitoring/storage/statistics"), None).json();
    let warm = stats["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|u| u["tier"] == "warm" && u["table"] == "metrics"))
        .map(|u| u["rows"].clone());
    assert_eq!(warm, Some(json!(OLD_HOUR_EVENTS)), "{stats}");

    // Both replicas give the same answers to the same queries.
    let at = (now_ms() / 1000).to_string();
    let promql = format!("query=sum%20by%20(service)%20(count_over_time(ai_response_time_ms%5B1h%5D))&time={at}");
    let answers: Vec<Vec<Value>> = replicas.iter().map(|r| replica_answers(&client, &r.http, &promql)).collect();
    assert_eq!(answers[0], answers[1], "the two query replicas answer alike");
    let per_service = &answers[0][3]["data"]["result"];
    let counted: f64 = per_service
        .as_array()
        .expect("vector")
        .iter()
        .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted as i64, events, "PromQL counts every event once: {per_service}");

    for mut node in pipelines.into_iter().chain(replicas) {
        node.proc.terminate();
    }
}

/// Waits until exactly one of the running pipelines leads the alerting, the same one over
/// five polls in a row (while the lease group rebalances, a gauge can lag its process's
/// hand-over; whether two processes ever notify is what the webhook counts say); its index.
fn wait_for_one_leader(client: &Http, pipelines: &mut [Node]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut streak: Option<(usize, usize)> = None;
    loop {
        let leaders: Vec<usize> =
            (0..pipelines.len()).filter(|i| is_leader(client, &format!("{}/metrics", pipelines[*i].http))).collect();
        streak = match (leaders.as_slice(), streak) {
            (&[one], Some((same, n))) if same == one => Some((one, n + 1)),
            (&[one], _) => Some((one, 1)),
            _ => None,
        };
        if let Some((one, 5)) = streak {
            return one;
        }
        pipelines.iter_mut().for_each(|n| n.proc.assert_running());
        assert!(Instant::now() < deadline, "no single alerting leader: {leaders:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One round of the load: [`PRODUCERS`] producers at once, each its own share of the
/// sequence numbers (Avro and JSON mixed).
fn produce_round(brokers: &str, round: usize) {
    let threads: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let brokers = brokers.to_string();
            std::thread::spawn(move || {
                let first = (round * PRODUCERS + p) * PER_PRODUCER;
                let payloads: Vec<(String, Vec<u8>)> =
                    (first..first + PER_PRODUCER).map(|i| (format!("call-{i}"), encode_mixed(i, &metric(i)))).collect();
                let rt = runtime();
                let producer = producer(&brokers);
                rt.block_on(produce_all(&producer, "callscope.metrics", &payloads))
            })
        })
        .collect();
    let acked: usize = threads.into_iter().map(|t| t.join().expect("producer")).sum();
    assert_eq!(acked, PRODUCERS * PER_PRODUCER, "round {round} acknowledged");
}

/// Samples of an hour four hours ago, due for compaction.
fn old_hour_events() -> Vec<(String, Vec<u8>)> {
    let hour = (now_ms() / 3_600_000 - 4) * 3_600_000;
    (0..OLD_HOUR_EVENTS)
        .map(|i| {
            let event = callscope_schemas::Event::Metric(callscope_schemas::Metric {
                name: "cluster_backfill".into(),
                kind: callscope_schemas::MetricKind::Gauge,
                value: i as f64,
                timestamp_ms: hour + i as i64 * 1000,
                service: "billing".into(),
                labels: Default::default(),
                unit: None,
            });
            (format!("backfill-{i}"), callscope_schemas::json::encode(&event))
        })
        .collect()
}

#[derive(Debug)]
struct CompactionRuns {
    /// Table-hours changed, summed over every job of the policy.
    changed: u64,
    /// The processes whose jobs changed it.
    changed_by: BTreeSet<String>,
    /// The processes that finished a job of the policy after the change.
    runners_after: BTreeSet<String>,
}

/// Waits until the compaction policy's jobs have changed the hour and at least two
/// processes have finished a job of it since (each would have compacted the hour again
/// if the first change were not visible to it); what they did.
fn wait_for_compaction_runs(client: &Http, base: &str) -> CompactionRuns {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let jobs = client.call("GET", &format!("{base}/monitoring/storage/jobs"), None).json();
        let ours: Vec<&Value> =
            jobs.as_array().expect("jobs").iter().filter(|j| j["policy"] == COMPACT_POLICY).collect();
        let changed: u64 = ours.iter().map(|j| j["units_changed"].as_u64().unwrap_or(0)).sum();
        let first_change = ours
            .iter()
            .filter(|j| j["units_changed"].as_u64().unwrap_or(0) > 0)
            .filter_map(|j| j["finished_at_ms"].as_i64())
            .min();
        let changed_by: BTreeSet<String> = ours
            .iter()
            .filter(|j| j["units_changed"].as_u64().unwrap_or(0) > 0)
            .filter_map(|j| j["runner"].as_str().map(str::to_string))
            .collect();
        let runners_after: BTreeSet<String> = ours
            .iter()
            .filter(|j| j["state"] == "finished")
            .filter(|j| first_change.is_some_and(|t| j["started_at_ms"].as_i64().is_some_and(|s| s > t)))
            .filter_map(|j| j["runner"].as_str().map(str::to_string))
            .collect();
        if changed > 0 && runners_after.len() >= 2 {
            return CompactionRuns { changed, changed_by, runners_after };
        }
        assert!(Instant::now() < deadline, "the compaction policy never ran to the end: {jobs}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The answers of one replica to the comparison queries: SQL (per partition and per
/// service), the Prometheus labels, a PromQL instant query.
fn replica_answers(client: &Http, base: &str, promql: &str) -> Vec<Value> {
    let sql_answer = |q: &str| json!(sql(client, base, q));
    vec![
        sql_answer(
            "SELECT kafka_partition, COUNT(*), SUM(value), MIN(kafka_offset), MAX(kafka_offset) FROM metrics GROUP BY 1 ORDER BY 1",
        ),
        sql_answer("SELECT name, service, COUNT(*) FROM metrics GROUP BY 1, 2 ORDER BY 1, 2"),
        client.call("GET", &format!("{base}/api/v1/labels"), None).json(),
        client.call("GET", &format!("{base}/api/v1/query?{promql}"), None).json(),
    ]
}
