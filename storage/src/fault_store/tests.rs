use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;

use super::*;
use crate::tier::{Tier, TierConfig};
use crate::{StorageError, StoreMetrics};

const WAIT: Duration = Duration::from_secs(10);

fn memory() -> (FaultStore, FaultControl) {
    let store = FaultStore::new(Arc::new(InMemory::new()));
    let control = store.control().clone();
    (store, control)
}

/// Through `put_opts`, whose boxed future is `Send` (spawned below).
async fn put(store: &FaultStore, key: &str) -> object_store::Result<PutResult> {
    store.put_opts(&Path::from(key), PutPayload::from_static(b"x"), PutOptions::default()).await
}

async fn exists(store: &dyn ObjectStore, key: &str) -> bool {
    store.head(&Path::from(key)).await.is_ok()
}

#[tokio::test]
async fn an_error_fires_exactly_n_times_then_calls_pass() {
    let (store, control) = memory();
    let rule = control.add(
        FaultRule::new(
            Some(StoreOp::Put),
            PathMatch::contains("_catalog/commits/"),
            Fault::Error(InjectedError::Transient),
        )
        .times(2),
    );
    for _ in 0..2 {
        let err = put(&store, "_catalog/commits/t/p0/0.json").await.expect_err("injected");
        assert!(matches!(err, object_store::Error::Generic { store: "FaultStore", .. }), "{err}");
        assert!(StorageError::from(err).is_transient(), "injected errors are transient");
    }
    put(&store, "_catalog/commits/t/p0/0.json").await.expect("the third put passes");
    put(&store, "metrics/a").await.expect("other paths are untouched");
    assert!(exists(&store, "_catalog/commits/t/p0/0.json").await);
    assert_eq!(rule.fired(), 2);
}

#[tokio::test]
async fn skip_picks_the_nth_call_and_error_kinds_map_to_their_variants() {
    let (store, control) = memory();
    let second = control.add(
        FaultRule::new(Some(StoreOp::Put), PathMatch::prefix("metrics/"), Fault::Error(InjectedError::Precondition))
            .skip(1)
            .once(),
    );
    put(&store, "metrics/a").await.expect("first passes");
    let err = put(&store, "metrics/b").await.expect_err("second fails");
    assert!(matches!(err, object_store::Error::Precondition { ref path, .. } if path == "metrics/b"), "{err}");
    put(&store, "metrics/c").await.expect("third passes");
    assert_eq!(second.fired(), 1);

    let ni =
        control.add(FaultRule::new(Some(StoreOp::Get), PathMatch::Any, Fault::Error(InjectedError::NotImplemented)));
    let err = store.get(&Path::from("metrics/a")).await.expect_err("not implemented");
    assert!(matches!(err, object_store::Error::NotImplemented { .. }), "{err}");
    assert!(exists(&store, "metrics/a").await, "head is an operation of its own");
    assert!(control.remove(&ni));
    store.get(&Path::from("metrics/a")).await.expect("rule removed");
    assert_eq!(ni.fired(), 1);
}

#[tokio::test]
async fn latency_delays_matching_calls() {
    let (store, control) = memory();
    control.add(FaultRule::new(
        Some(StoreOp::Put),
        PathMatch::contains("slow"),
        Fault::Latency(Duration::from_millis(300)),
    ));
    let started = Instant::now();
    put(&store, "slow/a").await.expect("put");
    assert!(started.elapsed() >= Duration::from_millis(300), "took {:?}", started.elapsed());
    assert!(exists(&store, "slow/a").await);
}

