//! The writer's crash points, without a broker: every test runs writers over one
//! `memory:///` tier with [`FakeKafka`] in place of the consumer and the dead-letter
//! producer, "crashes" a writer by dropping it (or by removing what a crash would not have
//! written), lets a fresh writer take over, and reads the Parquet files back to check that
//! every stored `(partition, offset)` is there exactly once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, Int32Array, Int64Array, RecordBatch};
use callscope_schemas::arrow_schema::SourcedEvent;
use callscope_schemas::rollup::ROLLUP_TABLE;
use callscope_schemas::{Dataset, Event, Metric, MetricKind};
use callscope_storage::{CatalogDir, CatalogKey, CommitLog, Tier, TierConfig, parquet_file};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::{WriterContext, WriterState};
use crate::acks::fakes::{FakeKafka, Told};
use crate::batch::PendingBatch;
use crate::error::PipelineError;
use crate::metrics::PipelineMetrics;
use crate::status::StatusHandle;
use crate::windows::aggregate::AggregationConfig;
use crate::windows::definitions::AggregationShared;

const PARTITION: i32 = 3;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const HOUR_MS: i64 = 3_600_000;

fn memory_tier() -> Tier {
    Tier::open(&TierConfig::new("memory:///")).expect("memory tier")
}

/// A gauge sample per offset; even and odd offsets fall in two different hours, so that
/// every batch writes two data files.
fn sample(offset: i64) -> SourcedEvent {
    let event = Event::Metric(Metric {
        name: "calls_active".into(),
        kind: MetricKind::Gauge,
        value: offset as f64,
        timestamp_ms: T0 + (offset % 2) * HOUR_MS + offset,
        service: "gateway".into(),
        labels: [("region".to_string(), format!("r{}", offset % 3))].into_iter().collect(),
        unit: None,
    });
    SourcedEvent { partition: PARTITION, offset, event }
}

/// What the consume loop would hand over for `offsets`, with `bad` offsets undecodable.
fn batch(offsets: std::ops::RangeInclusive<i64>, bad: &[i64]) -> PendingBatch {
    batch_of(offsets, bad, sample)
}

fn batch_of(offsets: std::ops::RangeInclusive<i64>, bad: &[i64], event: impl Fn(i64) -> SourcedEvent) -> PendingBatch {
    PendingBatch::for_test(offsets, bad, event)
}

/// A writer of `topic`/[`PARTITION`], as a freshly (re)started worker would spawn it.
fn writer(
    tier: &Tier,
    kafka: &Arc<FakeKafka>,
    topic: &str,
    aggregation: Option<Arc<AggregationShared>>,
) -> WriterState {
    let ctx = WriterContext {
        acks: kafka.clone(),
        dead_letters: kafka.clone(),
        log: CommitLog::new(tier.clone()),
        worker_id: format!("worker-{}", Arc::as_ptr(kafka) as usize),
        status: StatusHandle::default(),
        aggregation,
        give_up: tokio_util::sync::CancellationToken::new(),
    };
    WriterState::new(ctx, topic.to_string(), PARTITION, Dataset::Metrics)
}

/// Hands `batch` to the writer and waits until it is done with it (committed, skipped, or
/// given up on); a writer that retries forever fails the test instead of hanging it.
async fn handle(w: &mut WriterState, batch: PendingBatch) {
    tokio::time::timeout(Duration::from_secs(30), w.handle_batch(batch))
        .await
        .expect("the writer kept retrying the batch");
}

/// Shuts the writer down as the consume loop does (channel closed); returns its final
/// commit target.
async fn shut_down(w: WriterState) -> Option<i64> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    drop(sender);
    w.run(receiver).await
}

/// Every `(partition, offset)` in the data files under `prefix`, sorted, duplicates kept.
async fn stored_rows(tier: &Tier, prefix: &str) -> Vec<(i32, i64)> {
    let mut rows = Vec::new();
    for path in tier.list(prefix).await.expect("list") {
        if !path.ends_with(".parquet") {
            continue;
        }
        let bytes = tier.get(&path).await.expect("get");
        for b in parquet_file::decode(bytes).expect("decode") {
            let partitions = column::<Int32Array>(&b, "kafka_partition");
            let offsets = column::<Int64Array>(&b, "kafka_offset");
            rows.extend(partitions.values().iter().copied().zip(offsets.values().iter().copied()));
        }
    }
    rows.sort_unstable();
    rows
}

