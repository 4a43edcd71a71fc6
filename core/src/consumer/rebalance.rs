//! Which queues of a topic one consumer of a group holds (RocketMQ's AllocateMessageQueueAveragely).
//!
//! Every consumer computes its share alone from the same two lists, so the
//! result must depend only on their contents: both are sorted and deduplicated
//! before the split.

use crate::message::QueueId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The queues `me` holds when `queues` are split over `consumers` in contiguous
/// blocks, the first `queues mod consumers` consumers taking one extra. Sorted.
/// Empty when `me` is not among `consumers`.
pub fn allocate(queues: &[QueueId], consumers: &[String], me: &str) -> Vec<QueueId> {
    let queues: Vec<&QueueId> = queues.iter().collect::<BTreeSet<_>>().into_iter().collect();
    let consumers: Vec<&str> = consumers.iter().map(String::as_str).collect::<BTreeSet<_>>().into_iter().collect();
    let Ok(i) = consumers.binary_search(&me) else { return Vec::new() };
    let (n, c) = (queues.len(), consumers.len());
    let (base, extra) = (n / c, n % c);
    let start = i * base + i.min(extra);
    let len = base + usize::from(i < extra);
    queues[start..start + len].iter().map(|q| (*q).clone()).collect()
}

/// The difference between two assignments, each list sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub added: Vec<QueueId>,
    pub removed: Vec<QueueId>,
}

/// The queues a consumer holds now; a rebalance turns into start/stop decisions
/// through [`Assignment::apply`].
#[derive(Clone, Debug, Default)]
pub struct Assignment {
    held: BTreeSet<QueueId>,
}

impl Assignment {
    /// Replaces the held queues with `new` (duplicates collapse) and says which
    /// queues to start pulling and which to stop.
    pub fn apply(&mut self, new: Vec<QueueId>) -> Change {
        let new: BTreeSet<QueueId> = new.into_iter().collect();
        let change = Change {
            added: new.difference(&self.held).cloned().collect(),
            removed: self.held.difference(&new).cloned().collect(),
        };
        self.held = new;
        change
    }

