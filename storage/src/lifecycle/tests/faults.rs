//! Every step of every move, interrupted at every store call it makes (an error injected
//! before or after the call, as a crash or a lost reply would leave it), then run again:
//! the same rows once each, every time.

use super::*;
use crate::fault_store::{FaultControl, Stage};

pub(super) struct FaultyTiers {
    pub(super) tiers: Tiers,
    pub(super) faults: Vec<(TierName, FaultControl)>,
    _dir: tempfile::TempDir,
}

/// Four local tiers, each with its fault controls.
pub(super) fn faulty_tiers() -> FaultyTiers {
    let dir = tempfile::tempdir().expect("tmp");
    let mut faults = Vec::new();
    let mut open = |name: TierName| {
        let config = TierConfig::local_dir(&dir.path().join(name.as_str())).expect("dir");
        let (tier, control) = Tier::open_with_faults(&config).expect("tier");
        faults.push((name, control));
        tier
    };
    let tiers = Tiers {
        hot: open(TierName::Hot),
        warm: open(TierName::Warm),
        cold: open(TierName::Cold),
        archive: open(TierName::Archive),
    };
    FaultyTiers { tiers, faults, _dir: dir }
}

/// Where a step may be cut: an operation on keys containing a text, in one tier.
const CUTS: &[(TierName, Option<StoreOp>, &str)] = &[
    (TierName::Hot, Some(StoreOp::List), "metrics/"),
    (TierName::Hot, Some(StoreOp::Get), "_catalog/manifests/"),
    (TierName::Hot, Some(StoreOp::GetRanges), ".parquet"),
    (TierName::Warm, None, "/g0"),
    (TierName::Cold, None, "/g0"),
    (TierName::Archive, None, "/g0"),
    (TierName::Hot, Some(StoreOp::Put), "_catalog/manifests/"),
    (TierName::Hot, Some(StoreOp::Put), "_catalog/lifecycle/deletions/"),
    (TierName::Hot, Some(StoreOp::Delete), "metrics/"),
    (TierName::Warm, Some(StoreOp::Delete), "/g0"),
    (TierName::Cold, Some(StoreOp::Delete), "/g0"),
];

#[tokio::test]
async fn a_move_cut_at_any_store_call_and_run_again_keeps_every_row_once() {
    let steps: [(&str, PolicyStep); 4] = [
        ("compact", PolicyStep::Compact { after: "1h".into() }),
        ("cold", PolicyStep::Cold { after: "1h".into() }),
        ("archive", PolicyStep::Archive { after: "1h".into() }),
        ("delete", PolicyStep::Delete { after: "1h".into() }),
    ];
    let mut cuts_that_fired = 0;
    for (cut_tier, op, text) in CUTS {
        for stage in [Stage::Before, Stage::After] {
            let setup = faulty_tiers();
            let tiers = &setup.tiers;
            for p in 0..3 {
                write_hot(tiers, HOUR, p % 2, i64::from(p) * 300, 300).await;
            }
            let expected = totals(tiers).await;
            let lifecycle = Lifecycle::new(FileCatalog::new(tiers.clone()), "test");
            let mut now = HOUR + 3 * 3_600_000;
            for (name, step) in &steps {
                let policy = policy(name, vec![step.clone()]);
                let control = &setup.faults.iter().find(|(t, _)| t == cut_tier).expect("tier").1;
                let rule = control.add(
                    FaultRule::new(*op, PathMatch::contains(*text), Fault::Error(InjectedError::Transient))
                        .once()
                        .stage(stage),
                );
                let cut = lifecycle.run(&policy, &format!("{name}-cut"), false, now, &mut |_| {}).await;
                let fired = rule.fired() > 0;
                control.clear();
                cuts_that_fired += usize::from(fired);
                // Whatever the cut did, a rerun (and one after the grace) finishes the step.
                now += 1;
                let rerun = run(&lifecycle, &policy, now).await;
                assert!(rerun.errors.is_empty(), "{name} after a cut at {cut_tier} {op:?} {text} {stage:?}: {rerun:?}");
                now += GC_GRACE_MS;
                run(&lifecycle, &policy, now).await;
                let seen = totals(tiers).await;
                let want = if *name == "delete" { (0, 0.0, 0) } else { expected };
                assert_eq!(
                    seen, want,
                    "{name}, cut at {cut_tier} {op:?} {text:?} {stage:?} (fired: {fired}, first run: {cut:?})"
                );
            }
        }
    }
    eprintln!("{cuts_that_fired} of {} cuts hit a store call", CUTS.len() * 2 * steps.len());
    assert!(cuts_that_fired >= 20, "the cuts reached the steps ({cuts_that_fired} fired)");
}