fn column<'a, T: Array + 'static>(b: &'a RecordBatch, name: &str) -> &'a T {
    b.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<T>()).unwrap_or_else(|| panic!("column {name}"))
}

/// Asserts that the metrics dataset holds exactly the events of `expected` offsets, each once.
async fn assert_stored_exactly(tier: &Tier, expected: impl IntoIterator<Item = i64>) {
    let stored = stored_rows(tier, Dataset::Metrics.name()).await;
    let mut unique = stored.clone();
    unique.dedup();
    assert_eq!(unique.len(), stored.len(), "duplicate rows stored: {stored:?}");
    let expected: Vec<(i32, i64)> = expected.into_iter().map(|o| (PARTITION, o)).collect();
    assert_eq!(stored, expected);
}

/// First offsets of the batch records of `topic`/[`PARTITION`] (records the group's
/// committed offset has passed are pruned, except the newest).
async fn batch_records(tier: &Tier, topic: &str) -> Vec<i64> {
    let dir = CatalogDir::Commits { topic: topic.to_string(), partition: PARTITION }.path();
    tier.list(&dir).await.expect("list").iter().filter_map(|p| CatalogKey::offset_of(p)).collect()
}

fn counter(vec: &prometheus::IntCounterVec, topic: &str) -> u64 {
    vec.with_label_values(&[topic]).get()
}

/// Keys of data files still waiting for their batch record, under the tier.
async fn pending_files(tier: &Tier) -> Vec<String> {
    tier.list("_catalog/pending").await.expect("list")
}

/// Runs `w` on `batch` in a task that stops at `pause`; returns the task and the writer's
/// Kafka view once the pause is reached.
async fn stop_at(
    mut w: WriterState,
    batch: PendingBatch,
    pause: &callscope_storage::Pause,
) -> tokio::task::JoinHandle<WriterState> {
    let task = tokio::spawn(async move {
        w.handle_batch(batch).await;
        w
    });
    tokio::time::timeout(Duration::from_secs(10), pause.wait_until_paused())
        .await
        .expect("the writer reached the pause");
    task
}

/// A crash (the task dropped) after the batch record and before its files are published:
/// the record is the commit, so the next owner publishes the files and skips the replay.
#[tokio::test]
async fn crash_after_the_record_before_publication_is_published_by_the_next_owner() {
    use callscope_storage::{PathMatch, StoreOp};
    let topic = "t.crash-before-publication";
    let (tier, faults) = faulty_tier();
    let old = Arc::new(FakeKafka::unconfirmed());
    let mut a = writer(&tier, &old, topic, None);
    handle(&mut a, batch(0..=9, &[])).await;
    let pause = faults.pause(Some(StoreOp::Rename), PathMatch::prefix(Dataset::Metrics.name()));
    let task = stop_at(a, batch(10..=19, &[]), &pause).await;
    task.abort();
    assert_stored_exactly(&tier, 0..=9).await;
    // The group committed 10, so the new owner re-reads from 10.
    let kafka = Arc::new(FakeKafka::default());
    let mut b = writer(&tier, &kafka, topic, None);
    handle(&mut b, batch(10..=19, &[])).await;
    assert_eq!(counter(&PipelineMetrics::global().published_by_recovery, topic), 1);
    assert_eq!(counter(&PipelineMetrics::global().rollbacks, topic), 0, "nothing committed is rolled back");
    assert_eq!(counter(&PipelineMetrics::global().replay_skipped, topic), 10);
    assert_stored_exactly(&tier, 0..=19).await;
    assert_eq!(kafka.acks(), vec![20]);
    assert!(pending_files(&tier).await.is_empty());
}

