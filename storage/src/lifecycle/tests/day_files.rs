//! Day files: the downsampled roll-up hours of a day packed into shared files in cold.

use std::collections::BTreeSet;

use callscope_schemas::rollup::{Partial, RollupRow, rollups_to_record_batch};

use super::faults::faulty_tiers;
use super::rollups::{rollups_sql, series};
use super::*;
use crate::fault_store::Stage;
use crate::layout::{RollupFileKey, RollupSource};

/// 2026-01-01T00:00:00Z
const DAY: i64 = 1_767_225_600_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// One 1-minute roll-up row of `name` at `hour` and `minute` of `DAY`, over `values`.
fn minute(name: &str, kind: MetricKind, hour: i64, minute: i64, values: &[f64], late: bool) -> RollupRow {
    let start = DAY + hour * HOUR_MS + minute * 60_000;
    let mut partial = Partial::empty(kind);
    for (i, v) in values.iter().enumerate() {
        partial.add(*v, start + i as i64 * 15_000);
    }
    RollupRow { resolution_ms: 60_000, window_start_ms: start, series: series(name, kind), partial, partition: 0, late }
}

/// Writes rows of one hour as a worker's roll-up file of the batch at `first`.
async fn put_hour(tiers: &Tiers, hour: i64, rows: &[RollupRow], first: i64) {
    let key = RollupFileKey {
        resolution_ms: 60_000,
        hour: HourPartition::of_unix_ms(DAY + hour * HOUR_MS),
        topic: "callscope.metrics".into(),
        partition: 0,
        source: RollupSource::Batch { first_offset: first, last_offset: first + 99 },
    };
    let bytes = crate::parquet_file::encode(&[rollups_to_record_batch(rows.iter()).expect("batch")]).expect("encode");
    tiers.hot.put_durable(&key.path(), bytes, false).await.expect("put");
}

/// `hours` hours of a counter, a two-decimal gauge and a histogram, 4 samples a minute.
async fn put_day(tiers: &Tiers, hours: i64) {
    for hour in 0..hours {
        let mut rows = Vec::new();
        for m in 0..60 {
            let n = (hour * 60 + m) as f64;
            let four = |f: &dyn Fn(f64) -> f64| (0..4).map(|i| f(n * 4.0 + f64::from(i))).collect::<Vec<f64>>();
            rows.push(minute("calls_total", MetricKind::Counter, hour, m, &four(&|x| x * 3.0), false));
            rows.push(minute("queue_wait", MetricKind::Gauge, hour, m, &four(&|x| (x % 97.0) * 1.25), false));
            rows.push(minute("asr_latency_ms", MetricKind::Histogram, hour, m, &four(&|x| 100.0 + x % 13.0), false));
        }
        put_hour(tiers, hour, &rows, hour * 1000).await;
    }
}

/// Compact after 1 h, downsample 1-minute roll-ups into 15 minutes and 1 hour after 2 h,
/// cold after a day (the built-in policy's steps, shorter).
fn day_policy() -> Policy {
    let steps = vec![
        PolicyStep::Compact { after: "1h".into() },
        PolicyStep::Downsample {
            after: "2h".into(),
            from: "1m".into(),
            to: vec!["15m".into(), "1h".into()],
            delete_source_after: None,
            drop_sparse_below: None,
        },
        PolicyStep::Cold { after: "1d".into() },
    ];
    Policy { tables: vec!["metric_rollups".into()], ..policy("days", steps) }
}

/// Per resolution, date and hour (the partition columns): rows, samples, the sum of the
/// values (in hundredths) and the largest value. Every resolution counts every sample.
async fn answer(tiers: &Tiers) -> Vec<String> {
    let query = "SELECT resolution, date, hour, COUNT(*), SUM(count), CAST(SUM(sum) * 100 AS BIGINT), MAX(max) \
                 FROM metric_rollups GROUP BY 1, 2, 3 ORDER BY 1, 2, 3";
    let batches = rollups_sql(tiers, query).await;
    let text = arrow::util::pretty::pretty_format_batches(&batches).expect("fmt").to_string();
    text.lines().filter(|l| l.starts_with("| ") && !l.contains("resolution")).map(str::to_string).collect()
}

