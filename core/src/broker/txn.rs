//! The decision logic of the broker's transactions: what an end message or a
//! check-back's answer does to a half, and the check-back service's pass, as
//! a pure function of the half and op logs (RocketMQ's
//! `TransactionalMessageServiceImpl.check`).
//!
//! A half message waits in the half log until an op record (written on commit
//! or rollback) names it. A check pass walks the half log from the durable
//! check offset up to the end it had when the pass began: a half with an op
//! record is done; a half younger than the timeout (by the broker's clock) ends
//! the pass; a half checked the maximum number of times is discarded; any
//! other half is checked back with a live producer of its group and put again
//! at the end of the half log with its check count raised, so the next pass
//! finds it. The pass then moves the check offset past what it handled, and
//! the op offset past the op records of halves now wholly behind the check
//! offset, never past one with a copy still ahead of it (T7).

use std::collections::{BTreeMap, BTreeSet};

/// The service's settings (RocketMQ's defaults: `transactionTimeOut`,
/// `transactionCheckMax`, `transactionCheckInterval`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    pub timeout_ms: u64,
    pub max_checks: u32,
    pub interval_ms: u64,
}

impl Default for CheckConfig {
    fn default() -> CheckConfig {
        CheckConfig { timeout_ms: 6_000, max_checks: 15, interval_ms: 30_000 }
    }
}

/// One copy of a half message in the half log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Half {
    /// Where this copy is in the half log.
    pub offset: u64,
    /// Where its first copy is: op records and end messages name that one.
    pub origin: u64,
    /// When the first copy was stored, by the clock `now_ms` is read from
    /// (the driver gives the owner's monotonic time, or the time it took the
    /// queue over for a half an earlier owner stored).
    pub stored_ms: u64,
    /// The producer's clock when it sent the half (never the age: the clocks differ).
    pub born_ms: u64,
    /// Check-backs sent for it so far.
    pub checks: u32,
}

/// An op record: the half whose first copy is at `origin` is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    /// Where the record is in the op log.
    pub offset: u64,
    pub origin: u64,
}

/// What a pass asks its driver to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Put `half` again at the end of the half log with `checks + 1`, durably,
    /// then ask a live producer of its group for its transaction's state.
    /// The put must be durable before the check offset moves past the half,
    /// or a failure in between loses it (RocketMQ #544).
    Check(Half),
    /// The half reached the maximum of checks: move it to the discard log; it is never delivered.
    Discard(Half),
}

/// A pass's decisions: its steps, and the offsets to store once they are done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pass {
    pub steps: Vec<Step>,
    pub check_offset: u64,
    pub op_offset: u64,
}

/// The pass at broker time `now_ms` over `halves` (the half log from
/// `check_offset` to the end the pass began with, in order) and `ops` (the op
/// log from `op_offset` to its end, in order).
pub fn pass(cfg: &CheckConfig, now_ms: u64, check_offset: u64, halves: &[Half], op_offset: u64, ops: &[Op]) -> Pass {
    let resolved: BTreeSet<u64> = ops.iter().map(|op| op.origin).collect();
    // The newest copy of each half: an older one was put again already (by a
    // pass whose offsets a crash kept from being stored) and is superseded.
    let newest: BTreeMap<u64, u64> = halves.iter().map(|h| (h.origin, h.offset)).collect();
    let mut steps = Vec::new();
    let mut next = check_offset;
    for h in halves {
        if resolved.contains(&h.origin) || newest[&h.origin] != h.offset {
            // Done: committed or rolled back, or superseded by its newer copy.
        } else if now_ms.saturating_sub(h.stored_ms) < cfg.timeout_ms {
            // Too young to check; what follows is no older but for put-again copies, which wait a pass.
            break;
        } else if h.checks >= cfg.max_checks {
            steps.push(Step::Discard(h.clone()));
        } else {
            steps.push(Step::Check(h.clone()));
        }
        next = h.offset + 1;
    }
    // An op record is done with once no copy of its half is at or past the
    // new check offset; the first that names a half with one stops the op
    // offset (T7). Copies at or past it: those this pass did not reach, those
    // it puts again now, and first copies stored after the pass began.
    let mut live: BTreeSet<u64> = halves.iter().filter(|h| h.offset >= next).map(|h| h.origin).collect();
    live.extend(steps.iter().filter_map(|s| match s {
        Step::Check(h) => Some(h.origin),
        Step::Discard(_) => None,
    }));
    let mut op_next = op_offset;
    for op in ops {
        if op.origin >= next || live.contains(&op.origin) {
            break;
        }
        op_next = op.offset + 1;
    }
    Pass { steps, check_offset: next, op_offset: op_next }
}

