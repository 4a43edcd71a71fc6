//! Scenario `meta`: determinism, a pinned history, many seeds passing, and
//! the checker failing when a planted bug is on.

use mqsim_core::bugs::{Bug, Bugs};
use mqsim_scenarios::{find, RunSpec};
use mqsim_sim::history::to_jsonl;

fn history(seed: u64) -> String {
    let outcome = find("meta").unwrap().run(&RunSpec { seed, ..RunSpec::default() });
    to_jsonl(&outcome.history)
}

#[test]
fn same_seed_same_history_even_after_other_seeds_in_the_same_process() {
    let first = history(7);
    assert_eq!(first, history(7), "two runs of seed 7 differ");
    for seed in 1_000..1_100 {
        history(seed);
    }
    assert_eq!(first, history(7), "seed 7 changed after 100 other seeds ran in this process");
}

#[test]
fn a_short_history_is_pinned() {
    let outcome = find("meta").unwrap().run(&RunSpec { seed: 42, ..RunSpec::default() });
    // The first records, and every fault of the run.
    let pinned: Vec<_> = outcome
        .history
        .iter()
        .enumerate()
        .filter(|(i, r)| *i < 40 || r.kind() == mqsim_sim::history::Kind::Fault)
        .map(|(_, r)| r.clone())
        .collect();
    let head = to_jsonl(&pinned);
    let schedule: Vec<String> = outcome.schedule.actions.iter().map(|a| a.to_string()).collect();
    insta::assert_snapshot!("meta_seed_42_schedule", schedule.join("\n"));
    insta::assert_snapshot!("meta_seed_42_history_head", head);
}

#[test]
fn passes_80_consecutive_seeds_with_faults_on() {
    // Longer ranges are the CI campaign's (every scenario, seeds 1–200) and users' campaigns.
    let mut faults = 0;
    for seed in 1..=80 {
        let outcome = find("meta").unwrap().run(&RunSpec { seed, ..RunSpec::default() });
        faults += outcome.schedule.actions.len();
        assert!(outcome.violations.is_empty(), "seed {seed}: {:?}", outcome.violations[0]);
    }
    assert!(faults > 800, "the nemesis was active: {faults} faults");
}

#[test]
fn ack_before_fsync_is_caught_as_a_lost_acknowledged_write() {
    let bugs = Bugs::none().with(Bug::MetaAckBeforeFsync);
    let caught = (1..=500).find_map(|seed| {
        let outcome = find("meta").unwrap().run(&RunSpec { seed, bugs, ..RunSpec::default() });
        outcome.violations.into_iter().find(|v| v.invariant == "K1").map(|v| (seed, v))
    });
    let (seed, v) = caught.expect("no seed within 500 lost an acknowledged write");
    assert!(v.detail.contains("acknowledged write lost"), "seed {seed}: {}", v.detail);
}