/// The lines of `answer` of one resolution, without it: (date, hour, rows, samples, …).
fn of_resolution(answer: &[String], resolution: &str) -> Vec<String> {
    let prefix = format!("| {resolution} ");
    answer
        .iter()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| l.split('|').skip(2).collect::<Vec<_>>().join("|"))
        .collect()
}

/// Every resolution's samples and sums, per hour (the columns after the row count).
fn samples_and_sums(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| l.split('|').map(str::trim).skip(3).collect::<Vec<_>>().join(" ")).collect()
}

fn hour_unit(resolution: &str, hour: i64) -> String {
    format!("metric_rollups/resolution={resolution}/{}", HourPartition::of_unix_ms(DAY + hour * HOUR_MS).dir())
}

/// The shared files the hours of a resolution name, per hour (`None`: an hour with files
/// of its own).
async fn shared_of(catalog: &FileCatalog, resolution: &str, hours: i64) -> Vec<Option<BTreeSet<String>>> {
    let mut out = Vec::new();
    for hour in 0..hours {
        let manifest = catalog.unit_snapshot(&hour_unit(resolution, hour)).await.expect("s").manifest.expect("m");
        let shared = manifest.files.iter().all(|f| f.shared_object_bytes.is_some());
        out.push(shared.then(|| manifest.files.iter().map(|f| f.key.clone()).collect()));
    }
    out
}

async fn day_dir_files(tiers: &Tiers, resolution: &str) -> BTreeSet<String> {
    let dir = format!("metric_rollups/resolution={resolution}/date=2026-01-01/day/");
    tiers.cold.list(&dir).await.expect("list").into_iter().collect()
}

