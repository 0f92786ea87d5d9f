//! Dropping sparse names from downsampled roll-up hours (`drop_sparse_below`).

use callscope_schemas::rollup::RollupRow;

use super::rollups::{put_rollups, rollups_sql, row, series};
use super::*;
use crate::file_catalog::TimeRange;

const SCRAPED: &str = "scrape_gauge";
const SPANS: &str = "span_latency";
const BUSY: &str = "busy_latency";
const HALF_RAW: &str = "half_raw_gauge";

/// Raw samples of `name` in `HOUR`: one for each of `values`, at the times the roll-up rows
/// of [`row`] give them (minute `m`, sample `i`).
async fn put_samples(tiers: &Tiers, name: &str, samples: &[(i64, i64, f64)], first: i64) {
    let events: Vec<SourcedEvent> = samples
        .iter()
        .enumerate()
        .map(|(n, (m, i, value))| SourcedEvent {
            partition: 0,
            offset: first + n as i64,
            event: Event::Metric(Metric {
                name: name.into(),
                kind: MetricKind::Gauge,
                value: *value,
                timestamp_ms: HOUR + m * 60_000 + i,
                service: "svc".into(),
                labels: BTreeMap::new(),
                unit: None,
            }),
        })
        .collect();
    put_events(tiers, HOUR, &events).await;
}

/// (resolution, name) → (samples, their sum), as a query over the roll-ups sees them.
async fn per_name(tiers: &Tiers) -> BTreeMap<(String, String), (i64, i64)> {
    let query = "SELECT CAST(resolution AS VARCHAR), name, SUM(count), CAST(SUM(sum) AS BIGINT) FROM metric_rollups \
                 GROUP BY 1, 2";
    let mut out = BTreeMap::new();
    for batch in rollups_sql(tiers, query).await {
        let text = |c: usize| arrow::compute::cast(batch.column(c), &arrow::datatypes::DataType::Utf8).expect("utf8");
        let (resolutions, names) = (text(0), text(1));
        let (resolutions, names) = (resolutions.as_any(), names.as_any());
        let resolutions = resolutions.downcast_ref::<arrow::array::StringArray>().expect("utf8");
        let names = names.downcast_ref::<arrow::array::StringArray>().expect("utf8");
        let i64s = |c: usize| batch.column(c).as_any().downcast_ref::<Int64Array>().expect("i64").clone();
        let (counts, sums) = (i64s(2), i64s(3));
        for i in 0..batch.num_rows() {
            out.insert(
                (resolutions.value(i).to_string(), names.value(i).to_string()),
                (counts.value(i), sums.value(i)),
            );
        }
    }
    out
}

/// Compact after 1 h; downsample 1-minute roll-ups to 15 minutes after 2 h, dropping names
/// with fewer than 8 samples a window.
fn drop_sparse_policy() -> Policy {
    let steps = vec![
        PolicyStep::Compact { after: "1h".into() },
        PolicyStep::Downsample {
            after: "2h".into(),
            from: "1m".into(),
            to: vec!["15m".into()],
            delete_source_after: None,
            drop_sparse_below: Some(8),
        },
    ];
    Policy { tables: vec!["metric_rollups".into()], ..policy("sparse", steps) }
}