#[tokio::test]
async fn a_pause_holds_the_second_call_while_other_paths_proceed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalFileSystem::new_with_prefix(dir.path()).expect("local store");
    let store = Arc::new(FaultStore::new(Arc::new(local)));
    let pause = Pause::new();
    let rule = store
        .control()
        .add(FaultRule::new(Some(StoreOp::Put), PathMatch::prefix("a/"), Fault::Pause(pause.clone())).skip(1).once());

    put(&store, "a/1").await.expect("the first call is not paused");
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { put(&store, "a/2").await })
    };
    tokio::time::timeout(WAIT, pause.wait_until_paused()).await.expect("the second put reaches the pause");
    // Timeouts turn a pause that holds too much into a failure rather than a hang.
    let other =
        tokio::time::timeout(WAIT, put(&store, "b/1")).await.expect("a call on another path proceeds meanwhile");
    other.expect("put b/1");
    tokio::time::timeout(WAIT, put(&store, "a/3")).await.expect("the pause fires once").expect("put a/3");
    assert!(!writer.is_finished(), "the paused put must still wait");
    assert!(!dir.path().join("a/2").exists(), "the paused put has not reached the store");

    pause.release();
    tokio::time::timeout(WAIT, writer).await.expect("released").expect("join").expect("put");
    assert!(dir.path().join("a/2").exists());
    assert_eq!((rule.fired(), pause.arrived()), (1, 1));
}

#[tokio::test]
async fn after_call_faults_happen_after_the_effect() {
    let (store, control) = memory();
    control.add(
        FaultRule::new(Some(StoreOp::Put), PathMatch::Any, Fault::Error(InjectedError::Transient)).after_call().once(),
    );
    put(&store, "m/a").await.expect_err("the reply is lost");
    assert!(exists(&store, "m/a").await, "but the object was written");
}

#[tokio::test]
async fn list_and_delete_faults() {
    let (store, control) = memory();
    put(&store, "m/a").await.expect("put");
    control.add(
        FaultRule::new(Some(StoreOp::List), PathMatch::prefix("m"), Fault::Error(InjectedError::Transient)).once(),
    );
    control.add(FaultRule::new(Some(StoreOp::Delete), PathMatch::Any, Fault::Error(InjectedError::Transient)).once());
    let listed: object_store::Result<Vec<_>> = store.list(Some(&Path::from("m"))).try_collect().await;
    listed.expect_err("injected list error");
    let listed: Vec<_> = store.list(Some(&Path::from("m"))).try_collect().await.expect("second list");
    assert_eq!(listed.len(), 1);
    store.delete(&Path::from("m/a")).await.expect_err("injected delete error");
    assert!(exists(&store, "m/a").await, "a failed delete leaves the object");
    store.delete(&Path::from("m/a")).await.expect("delete");
    assert!(!exists(&store, "m/a").await);
}

#[tokio::test]
async fn a_seeded_rate_is_repeatable() {
    /// The indices of the calls that failed, of 1000.
    async fn pattern(seed: u64) -> Vec<usize> {
        let (store, control) = memory();
        control.add(FaultRule::new(None, PathMatch::Any, Fault::Error(InjectedError::Transient)).rate(0.1, seed));
        let mut failed = Vec::new();
        for i in 0..1000 {
            if put(&store, &format!("k/{i}")).await.is_err() {
                failed.push(i);
            }
        }
        failed
    }
    let (a, b, c) = (pattern(7).await, pattern(7).await, pattern(8).await);
    assert_eq!(a, b, "same seed, same failures");
    assert_ne!(a, c, "another seed, other failures");
    assert!((50..=150).contains(&a.len()), "about 10% of 1000 calls, got {}", a.len());
}

#[test]
fn good_specs_parse() {
    let rules = parse_fault_spec("put:_catalog/commits/:error:0.05; get:*:latency:20ms ;").expect("spec");
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].op, Some(StoreOp::Put));
    assert_eq!(rules[0].path, PathMatch::contains("_catalog/commits/"));
    assert!(matches!(rules[0].fault, Fault::Error(InjectedError::Transient)));
    assert_eq!(rules[0].rate, Some((0.05, DEFAULT_SEED)));
    assert_eq!(rules[1].path, PathMatch::Any);
    assert!(matches!(rules[1].fault, Fault::Latency(d) if d == Duration::from_millis(20)));

    let rules = parse_fault_spec(
        "*:^metrics/:precondition:skip=1:once:stage=after;delete:x:not_implemented:5%:seed=3;list:y:latency:1.5s:rate=0.5:times=4",
    )
    .expect("spec");
    assert_eq!((rules[0].op, rules[0].skip, rules[0].times, rules[0].stage), (None, 1, Some(1), Stage::After));
    assert_eq!(rules[0].path, PathMatch::prefix("metrics/"));
    assert_eq!(rules[1].rate, Some((0.05, 3)));
    assert!(matches!(rules[1].fault, Fault::Error(InjectedError::NotImplemented)));
    assert!(matches!(rules[2].fault, Fault::Latency(d) if d == Duration::from_millis(1500)));
    assert_eq!((rules[2].rate, rules[2].times), (Some((0.5, DEFAULT_SEED)), Some(4)));
    assert!(parse_fault_spec("").expect("empty").is_empty());
}