/// A crash between the staged files and the batch record: nothing of the batch is
/// visible, the next owner writes it again, and the staged files of the crashed attempt
/// are deleted once a record shows they can never commit.
#[tokio::test]
async fn crash_before_the_record_leaves_nothing_visible() {
    use callscope_storage::{PathMatch, StoreOp};
    let topic = "t.crash-before-record";
    let (tier, faults) = faulty_tier();
    let old = Arc::new(FakeKafka::unconfirmed());
    let mut a = writer(&tier, &old, topic, None);
    handle(&mut a, batch(0..=9, &[])).await;
    let pause = faults.pause(Some(StoreOp::Put), PathMatch::contains("_catalog/commits/"));
    let task = stop_at(a, batch(10..=19, &[]), &pause).await;
    task.abort();
    assert_eq!(pending_files(&tier).await.len(), 2, "the attempt staged its two files");
    assert_stored_exactly(&tier, 0..=9).await;
    let kafka = Arc::new(FakeKafka::default());
    let mut b = writer(&tier, &kafka, topic, None);
    handle(&mut b, batch(10..=19, &[])).await;
    assert_stored_exactly(&tier, 0..=19).await;
    assert_eq!(kafka.acks(), vec![10, 20]);
    // The next recovery sees that 10 was committed by b and deletes a's staged files.
    b.recover_log().await.expect("recover");
    assert!(pending_files(&tier).await.is_empty(), "{:?}", pending_files(&tier).await);
}

/// The zombie of issue 10: a live writer stopped between its batch record and the
/// publication of its files while the new owner recovers. The new owner does not roll the
/// batch back (the old protocol deleted it while its files were still landing); it
/// publishes it, continues after it, and the zombie's late renames find their work done.
#[tokio::test]
async fn a_live_writer_after_its_record_is_completed_not_rolled_back() {
    use callscope_storage::{PathMatch, StoreOp};
    let topic = "t.zombie-after-record";
    let (tier, faults) = faulty_tier();
    let zombie_kafka = Arc::new(FakeKafka::default());
    let mut zombie = writer(&tier, &zombie_kafka, topic, None);
    handle(&mut zombie, batch(0..=9, &[])).await;
    let pause = faults.pause(Some(StoreOp::Rename), PathMatch::prefix(Dataset::Metrics.name()));
    let zombie_task = stop_at(zombie, batch(10..=19, &[]), &pause).await;
    let kafka = Arc::new(FakeKafka::default());
    let mut owner = writer(&tier, &kafka, topic, None);
    handle(&mut owner, batch(10..=19, &[])).await;
    handle(&mut owner, batch(20..=29, &[])).await;
    pause.release();
    let zombie =
        tokio::time::timeout(Duration::from_secs(10), zombie_task).await.expect("zombie finished").expect("join");
    assert!(!zombie.stopped);
    assert_eq!(counter(&PipelineMetrics::global().rollbacks, topic), 0);
    assert_stored_exactly(&tier, 0..=29).await;
    assert_eq!(kafka.acks(), vec![20, 30]);
    assert!(pending_files(&tier).await.is_empty());
}

/// The other half: a live writer stopped between its staged files and its batch record
/// while the new owner commits the same first offset. The zombie's record is refused, it
/// deletes its staged files, and nothing it wrote is ever visible.
#[tokio::test]
async fn a_live_writer_before_its_record_loses_the_race_and_leaves_nothing() {
    use callscope_storage::{PathMatch, StoreOp};
    let topic = "t.zombie-before-record";
    let (tier, faults) = faulty_tier();
    let zombie_kafka = Arc::new(FakeKafka::default());
    let mut zombie = writer(&tier, &zombie_kafka, topic, None);
    handle(&mut zombie, batch(0..=9, &[])).await;
    let pause = faults.pause(Some(StoreOp::Put), PathMatch::contains("_catalog/commits/"));
    let zombie_task = stop_at(zombie, batch(10..=19, &[]), &pause).await;
    let kafka = Arc::new(FakeKafka::default());
    let mut owner = writer(&tier, &kafka, topic, None);
    handle(&mut owner, batch(10..=24, &[])).await;
    pause.release();
    let zombie =
        tokio::time::timeout(Duration::from_secs(10), zombie_task).await.expect("zombie finished").expect("join");
    assert_eq!(counter(&PipelineMetrics::global().fenced, topic), 1);
    assert!(!zombie.stopped, "a range the owner already stored is simply dropped");
    assert_stored_exactly(&tier, 0..=24).await;
    assert_eq!(zombie_kafka.acks(), vec![10], "the zombie acknowledges only its own batch");
    assert!(pending_files(&tier).await.is_empty(), "{:?}", pending_files(&tier).await);
}

