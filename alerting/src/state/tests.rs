use callscope_schemas::events::AlertStatus;

use super::*;

#[test]
fn a_state_file_of_an_older_version_still_reads() {
    let old = br#"{"nflog":{},"published_through_ms":1000,"leader":"a","saved_at_ms":5}"#;
    let state = DurableState::from_json(old).expect("old state");
    let through = state.published_through.expect("migrated mark");
    assert!(TransitionKey::new(1_000, "ffffffffffffffff", AlertStatus::Resolved) <= through, "its millisecond is done");
    assert!(TransitionKey::new(1_001, "0000000000000000", AlertStatus::Firing) > through, "the next one is not");
    assert_eq!(state.leader, "a");

    let never = br#"{"nflog":{},"published_through_ms":0,"leader":"","saved_at_ms":0}"#;
    assert_eq!(DurableState::from_json(never).expect("old state").published_through, None);
}

#[test]
fn the_mark_round_trips_and_stays_readable_by_older_versions() {
    let mut state = DurableState::default();
    let key = TransitionKey::new(2_000, "00000000000000aa", AlertStatus::Firing);
    state.set_published_through(Some(key.clone()));
    let bytes = serde_json::to_vec(&state).expect("json");
    assert_eq!(DurableState::from_json(&bytes).expect("state").published_through, Some(key));
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(json["published_through_ms"], 1_999, "everything before the key's millisecond is published");
}

fn leader(name: &str, term: u64) -> DurableState {
    let mut state = DurableState::default();
    (state.leader, state.term) = (name.into(), term);
    state
}

#[tokio::test]
async fn a_leader_of_an_older_term_loses_the_state_to_the_newer_one() {
    let tier = Tier::open(&callscope_storage::TierConfig::new("memory:///")).expect("memory tier");
    let mut old = leader("a", 1);
    assert_eq!(save(&tier, &old).await.expect("save"), Saved::Written, "the first leader creates the state");
    old.saved_at_ms = 1;
    assert_eq!(save(&tier, &old).await.expect("save"), Saved::Written, "and keeps writing it");

    // A new leader takes over with the stored term + 1.
    let stored = read_state(&tier).await;
    assert_eq!((stored.leader.as_str(), stored.term), ("a", 1));
    let new = leader("b", stored.term + 1);
    assert_eq!(save(&tier, &new).await.expect("save"), Saved::Written);

    // The old leader (a zombie that has not noticed yet) no longer writes.
    old.saved_at_ms = 2;
    assert_eq!(save(&tier, &old).await.expect("save"), Saved::Superseded { term: 2 });
    // Nor does another instance that claimed the same term.
    assert_eq!(save(&tier, &leader("c", 2)).await.expect("save"), Saved::Superseded { term: 2 });
    let stored = read_state(&tier).await;
    assert_eq!((stored.leader.as_str(), stored.term), ("b", 2), "the newer leader's state stands");
    assert_eq!(save(&tier, &new).await.expect("save"), Saved::Written, "the leader itself goes on writing");
}

#[tokio::test]
async fn a_state_file_without_a_term_is_taken_over() {
    let tier = Tier::open(&callscope_storage::TierConfig::new("memory:///")).expect("memory tier");
    let old = br#"{"nflog":{},"published_through_ms":0,"leader":"a","saved_at_ms":5}"#;
    tier.put_durable(&CatalogKey::AlertingState.path(), Bytes::from_static(old), false).await.expect("put");
    let stored = read_state(&tier).await;
    assert_eq!(stored.term, 0);
    assert_eq!(save(&tier, &leader("b", stored.term + 1)).await.expect("save"), Saved::Written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_local_tier_saves_with_a_conditional_update_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = Tier::open(&callscope_storage::TierConfig::local_dir(dir.path()).expect("dir")).expect("local tier");
    assert_eq!(save(&tier, &leader("a", 1)).await.expect("save"), Saved::Written);
    assert_eq!(save(&tier, &leader("a", 1)).await.expect("save"), Saved::Written);
    assert_eq!(save(&tier, &leader("b", 2)).await.expect("save"), Saved::Written);
    assert_eq!(save(&tier, &leader("a", 1)).await.expect("save"), Saved::Superseded { term: 2 });
    // Two leaders of one term racing: the conditional update lets exactly one write.
    let racers = ["c", "d", "e", "f"].map(|name| {
        let tier = tier.clone();
        tokio::spawn(async move { save(&tier, &leader(name, 3)).await.expect("save") })
    });
    let outcomes: Vec<Saved> = futures::future::join_all(racers).await.into_iter().map(|r| r.expect("task")).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == Saved::Written).count(), 1, "{outcomes:?}");
}
