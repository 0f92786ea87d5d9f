//! Roll-up table-hours: folding when compacted, downsampling.

use callscope_schemas::rollup::{Partial, RollupRow, SeriesKey, rollups_to_record_batch};

use std::collections::BTreeSet;

use super::*;
use crate::file_catalog::TimeRange;
use crate::layout::{RollupFileKey, RollupSource};

/// A 1-minute roll-up row of one series in `HOUR`, over `values` sampled at its start.
pub(super) fn row(series: &Arc<SeriesKey>, minute: i64, values: &[f64], late: bool) -> RollupRow {
    let mut partial = Partial::empty(series.kind);
    for (i, v) in values.iter().enumerate() {
        partial.add(*v, HOUR + minute * 60_000 + i as i64);
    }
    RollupRow {
        resolution_ms: 60_000,
        window_start_ms: HOUR + minute * 60_000,
        series: series.clone(),
        partial,
        partition: 0,
        late,
    }
}

pub(super) fn series(name: &str, kind: MetricKind) -> Arc<SeriesKey> {
    Arc::new(SeriesKey { name: name.into(), service: "svc".into(), labels: BTreeMap::new(), kind, unit: None })
}

/// Writes rows as one roll-up file of a batch at `first` (the workers' naming).
pub(super) async fn put_rollups(tiers: &Tiers, rows: &[RollupRow], first: i64) {
    let key = RollupFileKey {
        resolution_ms: 60_000,
        hour: HourPartition::of_unix_ms(HOUR),
        topic: "callscope.metrics".into(),
        partition: 0,
        source: RollupSource::Batch { first_offset: first, last_offset: first + 99 },
    };
    let bytes = crate::parquet_file::encode(&[rollups_to_record_batch(rows.iter()).expect("batch")]).expect("encode");
    tiers.hot.put_durable(&key.path(), bytes, false).await.expect("put");
}

/// A roll-up policy: compact after 1 h, downsample 1-minute roll-ups to `to` after 2 h,
/// deleting them after `delete_source_after`.
fn compact_and_downsample(to: &[&str], delete_source_after: Option<&str>) -> Policy {
    let steps = vec![
        PolicyStep::Compact { after: "1h".into() },
        PolicyStep::Downsample {
            after: "2h".into(),
            from: "1m".into(),
            to: to.iter().map(|t| t.to_string()).collect(),
            delete_source_after: delete_source_after.map(String::from),
            drop_sparse_below: None,
        },
    ];
    Policy { tables: vec!["metric_rollups".into()], ..policy("down", steps) }
}

/// Runs the cold step on the 1-minute roll-ups of `HOUR`; returns the hour's manifest.
async fn go_cold(tiers: &Tiers) -> Arc<crate::file_catalog::Manifest> {
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    let cold = Policy {
        tables: vec!["metric_rollups".into()],
        ..policy("cold", vec![PolicyStep::Cold { after: "1h".into() }])
    };
    let job = run(&lifecycle, &cold, HOUR + 86_400_000).await;
    assert_eq!((job.units_changed, job.errors.len()), (1, 0), "{job:?}");
    let unit = format!("metric_rollups/resolution=1m/{}", HourPartition::of_unix_ms(HOUR).dir());
    lifecycle.catalog().unit_snapshot(&unit).await.expect("s").manifest.expect("m")
}

/// The metric_rollups table as a query sees it.
pub(super) async fn rollups_sql(tiers: &Tiers, query: &str) -> Vec<arrow::array::RecordBatch> {
    let ctx = SessionContext::new();
    register_tier_stores(ctx.runtime_env().as_ref(), tiers);
    let table = CatalogTable::new(FileCatalog::new(tiers.clone()), DataTable::Rollups);
    ctx.register_table("metric_rollups", Arc::new(table)).expect("register");
    ctx.sql(query).await.expect("sql").collect().await.expect("collect")
}

