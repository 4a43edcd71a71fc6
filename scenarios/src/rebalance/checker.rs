//! The checker of a consumer group's membership and of its retry and
//! dead-letter topics, a pure function of the recorded history; the delivery
//! guarantees (M1–M7) over the topic, the retry and the dead-letter topic are
//! the publish/subscribe checker's. Judged from what the clients saw:
//!
//! - **M5** *consumed-after-release*: a consumer began processing a message
//!   of a queue after its own last completed rebalance had given the queue
//!   up (an overlap beyond the rebalance: the queue's new holder consumes and
//!   commits it too). A crash of the consumer forgets its holdings.
//! - **M8** (retry and dead-letter accounting). Each send-back names the
//!   message it sent back; a message's *reconsumes* are counted along that
//!   chain from the producer's send (0), never read from the copies.
//!   *dead-letter-early*: a message went to the dead-letter topic with fewer
//!   reconsumes than the group allows; *retried-past-max*: a message went to
//!   the retry topic when it had used up its reconsumes;
//!   *sent-back-unknown-message*: a send-back names a message no send wrote.
//!
//! Overlaps while consumers rebalance at different times are allowed: they
//! are the cause of duplicates (counted by the publish/subscribe checker),
//! never of loss. A run with no acknowledged send-back judged nothing and fails.

use crate::ops::{ops, Op, Report};
use crate::{Violation, JUDGED_NOTHING};
use mqsim_core::consumer::retry::{dlq_topic, retry_topic};
use mqsim_sim::history::{Body, Call, FaultRecord, Record, Ret};
use std::collections::{BTreeMap, BTreeSet};

/// What the run configured, as the checker needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub group: String,
    pub max_reconsumes: u32,
}

/// How many messages went where, for the run's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accounting {
    pub retried: u64,
    pub dead_lettered: u64,
}

pub fn check(history: &[Record], spec: &Spec) -> Vec<Violation> {
    check_counted(history, spec).0
}

/// The violations and how many messages were sent back (acknowledged) where.
pub fn check_counted(history: &[Record], spec: &Spec) -> (Vec<Violation>, Accounting) {
    let ops = match ops(history) {
        Ok(ops) => ops,
        Err(v) => return (vec![v], Accounting::default()),
    };
    let mut report = Report::default();
    let accounting = reconsumes(&ops, spec, &mut report);
    if accounting.retried + accounting.dead_lettered == 0 {
        let detail = format!("nothing to judge: group {} sent no message back (acknowledged)", spec.group);
        return (vec![Violation::new(JUDGED_NOTHING, detail)], accounting);
    }
    consumed_after_release(history, &ops, &spec.group, &mut report);
    (report.violations(), accounting)
}

/// M8: every send-back goes where the message's reconsumes, counted along
/// its chain of send-backs, say it must.
fn reconsumes<'a>(ops: &[Op<'a>], spec: &Spec, report: &mut Report) -> Accounting {
    let (retry, dlq) = (retry_topic(&spec.group), dlq_topic(&spec.group));
    // Message id → the id of the message it is a copy of (None: a producer's send).
    let mut source: BTreeMap<&'a str, Option<&'a str>> = BTreeMap::new();
    for o in ops {
        if let Call::Send { msg_id, back, .. } = o.call {
            let from = back.as_ref().filter(|b| b.group == spec.group).map(|b| b.msg_id.as_str());
            source.entry(msg_id).or_insert(from);
        }
    }
    let depth = |mut id: &'a str| -> Option<u32> {
        let mut n = 0;
        while let Some(from) = source.get(id)? {
            (id, n) = (from, n + 1);
            if n > 1_000 {
                return None;
            }
        }
        Some(n)
    };
    let mut counted = Accounting::default();
    for o in ops {
        let Call::Send { topic, msg_id, back: Some(b), .. } = o.call else { continue };
        if b.group != spec.group {
            continue;
        }
        let Some(r) = depth(&b.msg_id) else {
            let detail = format!(
                "sent-back-unknown-message: {} sends back {} as {msg_id}, a message no send wrote",
                o.describe(),
                b.msg_id
            );
            report.at("M8", o, detail);
            continue;
        };
        let acked = matches!(o.ret(), Some(Ret::Send { .. }));
        if *topic == dlq {
            counted.dead_lettered += u64::from(acked);
            if r < spec.max_reconsumes && o.may_have_happened() {
                let detail = format!(
                    "dead-letter-early: {} sent {} to {dlq} after {r} reconsumes, though group {} allows {}",
                    o.describe(),
                    b.msg_id,
                    spec.group,
                    spec.max_reconsumes
                );
                report.at("M8", o, detail);
            }
        } else if *topic == retry {
            counted.retried += u64::from(acked);
            if r >= spec.max_reconsumes && o.may_have_happened() {
                let detail = format!(
                    "retried-past-max: {} sent {} to {retry} after {r} reconsumes, the most group {} allows",
                    o.describe(),
                    b.msg_id,
                    spec.group
                );
                report.at("M8", o, detail);
            }
        }
    }
    counted
}

