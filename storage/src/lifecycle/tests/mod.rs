use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, Float64Array, Int64Array};
use callscope_schemas::arrow_schema::{SourcedEvent, to_record_batch};
use callscope_schemas::{Dataset, Event, Metric, MetricKind};
use datafusion::prelude::SessionContext;

use super::holds::LegalHold;
use super::policy::{Policy, PolicyStep};
use super::*;
use crate::fault_store::{Fault, FaultRule, InjectedError, PathMatch};
use crate::file_catalog::table::{CatalogTable, register_tier_stores};
use crate::file_catalog::{GC_GRACE_MS, generation_of};
use crate::instrumented_store::StoreOp;
use crate::layout::{DataFileKey, HourPartition};
use crate::tier::{Tier, TierConfig};
use crate::tiers::{TierName, Tiers};

const METRICS: DataTable = DataTable::Events(Dataset::Metrics);
/// 2026-01-01T05:00:00Z
const HOUR: i64 = 1_767_243_600_000;

fn sample(series: usize, time_ms: i64, value: f64) -> Event {
    Event::Metric(Metric {
        name: format!("calls_{}", series % 3),
        kind: MetricKind::Gauge,
        value,
        timestamp_ms: time_ms,
        service: format!("svc-{series}"),
        labels: BTreeMap::from([("region".to_string(), format!("r{}", series % 2))]),
        unit: None,
    })
}

/// Writes one hot batch file of `rows` samples (values `first + i`) in the hour starting at
/// `hour_ms`, as a worker would; returns the sum of the values.
pub(super) async fn write_hot(tiers: &Tiers, hour_ms: i64, partition: i32, first: i64, rows: i64) -> f64 {
    let events: Vec<SourcedEvent> = (0..rows)
        .map(|i| SourcedEvent {
            partition,
            offset: first + i,
            event: sample(i as usize % 7, hour_ms + (first + i) * 997 % 3_600_000, (first + i) as f64),
        })
        .collect();
    let batch = to_record_batch(Dataset::Metrics, &events).expect("batch");
    let key = DataFileKey {
        dataset: Dataset::Metrics,
        hour: HourPartition::of_unix_ms(hour_ms),
        topic: "callscope.metrics".into(),
        partition,
        first_offset: first,
        last_offset: first + rows - 1,
    };
    let bytes = crate::parquet_file::encode(&[batch]).expect("encode");
    tiers.hot.put_durable(&key.path(), bytes, false).await.expect("put");
    (first..first + rows).map(|v| v as f64).sum()
}

/// Writes `events` (of one Kafka partition, in offset order) as one hot batch file of the
/// metrics hour starting at `hour_ms`, as a worker would.
pub(super) async fn put_events(tiers: &Tiers, hour_ms: i64, events: &[SourcedEvent]) {
    let key = DataFileKey {
        dataset: Dataset::Metrics,
        hour: HourPartition::of_unix_ms(hour_ms),
        topic: "callscope.metrics".into(),
        partition: events.first().map_or(0, |e| e.partition),
        first_offset: events.first().map_or(0, |e| e.offset),
        last_offset: events.last().map_or(0, |e| e.offset),
    };
    let batch = to_record_batch(Dataset::Metrics, events).expect("batch");
    tiers.hot.put_durable(&key.path(), crate::parquet_file::encode(&[batch]).expect("enc"), false).await.expect("put");
}

/// Row count, value sum and distinct offsets of the metrics table, as a query sees them.
pub(super) async fn totals(tiers: &Tiers) -> (i64, f64, i64) {
    let ctx = SessionContext::new();
    register_tier_stores(ctx.runtime_env().as_ref(), tiers);
    let catalog = FileCatalog::new(tiers.clone());
    ctx.register_table("metrics", Arc::new(CatalogTable::new(catalog, METRICS))).expect("register");
    let batches = ctx
        .sql("SELECT COUNT(*) AS n, SUM(value) AS s, COUNT(DISTINCT (kafka_partition, kafka_offset)) AS d FROM metrics")
        .await
        .expect("sql")
        .collect()
        .await
        .expect("collect");
    let b = &batches[0];
    let n = b.column(0).as_any().downcast_ref::<Int64Array>().expect("n").value(0);
    let s = b.column(1).as_any().downcast_ref::<Float64Array>().expect("s");
    let d = b.column(2).as_any().downcast_ref::<Int64Array>().expect("d").value(0);
    (n, if s.is_null(0) { 0.0 } else { s.value(0) }, d)
}