#[tokio::test]
async fn coarse_roll_up_hours_are_packed_a_day_per_file_and_read_exactly_as_before() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = Tiers::local(dir.path()).expect("tiers");
    let hours = 6;
    put_day(&tiers, hours).await;
    let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
    let catalog = lifecycle.catalog().clone();

    // Downsampled, an hour per file.
    let job = run(&lifecycle, &day_policy(), DAY + 12 * HOUR_MS).await;
    assert_eq!(job.errors, Vec::<String>::new());
    let before = answer(&tiers).await;
    assert_eq!(before.len(), 3 * hours as usize, "{before:#?}");
    let fine = samples_and_sums(&of_resolution(&before, "1m"));
    assert_eq!(samples_and_sums(&of_resolution(&before, "15m")), fine);
    assert_eq!(samples_and_sums(&of_resolution(&before, "1h")), fine);
    assert!(shared_of(&catalog, "1h", hours).await.iter().all(Option::is_none));

    // A day after the day: its coarse hours are packed; queries answer the same, hour by hour.
    let now = DAY + 2 * DAY_MS + HOUR_MS;
    let job = run(&lifecycle, &day_policy(), now).await;
    assert_eq!(job.errors, Vec::<String>::new());
    assert_eq!(answer(&tiers).await, before);
    for resolution in ["15m", "1h"] {
        let shared = shared_of(&catalog, resolution, hours).await;
        let first = shared[0].clone().expect("packed");
        assert!(shared.iter().all(|s| s.as_ref() == Some(&first)), "{resolution}: {shared:?}");
        assert_eq!(day_dir_files(&tiers, resolution).await, first, "the day's files are in cold");
        let manifest = catalog.unit_snapshot(&hour_unit(resolution, 3)).await.expect("s").manifest.expect("m");
        assert_eq!(manifest.step, crate::lifecycle::day_files::STEP);
        let windows = if resolution == "15m" { 4 } else { 1 };
        assert_eq!(manifest.rows(), 3 * windows, "the hour's share: its own rows");
        assert!(manifest.derived_from.is_some(), "still made from its source hour");
        assert!(manifest.files.iter().all(|f| f.min_time_ms >= DAY + 3 * HOUR_MS && f.max_time_ms < DAY + 4 * HOUR_MS));
    }
    let first_packing = shared_of(&catalog, "1h", hours).await[0].clone().expect("packed");
    // The source resolution keeps its hours.
    assert!(shared_of(&catalog, "1m", hours).await.iter().all(Option::is_none));

    // Nothing changed: nothing is packed again.
    let generation = |catalog: FileCatalog| async move {
        catalog.unit_snapshot(&hour_unit("1h", 0)).await.expect("s").manifest.expect("m").generation
    };
    let packed_at = generation(catalog.clone()).await;
    run(&lifecycle, &day_policy(), now + 1).await;
    assert_eq!(generation(catalog.clone()).await, packed_at);

    // Late rows for hour 2: downsampled again into files of the hour's own, then packed again.
    let late = minute("queue_wait", MetricKind::Gauge, 2, 30, &[1000.25], true);
    put_hour(&tiers, 2, &[late], 99_000).await;
    let job = run(&lifecycle, &day_policy(), now + 2).await;
    assert_eq!(job.errors, Vec::<String>::new());
    let with_late = answer(&tiers).await;
    let fine = samples_and_sums(&of_resolution(&with_late, "1m"));
    assert_ne!(fine, samples_and_sums(&of_resolution(&before, "1m")));
    assert_eq!(samples_and_sums(&of_resolution(&with_late, "15m")), fine, "{with_late:#?}");
    assert_eq!(samples_and_sums(&of_resolution(&with_late, "1h")), fine);
    // Packed again in the same run, once hour 2 was downsampled again.
    let repacked = shared_of(&catalog, "1h", hours).await;
    let keys = repacked[0].clone().expect("packed again");
    assert!(repacked.iter().all(|s| s.as_ref() == Some(&keys)), "{repacked:?}");
    assert!(keys.is_disjoint(&first_packing), "new day files");

    // The replaced day files go once the grace has passed, not before.
    assert!(day_dir_files(&tiers, "1h").await.len() > keys.len());
    run(&lifecycle, &day_policy(), now + 3).await;
    assert_eq!(answer(&tiers).await, with_late);
    run(&lifecycle, &day_policy(), now + 3 + GC_GRACE_MS / 2).await;
    assert!(day_dir_files(&tiers, "1h").await.len() > keys.len(), "kept through the grace");
    let job = run(&lifecycle, &day_policy(), now + 4 + GC_GRACE_MS).await;
    assert_eq!(job.errors, Vec::<String>::new());
    assert_eq!(day_dir_files(&tiers, "1h").await, keys);
    assert_eq!(answer(&tiers).await, with_late);

    // Archived hour by hour from the day files; then no hour names them and they go.
    let archive = Policy {
        tables: vec!["metric_rollups".into()],
        ..policy("archive", vec![PolicyStep::Archive { after: "3d".into() }])
    };
    let later = DAY + 4 * DAY_MS;
    let job = run(&lifecycle, &archive, later).await;
    assert_eq!(job.errors, Vec::<String>::new());
    assert_eq!(answer(&tiers).await, with_late);
    assert!(shared_of(&catalog, "1h", hours).await.iter().all(Option::is_none));
    run(&lifecycle, &archive, later + GC_GRACE_MS + 1).await;
    assert!(day_dir_files(&tiers, "1h").await.is_empty());
    assert!(day_dir_files(&tiers, "15m").await.is_empty());
    assert_eq!(answer(&tiers).await, with_late);
}

