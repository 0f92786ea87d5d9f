//! The cost model against hand-computed prices and projections.

use super::*;

fn usage(tier: &str, table: &str, bytes: u64, raw: u64) -> TierTableUsage {
    TierTableUsage { tier: tier.into(), table: table.into(), bytes, raw_bytes: raw, ..Default::default() }
}

#[test]
fn current_and_projected_costs_follow_the_policy() {
    let model = CostModel::default();
    let usage =
        vec![usage("hot", "metrics", 2_000_000_000, 2_000_000_000), usage("warm", "metrics", 1e9 as u64, 4e9 as u64)];
    let per_day = IngestLastDay {
        bytes: BTreeMap::from([("metrics".to_string(), 1_000_000_000u64)]),
        files: 0,
        ..Default::default()
    };
    let mut policy = Policy::default_policy();
    policy.steps.retain(|s| matches!(s, PolicyStep::Compact { .. } | PolicyStep::Delete { .. }));
    let report = model.report(&usage, &policy, &per_day);
    assert!((report.current_usd_per_month - (2.0 * 0.023 + 0.0125)).abs() < 1e-9);
    assert!((report.current_all_hot_usd_per_month - 6.0 * 0.023).abs() < 1e-9);
    assert_eq!(report.compaction_ratio["metrics"], 0.25);
    // 2 h hot, the rest of 730 days warm at a quarter of the size.
    let hot = 1e9 * (2.0 / 24.0) / 1e9 * 0.023;
    let warm = 1e9 * (730.0 - 2.0 / 24.0) * 0.25 / 1e9 * 0.0125;
    assert!((report.projected_usd_per_month - (hot + warm)).abs() < 1e-6, "{report:?}");
    assert!((report.projected_all_hot_usd_per_month - 730.0 * 0.023).abs() < 1e-6);
    assert!(report.projected_saving_usd_per_month > 0.0);

    // The default policy: hot, warm, cold (at warm's ratio until measured), archive.
    let report = model.report(&usage, &Policy::default_policy(), &per_day);
    let tiers: Vec<&str> = report.projected.iter().map(|l| l.tier.as_str()).collect();
    assert_eq!(tiers, ["hot", "warm", "cold", "archive"]);
    let cold = &report.projected[2];
    assert_eq!(cold.bytes, (1e9 * 83.0 * 0.25) as u64);
    assert!(report.projected_usd_per_month < hot + warm);
}

#[test]
fn downsampled_roll_ups_whose_source_is_deleted_are_projected_as_kept() {
    let model = CostModel::default();
    // 1 GB of roll-ups a day, 0.9 GB of them 1-minute ones; the catalog measured the
    // 15-minute hours at 0.2 of their source's bytes. Warm, cold and archive at 1.0: the
    // downsampled hours in cold, which were never first written, do not count there.
    let cold = TierTableUsage { derived_bytes: 5_000, ..usage("cold", "metric_rollups", 6_000, 1_000) };
    let usage = vec![usage("hot", "metric_rollups", 1, 1), cold];
    let ingest = IngestLastDay {
        bytes: BTreeMap::from([("metric_rollups".to_string(), 1_000_000_000)]),
        rollup_bytes: BTreeMap::from([(60_000, 900_000_000), (3_600_000, 100_000_000)]),
        downsampled_ratio: BTreeMap::from([(900_000, 0.2)]),
        ..Default::default()
    };
    let policy = Policy::default_policy();
    let report = model.report(&usage, &policy, &ingest);
    let bytes = |tier: &str| report.projected.iter().find(|l| l.tier == tier).map_or(0, |l| l.bytes) as f64;
    let (h, d) = (2.0 / 24.0, 3.0 / 24.0);
    // 1-minute: hot 2 h, warm until 7 d, then gone. 1-hour: the whole policy.
    // 15-minute (0.18 GB a day): cold from 3 h on, archive from 90 d.
    let near = |got: f64, want: f64| (got - want).abs() < 1e3;
    assert!(near(bytes("hot"), 1e9 * h), "{report:?}");
    assert!(near(bytes("warm"), 0.9e9 * (7.0 - h) + 0.1e9 * (7.0 - h)), "{}", bytes("warm"));
    assert!(near(bytes("cold"), 0.1e9 * 83.0 + 0.18e9 * (90.0 - d)), "{}", bytes("cold"));
    assert!(near(bytes("archive"), 0.1e9 * 640.0 + 0.18e9 * 640.0), "{}", bytes("archive"));
    // Without the deletion the 1-minute roll-ups would stay for two years.
    let mut keep_all = policy.clone();
    for step in &mut keep_all.steps {
        if let PolicyStep::Downsample { delete_source_after, .. } = step {
            *delete_source_after = None;
        }
    }
    let full = model.report(&usage, &keep_all, &ingest);
    assert!(full.projected_usd_per_month > 2.0 * report.projected_usd_per_month, "{full:?}");
}