#[tokio::test]
async fn compacting_roll_ups_folds_late_corrections_into_their_windows() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = Tiers::local(dir.path()).expect("tiers");
    let calls = series("calls_total", MetricKind::Counter);
    // Each minute's window, then a late correction for every other minute, in a second batch.
    let on_time: Vec<RollupRow> = (0..60).map(|m| row(&calls, m, &[1.0], false)).collect();
    let late: Vec<RollupRow> = (0..60).step_by(2).map(|m| row(&calls, m, &[2.0], true)).collect();
    put_rollups(&tiers, &on_time, 0).await;
    put_rollups(&tiers, &late, 100).await;
    let query = "SELECT COUNT(*), SUM(count), CAST(SUM(sum) AS BIGINT), SUM(CAST(late AS BIGINT)) FROM metric_rollups";
    let answer = |tiers: Tiers| async move {
        let batches = rollups_sql(&tiers, query).await;
        (0..4)
            .map(|i| batches[0].column(i).as_any().downcast_ref::<Int64Array>().expect("i64").value(0))
            .collect::<Vec<i64>>()
    };
    // Rows, samples, their sum, late rows.
    assert_eq!(answer(tiers.clone()).await, vec![90, 90, 120, 30]);
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    let policy = Policy {
        id: "rollups".into(),
        description: String::new(),
        tables: vec!["metric_rollups".into()],
        steps: vec![PolicyStep::Compact { after: "1h".into() }],
        enabled: true,
    };
    let job = run(&lifecycle, &policy, HOUR + 3 * 3_600_000).await;
    assert_eq!((job.units_changed, job.rows), (1, 60), "{job:?}");
    assert_eq!(answer(tiers.clone()).await, vec![60, 90, 120, 0], "one row per window, the same samples and sum");
}

#[tokio::test]
async fn downsampling_merges_windows_into_coarser_resolutions_and_follows_its_source() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = Tiers::local(dir.path()).expect("tiers");
    let latency = series("asr_latency_ms", MetricKind::Histogram);
    let rows = |minutes: std::ops::Range<i64>| -> Vec<RollupRow> {
        minutes.map(|m| row(&latency, m, &(0..4).map(|i| (m * 4 + i) as f64).collect::<Vec<_>>(), false)).collect()
    };
    put_rollups(&tiers, &rows(0..60), 0).await;
    let query = "SELECT resolution, COUNT(*), SUM(count), CAST(SUM(sum) AS BIGINT), MIN(window_start_ms) % 300000 \
                 FROM metric_rollups GROUP BY resolution ORDER BY resolution";
    let answer = |tiers: Tiers| async move {
        let batches = rollups_sql(&tiers, query).await;
        arrow::util::pretty::pretty_format_batches(&batches).expect("fmt").to_string()
    };
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    let policy = compact_and_downsample(&["5m", "1h"], None);
    let now = HOUR + 5 * 3_600_000;
    let job = run(&lifecycle, &policy, now).await;
    assert_eq!(job.errors, Vec::<String>::new());
    // 240 samples summing to 0 + 1 + … + 239 = 28 680, at every resolution.
    let got = answer(tiers.clone()).await;
    assert!(got.lines().count() > 4, "{got}");
    let rows_of = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| l.starts_with("| ") && !l.contains("resolution"))
            .map(|l| l.split('|').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect())
            .collect()
    };
    assert_eq!(
        rows_of(&got),
        vec![
            vec!["1h".to_string(), "1".into(), "240".into(), "28680".into(), "0".into()],
            vec!["1m".to_string(), "60".into(), "240".into(), "28680".into(), "0".into()],
            vec!["5m".to_string(), "12".into(), "240".into(), "28680".into(), "0".into()],
        ],
        "{got}"
    );
    // What the cost projection reads: the source's bytes by resolution, and the coarse
    // hours' bytes against their source's.
    let ingest = crate::usage::ingest_last_day(lifecycle.catalog(), now).await.expect("ingest");
    assert_eq!(ingest.rollup_bytes.keys().copied().collect::<Vec<_>>(), vec![60_000], "{ingest:?}");
    assert_eq!(ingest.downsampled_ratio.keys().copied().collect::<Vec<_>>(), vec![300_000, 3_600_000]);
    assert!(ingest.downsampled_ratio.values().all(|r| *r > 0.0), "{ingest:?}");
    // Unchanged source: nothing to do. Late data in the source: downsampled again.
    assert_eq!(run(&lifecycle, &policy, now + 1).await.units_changed, 0);
    put_rollups(&tiers, &rows(0..1), 100).await;
    let job = run(&lifecycle, &policy, now + 2).await;
    assert!(job.units_changed >= 2, "{job:?}");
    let got = answer(tiers.clone()).await;
    assert!(rows_of(&got).iter().all(|r| r[2] == "244"), "{got}");
}