fn compact_only() -> Policy {
    Policy {
        id: "compact".into(),
        description: String::new(),
        tables: vec!["metrics".into()],
        steps: vec![PolicyStep::Compact { after: "1h".into() }],
        enabled: true,
    }
}

pub(super) async fn run(lifecycle: &Lifecycle, policy: &Policy, now_ms: i64) -> JobRecord {
    let id = Lifecycle::new_job_id(&policy.id, now_ms);
    lifecycle.run(policy, &id, false, now_ms, &mut |_| {}).await.expect("job")
}

pub(super) fn unit(hour_ms: i64) -> String {
    format!("metrics/{}", HourPartition::of_unix_ms(hour_ms).dir())
}

#[tokio::test]
async fn compaction_merges_an_hour_into_one_sorted_file_and_queries_see_every_row_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = Tiers::local(dir.path()).expect("tiers");
    let mut sum = 0.0;
    for p in 0..5 {
        sum += write_hot(&tiers, HOUR, p % 2, i64::from(p) * 100, 100).await;
    }
    // A fresh hour is not due yet.
    let recent = HOUR + 3_600_000;
    write_hot(&tiers, recent, 0, 1000, 10).await;
    let before = totals(&tiers).await;
    assert_eq!(before, (510, sum + (1000..1010).sum::<i64>() as f64, 510));

    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    let now = recent + 5_400_000; // the older hour ended 1.5 h ago, the newer one 30 min ago
    let job = run(&lifecycle, &compact_only(), now).await;
    assert_eq!(job.state, jobs::JobState::Finished, "{job:?}");
    assert_eq!((job.units_changed, job.files_replaced, job.rows), (1, 5, 500), "{job:?}");
    assert_eq!(totals(&tiers).await, before, "the same rows, once each");

    let snapshot = lifecycle.catalog().unit_snapshot(&unit(HOUR)).await.expect("snapshot");
    assert!(snapshot.fresh_hot.is_empty());
    let manifest = snapshot.manifest.expect("manifest");
    assert_eq!(manifest.files.len(), 1);
    let file = &manifest.files[0];
    assert_eq!((file.tier, file.rows, file.series), (TierName::Warm, 500, 7));
    assert!(file.min_time_ms >= HOUR);
    assert!(file.max_time_ms < HOUR + 3_600_000);

    // The compacted file: zstd, sorted by series then time, bloom filter on the name.
    let bytes = tiers.warm.get(&file.key).await.expect("get");
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(bytes.clone()).expect("reader");
    use parquet::file::reader::FileReader;
    let meta = reader.metadata();
    let row_group = meta.row_group(0);
    let name_column = row_group.columns().iter().find(|c| c.column_path().string() == "name").expect("name");
    assert!(matches!(name_column.compression(), parquet::basic::Compression::ZSTD(_)));
    assert!(name_column.bloom_filter_offset().is_some(), "bloom filter on name");
    assert!(row_group.sorting_columns().is_some_and(|s| !s.is_empty()));
    let rows = crate::parquet_file::decode(bytes).expect("decode");
    let names: Vec<String> = rows
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name("name").expect("name");
            let a = a.as_any().downcast_ref::<arrow::array::StringArray>().expect("str");
            (0..a.len()).map(|i| a.value(i).to_string()).collect::<Vec<_>>()
        })
        .collect();
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "sorted by metric name");

    // Hot files stay (invisible) through the grace, then go; the answer never changes.
    assert_eq!(tiers.hot.list("metrics/date=2026-01-01/hour=05/").await.expect("list").len(), 5);
    let later = run(&lifecycle, &compact_only(), now + GC_GRACE_MS).await;
    assert_eq!(later.files_deleted, 5, "{later:?}");
    assert!(tiers.hot.list("metrics/date=2026-01-01/hour=05/").await.expect("list").is_empty());
    assert_eq!(totals(&tiers).await, before);
}

