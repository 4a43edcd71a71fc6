//! The leader broker's decisions (Pulsar's load manager, run by the broker
//! that holds the leader lock): which broker each queue is assigned to. A
//! pure state machine; the broker's `lead` task is its driver.
//!
//! Every broker reports its load under an ephemeral key in [`LOADS`]; a
//! broker whose report is gone is dead. The leader keeps one map of
//! assignments in [`ASSIGNMENTS`], written whole by compare-and-set and
//! stamped with its term (the zxid that created its leader lock), so that a
//! leader that lost its lock and wakes up cannot overwrite a newer leader's
//! decisions: it either fails the compare-and-set or reads a newer term and
//! steps down. Brokers take the queues assigned to them and give up the
//! queues assigned away from them.

use crate::message::QueueId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The leader lock: an ephemeral key.
pub const LEADER: &str = "/balance/leader";
/// Where brokers report their load: ephemeral keys `/balance/loads/<broker>`.
pub const LOADS: &str = "/balance/loads";
/// The leader's assignments.
pub const ASSIGNMENTS: &str = "/balance/assignments";
/// How often the leader balances and every broker reports its load.
pub const BALANCE_EVERY: Duration = Duration::from_secs(5);
/// Queues moved off live brokers per round at most, so load is shed gradually.
pub const MAX_SHEDS: usize = 1;

/// The ephemeral key of `broker`'s load report.
pub fn load_key(broker: &str) -> String {
    format!("{LOADS}/{broker}")
}

/// A broker's load report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// Queues it owns now.
    pub queues: u32,
}

/// The leader's assignments, stamped with the term of the leader that wrote them last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignments {
    pub term: u64,
    pub queues: BTreeMap<QueueId, String>,
}

impl Assignments {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("assignments always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Option<Assignments> {
        postcard::from_bytes(bytes).ok()
    }
}

/// One decision: `queue` goes to `to` (from `from`, when it was assigned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub queue: QueueId,
    pub from: Option<String>,
    pub to: String,
}

/// The moves of one round: every queue that is unassigned or assigned to a
/// broker not `live` goes to the live broker with the fewest queues (ties by
/// name); then, at most [`MAX_SHEDS`] times, a queue of the busiest live
/// broker goes to the idlest when they differ by more than one. No moves
/// when no broker is live.
pub fn plan(queues: &[QueueId], live: &BTreeSet<String>, current: &BTreeMap<QueueId, String>) -> Vec<Move> {
    if live.is_empty() {
        return Vec::new();
    }
    let mut count: BTreeMap<&str, usize> = live.iter().map(|b| (b.as_str(), 0)).collect();
    let queues: BTreeSet<&QueueId> = queues.iter().collect();
    let mut held: BTreeMap<&str, BTreeSet<&QueueId>> = BTreeMap::new();
    let mut orphans = Vec::new();
    for q in &queues {
        match current.get(*q).filter(|b| live.contains(*b)) {
            Some(b) => {
                *count.get_mut(b.as_str()).expect("live") += 1;
                held.entry(b.as_str()).or_default().insert(*q);
            }
            None => orphans.push(*q),
        }
    }
    let idlest = |count: &BTreeMap<&str, usize>| -> String {
        let (b, _) = count.iter().min_by_key(|(b, n)| (**n, **b)).expect("a live broker");
        b.to_string()
    };
    let mut moves = Vec::new();
    for q in orphans {
        let to = idlest(&count);
        *count.get_mut(to.as_str()).expect("live") += 1;
        moves.push(Move { queue: q.clone(), from: current.get(q).cloned(), to });
    }
    for _ in 0..MAX_SHEDS {
        let to = idlest(&count);
        let (from, most) = count.iter().max_by_key(|(b, n)| (**n, std::cmp::Reverse(**b))).expect("a live broker");
        let (from, most) = (from.to_string(), *most);
        if most <= count[to.as_str()] + 1 {
            break;
        }
        let Some(q) = held.get_mut(from.as_str()).and_then(|s| s.pop_last()) else { break };
        *count.get_mut(from.as_str()).expect("live") -= 1;
        *count.get_mut(to.as_str()).expect("live") += 1;
        moves.push(Move { queue: q.clone(), from: Some(from), to });
    }
    moves
}