#[test]
fn requests_are_priced_per_batch_file_and_advice_comes_when_they_dominate() {
    let model = CostModel::default();
    let usage = vec![usage("hot", "metrics", 1_000_000, 1_000_000)];
    // A small platform: 1 MB a day, but 4 partitions × 3 tables flushed every second.
    let small = IngestLastDay {
        bytes: BTreeMap::from([("metrics".to_string(), 1_000_000)]),
        files: 1_036_800,
        ..Default::default()
    };
    let report = model.report(&usage, &Policy::default_policy(), &small);
    let files_per_month = 1_036_800.0 * 30.0;
    assert!((report.requests.write_requests_per_month - files_per_month * 6.6).abs() < 1.0);
    assert!((report.requests.read_requests_per_month - files_per_month * 4.2).abs() < 1.0);
    let usd = files_per_month * 6.6 / 1000.0 * 0.005 + files_per_month * 4.2 / 1000.0 * 0.0004;
    assert!((report.requests.usd_per_month - usd).abs() < 1e-6, "{report:?}");
    assert!(usd > 1000.0, "a thousand dollars a month of requests for a megabyte a day");
    let total = report.projected_usd_per_month + usd + report.lifecycle_requests.usd_per_month;
    assert!((report.projected_total_usd_per_month - total).abs() < 1e-6);
    assert!(report.advice.as_deref().is_some_and(|a| a.contains("--flush-interval")), "{report:?}");
    // Flushing a hundred times less often, with a hundred times the data: storage leads.
    let big = IngestLastDay {
        bytes: BTreeMap::from([("metrics".to_string(), 100_000_000_000)]),
        files: 10_368,
        ..Default::default()
    };
    let report = model.report(&usage, &Policy::default_policy(), &big);
    assert!(report.requests.usd_per_month < report.projected_usd_per_month, "{report:?}");
    assert_eq!(report.advice, None);
}

#[test]
fn lifecycle_requests_are_priced_at_the_class_of_each_tier() {
    let model = CostModel::default();
    // Warm holds one file per table-hour, cold three (one per decimal scale).
    let mut warm = usage("warm", "metrics", 1, 1);
    (warm.files, warm.hours) = (48, 48);
    let mut cold = usage("cold", "metrics", 1, 1);
    (cold.files, cold.hours) = (72, 24);
    let ingest = IngestLastDay {
        bytes: BTreeMap::from([("metrics".to_string(), 1_000_000)]),
        files: 86_400,
        ..Default::default()
    };
    let r = model.lifecycle_requests(&[warm, cold], &Policy::default_policy(), &ingest);
    let hours = 24.0 * 30.0;
    assert_eq!(r.table_hours_per_month, hours);
    let tier = |t: TierName| r.by_tier[&t].clone();
    // Compaction reads every batch file in hot; four steps write catalog objects there.
    assert_eq!(tier(TierName::Hot).read_requests_per_month, 86_400.0 * 30.0 + 4.0 * hours * 2.0);
    assert_eq!(tier(TierName::Hot).write_requests_per_month, 4.0 * hours * 2.0);
    // Warm: one file written per hour, read once by the cold step.
    assert_eq!(
        (tier(TierName::Warm).write_requests_per_month, tier(TierName::Warm).read_requests_per_month),
        (hours, hours)
    );
    // Cold: three written and three read by the archive step, at Glacier IR's prices.
    let c = tier(TierName::Cold);
    assert_eq!((c.write_requests_per_month, c.read_requests_per_month), (3.0 * hours, 3.0 * hours));
    assert!((c.usd_per_month - (3.0 * hours / 1000.0 * 0.02 + 3.0 * hours / 1000.0 * 0.01)).abs() < 1e-9);
    // Archive: one file per hour (nothing measured there yet) at Deep Archive's price.
    assert!((tier(TierName::Archive).usd_per_month - hours / 1000.0 * 0.05).abs() < 1e-9);
    let sum: f64 = r.by_tier.values().map(|t| t.usd_per_month).sum();
    assert!((r.usd_per_month - sum).abs() < 1e-12);
    // Without a lifecycle step, no lifecycle requests.
    let mut none = Policy::default_policy();
    none.steps.clear();
    assert_eq!(model.lifecycle_requests(&[], &none, &ingest).usd_per_month, 0.0);
}

#[test]
fn prices_come_from_json_with_defaults_for_what_it_leaves_out() {
    let model = CostModel::from_json(r#"{"usd_per_gb_month": {"hot": 0.026}, "usd_per_1000_write_requests": 0.0054}"#)
        .expect("prices");
    assert_eq!(model.usd_per_gb_month[&TierName::Hot], 0.026);
    assert_eq!(model.usd_per_gb_month[&TierName::Cold], 0.004, "a tier left out keeps its default");
    assert_eq!(model.usd_per_1000_write_requests, 0.0054);
    assert_eq!(model.usd_per_1000_read_requests, 0.0004);
    let typo = CostModel::from_json(r#"{"usd_per_gb_mnth": {}}"#).expect_err("unknown field");
    assert!(typo.to_string().contains("usd_per_gb_mnth"), "{typo}");
    let tier = CostModel::from_json(r#"{"usd_per_gb_month": {"lukewarm": 1}}"#).expect_err("unknown tier");
    assert!(tier.to_string().contains("lukewarm"), "{tier}");
    let negative = CostModel::from_json(r#"{"usd_per_1000_read_requests": -1}"#).expect_err("negative");
    assert!(negative.to_string().contains("usd_per_1000_read_requests"), "{negative}");
    let archive =
        CostModel::from_json(r#"{"usd_per_1000_requests_by_tier": {"archive": {"write": 0.06, "read": 0.001}}}"#)
            .expect("tier request prices");
    assert_eq!(archive.usd_per_1000_requests_by_tier[&TierName::Archive], RequestPrices { write: 0.06, read: 0.001 });
    assert_eq!(archive.usd_per_1000_requests_by_tier[&TierName::Warm], RequestPrices { write: 0.01, read: 0.001 });
    let hot = CostModel::from_json(r#"{"usd_per_1000_requests_by_tier": {"hot": {"write": 1, "read": 1}}}"#)
        .expect_err("hot has its own fields");
    assert!(hot.to_string().contains("usd_per_1000_write_requests"), "{hot}");
    let bad = CostModel::from_json(r#"{"usd_per_1000_requests_by_tier": {"cold": {"write": -1, "read": 0}}}"#)
        .expect_err("negative tier price");
    assert!(bad.to_string().contains("usd_per_1000_requests_by_tier.cold.write"), "{bad}");
}