#[tokio::test]
async fn crash_before_the_offset_commit_skips_what_is_stored() {
    let topic = "t.crash-before-ack";
    let tier = memory_tier();
    let old = Arc::new(FakeKafka::unconfirmed());
    let mut a = writer(&tier, &old, topic, None);
    handle(&mut a, batch(0..=9, &[4])).await;
    handle(&mut a, batch(10..=19, &[13])).await;
    // Crash: the acknowledgement of 20 never reached the broker, so the group re-reads from
    // 10, and more messages arrived meanwhile.
    drop(a);
    let kafka = Arc::new(FakeKafka::default());
    let mut b = writer(&tier, &kafka, topic, None);
    handle(&mut b, batch(10..=24, &[13, 22])).await;
    assert_eq!(counter(&PipelineMetrics::global().replay_skipped, topic), 10);
    assert_stored_exactly(&tier, (0..=24).filter(|o| ![4, 13, 22].contains(o))).await;
    // The dead letter at 13 was sent with its batch and is not sent again.
    assert_eq!(
        kafka.told(),
        vec![
            Told::Ack { partition: PARTITION, next_offset: 20 },
            Told::DeadLetters { partition: PARTITION, offsets: vec![22] },
            Told::Ack { partition: PARTITION, next_offset: 25 },
        ]
    );
}

#[tokio::test]
async fn a_replayed_batch_that_is_already_stored_writes_nothing_and_is_counted() {
    let topic = "t.replay";
    let tier = memory_tier();
    let old = Arc::new(FakeKafka::unconfirmed());
    let mut a = writer(&tier, &old, topic, None);
    handle(&mut a, batch(0..=9, &[3])).await;
    handle(&mut a, batch(10..=19, &[15])).await;
    drop(a);
    // The group lost every commit (say, a new group id pointing at the same storage).
    let kafka = Arc::new(FakeKafka::default());
    let mut b = writer(&tier, &kafka, topic, None);
    handle(&mut b, batch(0..=9, &[3])).await;
    handle(&mut b, batch(10..=19, &[15])).await;
    assert_eq!(counter(&PipelineMetrics::global().replay_skipped, topic), 20);
    assert_stored_exactly(&tier, (0..=19).filter(|o| ![3, 15].contains(o))).await;
    assert_eq!(batch_records(&tier, topic).await, vec![0, 10], "no batch record for a replay");
    assert_eq!(kafka.told(), vec![Told::Ack { partition: PARTITION, next_offset: 20 }], "no dead letter sent twice");
    assert_eq!(b.durable_last, Some(19));
}

/// A zombie wrote 0..=4, then lost the partition without noticing; the new owner stored
/// 5..=14. Returns the zombie and its Kafka view.
async fn zombie_behind_an_owner(tier: &Tier, topic: &str) -> (WriterState, Arc<FakeKafka>) {
    let zombie_kafka = Arc::new(FakeKafka::default());
    let mut zombie = writer(tier, &zombie_kafka, topic, None);
    handle(&mut zombie, batch(0..=4, &[])).await;
    let kafka = Arc::new(FakeKafka::default());
    let mut owner = writer(tier, &kafka, topic, None);
    handle(&mut owner, batch(5..=14, &[])).await;
    assert_eq!(kafka.acks(), vec![5, 15]);
    (zombie, zombie_kafka)
}

#[tokio::test]
async fn a_zombie_is_fenced_and_its_range_not_duplicated() {
    let topic = "t.zombie";
    let tier = memory_tier();
    let (mut zombie, zombie_kafka) = zombie_behind_an_owner(&tier, topic).await;
    // The zombie's next batch starts where the owner's did.
    handle(&mut zombie, batch(5..=9, &[7])).await;
    assert_eq!(counter(&PipelineMetrics::global().fenced, topic), 1);
    assert!(zombie.stopped, "the owner's newer epoch stops the zombie before it writes anything");
    assert!(zombie_kafka.told().contains(&Told::Paused { partition: PARTITION }));
    assert_stored_exactly(&tier, 0..=14).await;
    // Records stay for the prune grace, so that a frozen writer still collides with them.
    assert_eq!(batch_records(&tier, topic).await, vec![0, 5]);
    assert_eq!(zombie_kafka.acks(), vec![5], "the zombie acknowledges only its own batch");
}