#[tokio::test]
async fn roll_up_sums_of_decimal_samples_are_exact_decimals_stored_as_such_in_cold() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = Tiers::local(dir.path()).expect("tiers");
    let ratio = series("answer_ratio", MetricKind::Gauge);
    // Four two-digit values a minute; added as floats, many of their sums are not two-digit
    // decimals (0.1 + 0.2 is 0.30000000000000004).
    let cents = |m: i64, i: i64| (m * 37 + i * 11) % 100 + 1;
    let values = |m: i64| (0..4).map(|i| cents(m, i) as f64 / 100.0).collect::<Vec<f64>>();
    let exact = |m: i64| (0..4).map(|i| cents(m, i)).sum::<i64>() as f64 / 100.0;
    let float_sums_off = (0..60).filter(|&m| values(m).iter().sum::<f64>() != exact(m)).count();
    assert!(float_sums_off > 10, "the values must exercise inexact float sums ({float_sums_off})");
    let rows: Vec<RollupRow> = (0..60).map(|m| row(&ratio, m, &values(m), false)).collect();
    put_rollups(&tiers, &rows, 0).await;
    let manifest = go_cold(&tiers).await;
    assert_eq!((manifest.files.len(), manifest.files[0].tier), (1, TierName::Cold));
    let meta = file_meta(tiers.cold.get(&manifest.files[0].key).await.expect("get"));
    let sum = meta.file_metadata().schema_descr().columns().iter().find(|c| c.name() == "sum").cloned().expect("sum");
    assert_eq!(sum.physical_type(), parquet::basic::Type::INT64, "sums stored as exact decimals");
    let batches = rollups_sql(&tiers, "SELECT sum FROM metric_rollups ORDER BY window_start_ms").await;
    let sums: Vec<u64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_any().downcast_ref::<Float64Array>().expect("f64").values().to_vec())
        .map(f64::to_bits)
        .collect();
    assert_eq!(sums, (0..60).map(|m| exact(m).to_bits()).collect::<Vec<_>>(), "each sum the exact decimal");
}

