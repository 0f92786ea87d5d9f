use super::*;
use crate::fault_store::{Fault, FaultRule, InjectedError, PathMatch, Stage};
use crate::instrumented_store::StoreOp;
use crate::tier::TierConfig;

const TOPIC: &str = "callscope.metrics";

fn record(first: i64, last: i64, files: &[&str], writer: &str) -> BatchRecord {
    BatchRecord {
        topic: TOPIC.into(),
        partition: 2,
        first_offset: first,
        last_offset: last,
        files: files.iter().map(|s| s.to_string()).collect(),
        rows: (last - first + 1) as u64,
        dead_letters: 0,
        writer: writer.into(),
        created_at_ms: 0,
        pending: String::new(),
    }
}

fn file(name: &str) -> (String, Bytes) {
    (name.to_string(), Bytes::from_static(b"PAR1"))
}

async fn log() -> (tempfile::TempDir, CommitLog) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = Tier::open(&TierConfig::local_dir(dir.path()).expect("cfg")).expect("open");
    (dir, CommitLog::new(tier))
}

/// Every key under the tier.
async fn keys(log: &CommitLog) -> Vec<String> {
    log.tier().list("").await.expect("list")
}

#[tokio::test]
async fn committed_batches_are_found_past_the_committed_offset() {
    let (_dir, log) = log().await;
    log.commit_batch(&record(0, 9, &["m/a"], "w1"), vec![file("m/a")]).await.expect("b1");
    log.commit_batch(&record(10, 19, &["m/b", "m/c"], "w1"), vec![file("m/b"), file("m/c")]).await.expect("b2");
    let r = log.recover(TOPIC, 2, 10).await.expect("recover");
    assert_eq!(r.durable_last, Some(19));
    assert_eq!(r.complete, vec![(10, 19)]);
    assert_eq!((r.published, r.rolled_back, r.orphans_deleted), (0, 0, 0));
    assert_eq!(log.recover(TOPIC, 2, 0).await.expect("recover").complete, vec![(0, 9), (10, 19)]);
    assert_eq!(log.recover(TOPIC, 2, 20).await.expect("recover").durable_last, None);
    // Published files are final; nothing stays pending.
    assert!(keys(&log).await.iter().all(|k| !k.contains("_catalog/pending/")), "{:?}", keys(&log).await);
}

#[tokio::test]
async fn a_record_whose_files_are_still_pending_is_published_by_recovery_not_rolled_back() {
    let (_dir, log) = log().await;
    log.commit_batch(&record(0, 9, &["m/a"], "w1"), vec![file("m/a")]).await.expect("b1");
    // A writer stopped after its record and before its renames (or still renaming).
    let mut r = record(10, 19, &["m/b", "m/c"], "w1");
    r.pending = pending_dir(TOPIC, 2, 10, "w1");
    for name in ["m/b", "m/c"] {
        log.tier().put_durable(&format!("{}/{name}", r.pending), Bytes::from_static(b"PAR1"), true).await.expect("put");
    }
    let key = record_key(TOPIC, 2, 10);
    log.tier().put_durable(&key, Bytes::from(serde_json::to_vec(&r).expect("json")), true).await.expect("record");
    assert!(!log.tier().exists("m/b").await.expect("head"), "not visible before publication");
    let rec = log.recover(TOPIC, 2, 0).await.expect("recover");
    assert_eq!(rec.durable_last, Some(19));
    assert_eq!((rec.published, rec.rolled_back), (1, 0));
    assert!(log.tier().exists("m/b").await.expect("head") && log.tier().exists("m/c").await.expect("head"));
    assert!(log.tier().exists(&key).await.expect("head"), "the record is kept");
}

#[tokio::test]
async fn a_second_writer_of_the_same_range_is_fenced_and_leaves_nothing_behind() {
    let (_dir, log) = log().await;
    log.commit_batch(&record(0, 9, &["m/a"], "w1"), vec![file("m/a")]).await.expect("b1");
    let err = log.commit_batch(&record(0, 12, &["m/z"], "w2"), vec![file("m/z")]).await.expect_err("fenced");
    assert!(matches!(err, StorageError::Fenced { first_offset: 0, .. }));
    assert!(!log.tier().exists("m/z").await.expect("head"));
    assert!(keys(&log).await.iter().all(|k| !k.contains("_catalog/pending/")), "{:?}", keys(&log).await);
}