/// `current` with `moves` applied and stamped with `term`.
pub fn apply(current: &Assignments, moves: &[Move], term: u64) -> Assignments {
    let mut next = Assignments { term, queues: current.queues.clone() };
    for m in moves {
        next.queues.insert(m.queue.clone(), m.to.clone());
    }
    next
}

/// What a leader of `term` makes of the assignments it read: act on them,
/// or step down because a newer leader wrote them.
pub fn may_act(term: u64, read: &Assignments) -> bool {
    read.term <= term
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn qs(n: u32) -> Vec<QueueId> {
        (0..n).map(|i| QueueId::new("t", i)).collect()
    }

    fn live(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn counts(a: &BTreeMap<QueueId, String>, live: &BTreeSet<String>) -> Vec<usize> {
        live.iter().map(|b| a.values().filter(|v| *v == b).count()).collect()
    }

    #[test]
    fn first_round_spreads_the_queues_evenly() {
        let a = apply(&Assignments::default(), &plan(&qs(5), &live(&["b0", "b1"]), &BTreeMap::new()), 7);
        assert_eq!(a.term, 7);
        assert_eq!(counts(&a.queues, &live(&["b0", "b1"])), vec![3, 2]);
    }

    #[test]
    fn a_dead_brokers_queues_go_to_the_live_ones_and_a_new_broker_takes_load_gradually() {
        let mut a = apply(&Assignments::default(), &plan(&qs(6), &live(&["b0", "b1", "b2"]), &BTreeMap::new()), 1);
        let moves = plan(&qs(6), &live(&["b0", "b1"]), &a.queues);
        assert_eq!(moves.len(), 2, "{moves:?}");
        assert!(moves.iter().all(|m| m.from.as_deref() == Some("b2") && m.to != "b2"));
        a = apply(&a, &moves, 1);
        // b3 joins: one queue a round moves to it until balanced.
        let four = live(&["b0", "b1", "b3"]);
        let moves = plan(&qs(6), &four, &a.queues);
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].to, "b3");
        a = apply(&a, &moves, 1);
        a = apply(&a, &plan(&qs(6), &four, &a.queues), 1);
        assert_eq!(counts(&a.queues, &four), vec![2, 2, 2]);
        assert!(plan(&qs(6), &four, &a.queues).is_empty(), "balanced: nothing moves");
    }

    #[test]
    fn no_live_broker_no_moves_and_a_newer_term_stops_a_leader() {
        assert!(plan(&qs(3), &BTreeSet::new(), &BTreeMap::new()).is_empty());
        let read = Assignments { term: 9, queues: BTreeMap::new() };
        assert!(may_act(9, &read) && may_act(10, &read) && !may_act(8, &read));
        assert_eq!(Assignments::decode(&read.encode()), Some(read));
        assert_eq!(Assignments::decode(&[0xff, 0xff]), None);
    }

    proptest! {
        /// From any assignment, rounds of plans end with every queue on a
        /// live broker and no two live brokers more than one queue apart;
        /// no move ever names a dead broker; then nothing moves.
        #[test]
        fn rounds_converge_to_a_balanced_live_assignment(
            n in 0u32..24,
            brokers in proptest::collection::btree_set("b[0-6]", 1..6),
            dead in proptest::collection::btree_set("b[0-9]", 0..4),
            start in proptest::collection::vec(0usize..10, 0..24),
        ) {
            let all: Vec<String> = brokers.iter().chain(dead.iter()).cloned().collect();
            let live: BTreeSet<String> = brokers.difference(&dead).cloned().collect();
            let mut a = Assignments::default();
            for (i, b) in start.iter().enumerate().take(n as usize) {
                a.queues.insert(QueueId::new("t", i as u32), all[b % all.len()].clone());
            }
            for _ in 0..=n + 1 {
                let moves = plan(&qs(n), &live, &a.queues);
                prop_assert!(moves.iter().all(|m| live.contains(&m.to)));
                a = apply(&a, &moves, 1);
            }
            prop_assert!(plan(&qs(n), &live, &a.queues).is_empty());
            if !live.is_empty() {
                prop_assert!((0..n).all(|q| live.contains(&a.queues[&QueueId::new("t", q)])));
                let c = counts(&a.queues, &live);
                prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{c:?}");
            }
        }
    }
}