#[tokio::test]
async fn a_zombie_batch_reaching_past_the_owner_stops_the_zombie() {
    let topic = "t.zombie-stops";
    let tier = memory_tier();
    let (mut zombie, zombie_kafka) = zombie_behind_an_owner(&tier, topic).await;
    // Writing 15..=20 after the owner's batch would leave the zombie's files overlapping
    // the owner's next batch: it stops instead.
    handle(&mut zombie, batch(5..=20, &[])).await;
    assert_eq!(counter(&PipelineMetrics::global().fenced, topic), 1);
    assert!(zombie.stopped);
    assert_stored_exactly(&tier, 0..=14).await;
    assert_eq!(batch_records(&tier, topic).await, vec![0, 5]);
    assert_eq!(zombie_kafka.acks(), vec![5]);
}

/// What the storage held when a fake was told something.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    told: Told,
    batch_records: usize,
    stored: Vec<i64>,
}

fn observing_kafka(tier: &Tier, topic: &str) -> (Arc<FakeKafka>, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tier, topic, log) = (tier.clone(), topic.to_string(), seen.clone());
    let kafka = FakeKafka::with_hook(move |told| {
        // The in-memory store answers at once, so a blocking look from the hook is fine.
        let (records, rows) = futures::executor::block_on(async {
            (batch_records(&tier, &topic).await.len(), stored_rows(&tier, Dataset::Metrics.name()).await)
        });
        let stored = rows.into_iter().map(|(_, o)| o).collect();
        log.lock().expect("lock").push(Seen { told: told.clone(), batch_records: records, stored });
    });
    (Arc::new(kafka), seen)
}

#[tokio::test]
async fn dead_letters_go_before_the_batch_and_the_ack_after_it_is_durable() {
    let topic = "t.order";
    let tier = memory_tier();
    let (kafka, seen) = observing_kafka(&tier, topic);
    let mut w = writer(&tier, &kafka, topic, None);
    handle(&mut w, batch(0..=9, &[2, 7])).await;
    // A transient failure of the dead-letter producer holds the batch back, then it goes.
    kafka.fail_next_send(PipelineError::Kafka(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)));
    handle(&mut w, batch(10..=19, &[12])).await;
    assert_eq!(counter(&PipelineMetrics::global().write_retries, topic), 1);
    let events = |range: std::ops::RangeInclusive<i64>| range.filter(|o| ![2, 7, 12].contains(o)).collect::<Vec<_>>();
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![
            Seen {
                told: Told::DeadLetters { partition: PARTITION, offsets: vec![2, 7] },
                batch_records: 0,
                stored: vec![]
            },
            Seen { told: Told::Ack { partition: PARTITION, next_offset: 10 }, batch_records: 1, stored: events(0..=9) },
            Seen {
                told: Told::DeadLetters { partition: PARTITION, offsets: vec![12] },
                batch_records: 1,
                stored: events(0..=9)
            },
            Seen {
                told: Told::Ack { partition: PARTITION, next_offset: 20 },
                batch_records: 2,
                stored: events(0..=19)
            },
        ]
    );
}

#[tokio::test]
async fn a_batch_whose_dead_letters_cannot_be_sent_is_not_committed() {
    let topic = "t.dead-letters-refused";
    let tier = memory_tier();
    let kafka = Arc::new(FakeKafka::default());
    let mut w = writer(&tier, &kafka, topic, None);
    kafka.fail_next_send(PipelineError::Config("no dead-letter topic".into()));
    handle(&mut w, batch(0..=9, &[5])).await;
    assert!(w.stopped, "a permanent failure stops the partition");
    assert_stored_exactly(&tier, []).await;
    assert!(batch_records(&tier, topic).await.is_empty());
    assert_eq!(
        kafka.told(),
        vec![Told::Paused { partition: PARTITION }],
        "nothing is acknowledged, and reading the partition is paused"
    );
    let key = format!("{topic}/{PARTITION}");
    assert!(w.ctx.status.snapshot().stopped[&key].contains("no dead-letter topic"), "the heartbeat says why");
    // Assigned again (after a rebalance), the partition gets another try and succeeds.
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender.send(crate::batch::WriterJob::Assigned).await.expect("send");
    sender.send(crate::batch::WriterJob::Batch(batch(0..=9, &[5]))).await.expect("send");
    drop(sender);
    tokio::time::timeout(Duration::from_secs(30), w.run(receiver)).await.expect("writer finished");
    assert_stored_exactly(&tier, (0..=9).filter(|o| *o != 5)).await;
    assert_eq!(kafka.acks(), vec![10]);
    assert!(kafka.told().contains(&Told::Resumed { partition: PARTITION }), "reading the partition resumes");
}