#[tokio::test]
async fn late_data_into_a_compacted_hour_is_merged_not_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = Tiers::local(dir.path()).expect("tiers");
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    for p in 0..3 {
        write_hot(&tiers, HOUR, 0, p * 5000, 5000).await;
    }
    let now = HOUR + 3 * 3_600_000;
    run(&lifecycle, &compact_only(), now).await;
    // A few late rows: one more sorted file beside the first.
    write_hot(&tiers, HOUR, 1, 0, 20).await;
    let expected = totals(&tiers).await;
    assert_eq!(expected.0, 15_020);
    let job = run(&lifecycle, &compact_only(), now + 1).await;
    assert_eq!(job.units_changed, 1);
    let manifest = lifecycle.catalog().unit_snapshot(&unit(HOUR)).await.expect("s").manifest.expect("manifest");
    assert_eq!((manifest.generation, manifest.files.len()), (2, 2), "appended");
    assert_eq!(totals(&tiers).await, expected);
    // A large late batch: the whole hour is merged again into one file.
    write_hot(&tiers, HOUR, 1, 20, 20_000).await;
    let expected = totals(&tiers).await;
    run(&lifecycle, &compact_only(), now + 2).await;
    let manifest = lifecycle.catalog().unit_snapshot(&unit(HOUR)).await.expect("s").manifest.expect("manifest");
    assert_eq!((manifest.generation, manifest.files.len()), (3, 1), "merged whole");
    assert_eq!(manifest.superseded.len(), 2);
    assert_eq!(totals(&tiers).await, expected);
    // After the grace only the newest file is left in warm.
    run(&lifecycle, &compact_only(), now + 2 + GC_GRACE_MS).await;
    let warm = tiers.warm.list(&unit(HOUR)).await.expect("list");
    assert_eq!(warm, vec![manifest.files[0].key.clone()]);
    assert_eq!(totals(&tiers).await, expected);
}

#[tokio::test]
async fn a_failed_commit_leaves_the_old_state_and_a_rerun_finishes() {
    let dir = tempfile::tempdir().expect("tmp");
    let open = |name: &str| Tier::open(&TierConfig::local_dir(&dir.path().join(name)).expect("dir")).expect("tier");
    let (hot, faults) =
        Tier::open_with_faults(&TierConfig::local_dir(&dir.path().join("hot")).expect("dir")).expect("hot");
    let tiers = Tiers { hot, warm: open("warm"), cold: open("cold"), archive: open("archive") };
    for p in 0..4 {
        write_hot(&tiers, HOUR, 0, p * 50, 50).await;
    }
    let expected = totals(&tiers).await;
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    // The manifest PUT fails as if the process died at the commit point.
    let rule = faults.add(
        FaultRule::new(
            Some(StoreOp::Put),
            PathMatch::contains("_catalog/manifests/"),
            Fault::Error(InjectedError::Transient),
        )
        .once(),
    );
    let now = HOUR + 3 * 3_600_000;
    let failed = run(&lifecycle, &compact_only(), now).await;
    assert_eq!(rule.fired(), 1);
    assert_eq!(failed.state, jobs::JobState::FinishedWithErrors);
    assert!(failed.errors[0].contains("injected fault"), "{:?}", failed.errors);
    assert_eq!(totals(&tiers).await, expected, "the old state, whole");
    let orphans = tiers.warm.list(&unit(HOUR)).await.expect("list");
    assert_eq!(orphans.len(), 1, "the dead step's file is left behind, invisible");

    let rerun = run(&lifecycle, &compact_only(), now + 1).await;
    assert_eq!((rerun.state, rerun.units_changed), (jobs::JobState::Finished, 1));
    assert_eq!(totals(&tiers).await, expected);
    // The orphan (generation 1, never committed) goes with the garbage.
    let final_gc = run(&lifecycle, &compact_only(), now + 1 + GC_GRACE_MS).await;
    assert!(final_gc.files_deleted >= 5, "{final_gc:?}");
    let warm = tiers.warm.list(&unit(HOUR)).await.expect("list");
    let manifest = lifecycle.catalog().unit_snapshot(&unit(HOUR)).await.expect("s").manifest.expect("manifest");
    assert_eq!(warm, vec![manifest.files[0].key.clone()]);
    assert_ne!(warm, orphans);
    assert_eq!(generation_of(&warm[0]), Some(1), "the rerun committed the generation the dead step could not");
    assert_eq!(totals(&tiers).await, expected);
}

