//! The checker of ordered consumption, a pure function of the recorded
//! history; the delivery guarantees (M1–M7) are the publish/subscribe
//! checker's. Judged from what the clients saw, never from the locks the
//! brokers say they granted:
//!
//! - **M2** *key-order*: the group processed a message of a sharding key
//!   before every message of that key acknowledged before it was sent (a
//!   message skipped, or processed out of order). Redeliveries are fine:
//!   what was processed before stays processed.
//! - **M2** *queue-order*: within a consumer's tenure of a queue (below),
//!   a message was processed after one at a higher offset, or after a message
//!   whose processing failed but before that message was retried (nothing is
//!   skipped, even on a second pass).
//! - **M2** *two-consumers-at-once*: two consumers of the group processed
//!   one queue at once. A consumer's *tenure* of a queue runs from its first
//!   processing after it fetched the committed offset (which it does
//!   whenever it takes the queue, or starts it over) to its last processing
//!   before the next fetch; two tenures of one queue must not overlap. A
//!   tenure ends where its last processing began: a consumer frozen inside
//!   its application cannot be stopped by any lease, so what is judged is
//!   that no consumer begins a message while another's tenure runs.
//!
//! Order is the order of invocation in the history. A run with no
//! acknowledged keyed send, or in which the group processed nothing, judged
//! nothing and fails.

use crate::ops::{ops, Op, Report};
use crate::{Violation, JUDGED_NOTHING};
use mqsim_sim::history::{Body, Call, Record};
use std::collections::{BTreeMap, BTreeSet};

pub fn check(history: &[Record], group: &str) -> Vec<Violation> {
    let ops = match ops(history) {
        Ok(ops) => ops,
        Err(v) => return vec![v],
    };
    // The history index of each operation's invocation, in the order of `ops`.
    let invoked: Vec<usize> =
        history.iter().enumerate().filter(|(_, r)| matches!(r.body, Body::Invoke { .. })).map(|(i, _)| i).collect();
    let processed = ops.iter().any(|o| is_process_of(o, group) && o.ok());
    let acked = ops.iter().any(|o| matches!(o.call, Call::Send { shard: Some(_), .. }) && o.ok());
    if !processed || !acked {
        let detail = format!(
            "nothing to judge: {} acknowledged keyed send, {} message processed by {group}",
            if acked { "an" } else { "no" },
            if processed { "a" } else { "no" }
        );
        return vec![Violation::new(JUDGED_NOTHING, detail)];
    }
    let mut report = Report::default();
    key_order(&ops, &invoked, group, &mut report);
    queue_order(&ops, group, &mut report);
    one_consumer_at_once(&ops, group, &mut report);
    report.violations()
}

fn is_process_of(o: &Op, group: &str) -> bool {
    matches!(o.call, Call::Process { group: g, .. } if g == group)
}

/// M2 *key-order*.
fn key_order(ops: &[Op], invoked: &[usize], group: &str, report: &mut Report) {
    // Per key, its acknowledged sends in the order they completed; per
    // message id, its key and where its send was invoked.
    let mut acked: BTreeMap<&str, Vec<(usize, &str)>> = BTreeMap::new();
    let mut sent: BTreeMap<&str, (&str, usize)> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        if let Call::Send { shard: Some(key), msg_id, .. } = o.call {
            sent.insert(msg_id, (key, invoked[i]));
            if o.ok() {
                acked.entry(key).or_default().push((o.done_at, msg_id));
            }
        }
    }
    for list in acked.values_mut() {
        list.sort();
    }
    // Per key: the ids processed so far, and how many of its acknowledged
    // sends, in order, are all processed.
    let mut done: BTreeMap<&str, (BTreeSet<&str>, usize)> = BTreeMap::new();
    for o in ops.iter().filter(|o| is_process_of(o, group) && o.ok()) {
        let Call::Process { msg_id, queue, offset, .. } = o.call else { continue };
        // A message no keyed send wrote is the delivery checker's (M6).
        let Some(&(key, send_at)) = sent.get(msg_id.as_str()) else { continue };
        let list = acked.get(key).map(Vec::as_slice).unwrap_or_default();
        let before = list.partition_point(|(done_at, _)| *done_at < send_at);
        let (seen, prefix) = done.entry(key).or_default();
        if *prefix < before {
            let missing = list[*prefix].1;
            report.at(
                "M2",
                o,
                format!(
                    "key-order: {group} processed {msg_id} (q{queue} offset {offset}) of key {key} before {missing}, \
                     which was acknowledged before {msg_id} was sent"
                ),
            );
        }
        seen.insert(msg_id);
        while *prefix < list.len() && seen.contains(list[*prefix].1) {
            *prefix += 1;
        }
    }
}

