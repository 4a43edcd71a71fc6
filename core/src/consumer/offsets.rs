//! Per-queue progress of an at-least-once consumer: what to pull next and how far it may commit
//! (RocketMQ's ProcessQueue).
//!
//! Messages are processed in any order, so the committed offset is the
//! smallest offset handed out but not yet processed: a crash then redelivers
//! everything not known done, never skips anything.

use std::collections::BTreeSet;

/// What [`Progress::pulled`] did with a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Pulled {
    /// Offsets now tracked as outstanding, ascending: hand exactly these to the application.
    pub accepted: Vec<u64>,
    /// Offsets dropped: below `next_pull` (a stale or repeated response, already
    /// tracked once) or out of order (the pull is redone from after the last
    /// accepted one, so nothing is skipped).
    pub ignored: Vec<u64>,
}

#[derive(Clone, Debug)]
pub struct Progress {
    next_pull: u64,
    /// Pulled, handed to the application, not yet processed.
    outstanding: BTreeSet<u64>,
}

impl Progress {
    /// Progress of a queue whose committed offset is `start`.
    pub fn new(start: u64) -> Self {
        Progress { next_pull: start, outstanding: BTreeSet::new() }
    }

    /// The offset the next pull asks for.
    pub fn next_pull(&self) -> u64 {
        self.next_pull
    }

    /// Records a pull response: `offsets` are the messages it returned (after the
    /// tag filter), `next` the offset the broker says to continue from, which may
    /// lie past messages the filter left out.
    pub fn pulled(&mut self, offsets: &[u64], next: u64) -> Pulled {
        let floor = self.next_pull;
        // Offsets below `floor` are stale: tracked before, harmless to drop.
        let fresh: Vec<u64> = offsets.iter().copied().filter(|&o| o >= floor).collect();
        // At the first offset out of order, everything from the smallest fresh
        // offset after it is pulled again: accepting past it would skip it.
        let cut = fresh.windows(2).position(|w| w[0] >= w[1]).and_then(|i| fresh[i + 1..].iter().copied().min());
        let accepted: Vec<u64> = fresh.iter().copied().take_while(|&o| cut.is_none_or(|c| o < c)).collect();
        let after_last = accepted.last().map_or(floor, |l| l + 1);
        self.next_pull = match cut {
            // A garbled response: `next` is not trusted, pull again after what was taken.
            Some(_) => after_last,
            // Never move backwards, nor behind what was just taken.
            None => next.max(after_last),
        };
        self.outstanding.extend(accepted.iter().copied());
        let ignored = offsets.iter().copied().filter(|o| *o < floor || *o >= after_last).collect();
        Pulled { accepted, ignored }
    }

    /// Marks `offset` as processed. False (and no change) when it was not outstanding.
    pub fn processed(&mut self, offset: u64) -> bool {
        self.outstanding.remove(&offset)
    }

    /// The offset safe to commit: everything below it is processed or filtered out.
    pub fn commit_point(&self) -> u64 {
        self.outstanding.first().copied().unwrap_or(self.next_pull)
    }