/// Samples 10 s apart in event time, so that windows close as the batches go on.
fn windowed_sample(offset: i64) -> SourcedEvent {
    let mut e = sample(offset);
    if let Event::Metric(m) = &mut e.event {
        m.timestamp_ms = T0 + offset * 10_000;
    }
    e
}

fn aggregation(tier: &Tier) -> Arc<AggregationShared> {
    let config = AggregationConfig {
        resolutions_ms: vec![10_000, 60_000],
        allowed_lateness_ms: 30_000,
        checkpoint_interval: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(3600),
        ..Default::default()
    };
    Arc::new(AggregationShared::new(config, tier.clone()))
}

/// Every roll-up file, decoded, by path.
async fn rollups(tier: &Tier) -> BTreeMap<String, Vec<RecordBatch>> {
    let mut files = BTreeMap::new();
    for path in tier.list(ROLLUP_TABLE).await.expect("list") {
        let batches = parquet_file::decode(tier.get(&path).await.expect("get")).expect("decode");
        files.insert(path, batches);
    }
    files
}

#[tokio::test]
async fn windowed_partitions_replay_from_the_checkpoint_and_emit_the_same_rollups() {
    let topic = "t.windows";
    let windowed = |range, bad: &[i64]| batch_of(range, bad, windowed_sample);

    // Reference: the same batches, no crash.
    let reference = memory_tier();
    let kafka = Arc::new(FakeKafka::default());
    let mut w = writer(&reference, &kafka, topic, Some(aggregation(&reference)));
    for range in [0..=9, 10..=19, 20..=29] {
        handle(&mut w, windowed(range, &[])).await;
    }
    assert_eq!(shut_down(w).await, Some(29));

    let tier = memory_tier();
    let old = Arc::new(FakeKafka::default());
    let mut a = writer(&tier, &old, topic, Some(aggregation(&tier)));
    handle(&mut a, windowed(0..=9, &[])).await;
    handle(&mut a, windowed(10..=19, &[])).await;
    // The first batch is checkpointed at once; the second waits for the interval, so its
    // offsets are durable but not acknowledged.
    assert_eq!(old.acks(), vec![10]);
    drop(a);
    let kafka = Arc::new(FakeKafka::default());
    let mut b = writer(&tier, &kafka, topic, Some(aggregation(&tier)));
    // The group re-reads from 10: the new owner restores the checkpoint at 9 and replays.
    handle(&mut b, windowed(10..=29, &[])).await;
    assert_eq!(counter(&PipelineMetrics::global().replay_skipped, topic), 10);
    assert_eq!(kafka.acks(), vec![10], "nothing past the restored checkpoint is acknowledged yet");
    assert_eq!(shut_down(b).await, Some(29));
    assert_eq!(kafka.acks(), vec![10, 30], "the final checkpoint is acknowledged");
    assert_stored_exactly(&tier, 0..=29).await;
    let (got, want) = (rollups(&tier).await, rollups(&reference).await);
    assert!(!want.is_empty(), "the reference closed windows");
    let rows = |files: &BTreeMap<String, Vec<RecordBatch>>| -> BTreeMap<String, usize> {
        files.iter().map(|(path, batches)| (path.clone(), batches.iter().map(RecordBatch::num_rows).sum())).collect()
    };
    assert_eq!(rows(&got), rows(&want), "roll-up files and their row counts");
    assert!(got == want, "a replay emits exactly the roll-ups of an uninterrupted run");
}

/// A windowed writer that lost its partition (a newer owner took the next epoch) writes
/// nothing more: no batch, no checkpoint, no roll-up of windows it closes, not even at
/// shutdown.
#[tokio::test]
async fn a_writer_that_lost_its_partition_writes_nothing_more() {
    let topic = "t.lost-partition";
    let windowed = |range, bad: &[i64]| batch_of(range, bad, windowed_sample);
    let tier = memory_tier();
    let zombie_kafka = Arc::new(FakeKafka::default());
    let mut zombie = writer(&tier, &zombie_kafka, topic, Some(aggregation(&tier)));
    handle(&mut zombie, windowed(0..=9, &[])).await;
    handle(&mut zombie, windowed(10..=19, &[])).await;
    let kafka = Arc::new(FakeKafka::default());
    let mut owner = writer(&tier, &kafka, topic, Some(aggregation(&tier)));
    handle(&mut owner, windowed(10..=29, &[])).await;
    let before = tier.list("").await.expect("list");
    zombie.on_quiet().await;
    handle(&mut zombie, windowed(20..=24, &[])).await;
    assert!(zombie.stopped);
    assert_eq!(shut_down(zombie).await, Some(9), "its last checkpoint is where it stopped");
    assert_eq!(tier.list("").await.expect("list"), before, "the zombie changed nothing in storage");
    assert_eq!(shut_down(owner).await, Some(29));
    assert_stored_exactly(&tier, 0..=29).await;
}

