//! Scenario `managed-ledger`: determinism, seeds passing with owners changing
//! under faults, and the planted takeover bug caught by a named invariant.

use mqsim_core::bugs::{Bug, Bugs};
use mqsim_scenarios::{find, RunSpec};
use mqsim_sim::history::{to_jsonl, Body, Ret};

fn run(seed: u64, bugs: Bugs) -> mqsim_scenarios::Outcome {
    find("managed-ledger").unwrap().run(&RunSpec { seed, bugs, ..RunSpec::default() })
}

#[test]
fn same_seed_same_history() {
    let first = to_jsonl(&run(4, Bugs::none()).history);
    for seed in 30..36 {
        run(seed, Bugs::none());
    }
    assert_eq!(first, to_jsonl(&run(4, Bugs::none()).history));
}

#[test]
fn passes_60_consecutive_seeds_while_owners_change() {
    let (mut appended, mut opened, mut faults) = (0, 0, 0);
    for seed in 1..=60 {
        let outcome = run(seed, Bugs::none());
        assert!(outcome.violations.is_empty(), "seed {seed}: {:?}", outcome.violations[0]);
        faults += outcome.schedule.actions.len();
        for r in &outcome.history {
            match &r.body {
                Body::Ok { ret: Ret::Append { .. }, .. } => appended += 1,
                Body::Ok { ret: Ret::OpenLog { .. }, .. } => opened += 1,
                _ => {}
            }
        }
    }
    assert!(
        appended > 20_000 && opened > 200 && faults > 600,
        "the run did work under faults: {appended} appends, {opened} takeovers, {faults} faults"
    );
}

#[test]
fn a_takeover_without_fencing_is_caught() {
    let found = (1..=30).find_map(|seed| {
        let outcome = run(seed, Bugs::none().with(Bug::TakeoverWithoutFencing));
        outcome.violations.into_iter().next().map(|v| (seed, v))
    });
    let (seed, v) = found.expect("takeover-without-fencing not caught within 30 seeds");
    assert!(["L1", "L4"].contains(&v.invariant), "seed {seed}: {} {}", v.invariant, v.detail);
}
