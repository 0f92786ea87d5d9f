//! Roll-up table-hours: folding when compacted, downsampling.

use callscope_schemas::rollup::{Partial, RollupRow, SeriesKey, rollups_to_record_batch};

use super::*;
use crate::layout::{RollupFileKey, RollupSource};

/// A 1-minute roll-up row of one series in `HOUR`, over `values` sampled at its start.
fn row(series: &Arc<SeriesKey>, minute: i64, values: &[f64], late: bool) -> RollupRow {
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

fn series(name: &str, kind: MetricKind) -> Arc<SeriesKey> {
    Arc::new(SeriesKey { name: name.into(), service: "svc".into(), labels: BTreeMap::new(), kind, unit: None })
}

/// Writes rows as one roll-up file of a batch at `first` (the workers' naming).
async fn put_rollups(tiers: &Tiers, rows: &[RollupRow], first: i64) {
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

/// The metric_rollups table as a query sees it.
async fn rollups_sql(tiers: &Tiers, query: &str) -> Vec<arrow::array::RecordBatch> {
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
    let steps = vec![
        PolicyStep::Compact { after: "1h".into() },
        PolicyStep::Downsample { after: "2h".into(), from: "1m".into(), to: vec!["5m".into(), "1h".into()] },
    ];
    let policy = Policy { tables: vec!["metric_rollups".into()], ..policy("down", steps) };
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
    // Unchanged source: nothing to do. Late data in the source: downsampled again.
    assert_eq!(run(&lifecycle, &policy, now + 1).await.units_changed, 0);
    put_rollups(&tiers, &rows(0..1), 100).await;
    let job = run(&lifecycle, &policy, now + 2).await;
    assert!(job.units_changed >= 2, "{job:?}");
    let got = answer(tiers.clone()).await;
    assert!(rows_of(&got).iter().all(|r| r[2] == "244"), "{got}");
}