#[tokio::test]
async fn queries_during_compaction_and_collection_always_see_the_same_answer() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = Tiers::local(dir.path()).expect("tiers");
    for h in 0..3 {
        for p in 0..6 {
            write_hot(&tiers, HOUR + h * 3_600_000, p % 3, i64::from(p) * 200, 200).await;
        }
    }
    let expected = totals(&tiers).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (tiers, stop) = (tiers.clone(), stop.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                answers.push(totals(&tiers).await);
            }
            answers
        })
    };
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    let now = HOUR + 10 * 3_600_000;
    run(&lifecycle, &compact_only(), now).await;
    run(&lifecycle, &compact_only(), now + GC_GRACE_MS).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers = reader.await.expect("reader");
    assert!(answers.len() >= 2, "the reader ran during the job ({} answers)", answers.len());
    assert!(answers.iter().all(|a| *a == expected), "every answer {expected:?}: {answers:?}");
    assert!(tiers.hot.list("metrics/").await.expect("list").is_empty(), "every hot file was replaced and collected");
}

#[tokio::test]
async fn retention_deletes_only_what_no_hold_keeps_and_logs_every_deletion() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = Tiers::local(dir.path()).expect("tiers");
    let (a, b) = (HOUR, HOUR + 3_600_000);
    write_hot(&tiers, a, 0, 0, 10).await;
    let kept = write_hot(&tiers, b, 0, 10, 10).await;
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    lifecycle.holds().put(&hold("case-1", "metrics", b)).await.expect("hold");
    let policy = Policy {
        id: "short".into(),
        description: String::new(),
        tables: vec![],
        steps: vec![PolicyStep::Compact { after: "1h".into() }, PolicyStep::Delete { after: "1d".into() }],
        enabled: true,
    };
    let now = b + 2 * 86_400_000;
    let dry = lifecycle.run(&policy, "dry", true, now, &mut |_| {}).await.expect("dry run");
    assert_eq!((dry.units_changed, dry.units_held), (1, 1));
    assert_eq!(totals(&tiers).await.0, 20, "a dry run changes nothing");

    let job = run(&lifecycle, &policy, now).await;
    assert_eq!((job.units_changed, job.units_held), (1, 1), "{job:?}");
    assert_eq!(totals(&tiers).await, (10, kept, 10), "only the held hour is left");
    let log = tiers.hot.list("_catalog/lifecycle/deletions/").await.expect("log");
    assert_eq!(log.len(), 1);
    let record: retention::DeletionRecord =
        serde_json::from_slice(&tiers.hot.get(&log[0]).await.expect("get")).expect("json");
    assert_eq!((record.unit.as_str(), record.policy.as_str()), (unit(a).as_str(), "short"));
    assert!(record.reason.contains("after 1d"), "{}", record.reason);
    assert_eq!(record.files.len(), 1);

    // Released, the hold no longer keeps the hour.
    lifecycle.holds().release("case-1", now).await.expect("release").expect("found");
    let job = run(&lifecycle, &policy, now + 1).await;
    assert_eq!(job.units_changed, 1);
    assert_eq!(totals(&tiers).await, (0, 0.0, 0));
    run(&lifecycle, &policy, now + 1 + GC_GRACE_MS).await;
    assert!(tiers.hot.list("metrics/").await.expect("list").is_empty(), "deleted files are gone after the grace");
}

/// A legal hold on `table` over the hour of `at`.
pub(super) fn hold(id: &str, table: &str, at: i64) -> LegalHold {
    LegalHold {
        id: id.into(),
        tables: vec![table.into()],
        start_ms: Some(at),
        end_ms: Some(at + 1),
        labels: BTreeMap::new(),
        reason: "audit".into(),
        created_at_ms: 0,
        released_at_ms: None,
    }
}

pub(super) fn policy(id: &str, steps: Vec<PolicyStep>) -> Policy {
    Policy { id: id.into(), description: String::new(), tables: vec!["metrics".into()], steps, enabled: true }
}

pub(super) fn file_meta(bytes: bytes::Bytes) -> parquet::file::metadata::ParquetMetaData {
    use parquet::file::reader::FileReader;
    parquet::file::serialized_reader::SerializedFileReader::new(bytes).expect("reader").metadata().clone()
}