/// What the broker knows of a half when an end message, or a check-back's
/// answer, arrives for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalfFate {
    /// No op record names it. `real_written`: its real message is in its real
    /// queue already (a commit whose op write a crash cut off).
    Pending { real_written: bool },
    /// An op record names it: committed or rolled back.
    Resolved,
    /// Moved to the discard log after the maximum of checks.
    Discarded,
    /// No half of that offset in the half log.
    Unknown,
}

/// The producer's word: an end message's, or a check-back's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Resolution {
    Commit,
    Rollback,
    Unknown,
}

/// What the broker does with a producer's word about a half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndAction {
    /// Write the real message, then the op record, in that order: a crash
    /// between them leaves a half that is checked again, never a lost commit.
    RealThenOp,
    /// Write only the op record: a rollback, or the rest of a commit that a crash cut short.
    OpOnly,
    /// Change nothing, for this reason (T8: the half is resolved or
    /// discarded already; or the word is "unknown").
    Nothing(&'static str),
}

/// The action for `word` about a half whose fate is `fate`.
pub fn on_end(fate: HalfFate, word: Resolution) -> EndAction {
    match (fate, word) {
        (HalfFate::Resolved, _) => EndAction::Nothing("resolved already"),
        (HalfFate::Discarded, _) => EndAction::Nothing("discarded after the maximum of checks"),
        (HalfFate::Unknown, _) => EndAction::Nothing("no such half"),
        (HalfFate::Pending { .. }, Resolution::Unknown) => EndAction::Nothing("unknown: checked again later"),
        (HalfFate::Pending { real_written: false }, Resolution::Commit) => EndAction::RealThenOp,
        // The real message is there: writing it again would duplicate it (T4).
        (HalfFate::Pending { real_written: true }, Resolution::Commit) => EndAction::OpOnly,
        (HalfFate::Pending { real_written: false }, Resolution::Rollback) => EndAction::OpOnly,
        // A local decision is final, so this cannot be the producer's: refuse
        // rather than record a rollback of a delivered message (T3).
        (HalfFate::Pending { real_written: true }, Resolution::Rollback) => {
            EndAction::Nothing("rollback of a message committed already")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn half(offset: u64, stored_ms: u64, checks: u32) -> Half {
        Half { offset, origin: offset, stored_ms, born_ms: stored_ms, checks }
    }

    #[test]
    fn a_pass_skips_resolved_halves_checks_old_ones_and_stops_at_a_young_one() {
        let cfg = CheckConfig::default();
        let halves = [half(0, 0, 0), half(1, 1_000, 0), half(2, 2_000, 15), half(3, 9_000, 0)];
        let ops = [Op { offset: 0, origin: 1 }];
        let p = pass(&cfg, 10_000, 0, &halves, 0, &ops);
        assert_eq!(p.steps, [Step::Check(halves[0].clone()), Step::Discard(halves[2].clone())]);
        assert_eq!(p.check_offset, 3, "stops at the young half 3");
        assert_eq!(p.op_offset, 1, "the op record of half 1 is behind the check offset");
    }

    #[test]
    fn the_op_offset_never_passes_an_op_record_ahead_of_the_check_offset() {
        let cfg = CheckConfig::default();
        let halves = [half(5, 9_000, 0), half(6, 0, 0)];
        // Half 5 is too young, so the pass stops there; half 7's op record comes
        // before half 6's, and stops the op offset, as half 7 is still ahead.
        let ops = [Op { offset: 3, origin: 7 }, Op { offset: 4, origin: 6 }];
        let p = pass(&cfg, 10_000, 5, &halves, 3, &ops);
        assert_eq!((p.check_offset, p.op_offset), (5, 3));
        assert!(p.steps.is_empty());
    }

    #[test]
    fn an_end_after_resolution_or_discard_changes_nothing() {
        use Resolution::*;
        for word in [Commit, Rollback, Unknown] {
            for fate in [HalfFate::Resolved, HalfFate::Discarded, HalfFate::Unknown] {
                assert!(matches!(on_end(fate, word), EndAction::Nothing(_)), "{fate:?} {word:?}");
            }
        }
        let fresh = HalfFate::Pending { real_written: false };
        let cut_short = HalfFate::Pending { real_written: true };
        assert_eq!(on_end(fresh, Commit), EndAction::RealThenOp);
        assert_eq!(on_end(fresh, Rollback), EndAction::OpOnly);
        assert_eq!(on_end(cut_short, Commit), EndAction::OpOnly, "a commit's second half, never a second copy");
        assert!(matches!(on_end(cut_short, Rollback), EndAction::Nothing(_)));
        assert!(matches!(on_end(fresh, Unknown), EndAction::Nothing(_)));
    }

    /// A half log of `n` copies with ages and check counts drawn, some put
    /// again (origin before offset), and op records for a subset, in any order.
    fn logs() -> impl Strategy<Value = (u64, Vec<Half>, Vec<Op>)> {
        (0u64..20_000, prop::collection::vec((0u64..20_000, 0u32..18, any::<bool>(), any::<bool>()), 0..30)).prop_map(
            |(now, draws)| {
                let mut halves = Vec::new();
                let mut ops = Vec::new();
                for (i, (stored, checks, again, resolved)) in draws.into_iter().enumerate() {
                    let offset = 100 + i as u64;
                    let origin = if again && i > 0 { 100 + (i as u64) / 2 } else { offset };
                    halves.push(Half { offset, origin, stored_ms: stored, born_ms: stored / 2, checks });
                    if resolved {
                        ops.push(Op { offset: 50 + ops.len() as u64, origin });
                    }
                }
                // Op records are written in the order ends arrive, not the halves'.
                ops.reverse();
                for (i, op) in ops.iter_mut().enumerate() {
                    op.offset = 50 + i as u64;
                }
                (now, halves, ops)
            },
        )
    }

    proptest! {
        #[test]
        fn every_half_behind_the_new_check_offset_was_resolved_checked_or_discarded((now, halves, ops) in logs()) {
            let cfg = CheckConfig::default();
            let p = pass(&cfg, now, 100, &halves, 50, &ops);
            let resolved: BTreeSet<u64> = ops.iter().map(|o| o.origin).collect();
            for h in halves.iter().filter(|h| h.offset < p.check_offset) {
                let handled = p.steps.iter().any(|s| matches!(s, Step::Check(x) | Step::Discard(x) if x == h));
                let superseded = halves.iter().any(|x| x.origin == h.origin && x.offset > h.offset);
                prop_assert!(resolved.contains(&h.origin) || handled || superseded, "half {h:?} skipped");
            }
            for s in &p.steps {
                match s {
                    // T6: never checked before it is timeout old by the broker's clock, never past the maximum.
                    Step::Check(h) => {
                        prop_assert!(now - h.stored_ms >= cfg.timeout_ms && h.checks < cfg.max_checks);
                        prop_assert!(!resolved.contains(&h.origin), "a resolved half checked: {h:?}");
                    }
                    Step::Discard(h) => prop_assert!(h.checks >= cfg.max_checks && !resolved.contains(&h.origin)),
                }
            }
            // At most one check of a half per pass, whatever copies of it the log holds.
            let checked: Vec<u64> = p.steps.iter().map(|s| match s { Step::Check(h) | Step::Discard(h) => h.origin }).collect();
            let unique: BTreeSet<u64> = checked.iter().copied().collect();
            prop_assert_eq!(unique.len(), checked.len());
            // T7: every op record the op offset passed names a half with no
            // copy at or past the check offset, none put again by this pass.
            for op in ops.iter().filter(|o| o.offset < p.op_offset) {
                let ahead = halves.iter().any(|h| h.origin == op.origin && h.offset >= p.check_offset);
                let put_again = p.steps.iter().any(|s| matches!(s, Step::Check(h) if h.origin == op.origin));
                prop_assert!(op.origin < p.check_offset && !ahead && !put_again, "op record {op:?} skipped");
            }
            prop_assert!(p.check_offset >= 100 && p.op_offset >= 50);
        }
    }
}