/// The ownership check before a write leaves a window: the zombie's check passes (here its
/// HEAD of the newer epoch is made to miss, as a check made just before the takeover
/// would), then it closes its windows as idle and checkpoints them. The new owner's seal
/// makes storage refuse that checkpoint's commit, so the zombie publishes no roll-up of the
/// windows it closed (the new owner closes them once), and the next owner restores the
/// new owner's checkpoint, not the zombie's.
#[tokio::test]
async fn a_zombie_past_its_ownership_check_commits_nothing_and_publishes_no_rollup() {
    use callscope_storage::{Fault, FaultRule, InjectedError, PathMatch, StoreOp};
    let topic = "t.zombie-window";
    let windowed = |range, bad: &[i64]| batch_of(range, bad, windowed_sample);
    let (tier, faults) = faulty_tier();
    let idle_at_once = AggregationConfig {
        resolutions_ms: vec![10_000, 60_000],
        allowed_lateness_ms: 30_000,
        checkpoint_interval: Duration::from_secs(3600),
        idle_timeout: Duration::ZERO,
        ..Default::default()
    };
    let zombie_kafka = Arc::new(FakeKafka::default());
    let mut zombie =
        writer(&tier, &zombie_kafka, topic, Some(Arc::new(AggregationShared::new(idle_at_once, tier.clone()))));
    handle(&mut zombie, windowed(0..=9, &[])).await;
    assert_eq!(zombie_kafka.acks(), vec![10]);
    let kafka = Arc::new(FakeKafka::default());
    let mut owner = writer(&tier, &kafka, topic, Some(aggregation(&tier)));
    handle(&mut owner, windowed(10..=19, &[])).await;
    let published = rollups(&tier).await;
    let missed = faults.add(FaultRule::new(
        Some(StoreOp::Head),
        PathMatch::contains("_catalog/epochs/"),
        Fault::Error(InjectedError::NotFound),
    ));
    zombie.on_quiet().await;
    faults.remove(&missed);
    assert!(missed.fired() > 0, "the zombie's ownership check ran and missed the newer epoch");
    assert!(zombie.stopped, "the refused commit stops the zombie");
    assert_eq!(rollups(&tier).await, published, "the zombie published no roll-up of the windows it closed");
    assert_eq!(shut_down(owner).await, Some(19));
    let next_kafka = Arc::new(FakeKafka::default());
    let mut next = writer(&tier, &next_kafka, topic, Some(aggregation(&tier)));
    next.recover().await.expect("recover");
    assert_eq!(next_kafka.acks(), vec![20], "the next owner restored the owner's checkpoint at 19");
    assert_stored_exactly(&tier, 0..=19).await;
}

/// A writer over a memory tier with a fault injector in front of it.
fn faulty_tier() -> (Tier, callscope_storage::FaultControl) {
    Tier::open_with_faults(&TierConfig::new("memory:///")).expect("memory tier")
}

#[tokio::test]
async fn a_store_without_conditional_put_stops_the_partition_with_its_message() {
    use callscope_storage::{Fault, FaultRule, InjectedError, PathMatch, StoreOp};
    let topic = "t.no-conditional-put";
    let (tier, faults) = faulty_tier();
    faults.add(FaultRule::new(
        Some(StoreOp::Put),
        PathMatch::contains("_catalog/commits/"),
        Fault::Error(InjectedError::NotImplemented),
    ));
    let kafka = Arc::new(FakeKafka::default());
    let mut w = writer(&tier, &kafka, topic, None);
    handle(&mut w, batch(0..=9, &[])).await;
    assert!(w.stopped, "retrying a store that cannot do a create-only PUT would never end");
    assert_eq!(kafka.told(), vec![Told::Paused { partition: PARTITION }]);
    let reason = w.ctx.status.snapshot().stopped[&format!("{topic}/{PARTITION}")].clone();
    assert!(reason.contains("not yet implemented"), "{reason}");
    assert_stored_exactly(&tier, []).await;
}

