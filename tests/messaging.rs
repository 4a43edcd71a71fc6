//! Scenarios `pubsub`, `routes`, `ordered`, `rebalance`, `scale-out`,
//! `tx-checkback` and `tx-crash`: determinism, seeds passing under faults,
//! and every planted messaging, ordered-consumption, rebalance, retry,
//! leader and transaction bug caught by a named invariant.

use mqsim_core::bugs::{Bug, Bugs};
use mqsim_core::producer::local_tx::TxState;
use mqsim_scenarios::tx::checker::{T1, T2, T4, T5, T6, T8};
use mqsim_scenarios::{find, RunSpec};
use mqsim_sim::history::{to_jsonl, Body, Call, Ret};

fn run(scenario: &str, seed: u64, bugs: Bugs) -> mqsim_scenarios::Outcome {
    find(scenario).unwrap().run(&RunSpec { seed, bugs, ..RunSpec::default() })
}

#[test]
fn same_seed_same_history() {
    for scenario in ["pubsub", "routes", "ordered", "rebalance", "scale-out"] {
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

#[test]
fn ordered_passes_consecutive_seeds_and_takes_the_lock_paths() {
    let (mut processed, mut locks) = (0, 0);
    let mut probes = std::collections::BTreeMap::<String, u64>::new();
    for seed in 1..=10 {
        let outcome = run("ordered", seed, Bugs::none());
        assert!(outcome.violations.is_empty(), "seed {seed}: {:?}", outcome.violations[0]);
        for r in &outcome.history {
            match &r.body {
                Body::Ok { ret: Ret::Process, .. } => processed += 1,
                Body::Ok { ret: Ret::Lock, .. } => locks += 1,
                _ => {}
            }
        }
        for (p, n) in outcome.stats.probes {
            *probes.entry(p).or_default() += n;
        }
    }
    assert!(processed > 2_000 && locks > 100, "{processed} processed, {locks} locks granted");
    for p in ["ordered-lock-refused-held", "ordered-lock-refused-opened", "ordered-reconsume", "broker-took-over-queue"]
    {
        assert!(probes.get(p).is_some_and(|n| *n > 0), "{p} never reached in 10 seeds: {probes:?}");
    }
}

#[test]
fn every_planted_ordering_bug_is_caught() {
    caught("ordered", Bug::OrderedSkipOnFailure, 5, &["M1", "M2", "M5"]);
    caught("ordered", Bug::OrderedLockOutlivesOwner, 30, &["M2"]);
}

#[test]
fn rebalance_passes_consecutive_seeds_and_takes_the_retry_paths() {
    let (mut retried, mut dead) = (0, 0);
    let mut probes = std::collections::BTreeMap::<String, u64>::new();
    for seed in 1..=10 {
        let outcome = run("rebalance", seed, Bugs::none());
        assert!(outcome.violations.is_empty(), "seed {seed}: {:?}", outcome.violations[0]);
        let mut sent_back = std::collections::BTreeMap::new();
        for r in &outcome.history {
            match &r.body {
                Body::Invoke { id, call: Call::Send { topic, back: Some(_), .. } } => {
                    sent_back.insert(*id, topic.starts_with("%DLQ%"));
                }
                Body::Ok { id, ret: Ret::Send { .. } } => match sent_back.get(id) {
                    Some(true) => dead += 1,
                    Some(false) => retried += 1,
                    None => {}
                },
                _ => {}
            }
        }
        for (p, n) in outcome.stats.probes {
            *probes.entry(p).or_default() += n;
        }
    }
    assert!(retried > 200 && dead > 20, "{retried} messages sent to the retry topic, {dead} to the dead-letter topic");
    for p in ["retry-sent-back", "retry-dead-lettered", "retry-not-due", "consumer-rebalance-uncommitted"] {
        assert!(probes.get(p).is_some_and(|n| *n > 0), "{p} never reached in 10 seeds: {probes:?}");
    }
}

#[test]
fn every_planted_rebalance_and_retry_bug_is_caught() {
    caught("rebalance", Bug::DlqBeforeMaxRetries, 5, &["M8"]);
    caught("rebalance", Bug::RebalanceOverlap, 10, &["M5"]);
}

#[test]
fn scale_out_passes_consecutive_seeds_and_the_leader_moves_queues() {
    let mut assigned_to_new = 0;
    let mut probes = std::collections::BTreeMap::<String, u64>::new();
    for seed in 1..=10 {
        let outcome = run("scale-out", seed, Bugs::none());
        assert!(outcome.violations.is_empty(), "seed {seed}: {:?}", outcome.violations[0]);
        for r in &outcome.history {
            if let Body::Invoke { call: Call::Assign { moves, .. }, .. } = &r.body {
                assigned_to_new += moves.iter().filter(|m| m.to.starts_with("newbroker-")).count();
            }
        }
        for (p, n) in outcome.stats.probes {
            *probes.entry(p).or_default() += n;
        }
    }
    assert!(assigned_to_new >= 10, "{assigned_to_new} queues assigned to joining brokers");
    for p in ["leader-assigned-new", "leader-moved-off-dead", "leader-shed-load", "leader-queue-given-up"] {
        assert!(probes.get(p).is_some_and(|n| *n > 0), "{p} never reached in 10 seeds: {probes:?}");
    }
}

#[test]
fn every_planted_scale_out_bug_is_caught() {
    caught("scale-out", Bug::LeaderActsAfterLosingLock, 10, &["L1"]);
    caught("scale-out", Bug::RolloverOnOldBookies, 10, &["P1"]);
}

#[test]
fn tx_same_seed_same_history() {
    for scenario in ["tx-checkback", "tx-crash"] {
        let first = to_jsonl(&run(scenario, 5, Bugs::none()).history);
        run(scenario, 11, Bugs::none());
        assert_eq!(first, to_jsonl(&run(scenario, 5, Bugs::none()).history), "{scenario}");
    }
}

#[test]
fn both_scenarios_pass_consecutive_seeds_and_take_every_path() {
    for scenario in ["tx-checkback", "tx-crash"] {
        let (mut halves, mut commits, mut checks, mut delivered, mut discarded) = (0, 0, 0, 0, 0);
        for seed in 1..=12 {
            let outcome = run(scenario, seed, Bugs::none());
            assert!(outcome.violations.is_empty(), "{scenario} seed {seed}: {:?}", outcome.violations[0]);
            for r in &outcome.history {
                match &r.body {
                    Body::Ok { ret: Ret::SendHalf { .. }, .. } => halves += 1,
                    Body::Ok { ret: Ret::Decide { state: TxState::Commit }, .. } => commits += 1,
                    Body::Invoke { call: Call::CheckBack { .. }, .. } => checks += 1,
                    Body::Ok { ret: Ret::Process, .. } => delivered += 1,
                    Body::Ok { ret: Ret::ReadTxLogs { discards, .. }, .. } => discarded += discards.len(),
                    _ => {}
                }
            }
        }
        assert!(
            halves > 2_000 && commits > halves / 2 && checks > 500 && delivered > commits / 2 && discarded > 20,
            "{scenario}: {halves} halves, {commits} commits, {checks} check-backs, {delivered} delivered, {discarded} discarded"
        );
    }
}

#[test]
fn every_planted_transaction_bug_is_caught() {
    caught("tx-checkback", Bug::TxNoCheckback, 5, &[T1, T5]);
    caught("tx-crash", Bug::TxImmunityLosesHalf, 20, &[T1, T5, T8]);
    caught("tx-checkback", Bug::TxDuplicateEndCommitsTwice, 20, &[T4, T8]);
    caught("tx-checkback", Bug::TxEndAfterCheck, 20, &[T4, T8]);
    caught("tx-checkback", Bug::TxCheckOffsetStuck, 20, &[T1, T5]);
    caught("tx-checkback", Bug::TxCheckByProducerClock, 10, &[T6]);
    caught("tx-checkback", Bug::TxOpBeforeReal, 20, &[T1]);
    caught("tx-checkback", Bug::TxCheckUnbounded, 5, &[T1, T6]);
    caught("tx-checkback", Bug::TxHalfVisible, 5, &[T1, T2]);
}
