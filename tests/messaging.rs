//! Scenarios `pubsub` and `routes`: determinism, seeds passing under faults,
//! and every planted messaging bug caught by a named invariant.

use mqsim_core::bugs::{Bug, Bugs};
use mqsim_scenarios::{find, RunSpec};
use mqsim_sim::history::{to_jsonl, Body, Call, Ret};

fn run(scenario: &str, seed: u64, bugs: Bugs) -> mqsim_scenarios::Outcome {
    find(scenario).unwrap().run(&RunSpec { seed, bugs, ..RunSpec::default() })
}

#[test]
fn same_seed_same_history() {
    for scenario in ["pubsub", "routes"] {
        let first = to_jsonl(&run(scenario, 5, Bugs::none()).history);
        run(scenario, 11, Bugs::none());
        assert_eq!(first, to_jsonl(&run(scenario, 5, Bugs::none()).history), "{scenario}");
    }
}

#[test]
fn pubsub_passes_40_consecutive_seeds_and_delivers() {
    let (mut acked, mut processed, mut faults) = (0, 0, 0);
    for seed in 1..=40 {
        let outcome = run("pubsub", seed, Bugs::none());
        assert!(outcome.violations.is_empty(), "seed {seed}: {:?}", outcome.violations[0]);
        faults += outcome.schedule.actions.len();
        for r in &outcome.history {
            match &r.body {
                Body::Ok { ret: Ret::Send { .. }, .. } => acked += 1,
                Body::Ok { ret: Ret::Process, .. } => processed += 1,
                _ => {}
            }
        }
    }
    assert!(
        acked > 8_000 && processed > 2 * acked / 3 && faults > 400,
        "the runs did work under faults: {acked} sends acknowledged, {processed} processed, {faults} faults"
    );
}

#[test]
fn routes_passes_60_consecutive_seeds() {
    let mut answers = 0;
    for seed in 1..=60 {
        let outcome = run("routes", seed, Bugs::none());
        assert!(outcome.violations.is_empty(), "seed {seed}: {:?}", outcome.violations[0]);
        answers += outcome
            .history
            .iter()
            .filter(|r| matches!(&r.body, Body::Invoke { call: Call::Routes { .. }, .. }))
            .count();
    }
    assert!(answers > 5_000, "{answers} route queries");
}

/// The first seed in `1..=limit` where `bug` breaks one of `invariants`.
fn caught(scenario: &str, bug: Bug, limit: u64, invariants: &[&str]) {
    let found = (1..=limit).find_map(|seed| {
        let outcome = run(scenario, seed, Bugs::none().with(bug));
        outcome.violations.into_iter().next().map(|v| (seed, v))
    });
    let (seed, v) = found.unwrap_or_else(|| panic!("{} not caught within {limit} seeds", bug.name()));
    assert!(invariants.contains(&v.invariant), "{} at seed {seed}: {} {}", bug.name(), v.invariant, v.detail);
}

#[test]
fn every_planted_messaging_bug_is_caught() {
    caught("pubsub", Bug::BrokerAckBeforeQuorum, 20, &["M1", "M6"]);
    caught("pubsub", Bug::CacheServesPastLac, 30, &["M1", "M2", "M6"]);
    caught("pubsub", Bug::ConsumerCommitBeforeProcess, 10, &["M1", "M5"]);
    caught("pubsub", Bug::OffsetsInMemory, 10, &["M1", "M5"]);
    caught("pubsub", Bug::ProducerRetryNewId, 10, &["M3"]);
    caught("pubsub", Bug::IndexSkipsTakenOverLog, 10, &["M1"]);
    caught("routes", Bug::NameserverNeverExpires, 10, &["R1"]);
}