#[tokio::test]
async fn a_shutdown_during_a_storage_outage_ends_without_acknowledging() {
    use callscope_storage::{Fault, FaultRule, InjectedError, PathMatch, StoreOp};
    let topic = "t.outage-shutdown";
    let (tier, faults) = faulty_tier();
    let outage = faults.add(FaultRule::new(Some(StoreOp::Put), PathMatch::Any, Fault::Error(InjectedError::Transient)));
    let kafka = Arc::new(FakeKafka::default());
    let mut w = writer(&tier, &kafka, topic, None);
    let give_up = w.ctx.give_up.clone();
    let writing = tokio::spawn(async move {
        w.handle_batch(batch(0..=9, &[])).await;
        w
    });
    // Wait until the writer is retrying, then shut down.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while outage.fired() < 2 {
        assert!(std::time::Instant::now() < deadline, "the writer never tried to write");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    give_up.cancel();
    let w = tokio::time::timeout(Duration::from_secs(10), writing)
        .await
        .expect("the writer gave up when told to")
        .expect("writer task");
    assert!(!w.stopped, "giving up at shutdown is not a permanent failure");
    assert!(kafka.acks().is_empty(), "nothing is acknowledged");
    assert_stored_exactly(&tier, []).await;
}

/// A span per offset, three traces, every span in the same hour.
fn span(offset: i64) -> SourcedEvent {
    let event = Event::Span(callscope_schemas::Span {
        trace_id: format!("{:032x}", offset % 3 + 1),
        span_id: format!("{offset:016x}"),
        parent_span_id: None,
        service: "gateway".into(),
        operation: "call".into(),
        kind: callscope_schemas::SpanKind::Server,
        start_time_us: (T0 + offset) * 1000,
        duration_us: 10,
        status: callscope_schemas::SpanStatus::Ok,
        attributes: Default::default(),
        status_message: None,
        resource_attributes: Default::default(),
        events: vec![],
    });
    SourcedEvent { partition: PARTITION, offset, event }
}

/// A span batch commits its trace-index segment with its data files; after the lifecycle
/// removed both (a merge and its garbage collection), the next owner recovers the batch
/// as stored, without calling it corrupt or publishing anything again.
#[tokio::test]
async fn span_batches_commit_their_trace_index_segment() {
    use callscope_storage::trace_index::{TraceIndex, l0_dir};
    let topic = "t.span-index";
    let tier = memory_tier();
    let kafka = Arc::new(FakeKafka::default());
    let mut w = writer(&tier, &kafka, topic, None);
    w.dataset = Dataset::Spans;
    handle(&mut w, batch_of(0..=8, &[], span)).await;
    let segments = tier.list(&l0_dir()).await.expect("list");
    assert_eq!(segments.len(), 1, "{segments:?}");
    let index = TraceIndex::new(tier.clone());
    let located = index.lookup(&format!("{:032x}", 2)).await.expect("lookup").expect("indexed");
    // Trace 2 holds offsets 1, 4 and 7.
    assert_eq!((located.first_start_us, located.last_start_us), ((T0 + 1) * 1000, (T0 + 7) * 1000));
    assert!(index.lookup(&format!("{:032x}", 9)).await.expect("lookup").is_none());
    // The lifecycle removes the published files; a new owner still recovers cleanly.
    for key in tier.list(Dataset::Spans.name()).await.expect("list").into_iter().chain(segments) {
        tier.delete(&key).await.expect("delete");
    }
    let before = counter(&PipelineMetrics::global().published_by_recovery, topic);
    let kafka = Arc::new(FakeKafka::default());
    let mut next = writer(&tier, &kafka, topic, None);
    next.dataset = Dataset::Spans;
    handle(&mut next, batch_of(9..=11, &[], span)).await;
    assert_eq!(counter(&PipelineMetrics::global().published_by_recovery, topic), before);
    assert_eq!(kafka.acks(), vec![9, 12]);
    assert_eq!(tier.list(&l0_dir()).await.expect("list").len(), 1);
}