#[test]
fn bad_specs_are_rejected_with_a_reason() {
    let cases = [
        ("put:x", "expected <op>:<path>:<fault>"),
        ("pot:x:error", "unknown operation \"pot\""),
        ("put::error", "empty path"),
        ("put:^:error", "empty prefix"),
        ("put:x:explode", "unknown fault \"explode\""),
        ("put:x:pause", "needs a test's handle"),
        ("put:x:latency", "latency needs a duration"),
        ("put:x:latency:20parsecs", "bad duration \"20parsecs\""),
        ("put:x:error:1.5", "bad rate \"1.5\""),
        ("put:x:error:0", "bad rate \"0\""),
        ("put:x:error:times=two", "\"two\" is not a whole number"),
        ("put:x:error:stage=during", "stage must be before or after"),
        ("put:x:error:color=red", "unknown argument \"color\""),
        ("put:x:error:0.1:0.2", "unexpected argument \"0.2\""),
        ("put:x:error:seed=4", "seed without a rate"),
    ];
    for (spec, expected) in cases {
        let err = parse_fault_spec(&format!("get:*:latency:1ms;{spec}")).expect_err(spec);
        assert_eq!(err.rule, spec);
        assert!(err.to_string().contains(expected), "{spec}: {err}");
    }
}

#[tokio::test]
async fn tier_open_applies_the_fault_spec_option() {
    let mut config = TierConfig::new("memory:///");
    config.options.insert(crate::tier::FAULT_SPEC_OPTION.into(), "put:^m/:error:once".into());
    let tier = Tier::open(&config).expect("open");
    let err = tier.put_durable("m/a", Bytes::from_static(b"x"), false).await.expect_err("injected");
    assert!(err.is_transient(), "{err}");
    tier.put_durable("m/a", Bytes::from_static(b"x"), false).await.expect("once only");

    // Keys are relative to the tier, whatever the directory holding it.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = TierConfig::local_dir(&dir.path().join("hot")).expect("config");
    config.options.insert(crate::tier::FAULT_SPEC_OPTION.into(), "put:^m/:error:once".into());
    let tier = Tier::open(&config).expect("open");
    tier.put_durable("m/a", Bytes::from_static(b"x"), false).await.expect_err("injected");
    tier.put_durable("m/a", Bytes::from_static(b"x"), false).await.expect("once only");

    config.options.insert(crate::tier::FAULT_SPEC_OPTION.into(), "put:m/:boom".into());
    let err = Tier::open(&config).expect_err("bad spec");
    assert!(matches!(err, StorageError::FaultSpec(_)), "{err}");
    assert!(err.to_string().contains("unknown fault \"boom\""), "{err}");
}

#[tokio::test]
async fn injected_faults_show_in_the_store_metrics() {
    let registry = prometheus::Registry::new();
    let metrics = StoreMetrics::new(&registry);
    let (faults, control) = memory();
    let store = crate::InstrumentedStore::with_metrics(Arc::new(faults), metrics.clone());
    control.add(FaultRule::new(Some(StoreOp::Put), PathMatch::Any, Fault::Error(InjectedError::Precondition)).once());
    store.put(&Path::from("m/a"), PutPayload::from_static(b"x")).await.expect_err("injected");
    store.put(&Path::from("m/a"), PutPayload::from_static(b"x")).await.expect("put");
    assert_eq!(metrics.call_seconds.with_label_values(&["put"]).get_sample_count(), 2);
    assert_eq!(metrics.errors.with_label_values(&["put", "precondition"]).get(), 1);
}