#[tokio::test]
async fn cold_files_hold_exact_decimals_in_fewer_bytes_and_read_back_the_same_values() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = Tiers::local(dir.path()).expect("tiers");
    for p in 0..4 {
        write_hot(&tiers, HOUR, p % 2, i64::from(p) * 5000, 5000).await;
    }
    let expected = totals(&tiers).await;
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    let steps = vec![PolicyStep::Compact { after: "1h".into() }, PolicyStep::Cold { after: "1d".into() }];
    let tiered = policy("tiered", steps);
    run(&lifecycle, &tiered, HOUR + 3 * 3_600_000).await;
    let warm = lifecycle.catalog().unit_snapshot(&unit(HOUR)).await.expect("s").manifest.expect("m");
    assert_eq!(warm.files[0].tier, TierName::Warm);
    let job = run(&lifecycle, &tiered, HOUR + 2 * 86_400_000).await;
    assert_eq!((job.units_changed, job.errors.len()), (1, 0), "{job:?}");
    let cold = lifecycle.catalog().unit_snapshot(&unit(HOUR)).await.expect("s").manifest.expect("m");
    assert_eq!((cold.step.as_str(), cold.files.len(), cold.files[0].tier), ("cold", 1, TierName::Cold));
    assert!(
        cold.files[0].bytes < warm.files[0].bytes,
        "cold {} bytes < warm {} bytes",
        cold.files[0].bytes,
        warm.files[0].bytes
    );
    let meta = file_meta(tiers.cold.get(&cold.files[0].key).await.expect("get"));
    let value =
        meta.file_metadata().schema_descr().columns().iter().find(|c| c.name() == "value").cloned().expect("value");
    assert_eq!(value.physical_type(), parquet::basic::Type::INT64, "an exact decimal, not a double");
    assert_eq!(totals(&tiers).await, expected, "the same values, bit for bit in the sum");
    // Settled: a second run has nothing to do.
    assert_eq!(run(&lifecycle, &tiered, HOUR + 2 * 86_400_000 + 1).await.units_changed, 0);
}

/// Data pages per column chunk of every row group of a file, from its offset index.
fn pages_per_chunk(bytes: bytes::Bytes) -> Vec<usize> {
    use parquet::file::reader::FileReader;
    let options = parquet::file::serialized_reader::ReadOptionsBuilder::new().with_page_index().build();
    let reader = parquet::file::serialized_reader::SerializedFileReader::new_with_options(bytes, options).expect("r");
    let index = reader.metadata().offset_index().expect("an offset index");
    index.iter().flatten().map(|chunk| chunk.page_locations().len()).collect()
}

#[tokio::test]
async fn cold_and_archive_files_hold_one_page_per_column_chunk() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = Tiers::local(dir.path()).expect("tiers");
    // More rows than a page of warm files holds (20 000).
    write_hot(&tiers, HOUR, 0, 0, 50_000).await;
    let expected = totals(&tiers).await;
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    let steps = vec![PolicyStep::Cold { after: "1h".into() }, PolicyStep::Archive { after: "30d".into() }];
    let tiered = policy("tiered", steps);
    for (now, tier) in [(HOUR + 86_400_000, TierName::Cold), (HOUR + 40 * 86_400_000, TierName::Archive)] {
        let job = run(&lifecycle, &tiered, now).await;
        assert_eq!((job.units_changed, job.errors.len()), (1, 0), "{job:?}");
        let manifest = lifecycle.catalog().unit_snapshot(&unit(HOUR)).await.expect("s").manifest.expect("m");
        for file in &manifest.files {
            assert_eq!(file.tier, tier);
            let pages = pages_per_chunk(tiers.get(tier).get(&file.key).await.expect("get"));
            assert!(!pages.is_empty() && pages.iter().all(|&n| n == 1), "{tier}: pages per chunk {pages:?}");
        }
        assert_eq!(totals(&tiers).await, expected, "{tier}: the same rows and values");
    }
}

#[tokio::test]
async fn archive_files_are_plain_hive_partitioned_parquet() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = Tiers::local(dir.path()).expect("tiers");
    for p in 0..3 {
        write_hot(&tiers, HOUR, 0, p * 100, 100).await;
    }
    let expected = totals(&tiers).await;
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    let archive = policy("archive", vec![PolicyStep::Archive { after: "1d".into() }]);
    let job = run(&lifecycle, &archive, HOUR + 2 * 86_400_000).await;
    assert_eq!((job.units_changed, job.files_replaced), (1, 3), "{job:?}");
    let files = tiers.archive.list("metrics/").await.expect("list");
    assert_eq!(files.len(), 1);
    assert!(files[0].starts_with("metrics/date=2026-01-01/hour=05/g000001-"), "{files:?}");
    let meta = file_meta(tiers.archive.get(&files[0]).await.expect("get"));
    let column = meta.row_group(0).column(0);
    // (The footer names the codec, not its level.)
    assert!(matches!(column.compression(), parquet::basic::Compression::ZSTD(_)));
    assert_eq!(totals(&tiers).await, expected);
}