/// M5 *consumed-after-release*.
fn consumed_after_release(history: &[Record], ops: &[Op], group: &str, report: &mut Report) {
    // Invocations and crashes in history order: an op's index, or a crashed node.
    enum Step<'a> {
        Op(usize),
        Crash(&'a str),
    }
    let mut steps = Vec::new();
    let mut next_op = 0;
    for r in history {
        match &r.body {
            Body::Invoke { .. } => {
                steps.push(Step::Op(next_op));
                next_op += 1;
            }
            Body::Fault(FaultRecord::Crash { target, .. }) => steps.push(Step::Crash(target)),
            _ => {}
        }
    }
    // (node, topic) → the queues its last completed rebalance left it.
    let mut holds: BTreeMap<(&str, &str), BTreeSet<u32>> = BTreeMap::new();
    for step in steps {
        let i = match step {
            Step::Crash(node) => {
                holds.retain(|(n, _), _| *n != node);
                continue;
            }
            Step::Op(i) => i,
        };
        let o = &ops[i];
        match (o.call, o.ret()) {
            (Call::Rebalance { group: g, topic }, Some(Ret::Rebalance { queues })) if g == group => {
                holds.insert((o.node, topic), queues.iter().copied().collect());
            }
            (Call::Process { group: g, topic, queue, .. }, _)
                if g == group && holds.get(&(o.node, topic.as_str())).is_some_and(|held| !held.contains(queue)) =>
            {
                let detail = format!(
                    "consumed-after-release: {} began on {topic}/q{queue}, which {}'s last rebalance had given up",
                    o.describe(),
                    o.node
                );
                report.at("M5", o, detail);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::build::{End, History};
    use mqsim_sim::history::SentBack;

    const G: &str = "g";

    fn spec(max: u32) -> Spec {
        Spec { group: G.into(), max_reconsumes: max }
    }

    fn send(h: &mut History, t: u64, id: &str) {
        let call = Call::Send {
            topic: "t".into(),
            tag: "a".into(),
            keys: vec![],
            shard: None,
            msg_id: id.into(),
            body: format!("body.{id}"),
            back: None,
        };
        h.op("producer-0", t, t + 1, call, End::Ok(Ret::Send { broker: "b".into(), queue: 0, offset: 0 }));
    }

    /// `node` sends `from` (at `topic`/q0 offset 0) back to `to` as `id`.
    fn back(h: &mut History, node: &str, t: u64, from: &str, topic: &str, to: &str, id: &str) {
        let call = Call::Send {
            topic: to.into(),
            tag: "a".into(),
            keys: vec![],
            shard: None,
            msg_id: id.into(),
            body: format!("back.{id}"),
            back: Some(SentBack { group: G.into(), topic: topic.into(), queue: 0, offset: 0, msg_id: from.into() }),
        };
        h.op(node, t, t + 1, call, End::Ok(Ret::Send { broker: "b".into(), queue: 0, offset: 0 }));
    }

    fn rebalance(h: &mut History, node: &str, t: u64, queues: &[u32]) {
        let call = Call::Rebalance { group: G.into(), topic: "t".into() };
        h.op(node, t, t + 1, call, End::Ok(Ret::Rebalance { queues: queues.to_vec() }));
    }

    fn process(h: &mut History, node: &str, t: u64, queue: u32) {
        let call = Call::Process { group: G.into(), topic: "t".into(), queue, offset: 0, msg_id: "m1".into() };
        h.op(node, t, t + 1, call, End::Ok(Ret::Process));
    }

    fn names(v: &[Violation]) -> Vec<(&'static str, String)> {
        v.iter().map(|v| (v.invariant, v.detail.split(':').next().unwrap_or("").to_string())).collect()
    }

    /// m1 fails on the topic and twice on the retry topic, then goes to the DLQ.
    fn chain(h: &mut History, retries: usize) {
        let (retry, dlq) = (retry_topic(G), dlq_topic(G));
        send(h, 10, "m1");
        let mut from = ("m1".to_string(), "t".to_string());
        for k in 0..retries {
            let id = format!("c{k}");
            back(h, "c0", 100 + 10 * k as u64, &from.0, &from.1, &retry, &id);
            from = (id, retry.clone());
        }
        back(h, "c0", 500, &from.0, &from.1, &dlq, "dead");
    }

    #[test]
    fn a_message_dead_lettered_after_its_last_retry_passes_and_is_counted() {
        let mut h = History::default();
        chain(&mut h, 2);
        let (v, counted) = check_counted(&h.done(), &spec(2));
        assert_eq!(v, vec![]);
        assert_eq!(counted, Accounting { retried: 2, dead_lettered: 1 });
    }

    #[test]
    fn m8_dead_letter_early() {
        let mut h = History::default();
        chain(&mut h, 1);
        let v = check(&h.done(), &spec(2));
        assert_eq!(names(&v), vec![("M8", "dead-letter-early".to_string())], "{v:?}");
        assert!(v[0].detail.contains("after 1 reconsumes"), "{}", v[0].detail);
    }

    #[test]
    fn m8_retried_past_max() {
        let mut h = History::default();
        chain(&mut h, 3);
        let v = check(&h.done(), &spec(2));
        assert_eq!(names(&v), vec![("M8", "retried-past-max".to_string())], "{v:?}");
    }

    #[test]
    fn m8_a_send_back_of_a_message_nobody_sent() {
        let mut h = History::default();
        chain(&mut h, 2);
        back(&mut h, "c1", 600, "ghost", "t", &retry_topic(G), "c9");
        let v = check(&h.done(), &spec(2));
        assert_eq!(names(&v), vec![("M8", "sent-back-unknown-message".to_string())], "{v:?}");
    }

    #[test]
    fn m5_consumed_after_release() {
        let mut h = History::default();
        chain(&mut h, 2);
        rebalance(&mut h, "c0", 1000, &[0, 1]);
        process(&mut h, "c0", 1010, 1);
        rebalance(&mut h, "c0", 1020, &[0]);
        process(&mut h, "c0", 1030, 0);
        process(&mut h, "c0", 1040, 1);
        let v = check(&h.done(), &spec(2));
        assert_eq!(names(&v), vec![("M5", "consumed-after-release".to_string())], "{v:?}");
        assert!(v[0].detail.contains("t/q1"), "{}", v[0].detail);
    }

    #[test]
    fn a_crash_or_a_new_rebalance_ends_what_the_last_one_gave_up() {
        let mut h = History::default();
        chain(&mut h, 2);
        rebalance(&mut h, "c0", 1000, &[0]);
        // Another consumer's view does not matter, nor a failed rebalance.
        rebalance(&mut h, "c1", 1001, &[1]);
        let call = Call::Rebalance { group: G.into(), topic: "t".into() };
        h.op("c0", 1002, 1003, call, End::Fail("listing the group"));
        rebalance(&mut h, "c0", 1010, &[0, 1]);
        process(&mut h, "c0", 1020, 1);
        h.fault(1030, FaultRecord::Crash { target: "c1".into(), lost: vec![], during_fsync_of: None });
        process(&mut h, "c1", 1040, 0);
        assert_eq!(check(&h.done(), &spec(2)), vec![]);
    }

    #[test]
    fn a_run_with_no_send_back_judged_nothing() {
        let mut h = History::default();
        send(&mut h, 10, "m1");
        rebalance(&mut h, "c0", 1000, &[0]);
        process(&mut h, "c0", 1010, 0);
        assert_eq!(check(&h.done(), &spec(2))[0].invariant, JUDGED_NOTHING);
    }
}