/// Where packing may be cut.
const CUTS: &[(TierName, Option<StoreOp>, &str)] = &[
    (TierName::Cold, Some(StoreOp::Put), "/day/"),
    (TierName::Cold, None, "/day/"),
    (TierName::Hot, Some(StoreOp::Put), "_catalog/manifests/metric_rollups/resolution=1h/date=2026-01-01/hour=01"),
    (TierName::Hot, Some(StoreOp::Get), "_catalog/manifests/metric_rollups/resolution=15m"),
    // Hours 0 and 1 name the new day files, hour 2 still the old ones.
    (TierName::Hot, Some(StoreOp::Put), "_catalog/manifests/metric_rollups/resolution=15m/date=2026-01-01/hour=02"),
    (TierName::Cold, Some(StoreOp::Delete), "/day/"),
];

#[tokio::test]
async fn packing_cut_at_any_store_call_and_run_again_keeps_every_row_once() {
    let hours = 3;
    let mut fired = 0;
    for (cut_tier, op, text) in CUTS {
        for stage in [Stage::Before, Stage::After] {
            let setup = faulty_tiers();
            let tiers = &setup.tiers;
            put_day(tiers, hours).await;
            let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
            run(&lifecycle, &day_policy(), DAY + 12 * HOUR_MS).await;
            let now = DAY + 2 * DAY_MS;
            run(&lifecycle, &day_policy(), now).await;
            let before = answer(tiers).await;
            // Late rows for hour 1: the next run downsamples it again and packs the day
            // again; the one after the grace collects the first day files.
            put_hour(tiers, 1, &[minute("queue_wait", MetricKind::Gauge, 1, 7, &[2.5], true)], 99_000).await;
            let fine = samples_and_sums(&of_resolution(&answer(tiers).await, "1m"));
            let control = &setup.faults.iter().find(|(t, _)| t == cut_tier).expect("tier").1;
            let rule = control.add(
                FaultRule::new(*op, PathMatch::contains(*text), Fault::Error(InjectedError::Transient))
                    .once()
                    .stage(stage),
            );
            let mut cuts = Vec::new();
            for at in [now + 1, now + 2 + GC_GRACE_MS] {
                cuts.push(lifecycle.run(&day_policy(), &format!("cut-{at}"), false, at, &mut |_| {}).await);
                // Each coarse hour holds its samples with the late rows or without them.
                let seen = answer(tiers).await;
                assert_eq!(samples_and_sums(&of_resolution(&seen, "1m")), fine);
                for resolution in ["15m", "1h"] {
                    let coarse = samples_and_sums(&of_resolution(&seen, resolution));
                    let old = samples_and_sums(&of_resolution(&before, resolution));
                    for (i, hour) in coarse.iter().enumerate() {
                        assert!(
                            hour == &old[i] || hour == &fine[i],
                            "{resolution} hour {i} after a cut at {cut_tier} {op:?} {text} {stage:?}: {seen:#?}"
                        );
                    }
                }
            }
            fired += usize::from(rule.fired() > 0);
            control.clear();
            let what = format!("cut at {cut_tier} {op:?} {text} {stage:?}: {cuts:?}");
            for at in [now + 3 + GC_GRACE_MS, now + 4 + 2 * GC_GRACE_MS] {
                let rerun = run(&lifecycle, &day_policy(), at).await;
                assert!(rerun.errors.is_empty(), "{what}: {rerun:?}");
            }
            let seen = answer(tiers).await;
            for resolution in ["15m", "1h"] {
                assert_eq!(samples_and_sums(&of_resolution(&seen, resolution)), fine, "after the {what}");
            }
            let catalog = lifecycle.catalog();
            for resolution in ["15m", "1h"] {
                let shared = shared_of(catalog, resolution, hours).await;
                let keys = shared[0].clone().unwrap_or_default();
                assert!(shared.iter().all(|s| s.as_ref() == Some(&keys)), "{what}: {shared:?}");
                assert_eq!(day_dir_files(tiers, resolution).await, keys, "{what}: only named day files are left");
            }
        }
    }
    assert!(fired >= 6, "the cuts reached the packing ({fired} fired)");
}