#[tokio::test]
async fn a_lost_answer_to_the_record_put_is_not_a_fence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tier, faults) = Tier::open_with_faults(&TierConfig::local_dir(dir.path()).expect("cfg")).expect("open");
    let log = CommitLog::new(tier);
    // The record is stored, but its writer is told the PUT failed; the retry finds its own record.
    faults.add(
        FaultRule::new(
            Some(StoreOp::Put),
            PathMatch::contains("_catalog/commits/"),
            Fault::Error(InjectedError::Transient),
        )
        .once()
        .stage(Stage::After),
    );
    let r = record(0, 9, &["m/a"], "w1");
    assert!(log.commit_batch(&r, vec![file("m/a")]).await.is_err(), "the first attempt sees the error");
    log.commit_batch(&r, vec![file("m/a")]).await.expect("the retry commits");
    assert!(log.tier().exists("m/a").await.expect("head"));
    assert_eq!(log.recover(TOPIC, 2, 0).await.expect("recover").durable_last, Some(9));
}

#[tokio::test]
async fn pending_files_that_can_never_commit_are_deleted_and_a_live_writers_are_kept() {
    let (_dir, log) = log().await;
    log.commit_batch(&record(0, 9, &["m/a"], "w1"), vec![file("m/a")]).await.expect("b1");
    let put = |key: String| {
        let tier = log.tier().clone();
        async move { tier.put_durable(&key, Bytes::from_static(b"PAR1"), false).await.expect("put") }
    };
    // A writer that lost the race at 0, a crashed writer's range at 5 (inside 0..=9), and a
    // writer that may be about to record 10.
    put(format!("{}/m/x", pending_dir(TOPIC, 2, 0, "w2"))).await;
    put(format!("{}/m/y", pending_dir(TOPIC, 2, 5, "w3"))).await;
    put(format!("{}/m/z", pending_dir(TOPIC, 2, 10, "w4"))).await;
    let r = log.recover(TOPIC, 2, 0).await.expect("recover");
    assert_eq!(r.orphans_deleted, 2);
    let pending: Vec<String> = keys(&log).await.into_iter().filter(|k| k.contains("_catalog/pending/")).collect();
    assert_eq!(pending, vec![format!("{}/m/z", pending_dir(TOPIC, 2, 10, "w4"))]);
}

#[tokio::test]
async fn gaps_and_overlaps_between_records_are_refused() {
    for (second, what) in [((12, 20), "offset gap"), ((5, 12), "overlap")] {
        let (_dir, log) = log().await;
        log.commit_batch(&record(0, 9, &["m/a"], "w1"), vec![file("m/a")]).await.expect("b1");
        log.commit_batch(&record(second.0, second.1, &["m/b"], "w1"), vec![file("m/b")]).await.expect("b2");
        match log.recover(TOPIC, 2, 0).await {
            Err(StorageError::CorruptRecord { reason, .. }) => assert!(reason.contains(what), "{reason}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unreadable_record_is_an_error_and_is_kept() {
    let (_dir, log) = log().await;
    let key = record_key(TOPIC, 2, 0);
    log.tier().put_durable(&key, Bytes::from_static(b"{not json"), true).await.expect("put");
    assert!(matches!(log.recover(TOPIC, 2, 0).await, Err(StorageError::CorruptRecord { .. })));
    assert!(log.tier().exists(&key).await.expect("head"));
}

#[tokio::test]
async fn an_incomplete_batch_of_the_older_protocol_is_rolled_back() {
    let (_dir, log) = log().await;
    for (first, last, files) in [(0, 9, vec!["m/a"]), (10, 19, vec!["m/b", "m/c"])] {
        let r = record(first, last, &files, "old");
        let body = Bytes::from(serde_json::to_vec(&r).expect("json"));
        log.tier().put_durable(&record_key(TOPIC, 2, first), body, true).await.expect("record");
    }
    // The older protocol wrote files after the record; a crash left m/c unwritten.
    log.tier().put_durable("m/a", Bytes::from_static(b"PAR1"), false).await.expect("a");
    log.tier().put_durable("m/b", Bytes::from_static(b"PAR1"), false).await.expect("b");
    let r = log.recover(TOPIC, 2, 0).await.expect("recover");
    assert_eq!((r.durable_last, r.rolled_back), (Some(9), 1));
    assert!(!log.tier().exists("m/b").await.expect("head"));
}

#[tokio::test]
async fn records_are_pruned_below_the_committed_offset_only_after_the_grace() {
    let (_dir, log) = log().await;
    log.commit_batch(&record(0, 9, &[], "w1"), vec![]).await.expect("b1");
    log.commit_batch(&record(10, 19, &[], "w1"), vec![]).await.expect("b2");
    let ranges = [(0, 9), (10, 19)];
    assert!(log.prune(TOPIC, 2, &ranges, 15, PRUNE_GRACE_MS - 1).await.expect("prune").is_empty(), "too young");
    assert_eq!(log.prune(TOPIC, 2, &ranges, 15, PRUNE_GRACE_MS).await.expect("prune"), vec![(0, 9)]);
    assert_eq!(log.recover(TOPIC, 2, 0).await.expect("r").complete, vec![(10, 19)]);
}