    /// How many pulled messages await processing.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_hand_made_sequence() {
        let mut p = Progress::new(10);
        assert_eq!((p.next_pull(), p.commit_point(), p.outstanding()), (10, 10, 0));
        // 12 and 14 were filtered out by tag; the broker says continue at 16.
        let r = p.pulled(&[10, 11, 13, 15], 16);
        assert_eq!(r, Pulled { accepted: vec![10, 11, 13, 15], ignored: vec![] });
        assert_eq!((p.next_pull(), p.commit_point(), p.outstanding()), (16, 10, 4));
        assert!(p.processed(11));
        assert!(p.processed(13));
        assert_eq!(p.commit_point(), 10);
        assert!(p.processed(10));
        assert_eq!(p.commit_point(), 15);
        assert!(!p.processed(10), "processing twice is reported");
        assert!(!p.processed(99), "unknown offsets are reported");
        // A repeated old response changes nothing.
        let r = p.pulled(&[13, 15], 16);
        assert_eq!(r, Pulled { accepted: vec![], ignored: vec![13, 15] });
        assert_eq!((p.next_pull(), p.commit_point()), (16, 15));
        // Out of order: 16 is taken, 18 and 17 dropped, and the pull restarts at 17.
        let r = p.pulled(&[16, 18, 17], 19);
        assert_eq!(r, Pulled { accepted: vec![16], ignored: vec![18, 17] });
        assert_eq!(p.next_pull(), 17);
        assert!(p.processed(15) && p.processed(16));
        assert_eq!((p.commit_point(), p.outstanding()), (17, 0));
    }

    #[test]
    fn an_empty_pull_moves_past_filtered_messages_but_never_back() {
        let mut p = Progress::new(0);
        assert_eq!(p.pulled(&[], 5), Pulled::default());
        assert_eq!((p.next_pull(), p.commit_point()), (5, 5));
        assert_eq!(p.pulled(&[], 3), Pulled::default());
        assert_eq!(p.next_pull(), 5);
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A well-formed response starting at `next_pull`: `keep[i]` says whether
        /// offset `next_pull + i` passed the filter; `tail` more were filtered.
        Pull { keep: Vec<bool>, tail: u64 },
        /// A response of `len` unfiltered offsets from `next_pull`, in the order
        /// of sorting them by `keys` (so possibly out of order).
        Shuffled { keys: Vec<u8> },
        /// A stale response: offsets below `next_pull`.
        Stale { back: u64, len: u64 },
        /// Processes the outstanding offset at this (wrapped) index.
        Process(usize),
        /// Processes some offset, most likely not outstanding.
        Any(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (prop::collection::vec(any::<bool>(), 0..6), 0u64..3).prop_map(|(keep, tail)| Op::Pull { keep, tail }),
            1 => prop::collection::vec(any::<u8>(), 2..6).prop_map(|keys| Op::Shuffled { keys }),
            1 => (1u64..8, 1u64..4).prop_map(|(back, len)| Op::Stale { back, len }),
            5 => any::<usize>().prop_map(Op::Process),
            1 => (0u64..1400).prop_map(Op::Any),
        ]
    }

    proptest! {
        #[test]
        fn the_commit_point_is_safe_monotone_and_complete(start in 0u64..1000, ops in prop::collection::vec(op(), 0..60)) {
            let mut p = Progress::new(start);
            // The test's own record: delivered and not yet processed, and every
            // offset below next_pull that was either delivered or filtered.
            let mut unprocessed: BTreeSet<u64> = BTreeSet::new();
            let mut accounted: BTreeSet<u64> = BTreeSet::new();
            let mut last_commit = p.commit_point();
            for op in ops {
                let np = p.next_pull();
                match op {
                    Op::Pull { keep, tail } => {
                        let offsets: Vec<u64> =
                            (0..).zip(&keep).filter(|(_, k)| **k).map(|(i, _)| np + i).collect();
                        let next = np + keep.len() as u64 + tail;
                        let r = p.pulled(&offsets, next);
                        prop_assert_eq!(&r.accepted, &offsets);
                        prop_assert!(r.ignored.is_empty());
                        prop_assert_eq!(p.next_pull(), next);
                        unprocessed.extend(&offsets);
                        accounted.extend(np..next);
                    }
                    Op::Shuffled { keys } => {
                        let mut order: Vec<(u8, u64)> = keys.iter().copied().zip(np..).collect();
                        order.sort();
                        let offsets: Vec<u64> = order.into_iter().map(|(_, o)| o).collect();
                        let len = offsets.len() as u64;
                        let r = p.pulled(&offsets, np + len);
                        // No message was filtered, so exactly a gap-free run from np is taken.
                        prop_assert_eq!(&r.accepted, &(np..p.next_pull()).collect::<Vec<_>>());
                        prop_assert!(p.next_pull() <= np + len);
                        prop_assert_eq!(r.accepted.len() + r.ignored.len(), offsets.len());
                        unprocessed.extend(&r.accepted);
                        accounted.extend(&r.accepted);
                    }
                    Op::Stale { back, len } => {
                        let lo = np.saturating_sub(back);
                        let offsets: Vec<u64> = (lo..np).take(len as usize).collect();
                        let r = p.pulled(&offsets, np.min(lo + len));
                        prop_assert!(r.accepted.is_empty());
                        prop_assert_eq!(p.next_pull(), np);
                    }
                    Op::Process(i) => {
                        if let Some(&o) = unprocessed.iter().nth(i % unprocessed.len().max(1)) {
                            prop_assert!(p.processed(o));
                            unprocessed.remove(&o);
                        }
                    }
                    Op::Any(o) => {
                        let expected = unprocessed.remove(&o);
                        prop_assert_eq!(p.processed(o), expected);
                    }
                }
                let commit = p.commit_point();
                prop_assert!(unprocessed.iter().all(|&o| commit <= o), "commit {} passes {:?}", commit, unprocessed);
                prop_assert!(commit >= last_commit, "commit went back from {} to {}", last_commit, commit);
                if unprocessed.is_empty() {
                    prop_assert_eq!(commit, p.next_pull());
                }
                prop_assert_eq!(p.outstanding(), unprocessed.len());
                prop_assert!(p.next_pull() >= np);
                // Nothing below next_pull was skipped without being delivered or filtered.
                prop_assert!((start..p.next_pull()).all(|o| accounted.contains(&o)));
                last_commit = commit;
            }
        }
    }
}