#[tokio::test]
async fn late_data_into_an_archived_hour_adds_an_archive_file_and_replaces_none() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = Tiers::local(dir.path()).expect("tiers");
    for p in 0..3 {
        write_hot(&tiers, HOUR, 0, p * 100, 100).await;
    }
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    let archive = policy("archive", vec![PolicyStep::Archive { after: "1d".into() }]);
    let now = HOUR + 2 * 86_400_000;
    run(&lifecycle, &archive, now).await;
    let archived = tiers.archive.list("metrics/").await.expect("list");
    assert_eq!(archived.len(), 1);
    // Late rows (an import of history): the archive gains a file; the archived one stays,
    // so a glob over the archive reads every row once at every moment, grace or not.
    write_hot(&tiers, HOUR, 1, 0, 40).await;
    let expected = totals(&tiers).await;
    assert_eq!(expected.0, 340);
    let job = run(&lifecycle, &archive, now + 1).await;
    assert_eq!((job.units_changed, job.files_replaced), (1, 1), "{job:?}");
    let manifest = lifecycle.catalog().unit_snapshot(&unit(HOUR)).await.expect("s").manifest.expect("manifest");
    assert!(manifest.superseded.is_empty(), "{:?}", manifest.superseded);
    let named: Vec<String> = manifest.files.iter().map(|f| f.key.clone()).collect();
    assert_eq!(named.len(), 2);
    assert_eq!(named[0], archived[0], "the archived file is kept");
    let mut listed = tiers.archive.list("metrics/").await.expect("list");
    listed.sort();
    let mut named_sorted = named.clone();
    named_sorted.sort();
    assert_eq!(listed, named_sorted, "the archive holds exactly the files the catalog names");
    assert_eq!(totals(&tiers).await, expected);
}

#[tokio::test]
async fn cold_files_group_series_by_the_scale_their_values_need() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = Tiers::local(dir.path()).expect("tiers");
    // Series 0..7: integers for even series, two decimals for odd ones, one NaN series.
    let events: Vec<SourcedEvent> = (0..7000i64)
        .map(|i| {
            let series = (i % 7) as usize;
            let value = match series {
                6 => f64::NAN,
                s if s % 2 == 0 => i as f64,
                _ => (i as f64) / 100.0,
            };
            SourcedEvent { partition: 0, offset: i, event: sample(series, HOUR + i * 500, value) }
        })
        .collect();
    put_events(&tiers, HOUR, &events).await;
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    let job = run(&lifecycle, &policy("cold", vec![PolicyStep::Cold { after: "1h".into() }]), HOUR + 86_400_000).await;
    assert_eq!(job.errors, Vec::<String>::new());
    let manifest = lifecycle.catalog().unit_snapshot(&unit(HOUR)).await.expect("s").manifest.expect("m");
    let mut kinds = Vec::new();
    for file in &manifest.files {
        let meta = file_meta(tiers.cold.get(&file.key).await.expect("get"));
        let value =
            meta.file_metadata().schema_descr().columns().iter().find(|c| c.name() == "value").cloned().expect("v");
        kinds.push((value.physical_type(), value.logical_type_ref().cloned(), file.series));
    }
    kinds.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(kinds.len(), 3, "integers, two-digit decimals, doubles: {kinds:?}");
    assert_eq!(kinds.iter().map(|k| k.2).sum::<u64>(), 7, "every series in one file: {kinds:?}");
    // Every value reads back bit for bit (NaN included).
    let ctx = SessionContext::new();
    register_tier_stores(ctx.runtime_env().as_ref(), &tiers);
    ctx.register_table("metrics", Arc::new(CatalogTable::new(FileCatalog::new(tiers.clone()), METRICS))).expect("r");
    let batches = ctx
        .sql("SELECT kafka_offset, value FROM metrics ORDER BY kafka_offset")
        .await
        .expect("sql")
        .collect()
        .await
        .expect("c");
    let mut n = 0;
    for b in &batches {
        let offsets = b.column(0).as_any().downcast_ref::<Int64Array>().expect("i64");
        let values = b.column(1).as_any().downcast_ref::<Float64Array>().expect("f64");
        for i in 0..b.num_rows() {
            let Event::Metric(m) = &events[offsets.value(i) as usize].event else { panic!("metric") };
            assert_eq!(values.value(i).to_bits(), m.value.to_bits(), "offset {}", offsets.value(i));
            n += 1;
        }
    }
    assert_eq!(n, 7000);
}

mod day_files;
mod faults;
mod rollups;
mod sparse;