/// `delete_source_after`: the 1-minute hour is deleted once that old, only after its
/// downsampled hours are written (a cold tier that refuses writes keeps it), never while a
/// legal hold covers it, and the deletion is logged and known to the catalog.
#[tokio::test]
async fn downsampled_source_hours_are_deleted_once_downsampled_and_never_when_held() {
    let dir = tempfile::tempdir().expect("tmp");
    let local = Tiers::local(dir.path()).expect("tiers");
    let (cold, cold_faults) =
        Tier::open_with_faults(&TierConfig::local_dir(&dir.path().join("cold")).expect("dir")).expect("cold");
    let tiers = Tiers { cold, ..local };
    let latency = series("asr_latency_ms", MetricKind::Histogram);
    let rows: Vec<RollupRow> =
        (0..60).map(|m| row(&latency, m, &(0..4).map(|i| (m * 4 + i) as f64).collect::<Vec<_>>(), false)).collect();
    put_rollups(&tiers, &rows, 0).await;
    let by_resolution = "SELECT resolution, SUM(count), CAST(SUM(sum) AS BIGINT) FROM metric_rollups \
                         GROUP BY resolution ORDER BY resolution";
    // (resolution, samples, their sum) per resolution.
    let answer = |tiers: Tiers| async move {
        let mut out = Vec::new();
        for batch in rollups_sql(&tiers, by_resolution).await {
            let labels = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).expect("cast");
            let labels = labels.as_any().downcast_ref::<arrow::array::StringArray>().expect("utf8");
            let i64s = |c: usize| batch.column(c).as_any().downcast_ref::<Int64Array>().expect("i64").clone();
            let (counts, sums) = (i64s(1), i64s(2));
            for i in 0..batch.num_rows() {
                out.push((labels.value(i).to_string(), counts.value(i), sums.value(i)));
            }
        }
        out
    };
    let at = |r: &str| (r.to_string(), 240, 28_680);
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    let policy = compact_and_downsample(&["5m"], Some("1d"));
    let source = format!("metric_rollups/resolution=1m/{}", HourPartition::of_unix_ms(HOUR).dir());
    let deleted = || async {
        let range = TimeRange::new(HOUR, HOUR + 3_600_000);
        lifecycle.catalog().rollup_gaps(60_000, range).await.expect("gaps").hours_without("calls_total")
    };

    // Past its age in the first run, but the downsampled hour cannot be written: kept.
    let now = HOUR + 2 * 86_400_000;
    let refuse = cold_faults.add(FaultRule::new(
        Some(StoreOp::Put),
        PathMatch::contains("resolution=5m"),
        Fault::Error(InjectedError::Transient),
    ));
    let job = lifecycle.run(&policy, "refused", false, now, &mut |_| {}).await.expect("job");
    assert!(refuse.fired() > 0 && !job.errors.is_empty(), "{job:?}");
    assert_eq!(answer(tiers.clone()).await, vec![at("1m")], "the source is kept, no downsampled hour");
    assert!(deleted().await.is_empty());
    cold_faults.clear();

    // Held: downsampled, the source kept.
    lifecycle.holds().put(&hold("case-9", "metric_rollups", HOUR)).await.expect("hold");
    let job = run(&lifecycle, &policy, now + 1).await;
    assert_eq!((job.units_held, job.errors.len()), (1, 0), "{job:?}");
    assert_eq!(answer(tiers.clone()).await, vec![at("1m"), at("5m")]);

    // Released: the source hour goes, the downsampled one answers alone.
    lifecycle.holds().release("case-9", now + 2).await.expect("release").expect("found");
    let job = run(&lifecycle, &policy, now + 3).await;
    assert_eq!((job.units_changed, job.errors.len()), (1, 0), "{job:?}");
    assert_eq!(answer(tiers.clone()).await, vec![at("5m")], "the same samples and sum from 5 minutes");
    assert_eq!(deleted().await, BTreeSet::from([HOUR]));
    let log = tiers.hot.list("_catalog/lifecycle/deletions/").await.expect("log");
    assert_eq!(log.len(), 1);
    let record: retention::DeletionRecord =
        serde_json::from_slice(&tiers.hot.get(&log[0]).await.expect("get")).expect("json");
    assert_eq!(record.unit, source);
    assert!(record.reason.contains("1m roll-ups downsampled to 5m and kept 1d"), "{}", record.reason);
    // Nothing more to do; the 5-minute hour stays.
    assert_eq!(run(&lifecycle, &policy, now + 4).await.units_changed, 0);
    assert_eq!(answer(tiers.clone()).await, vec![at("5m")]);

    // A late row for the deleted hour is added to the 5-minute hour (not written over it),
    // then deleted from the source like the rest.
    put_rollups(&tiers, &[row(&latency, 0, &[1000.0], true)], 500).await;
    let job = run(&lifecycle, &policy, now + 5).await;
    assert_eq!((job.units_changed, job.errors.len()), (2, 0), "downsampled, deleted: {job:?}");
    assert_eq!(answer(tiers.clone()).await, vec![("5m".to_string(), 241, 29_680)]);
    assert_eq!(tiers.hot.list("_catalog/lifecycle/deletions/").await.expect("log").len(), 2);
    assert_eq!(run(&lifecycle, &policy, now + 6).await.units_changed, 0);
    assert_eq!(answer(tiers.clone()).await, vec![("5m".to_string(), 241, 29_680)]);
}

/// One roll-up row per series (an hour-long window): each column's smallest scale is a
/// matter of chance, yet the series share one cold file (a file per combination of
/// scales made dozens of tiny files per hour, each with its footer and page headers).
#[tokio::test]
async fn one_row_series_go_cold_in_one_file_and_read_back_exactly() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = Tiers::local(dir.path()).expect("tiers");
    let cents = |i: i64, j: i64| ((i * 7919 + j * 104_729) % 90_000 + 1_000) as f64 / 100.0;
    let rows: Vec<RollupRow> = (0..300)
        .map(|i| row(&series(&format!("latency_{i}"), MetricKind::Gauge), 0, &[cents(i, 0), cents(i, 1)], false))
        .collect();
    put_rollups(&tiers, &rows, 0).await;
    let sums = || async {
        let batches = rollups_sql(&tiers, "SELECT sum, min, max, last FROM metric_rollups ORDER BY name").await;
        let mut bits = Vec::new();
        for b in &batches {
            for c in 0..4 {
                bits.extend(
                    b.column(c)
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .expect("f64")
                        .values()
                        .iter()
                        .map(|v| v.to_bits()),
                );
            }
        }
        bits
    };
    let before = sums().await;
    let manifest = go_cold(&tiers).await;
    assert_eq!(manifest.files.len(), 1, "{:?}", manifest.files.iter().map(|f| &f.key).collect::<Vec<_>>());
    assert_eq!(sums().await, before, "every value read back bit for bit");
}