/// Names scraped every 15 s (4 samples a 1-minute window) whose raw samples are all there
/// are dropped from the 1-minute hour once it is downsampled; span metrics (no raw
/// samples), a name with half its raw samples gone, and a busy name (20 a window) stay. The
/// catalog says which names are gone where; the 15-minute hour holds every sample of every
/// name, exactly once, however late rows arrive, and also when a run dies between the
/// downsampling and the drop.
#[tokio::test]
async fn sparse_names_are_dropped_once_downsampled_and_late_rows_are_counted_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let local = Tiers::local(dir.path()).expect("tiers");
    let (warm, warm_faults) =
        Tier::open_with_faults(&TierConfig::local_dir(&dir.path().join("warm")).expect("dir")).expect("warm");
    let tiers = Tiers { warm, ..local };
    let (scraped, spans) = (series(SCRAPED, MetricKind::Gauge), series(SPANS, MetricKind::Histogram));
    let (busy, half_raw) = (series(BUSY, MetricKind::Histogram), series(HALF_RAW, MetricKind::Gauge));
    let mut rows: Vec<RollupRow> = Vec::new();
    for m in 0..60 {
        rows.push(row(&scraped, m, &(0..4).map(|i| (m * 4 + i) as f64).collect::<Vec<_>>(), false));
        rows.push(row(&spans, m, &[2.0; 4], false));
        rows.push(row(&busy, m, &[1.0; 20], false));
        rows.push(row(&half_raw, m, &[3.0; 4], false));
    }
    put_rollups(&tiers, &rows, 0).await;
    let every = |value: &dyn Fn(i64, i64) -> f64| {
        (0..60).flat_map(|m| (0..4).map(move |i| (m, i))).map(|(m, i)| (m, i, value(m, i))).collect::<Vec<_>>()
    };
    put_samples(&tiers, SCRAPED, &every(&|m, i| (m * 4 + i) as f64), 0).await;
    put_samples(&tiers, HALF_RAW, &every(&|_, _| 3.0)[..120], 1000).await;

    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    let policy = drop_sparse_policy();
    let source = format!("metric_rollups/resolution=1m/{}", HourPartition::of_unix_ms(HOUR).dir());
    let at = |r: &str, name: &str| (r.to_string(), name.to_string());
    let expect = |scraped: (i64, i64), busy: (i64, i64)| {
        BTreeMap::from([
            (at("15m", BUSY), busy),
            (at("15m", HALF_RAW), (240, 720)),
            (at("15m", SCRAPED), scraped),
            (at("15m", SPANS), (240, 480)),
            (at("1m", BUSY), busy),
            (at("1m", HALF_RAW), (240, 720)),
            (at("1m", SPANS), (240, 480)),
        ])
    };
    let gaps = || async {
        let gaps = lifecycle.catalog().rollup_gaps(60_000, TimeRange::new(HOUR, HOUR + 3_600_000)).await.expect("gaps");
        [SCRAPED, SPANS, BUSY, HALF_RAW].map(|n| gaps.hours_without(n).len())
    };

    let now = HOUR + 4 * 3_600_000;
    let job = run(&lifecycle, &policy, now).await;
    assert!(job.errors.is_empty(), "{job:?}");
    assert_eq!(per_name(&tiers).await, expect((240, 28_680), (1200, 1200)));
    let manifest = lifecycle.catalog().unit_snapshot(&source).await.expect("snapshot").manifest.expect("manifest");
    assert_eq!(manifest.dropped_names, std::collections::BTreeSet::from([SCRAPED.to_string()]));
    assert_eq!(gaps().await, [1, 0, 0, 0], "only the scraped name is answered from raw samples");
    // Nothing left to do: the drop changed no window the 15-minute hour holds.
    assert_eq!(run(&lifecycle, &policy, now + 1).await.units_changed, 0);

    // Late rows, of the dropped name too: counted once in 15 minutes, dropped again.
    let late = |scraped_value: f64, busy_value: f64, minute: i64| {
        vec![row(&scraped, minute, &[scraped_value], true), row(&busy, minute, &[busy_value], true)]
    };
    put_rollups(&tiers, &late(1000.0, 7.0, 0), 500).await;
    let job = run(&lifecycle, &policy, now + 2).await;
    assert!(job.errors.is_empty(), "{job:?}");
    assert_eq!(per_name(&tiers).await, expect((241, 29_680), (1201, 1207)));
    assert_eq!(run(&lifecycle, &policy, now + 3).await.units_changed, 0);
    assert_eq!(per_name(&tiers).await, expect((241, 29_680), (1201, 1207)));

    // A run that downsamples late rows and dies before the drop (the warm tier refuses
    // the rewritten hour), then more late rows: the next run counts each once.
    let refuse = warm_faults.add(FaultRule::new(
        Some(StoreOp::Put),
        PathMatch::contains("resolution=1m"),
        Fault::Error(InjectedError::Transient),
    ));
    put_rollups(&tiers, &late(100.0, 10.0, 1), 600).await;
    let job = run(&lifecycle, &policy, now + 4).await;
    assert!(refuse.fired() > 0 && !job.errors.is_empty(), "{job:?}");
    warm_faults.clear();
    put_rollups(&tiers, &late(500.0, 5.0, 2), 700).await;
    let job = run(&lifecycle, &policy, now + 5).await;
    assert!(job.errors.is_empty(), "{job:?}");
    assert_eq!(per_name(&tiers).await, expect((243, 30_280), (1203, 1222)));
    assert_eq!(run(&lifecycle, &policy, now + 6).await.units_changed, 0);
    assert_eq!(per_name(&tiers).await, expect((243, 30_280), (1203, 1222)));
    assert_eq!(gaps().await, [1, 0, 0, 0]);
}