    pub fn held(&self) -> &BTreeSet<QueueId> {
        &self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn q(topic: &str, queue: u32) -> QueueId {
        QueueId::new(topic, queue)
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn eight_queues_over_three_consumers_gives_three_three_two() {
        let queues: Vec<QueueId> = (0..8).rev().map(|i| q("t", i)).collect();
        let consumers = names(&["c-2", "c-0", "c-1"]);
        assert_eq!(allocate(&queues, &consumers, "c-0"), vec![q("t", 0), q("t", 1), q("t", 2)]);
        assert_eq!(allocate(&queues, &consumers, "c-1"), vec![q("t", 3), q("t", 4), q("t", 5)]);
        assert_eq!(allocate(&queues, &consumers, "c-2"), vec![q("t", 6), q("t", 7)]);
        assert_eq!(allocate(&queues, &consumers, "c-9"), vec![]);
    }

    #[test]
    fn more_consumers_than_queues_leaves_the_last_ones_idle() {
        let queues = vec![q("t", 1), q("t", 0)];
        let consumers = names(&["a", "b", "c"]);
        assert_eq!(allocate(&queues, &consumers, "a"), vec![q("t", 0)]);
        assert_eq!(allocate(&queues, &consumers, "b"), vec![q("t", 1)]);
        assert_eq!(allocate(&queues, &consumers, "c"), vec![]);
        assert_eq!(allocate(&[], &consumers, "a"), vec![]);
    }

    #[test]
    fn apply_reports_what_to_start_and_stop() {
        let mut a = Assignment::default();
        let c = a.apply(vec![q("t", 1), q("t", 0), q("t", 1)]);
        assert_eq!(c, Change { added: vec![q("t", 0), q("t", 1)], removed: vec![] });
        let c = a.apply(vec![q("t", 2), q("t", 1)]);
        assert_eq!(c, Change { added: vec![q("t", 2)], removed: vec![q("t", 0)] });
        assert_eq!(a.held().iter().cloned().collect::<Vec<_>>(), vec![q("t", 1), q("t", 2)]);
        assert_eq!(a.apply(vec![q("t", 2), q("t", 1)]), Change::default());
    }

    /// Queues over two topics and consumer ids, both with duplicates likely.
    fn group() -> impl Strategy<Value = (Vec<QueueId>, Vec<String>)> {
        (
            prop::collection::vec((prop::sample::select(vec!["a", "b"]), 0u32..12), 0..30),
            prop::collection::vec("c-[0-9]{1,2}", 1..10),
        )
            .prop_map(|(qs, cs)| (qs.into_iter().map(|(t, i)| q(t, i)).collect(), cs))
    }

    fn distinct<T: Ord + Clone>(v: &[T]) -> Vec<T> {
        v.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect()
    }

    proptest! {
        #[test]
        fn every_queue_goes_to_exactly_one_consumer((queues, consumers) in group()) {
            let mut owners: BTreeMap<QueueId, usize> = BTreeMap::new();
            for c in distinct(&consumers) {
                for queue in allocate(&queues, &consumers, &c) {
                    *owners.entry(queue).or_default() += 1;
                }
            }
            prop_assert_eq!(owners.keys().cloned().collect::<Vec<_>>(), distinct(&queues));
            prop_assert!(owners.values().all(|&n| n == 1), "{:?}", owners);
        }

        #[test]
        fn blocks_are_contiguous_in_consumer_order_and_differ_by_at_most_one((queues, consumers) in group()) {
            let shares: Vec<Vec<QueueId>> =
                distinct(&consumers).iter().map(|c| allocate(&queues, &consumers, c)).collect();
            let sizes: Vec<usize> = shares.iter().map(Vec::len).collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(max - min <= 1, "{:?}", sizes);
            // Bigger blocks come first (the first `n mod c` consumers take the extra).
            prop_assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{:?}", sizes);
            prop_assert_eq!(shares.concat(), distinct(&queues));
        }

        #[test]
        fn the_split_ignores_input_order_and_duplicates(
            ((queues, consumers), (q2, c2)) in group().prop_flat_map(|(qs, cs)| {
                let q2: Vec<QueueId> = qs.iter().chain(qs.iter().take(3)).cloned().collect();
                let c2: Vec<String> = cs.iter().chain(cs.iter().take(1)).cloned().collect();
                (Just((qs, cs)), (Just(q2).prop_shuffle(), Just(c2).prop_shuffle()))
            }),
        ) {
            for c in &consumers {
                prop_assert_eq!(allocate(&queues, &consumers, c), allocate(&q2, &c2, c));
            }
        }

        #[test]
        fn a_consumer_outside_the_group_gets_nothing((queues, consumers) in group(), me in "[a-z]{1,3}") {
            prop_assert!(allocate(&queues, &consumers, &me).is_empty());
        }

        #[test]
        fn apply_turns_the_old_set_into_the_new_one(
            old in prop::collection::vec(0u32..10, 0..10),
            new in prop::collection::vec(0u32..10, 0..10),
        ) {
            let (old, new): (Vec<_>, Vec<_>) =
                (old.into_iter().map(|i| q("t", i)).collect(), new.into_iter().map(|i| q("t", i)).collect());
            let mut a = Assignment::default();
            a.apply(old.clone());
            let before = a.held().clone();
            let change = a.apply(new.clone());
            let mut rebuilt = before.clone();
            for r in &change.removed {
                prop_assert!(rebuilt.remove(r), "removed {} was not held", r);
            }
            for x in &change.added {
                prop_assert!(rebuilt.insert(x.clone()), "added {} was already held", x);
            }
            let expected: BTreeSet<QueueId> = new.into_iter().collect();
            prop_assert_eq!(&rebuilt, &expected);
            prop_assert_eq!(a.held(), &expected);
            prop_assert!(change.added.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(change.removed.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