/// M2 *queue-order*.
fn queue_order(ops: &[Op], group: &str, report: &mut Report) {
    // Per (node, queue): the last processing in the current tenure: (offset, whether it succeeded, op).
    let mut last: BTreeMap<(&str, u32), (u64, bool, usize)> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        match o.call {
            Call::FetchOffset { group: g, queue, .. } if g == group => {
                last.remove(&(o.node, *queue));
            }
            Call::Process { group: g, queue, offset, .. } if g == group => {
                if let Some(&(before, ok, j)) = last.get(&(o.node, *queue)) {
                    let wrong = if ok { *offset <= before } else { *offset != before };
                    if wrong {
                        let why = if ok {
                            format!("after offset {before} ({})", ops[j].describe())
                        } else {
                            format!("after offset {before} failed ({}) and before it was retried", ops[j].describe())
                        };
                        report.at("M2", o, format!("queue-order: {} processed q{queue} offset {offset} {why}", o.node));
                    }
                }
                // A processing that never ended may or may not have happened: judge from what surely failed or succeeded.
                if o.ok() || o.failed() {
                    last.insert((o.node, *queue), (*offset, o.ok(), i));
                }
            }
            _ => {}
        }
    }
}

/// M2 *two-consumers-at-once*.
fn one_consumer_at_once(ops: &[Op], group: &str, report: &mut Report) {
    /// A consumer's run of processing of one queue: first and last op (indices into `ops`).
    struct Tenure<'a> {
        node: &'a str,
        first: usize,
        last: usize,
    }
    let mut tenures: BTreeMap<u32, Vec<Tenure>> = BTreeMap::new();
    // Per (node, queue): its open tenure's index in `tenures[queue]`, if it processed since its last fetch.
    let mut open: BTreeMap<(&str, u32), Option<usize>> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        match o.call {
            Call::FetchOffset { group: g, queue, .. } if g == group => {
                open.insert((o.node, *queue), None);
            }
            Call::Process { group: g, queue, .. } if g == group => {
                let list = tenures.entry(*queue).or_default();
                match open.get(&(o.node, *queue)).copied().flatten() {
                    Some(t) => list[t].last = i,
                    None => {
                        open.insert((o.node, *queue), Some(list.len()));
                        list.push(Tenure { node: o.node, first: i, last: i });
                    }
                }
            }
            _ => {}
        }
    }
    for (queue, list) in &tenures {
        // Tenures begin in order; the one reaching furthest so far is the one to overlap.
        let mut reach: Option<&Tenure> = None;
        for t in list {
            if let Some(r) = reach.filter(|r| r.last > t.first) {
                let (a, b) = (&ops[r.first], &ops[t.first]);
                report.at(
                    "M2",
                    b,
                    format!(
                        "two-consumers-at-once: {} began processing q{queue} ({}) while {} still processed it \
                         (from {} to {})",
                        t.node,
                        b.describe(),
                        r.node,
                        a.describe(),
                        ops[r.last].describe()
                    ),
                );
            }
            if reach.is_none_or(|r| t.last > r.last) {
                reach = Some(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::build::{End, History};
    use mqsim_sim::history::Ret;

    const G: &str = "g";

    fn send(h: &mut History, t: u64, id: &str, key: &str, ok: bool) {
        let call = Call::Send {
            topic: "t".into(),
            tag: "a".into(),
            keys: vec![key.into()],
            shard: Some(key.into()),
            msg_id: id.into(),
            body: format!("body.{id}"),
            back: None,
        };
        let end = if ok { End::Ok(Ret::Send { broker: "b".into(), queue: 0, offset: 0 }) } else { End::Info };
        h.op("producer-0", t, t + 1, call, end);
    }

    fn fetch(h: &mut History, node: &str, t: u64) {
        let call = Call::FetchOffset { group: G.into(), topic: "t".into(), queue: 0 };
        h.op(node, t, t + 1, call, End::Ok(Ret::FetchOffset { offset: 0 }));
    }

    fn process(h: &mut History, node: &str, t: u64, id: &str, offset: u64, ok: bool) {
        let call = Call::Process { group: G.into(), topic: "t".into(), queue: 0, offset, msg_id: id.into() };
        h.op(node, t, t + 1, call, if ok { End::Ok(Ret::Process) } else { End::Fail("consume later") });
    }

    /// Key k: m1, m2 acknowledged one after the other; m3 of key j.
    fn sends() -> History {
        let mut h = History::default();
        send(&mut h, 10, "m1", "k", true);
        send(&mut h, 20, "m2", "k", true);
        send(&mut h, 30, "m3", "j", true);
        h
    }

    fn names(v: &[Violation]) -> Vec<(&'static str, String)> {
        v.iter().map(|v| (v.invariant, v.detail.split(':').next().unwrap_or("").to_string())).collect()
    }

    #[test]
    fn in_order_with_a_retry_and_a_redelivery_by_the_next_consumer_passes() {
        let mut h = sends();
        fetch(&mut h, "c0", 100);
        process(&mut h, "c0", 110, "m1", 0, false);
        process(&mut h, "c0", 120, "m1", 0, true);
        process(&mut h, "c0", 130, "m2", 1, true);
        // c1 takes the queue over from an older committed offset: m2 again.
        fetch(&mut h, "c1", 200);
        process(&mut h, "c1", 210, "m2", 1, true);
        process(&mut h, "c1", 220, "m3", 2, true);
        // c0 takes it back.
        fetch(&mut h, "c0", 300);
        process(&mut h, "c0", 310, "m3", 2, true);
        assert_eq!(check(&h.done(), G), vec![]);
    }

    #[test]
    fn m2_key_order_a_failed_message_skipped() {
        let mut h = sends();
        fetch(&mut h, "c0", 100);
        process(&mut h, "c0", 110, "m1", 0, false);
        process(&mut h, "c0", 120, "m2", 1, true);
        let v = check(&h.done(), G);
        let both = vec![("M2", "key-order".to_string()), ("M2", "queue-order".to_string())];
        assert_eq!(names(&v), both, "{v:?}");
        assert!(v[0].detail.contains("before m1"), "{}", v[0].detail);
        // Across tenures key-order alone sees it: c1 starts past m1.
        let mut h = sends();
        fetch(&mut h, "c0", 100);
        process(&mut h, "c0", 110, "m1", 0, false);
        fetch(&mut h, "c1", 200);
        process(&mut h, "c1", 210, "m2", 1, true);
        assert_eq!(names(&check(&h.done(), G)), vec![("M2", "key-order".to_string())]);
    }

    #[test]
    fn m2_key_order_out_of_order_but_an_unacknowledged_send_may_come_first() {
        let mut h = History::default();
        send(&mut h, 10, "m1", "k", false);
        send(&mut h, 20, "m2", "k", true);
        send(&mut h, 30, "m3", "k", true);
        // m1's request was held back and stored after m2.
        fetch(&mut h, "c0", 100);
        process(&mut h, "c0", 110, "m2", 0, true);
        process(&mut h, "c0", 120, "m1", 1, true);
        process(&mut h, "c0", 130, "m3", 2, true);
        assert_eq!(check(&h.records.clone(), G), vec![], "m1 was never acknowledged");
        let mut h = sends();
        fetch(&mut h, "c0", 100);
        process(&mut h, "c0", 110, "m2", 1, true);
        fetch(&mut h, "c0", 115);
        process(&mut h, "c0", 120, "m1", 0, true);
        assert_eq!(names(&check(&h.done(), G)), vec![("M2", "key-order".to_string())]);
    }

    #[test]
    fn m2_queue_order_a_skip_or_a_step_back_within_a_tenure() {
        // m1 is processed again on a second pass, after m2: a step back.
        let mut h = sends();
        fetch(&mut h, "c0", 100);
        process(&mut h, "c0", 110, "m1", 0, true);
        process(&mut h, "c0", 120, "m2", 1, true);
        process(&mut h, "c0", 130, "m1", 0, true);
        let v = check(&h.done(), G);
        assert_eq!(names(&v), vec![("M2", "queue-order".to_string())], "{v:?}");
        // m3 (another key) after m2 failed and before m2 was retried: a skip
        // key-order cannot see, since m2 was processed once before.
        let mut h = sends();
        fetch(&mut h, "c0", 100);
        process(&mut h, "c0", 110, "m1", 0, true);
        process(&mut h, "c0", 120, "m2", 1, true);
        fetch(&mut h, "c0", 200);
        process(&mut h, "c0", 210, "m2", 1, false);
        process(&mut h, "c0", 220, "m3", 2, true);
        let v = check(&h.done(), G);
        assert_eq!(names(&v), vec![("M2", "queue-order".to_string())], "{v:?}");
        assert!(v[0].detail.contains("failed"), "{}", v[0].detail);
    }

    #[test]
    fn m2_two_consumers_at_once() {
        let mut h = sends();
        fetch(&mut h, "c0", 100);
        process(&mut h, "c0", 110, "m1", 0, true);
        fetch(&mut h, "c1", 115);
        process(&mut h, "c1", 120, "m1", 0, true);
        process(&mut h, "c0", 130, "m2", 1, true);
        let v = check(&h.done(), G);
        assert_eq!(names(&v), vec![("M2", "two-consumers-at-once".to_string())], "{v:?}");
        assert!(v[0].detail.starts_with("two-consumers-at-once: c1 began processing q0"), "{}", v[0].detail);
    }

    #[test]
    fn a_run_that_processed_nothing_judged_nothing() {
        let mut h = sends();
        fetch(&mut h, "c0", 100);
        process(&mut h, "c0", 110, "m1", 0, false);
        assert_eq!(check(&h.done(), G)[0].invariant, JUDGED_NOTHING);
        let mut h = History::default();
        fetch(&mut h, "c0", 100);
        assert_eq!(check(&h.done(), G)[0].invariant, JUDGED_NOTHING);
    }
}
