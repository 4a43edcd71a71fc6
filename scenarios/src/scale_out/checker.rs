//! The checker of the leader broker, a pure function of the recorded
//! history: what the leaders wrote (their assignments, acknowledged by the
//! metadata service with the version written), never who claimed to lead.
//!
//! - **L1** leader safety. *stale-leader-write*: taken in the order of the
//!   versions they wrote, the assignments' terms never go down (a leader
//!   that lost its lock wrote over a newer leader's decisions);
//!   *term-of-another-broker*: a broker wrote assignments under a term
//!   another broker was elected with.
//! - **L2** scale-out. *new-broker-idle*: a broker that joined during the
//!   run was never assigned a queue (by an assignment that may have been
//!   written), though the topic has a queue for every broker.
//!
//! A run with no acknowledged assignment judged nothing and fails.

use crate::ops::{ops, Op, Report};
use crate::{Violation, JUDGED_NOTHING};
use mqsim_sim::history::{Call, Record, Ret};
use std::collections::BTreeMap;

/// What the run configured, as the checker needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// The brokers that joined during the run.
    pub new_brokers: Vec<String>,
    /// Brokers in all, joining ones included.
    pub brokers: usize,
    pub queues: u32,
}

pub fn check(history: &[Record], spec: &Spec) -> Vec<Violation> {
    let ops = match ops(history) {
        Ok(ops) => ops,
        Err(v) => return vec![v],
    };
    // Acknowledged assignments: (version written, term, op).
    let mut written: Vec<(u64, u64, &Op)> = ops
        .iter()
        .filter_map(|o| match (o.call, o.ret()) {
            (Call::Assign { term, .. }, Some(Ret::Assign { version })) => Some((*version, *term, o)),
            _ => None,
        })
        .collect();
    if written.is_empty() {
        return vec![Violation::new(JUDGED_NOTHING, "nothing to judge: no leader's assignments were written".into())];
    }
    written.sort_by_key(|(version, _, o)| (*version, o.done_at));
    let mut report = Report::default();
    let mut highest: Option<(u64, &Op)> = None;
    for &(version, term, o) in &written {
        if let Some((t, by)) = highest.filter(|(t, _)| term < *t) {
            let detail = format!(
                "stale-leader-write: {} wrote assignments version {version} under term {term}, after {} wrote them under term {t}",
                o.describe(),
                by.describe()
            );
            report.at("L1", o, detail);
        }
        if highest.is_none_or(|(t, _)| term > t) {
            highest = Some((term, o));
        }
    }
    let mut elected: BTreeMap<u64, &str> = BTreeMap::new();
    for o in &ops {
        if let (Call::Lead {}, Some(Ret::Lead { term })) = (o.call, o.ret()) {
            elected.entry(*term).or_insert(o.node);
        }
    }
    for &(_, term, o) in &written {
        if let Some(leader) = elected.get(&term).filter(|l| **l != o.node) {
            let detail = format!(
                "term-of-another-broker: {} wrote under term {term}, which {leader} was elected with",
                o.describe()
            );
            report.at("L1", o, detail);
        }
    }
    if spec.queues as usize >= spec.brokers {
        for b in &spec.new_brokers {
            // An assignment whose answer was lost may have been written: a
            // later one moving a queue off the broker would show it.
            let assigned = ops.iter().filter(|o| o.may_have_happened()).any(|o| match o.call {
                Call::Assign { moves, .. } => moves.iter().any(|m| m.to == *b),
                _ => false,
            });
            if !assigned {
                let detail = format!("new-broker-idle: {b} joined, but no leader ever assigned it a queue");
                report.add("L2", None, detail);
            }
        }
    }
    report.violations()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::build::{End, History};
    use mqsim_sim::history::Moved;

    fn spec() -> Spec {
        Spec { new_brokers: vec!["nb-0".into()], brokers: 3, queues: 4 }
    }

    fn lead(h: &mut History, node: &str, t: u64, term: u64) {
        h.op(node, t, t + 1, Call::Lead {}, End::Ok(Ret::Lead { term }));
    }

    fn assign(h: &mut History, node: &str, t: u64, term: u64, to: &str, version: Option<u64>) {
        let moves = vec![Moved { topic: "t".into(), queue: 0, from: None, to: to.into() }];
        let end = match version {
            Some(version) => End::Ok(Ret::Assign { version }),
            None => End::Fail("not written"),
        };
        h.op(node, t, t + 1, Call::Assign { term, moves }, end);
    }

    fn names(v: &[Violation]) -> Vec<(&'static str, String)> {
        v.iter().map(|v| (v.invariant, v.detail.split(':').next().unwrap_or("").to_string())).collect()
    }

    /// b0 leads with term 10, b1 takes over with term 20 and gives nb-0 a queue.
    fn valid() -> History {
        let mut h = History::default();
        lead(&mut h, "b0", 100, 10);
        assign(&mut h, "b0", 110, 10, "b0", Some(0));
        lead(&mut h, "b1", 200, 20);
        // b0 wakes and loses the compare-and-set: fine.
        assign(&mut h, "b0", 205, 10, "b0", None);
        assign(&mut h, "b1", 210, 20, "nb-0", Some(1));
        h
    }

    #[test]
    fn leaders_one_after_another_pass() {
        assert_eq!(check(&valid().done(), &spec()), vec![]);
    }

    #[test]
    fn l1_stale_leader_write() {
        let mut h = valid();
        assign(&mut h, "b0", 300, 10, "b0", Some(2));
        let v = check(&h.done(), &spec());
        assert_eq!(names(&v), vec![("L1", "stale-leader-write".to_string())], "{v:?}");
        assert!(v[0].detail.contains("under term 10, after") && v[0].detail.contains("term 20"), "{}", v[0].detail);
    }

    #[test]
    fn l1_term_of_another_broker() {
        let mut h = valid();
        assign(&mut h, "b2", 300, 20, "b2", Some(2));
        let v = check(&h.done(), &spec());
        assert_eq!(names(&v), vec![("L1", "term-of-another-broker".to_string())], "{v:?}");
    }

    #[test]
    fn l2_new_broker_idle_unless_there_are_too_few_queues() {
        let mut h = History::default();
        lead(&mut h, "b0", 100, 10);
        assign(&mut h, "b0", 110, 10, "b0", Some(0));
        let records = h.done();
        assert_eq!(names(&check(&records, &spec())), vec![("L2", "new-broker-idle".to_string())]);
        assert_eq!(check(&records, &Spec { queues: 1, ..spec() }), vec![]);
        // An assignment to it whose answer was lost may have been written.
        let mut h = History::default();
        lead(&mut h, "b0", 100, 10);
        assign(&mut h, "b0", 110, 10, "b0", Some(0));
        let moves = vec![Moved { topic: "t".into(), queue: 1, from: None, to: "nb-0".into() }];
        h.op("b0", 120, 121, Call::Assign { term: 10, moves }, End::Info);
        assert_eq!(check(&h.done(), &spec()), vec![]);
    }

    #[test]
    fn no_assignment_judged_nothing() {
        let mut h = History::default();
        lead(&mut h, "b0", 100, 10);
        assert_eq!(check(&h.done(), &spec())[0].invariant, JUDGED_NOTHING);
    }
}
