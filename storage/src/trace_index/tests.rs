use super::*;
use crate::TierConfig;

fn tier(dir: &std::path::Path) -> Tier {
    Tier::open(&TierConfig::local_dir(dir).expect("config")).expect("tier")
}

fn id(n: u32) -> String {
    // Spread over buckets: the first byte varies with n.
    format!("{:02x}{:030x}", (n * 37) % 256, n)
}

async fn write_segment(index: &TraceIndex, first: i64, spans: &[(String, i64)]) {
    let bytes = l0_segment(spans.iter().map(|(t, s)| (t.as_str(), *s))).expect("segment");
    index.tier().put_durable(&l0_key("spans", 0, first, first + 9), bytes, false).await.expect("put");
}

#[tokio::test]
async fn lookups_see_segments_before_and_after_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = TraceIndex::new(tier(dir.path()));
    write_segment(&index, 0, &[(id(1), 100), (id(2), 200), (id(1), 50)]).await;
    write_segment(&index, 10, &[(id(1), 900), (id(3), 300)]).await;
    let before = index.lookup(&id(1)).await.expect("lookup").expect("hit");
    assert_eq!((before.first_start_us, before.last_start_us, before.files), (50, 900, 2));
    assert_eq!(index.lookup(&id(4)).await.expect("lookup"), None);
    assert_eq!(index.lookup("not a trace id").await.expect("lookup"), None);

    let report = compact(&index, "test", 1_000).await.expect("compact");
    assert_eq!((report.outcome, report.segments_merged, report.generation), ("done", 2, 1));
    assert_eq!(report.entries_written, 3);
    let health = index.health().await.expect("health");
    assert_eq!((health.unmerged_segments, health.entries, health.generation), (0, 3, 1));
    let after = index.lookup(&id(1)).await.expect("lookup").expect("hit");
    assert_eq!((after.first_start_us, after.last_start_us, after.files), (50, 900, 1));
    assert_eq!(index.lookup(&id(3)).await.expect("lookup").map(|s| s.last_start_us), Some(300));

    // Nothing new: nothing to do. New segments are seen at once, merged next time.
    assert_eq!(compact(&index, "test", 2_000).await.expect("compact").outcome, "nothing_to_do");
    write_segment(&index, 20, &[(id(2), 10)]).await;
    assert_eq!(index.lookup(&id(2)).await.expect("lookup").map(|s| (s.first_start_us, s.files)), Some((10, 2)));
    assert_eq!(compact(&index, "test", 3_000).await.expect("compact").segments_merged, 1);
    assert_eq!(
        index.lookup(&id(2)).await.expect("lookup").map(|s| (s.first_start_us, s.last_start_us)),
        Some((10, 200))
    );
}

#[tokio::test]
async fn buckets_stay_few_runs_and_garbage_goes_after_the_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = TraceIndex::new(tier(dir.path()));
    let trace = id(7);
    for round in 0..(compact::MAX_RUNS_PER_BUCKET as i64 + 2) {
        write_segment(&index, round * 10, &[(trace.clone(), round)]).await;
        let report = compact(&index, "test", 1_000 + round).await.expect("compact");
        assert_eq!(report.outcome, "done");
    }
    let manifest = index.newest_manifest().await.expect("manifest");
    let bucket = &manifest.buckets[&trace[..2]];
    assert!(bucket.len() <= compact::MAX_RUNS_PER_BUCKET, "{bucket:?}");
    assert!(!manifest.retired.is_empty());
    let span = index.lookup(&trace).await.expect("lookup").expect("hit");
    assert_eq!((span.first_start_us, span.last_start_us), (0, compact::MAX_RUNS_PER_BUCKET as i64 + 1));
    // Within the grace nothing read by a recent manifest is deleted.
    let l0_before = index.l0_segments().await.expect("l0").len();
    assert_eq!(l0_before, compact::MAX_RUNS_PER_BUCKET + 2);
    // After it: merged segments, retired runs and old manifests go; lookups still answer.
    write_segment(&index, 1_000, &[(id(8), 5)]).await;
    let later = 1_000 + GC_GRACE_MS + 100;
    let report = compact(&index, "test", later).await.expect("compact");
    assert!(report.files_deleted >= l0_before, "{report:?}");
    assert_eq!(index.l0_segments().await.expect("l0").len(), 1, "only the segment merged just now is left");
    let runs = index.tier().list(&format!("{}/", runs_dir())).await.expect("list");
    let manifest = index.newest_manifest().await.expect("manifest");
    let live: usize = manifest.buckets.values().map(Vec::len).sum();
    assert_eq!(runs.len(), live, "only live runs remain: {runs:?}");
    assert_eq!(index.lookup(&trace).await.expect("lookup").map(|s| s.last_start_us), Some(span.last_start_us));
    assert!(index.lookup(&id(8)).await.expect("lookup").is_some());
}

#[tokio::test]
async fn a_compactor_that_loses_the_race_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = TraceIndex::new(tier(dir.path()));
    write_segment(&index, 0, &[(id(1), 1), (id(2), 2)]).await;
    // A rival commits generation 1 between this compaction's read and its commit.
    let tier = index.tier().clone();
    let rival = async move {
        let rival = IndexManifest { generation: 1, runner: "rival".into(), ..Default::default() };
        let body = serde_json::to_vec(&rival).expect("json");
        tier.put_durable(&manifest_key(1), body.into(), true).await.expect("rival");
    };
    let report = compact::compact_with_hook(&index, "me", 10, rival).await.expect("compact");
    assert_eq!(report.outcome, "lost_race");
    let runs = index.tier().list(&format!("{}/", runs_dir())).await.expect("list");
    assert!(runs.is_empty(), "the loser deleted the runs it wrote: {runs:?}");
    // Its segments are still unmerged, and the next compaction merges them.
    assert_eq!(index.health().await.expect("health").unmerged_segments, 1);
    let report = compact(&index, "me", 20).await.expect("compact");
    assert_eq!((report.outcome, report.generation, report.segments_merged), ("done", 2, 1));
    assert!(index.lookup(&id(2)).await.expect("lookup").is_some());
}

#[tokio::test]
async fn a_damaged_index_file_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = TraceIndex::new(tier(dir.path()));
    let key = l0_key("spans", 0, 0, 1);
    index.tier().put_durable(&key, bytes::Bytes::from_static(b"garbage"), false).await.expect("put");
    let err = index.lookup(&id(1)).await.expect_err("damaged");
    assert!(err.to_string().contains(&key), "{err}");
    assert!(compact(&index, "test", 1).await.expect_err("damaged").to_string().contains("magic"));
}
