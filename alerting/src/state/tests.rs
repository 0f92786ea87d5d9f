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
