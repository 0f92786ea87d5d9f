use callscope_schemas::Dataset;

use super::*;

fn local_tiers(dir: &std::path::Path) -> Tiers {
    Tiers::local(dir).expect("tiers")
}

const UNIT: &str = "metrics/date=2026-12-01/hour=05";

fn file(tier: TierName, key: &str, bytes: u64) -> CatalogFile {
    CatalogFile {
        tier,
        key: key.into(),
        rows: 10,
        bytes,
        min_time_ms: 0,
        max_time_ms: 0,
        series: 1,
        produced_by: "job".into(),
        shared_object_bytes: None,
    }
}

fn manifest(
    generation: u64,
    files: Vec<CatalogFile>,
    replaced: &[&str],
    superseded: Vec<CatalogFile>,
    at: i64,
) -> Manifest {
    Manifest {
        unit: UNIT.into(),
        generation,
        files,
        replaced_hot: replaced.iter().map(|s| s.to_string()).collect(),
        superseded,
        raw_bytes: 0,
        derived_from: None,
        dropped_names: Default::default(),
        downsampled_as: None,
        job: format!("job-{generation}"),
        step: "compact".into(),
        created_at_ms: at,
    }
}

async fn put(tier: &Tier, key: &str) {
    tier.put_durable(key, Bytes::from_static(b"x"), false).await.expect("put");
}

fn keys(snapshot: &UnitSnapshot) -> Vec<(TierName, String)> {
    let mut keys: Vec<_> = snapshot.files().into_iter().map(|f| (f.tier, f.key)).collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_commit_swaps_replaced_hot_files_for_the_new_ones_atomically() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = local_tiers(dir.path());
    let catalog = FileCatalog::new(tiers.clone());
    let (a, b) = (format!("{UNIT}/t-p0-a.parquet"), format!("{UNIT}/t-p0-b.parquet"));
    put(&tiers.hot, &a).await;
    put(&tiers.hot, &b).await;
    let before = catalog.unit_snapshot(UNIT).await.expect("snapshot");
    assert_eq!(keys(&before), vec![(TierName::Hot, a.clone()), (TierName::Hot, b.clone())]);

    let warm = lifecycle_file_key(UNIT, 1, "job-1", 0);
    put(&tiers.warm, &warm).await;
    // Not committed yet: the warm file is invisible.
    assert_eq!(keys(&catalog.unit_snapshot(UNIT).await.expect("snapshot")), keys(&before));
    assert!(
        catalog.commit(&manifest(1, vec![file(TierName::Warm, &warm, 1)], &[&a], vec![], 0)).await.expect("commit")
    );
    let after = catalog.unit_snapshot(UNIT).await.expect("snapshot");
    assert_eq!(keys(&after), vec![(TierName::Hot, b.clone()), (TierName::Warm, warm.clone())]);
    // A second job racing for the same generation loses.
    assert!(!catalog.commit(&manifest(1, vec![], &[], vec![], 0)).await.expect("commit"));
    // The table-wide snapshot agrees, and a range outside the hour is empty.
    let table = DataTable::Events(Dataset::Metrics);
    let all = catalog.snapshot(table, None).await.expect("snapshot");
    assert_eq!(all.len(), 1);
    assert_eq!(keys(&all[0]), keys(&after));
    let hour = HourPartition::parse_dir(UNIT).expect("hour");
    let inside =
        catalog.snapshot(table, Some(TimeRange::new(hour.start_ms() + 1, hour.start_ms() + 2))).await.expect("s");
    assert_eq!(inside.len(), 1);
    let outside = catalog.snapshot(table, Some(TimeRange::new(hour.end_ms(), hour.end_ms() + 1))).await.expect("s");
    assert!(outside.is_empty());
    assert_eq!(all[0].partition_values(table), vec!["2026-12-01".to_string(), "05".to_string()]);
}

#[tokio::test]
async fn garbage_waits_for_the_grace_then_goes() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = local_tiers(dir.path());
    let catalog = FileCatalog::new(tiers.clone());
    let a = format!("{UNIT}/t-p0-a.parquet");
    put(&tiers.hot, &a).await;
    let g1 = lifecycle_file_key(UNIT, 1, "job-1", 0);
    put(&tiers.warm, &g1).await;
    assert!(catalog.commit(&manifest(1, vec![file(TierName::Warm, &g1, 1)], &[&a], vec![], 1_000)).await.expect("c"));
    // Generation 2 moves the file to cold; a job that lost generation 2 left a file behind.
    let g2 = lifecycle_file_key(UNIT, 2, "job-2", 0);
    put(&tiers.cold, &g2).await;
    let loser = lifecycle_file_key(UNIT, 2, "job-x", 0);
    put(&tiers.warm, &loser).await;
    let m2 = manifest(2, vec![file(TierName::Cold, &g2, 1)], &[&a], vec![file(TierName::Warm, &g1, 1)], 2_000);
    assert!(catalog.commit(&m2).await.expect("c"));

    let early = catalog.collect_garbage(UNIT, 2_000 + GC_GRACE_MS - 1).await.expect("gc");
    assert_eq!(early, GcReport::default(), "nothing is deleted within the grace");
    assert!(tiers.hot.exists(&a).await.expect("exists"));

    let report = catalog.collect_garbage(UNIT, 2_000 + GC_GRACE_MS).await.expect("gc");
    assert_eq!(report.files_deleted, 3, "{report:?}");
    assert_eq!(report.manifests_deleted, 1);
    for (tier, key) in [(&tiers.hot, &a), (&tiers.warm, &g1), (&tiers.warm, &loser)] {
        assert!(!tier.exists(key).await.expect("exists"), "{key} should be gone");
    }
    assert!(tiers.cold.exists(&g2).await.expect("exists"));
    let snapshot = catalog.unit_snapshot(UNIT).await.expect("snapshot");
    assert_eq!(keys(&snapshot), vec![(TierName::Cold, g2.clone())]);
    // Idempotent.
    assert_eq!(catalog.collect_garbage(UNIT, 3_000 + GC_GRACE_MS).await.expect("gc"), GcReport::default());
}

#[tokio::test]
async fn an_unreadable_manifest_is_an_error_not_an_empty_hour() {
    let dir = tempfile::tempdir().expect("tmp");
    let tiers = local_tiers(dir.path());
    let catalog = FileCatalog::new(tiers.clone());
    let key = CatalogKey::Manifest { unit: UNIT.into(), generation: 1 }.path();
    tiers.hot.put_durable(&key, Bytes::from_static(b"{not json"), true).await.expect("put");
    let err = catalog.unit_snapshot(UNIT).await.expect_err("corrupt");
    assert!(err.to_string().contains("00000000000000000001.json"), "{err}");
}

#[test]
fn lifecycle_file_names_carry_their_generation() {
    let key = lifecycle_file_key(UNIT, 12, "compact/1", 3);
    assert_eq!(key, format!("{UNIT}/g000012-compact_1-003.parquet"));
    assert_eq!(generation_of(&key), Some(12));
    assert_eq!(generation_of("metrics/date=x/hour=01/callscope.metrics-p0-1-2.parquet"), None);
}
