//! The checker of transactional messages (T1–T8, DESIGN.md §5), from what
//! the clients saw and the final durable state: the producers' operations
//! and final local stores, the consumers' polls, every queue as stored, and
//! each queue's half, op and discard logs with the check service's offsets.
//! A broker's word that it committed, checked or discarded is never
//! evidence; what the logs and the clients hold is.

use crate::ops::{ops, secs, Op, Report};
use crate::{Violation, JUDGED_NOTHING};
use mqsim_core::broker::txn::{CheckConfig, Resolution};
use mqsim_core::producer::local_tx::TxState;
use mqsim_sim::history::{Call, Record, Ret, Stored, TxHalf};
use std::collections::{BTreeMap, BTreeSet};

pub const T1: &str = "T1-delivered-iff-committed";
pub const T2: &str = "T2-half-never-delivered";
pub const T3: &str = "T3-committed-and-rolled-back";
pub const T4: &str = "T4-one-real-copy";
pub const T5: &str = "T5-every-half-resolved";
pub const T6: &str = "T6-check-timing";
pub const T7: &str = "T7-op-offset-skips-nothing";
pub const T8: &str = "T8-end-after-resolution";

#[derive(Clone, Debug)]
pub struct Spec {
    pub topic: String,
    pub queues: u32,
    pub check: CheckConfig,
    /// The largest drift of a broker's clock: a half's age by it may be this much fast.
    pub max_drift_ppm: i64,
}

/// A queue's transaction logs as the final read found them.
struct Logs<'a> {
    halves: &'a [TxHalf],
    ops: &'a [u64],
    discards: &'a [TxHalf],
    check_offset: u64,
    op_offset: u64,
}

/// What the clients did and saw of one transaction.
#[derive(Default)]
struct Tx<'a> {
    send: Option<Op<'a>>,
    /// When the producer first set out to record a commit (a real copy cannot exist before).
    commit_from: Option<u64>,
    /// Every word the producer gave: decisions recorded, end messages, check answers.
    words: BTreeSet<Word>,
    checks: Vec<Op<'a>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Word {
    Commit,
    Rollback,
}

fn word(r: Resolution) -> Option<Word> {
    match r {
        Resolution::Commit => Some(Word::Commit),
        Resolution::Rollback => Some(Word::Rollback),
        Resolution::Unknown => None,
    }
}

fn state_word(s: TxState) -> Option<Word> {
    match s {
        TxState::Commit => Some(Word::Commit),
        TxState::Rollback => Some(Word::Rollback),
        TxState::Running => None,
    }
}

pub fn check(history: &[Record], spec: &Spec) -> Vec<Violation> {
    let ops = match ops(history) {
        Ok(ops) => ops,
        Err(v) => return vec![v],
    };
    let mut txs: BTreeMap<&str, Tx> = BTreeMap::new();
    let mut finals: BTreeMap<&str, BTreeMap<&str, TxState>> = BTreeMap::new();
    let mut queues: BTreeMap<u32, &[Stored]> = BTreeMap::new();
    let mut logs: BTreeMap<u32, Logs> = BTreeMap::new();
    // Each message a consumer received: the poll, its queue, the offset, the id.
    let mut polls: Vec<(Op, u32, u64, &str)> = Vec::new();
    for o in &ops {
        match (o.call, o.ret()) {
            (Call::SendHalf { msg_id, .. }, _) => txs.entry(msg_id).or_default().send = Some(*o),
            (Call::Decide { msg_id, state }, ret) => {
                let tx = txs.entry(msg_id).or_default();
                if *state == TxState::Commit {
                    tx.commit_from = Some(tx.commit_from.map_or(o.start, |t| t.min(o.start)));
                }
                if let Some(Ret::Decide { state }) = ret {
                    tx.words.extend(state_word(*state));
                }
            }
            (Call::EndTx { msg_id, word: w, .. }, _) => txs.entry(msg_id).or_default().words.extend(word(*w)),
            (Call::CheckBack { msg_id, answer, .. }, _) => {
                let tx = txs.entry(msg_id).or_default();
                tx.words.extend(word(*answer));
                tx.checks.push(*o);
            }
            (Call::LocalTxs, Some(Ret::LocalTxs { txs })) => {
                finals.insert(o.node, txs.iter().map(|t| (t.msg_id.as_str(), t.state)).collect());
            }
            (Call::ReadQueue { topic, queue }, Some(Ret::ReadQueue { msgs })) if *topic == spec.topic => {
                queues.insert(*queue, msgs);
            }
            (
                Call::ReadTxLogs { topic, queue },
                Some(Ret::ReadTxLogs { halves, ops, discards, check_offset, op_offset }),
            ) if *topic == spec.topic => {
                let l = Logs { halves, ops, discards, check_offset: *check_offset, op_offset: *op_offset };
                logs.insert(*queue, l);
            }
            (Call::Poll { topic, queue, .. }, Some(Ret::Poll { msgs, .. })) if *topic == spec.topic => {
                polls.extend(msgs.iter().map(|m| (*o, *queue, m.offset, m.msg_id.as_str())));
            }
            _ => {}
        }
    }
    // Nothing to judge, or a final read missing: the run fails.
    if !txs.values().any(|t| t.send.is_some_and(|s| s.ok())) {
        return vec![Violation::new(JUDGED_NOTHING, "no half was acknowledged in the whole run".into())];
    }
    for q in 0..spec.queues {
        if !queues.contains_key(&q) || !logs.contains_key(&q) {
            let detail = format!("no final read of {}/q{q} and its transaction logs ended well", spec.topic);
            return vec![Violation::new(JUDGED_NOTHING, detail)];
        }
    }
    let senders: BTreeSet<&str> = txs.values().filter_map(|t| t.send.map(|s| s.node)).collect();
    if let Some(missing) = senders.iter().find(|p| !finals.contains_key(*p)) {
        let detail = format!("no final read of {missing}'s local transactions ended well");
        return vec![Violation::new(JUDGED_NOTHING, detail)];
    }

    let mut report = Report::default();
    // Real copies of each message, where they are.
    let mut copies: BTreeMap<&str, Vec<(u32, u64)>> = BTreeMap::new();
    for (q, msgs) in &queues {
        for m in msgs.iter() {
            copies.entry(&m.msg_id).or_default().push((*q, m.offset));
        }
    }
    let final_state = |msg_id: &str, tx: &Tx| -> Option<TxState> {
        tx.send.and_then(|s| finals.get(s.node)).and_then(|f| f.get(msg_id)).copied()
    };

    for (msg_id, tx) in &txs {
        let Some(send) = tx.send else {
            // Begun and decided, but a crash came before its half was sent: nothing to judge.
            if let Some(c) = tx.checks.first() {
                report.at(T6, c, format!("{msg_id}: a check-back about a transaction no producer sent"));
            }
            continue;
        };
        let state = final_state(msg_id, tx);
        let committed = state == Some(TxState::Commit);
        let n = copies.get(msg_id).map_or(0, Vec::len);
        // T1: delivered iff the final local decision is commit (a half
        // discarded after the maximum of checks is never delivered).
        // Judged per queue: a half retried onto two queues is two halves.
        if committed {
            let lost = logs.iter().find(|(q, l)| {
                l.halves.iter().any(|h| h.offset == h.origin && h.msg_id == *msg_id)
                    && !l.discards.iter().any(|h| h.msg_id == *msg_id)
                    && !copies.get(msg_id).is_some_and(|c| c.iter().any(|(cq, _)| cq == *q))
            });
            if let Some((q, _)) = lost {
                let detail = format!(
                    "{msg_id} was committed by its producer but is not in q{q}, where its half is (a lost commit)"
                );
                report.at(T1, &send, detail);
            }
        }
        if !committed && n > 0 {
            let at = copies[msg_id].iter().map(|(q, o)| format!("q{q}@{o}")).collect::<Vec<_>>().join(", ");
            let state = state.map_or("never begun".to_string(), |s| format!("{s:?}"));
            report.at(T1, &send, format!("{msg_id} is stored at {at} but its producer's final decision is {state}"));
        }
        // T3: never both words, and no real copy of a message any word rolled back.
        if tx.words.contains(&Word::Commit) && tx.words.contains(&Word::Rollback) {
            report.at(T3, &send, format!("{msg_id}: its producer said both commit and rollback"));
        } else if n > 0 && tx.words.contains(&Word::Rollback) {
            report.at(T3, &send, format!("{msg_id} was rolled back but is stored {n} time(s)"));
        }
        // T4: at most one real copy per queue; a copy in another queue comes
        // from a second half there (the producer retried the half on
        // another queue) and is a duplicate by producer retry, not a violation.
        let queues_with_half: BTreeSet<u32> = logs
            .iter()
            .filter(|(_, l)| l.halves.iter().any(|h| h.offset == h.origin && h.msg_id == *msg_id))
            .map(|(q, _)| *q)
            .collect();
        let per_queue = copies.get(msg_id).map_or(BTreeMap::new(), |c| {
            c.iter().fold(BTreeMap::new(), |mut m: BTreeMap<u32, usize>, (q, _)| {
                *m.entry(*q).or_default() += 1;
                m
            })
        });
        if per_queue.iter().any(|(q, k)| *k > 1 || !queues_with_half.contains(q)) {
            let at = copies[msg_id].iter().map(|(q, o)| format!("q{q}@{o}")).collect::<Vec<_>>().join(", ");
            // Named at the delivery of the last copy, when a consumer received
            // it (the duplicate as a client saw it), else at the half's send.
            let (q, last) = *copies[msg_id].iter().max_by_key(|(_, o)| *o).expect("copies");
            let delivered = polls.iter().filter(|(_, pq, po, id)| *pq == q && *po == last && id == msg_id).map(|p| p.0);
            let about = delivered.min_by_key(|p| p.end).unwrap_or(send);
            report.at(T4, &about, format!("{msg_id} is stored {n} times: {at}"));
        }
        // T6: no check-back before the half is the timeout old (by a broker
        // clock that may run fast by the largest drift), at most the maximum.
        let min_age = spec.check.timeout_ms * 1_000 * 1_000_000 / (1_000_000 + spec.max_drift_ppm as u64);
        for c in &tx.checks {
            let Call::CheckBack { check, broker, .. } = c.call else { continue };
            if c.start < send.start + min_age {
                let age = secs(c.start.saturating_sub(send.start));
                let detail = format!("{msg_id} was checked back by {broker} {age} after its half was sent");
                report.at(T6, c, detail);
            }
            if *check > spec.check.max_checks {
                let detail = format!("{msg_id} was checked back a {check}th time (maximum {})", spec.check.max_checks);
                report.at(T6, c, detail);
            }
        }
    }
    // T2: what a consumer received, it received after the producer set out to commit it.
    for (poll, _, _, msg_id) in &polls {
        match txs.get(msg_id) {
            Some(tx) if tx.commit_from.is_some_and(|t| t < poll.end) => {}
            Some(tx) => {
                let when = tx.commit_from.map_or("never".into(), secs);
                let detail =
                    format!("{msg_id} was delivered at {}, and its producer decided commit {when}", secs(poll.end));
                report.at(T2, poll, detail);
            }
            None => report.at(T2, poll, format!("{msg_id} was delivered but no producer sent it")),
        }
    }
    for (q, l) in &logs {
        let resolved: BTreeMap<u64, usize> = l.ops.iter().fold(BTreeMap::new(), |mut m, o| {
            *m.entry(*o).or_default() += 1;
            m
        });
        let gone: BTreeSet<u64> = l.discards.iter().map(|h| h.origin).collect();
        for h in l.halves.iter().filter(|h| h.offset == h.origin) {
            // T5: every half ends with an op record or in the discard log.
            if !resolved.contains_key(&h.origin) && !gone.contains(&h.origin) {
                let behind = if l.halves.iter().filter(|x| x.origin == h.origin).all(|x| x.offset < l.check_offset) {
                    format!(", and every copy is behind the check offset {}", l.check_offset)
                } else {
                    String::new()
                };
                let detail = format!("half q{q}@{} ({}) was never resolved nor discarded{behind}", h.origin, h.msg_id);
                report.add(T5, txs.get(h.msg_id.as_str()).and_then(|t| t.send.as_ref()), detail);
            }
            // T8: nothing resolves a half twice, or after it was discarded.
            let n = resolved.get(&h.origin).copied().unwrap_or(0);
            let sender = txs.get(h.msg_id.as_str()).and_then(|t| t.send.as_ref());
            if n > 1 {
                let detail = format!("half q{q}@{} ({}) has {n} op records: resolved again", h.origin, h.msg_id);
                report.add(T8, sender, detail);
            }
            if n > 0 && gone.contains(&h.origin) {
                let detail = format!("half q{q}@{} ({}) was discarded and resolved", h.origin, h.msg_id);
                report.add(T8, sender, detail);
            }
        }
        // T7: the op offset passed only op records of halves with no copy at
        // or past the check offset (the check service reads no other).
        for (i, origin) in l.ops.iter().enumerate().take(l.op_offset as usize) {
            let ahead = l.halves.iter().find(|h| h.origin == *origin && h.offset >= l.check_offset);
            if *origin >= l.check_offset || ahead.is_some() {
                let copy = ahead.map_or(*origin, |h| h.offset);
                let detail = format!(
                    "q{q}: the op offset {} passed op record {i} of half {origin}, whose copy at {copy} is at or past the check offset {}",
                    l.op_offset, l.check_offset
                );
                report.add(T7, None, detail);
            }
        }
    }
    report.violations()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::build::{End, History};
    use mqsim_sim::history::{LocalState, Polled};

    const T: &str = "payments";
    const P: &str = "producer-0";

    fn spec() -> Spec {
        Spec {
            topic: T.into(),
            queues: 1,
            check: CheckConfig { timeout_ms: 6_000, max_checks: 3, interval_ms: 2_000 },
            max_drift_ppm: 50_000,
        }
    }

    /// A transaction: half sent at `t` (ms) and stored at `half` of q0, decided `state`, end message `word`.
    fn tx(h: &mut History, t: u64, id: &str, half: u64, state: TxState, word: Resolution) {
        let call = Call::SendHalf {
            group: "pg".into(),
            topic: T.into(),
            tag: "TagA".into(),
            msg_id: id.into(),
            body: id.into(),
        };
        h.op(P, t, t + 5, call, End::Ok(Ret::SendHalf { broker: "broker-0".into(), queue: 0, offset: half }));
        if state != TxState::Running {
            h.op(P, t + 6, t + 7, Call::Decide { msg_id: id.into(), state }, End::Ok(Ret::Decide { state }));
        }
        let call = Call::EndTx { msg_id: id.into(), broker: "broker-0".into(), queue: 0, half, word };
        h.op(P, t + 8, t + 8, call, End::Ok(Ret::EndTx));
    }

    fn check_back(h: &mut History, t: u64, id: &str, half: u64, check: u32, answer: Resolution) {
        let call = Call::CheckBack { broker: "broker-0".into(), queue: 0, half, msg_id: id.into(), check, answer };
        h.op(P, t, t, call, End::Ok(Ret::CheckBack));
    }

    fn poll(h: &mut History, t: u64, ids: &[&str]) {
        let msgs = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Polled { offset: i as u64, msg_id: id.to_string(), tag: "TagA".into() })
            .collect();
        let call = Call::Poll { group: "g".into(), topic: T.into(), queue: 0, offset: 0 };
        h.op("consumer-0", t, t + 1, call, End::Ok(Ret::Poll { msgs, next: ids.len() as u64 }));
    }

    fn half(offset: u64, origin: u64, id: &str, checks: u32) -> TxHalf {
        TxHalf { offset, origin, msg_id: id.into(), checks }
    }

    /// The final reads: the producer's store, the queue, the transaction logs.
    struct Finals {
        local: Vec<(&'static str, TxState)>,
        queue: Vec<&'static str>,
        halves: Vec<TxHalf>,
        ops: Vec<u64>,
        discards: Vec<TxHalf>,
        offsets: (u64, u64),
    }

    fn finals(h: &mut History, f: Finals) {
        let txs = f.local.iter().map(|(id, state)| LocalState { msg_id: id.to_string(), state: *state }).collect();
        h.op(P, 90_000, 90_001, Call::LocalTxs, End::Ok(Ret::LocalTxs { txs }));
        let msgs = f
            .queue
            .iter()
            .enumerate()
            .map(|(i, id)| Stored {
                offset: i as u64,
                msg_id: id.to_string(),
                tag: "TagA".into(),
                body: id.to_string(),
            })
            .collect();
        h.op(
            "checker-0",
            90_010,
            90_011,
            Call::ReadQueue { topic: T.into(), queue: 0 },
            End::Ok(Ret::ReadQueue { msgs }),
        );
        let ret = Ret::ReadTxLogs {
            halves: f.halves,
            ops: f.ops,
            discards: f.discards,
            check_offset: f.offsets.0,
            op_offset: f.offsets.1,
        };
        h.op("checker-0", 90_020, 90_021, Call::ReadTxLogs { topic: T.into(), queue: 0 }, End::Ok(ret));
    }

    /// A valid run: a committed, a rolled back, and an undecided transaction
    /// checked to the maximum and discarded, one answered by check-back.
    fn valid() -> (History, Finals) {
        let mut h = History::default();
        tx(&mut h, 1_000, "a", 0, TxState::Commit, Resolution::Commit);
        tx(&mut h, 2_000, "b", 1, TxState::Rollback, Resolution::Rollback);
        tx(&mut h, 3_000, "c", 2, TxState::Running, Resolution::Unknown);
        tx(&mut h, 4_000, "d", 3, TxState::Running, Resolution::Unknown);
        h.op(
            P,
            5_000,
            5_001,
            Call::Decide { msg_id: "d".into(), state: TxState::Commit },
            End::Ok(Ret::Decide { state: TxState::Commit }),
        );
        check_back(&mut h, 9_100, "c", 2, 1, Resolution::Unknown);
        check_back(&mut h, 10_100, "d", 3, 1, Resolution::Commit);
        check_back(&mut h, 11_100, "c", 2, 2, Resolution::Unknown);
        check_back(&mut h, 13_100, "c", 2, 3, Resolution::Unknown);
        poll(&mut h, 20_000, &["a", "d"]);
        let f = Finals {
            local: vec![
                ("a", TxState::Commit),
                ("b", TxState::Rollback),
                ("c", TxState::Running),
                ("d", TxState::Commit),
            ],
            queue: vec!["a", "d"],
            halves: vec![
                half(0, 0, "a", 0),
                half(1, 1, "b", 0),
                half(2, 2, "c", 0),
                half(3, 3, "d", 0),
                half(4, 2, "c", 1),
                half(5, 3, "d", 1),
                half(6, 2, "c", 2),
                half(7, 2, "c", 3),
            ],
            ops: vec![0, 1, 3],
            discards: vec![half(0, 2, "c", 3)],
            offsets: (8, 3),
        };
        (h, f)
    }

    fn run(h: History, f: Finals) -> Vec<Violation> {
        let mut h = h;
        finals(&mut h, f);
        check(&h.done(), &spec())
    }

    fn flags(v: &[Violation], invariant: &str, text: &str) {
        assert!(
            v.iter().any(|v| v.invariant == invariant && v.detail.contains(text)),
            "{invariant} '{text}' not in {v:#?}"
        );
    }

    #[test]
    fn a_valid_history_passes() {
        let (h, f) = valid();
        assert_eq!(run(h, f), vec![]);
    }

    #[test]
    fn t1_a_lost_commit_and_a_rolled_back_delivery() {
        let (h, mut f) = valid();
        f.queue = vec!["d"];
        flags(&run(h, f), T1, "a was committed by its producer but is not in q0, where its half is");
        let (h, mut f) = valid();
        f.local[0].1 = TxState::Rollback;
        flags(&run(h, f), T1, "its producer's final decision is Rollback");
    }

    #[test]
    fn t2_a_message_delivered_before_its_commit() {
        let (mut h, f) = valid();
        poll(&mut h, 4_500, &["d"]);
        flags(&run(h, f), T2, "d was delivered at 4.501000s, and its producer decided commit 5.000000s");
    }

    #[test]
    fn t3_commit_and_rollback() {
        let (mut h, f) = valid();
        check_back(&mut h, 12_000, "a", 0, 1, Resolution::Rollback);
        flags(&run(h, f), T3, "a: its producer said both commit and rollback");
    }

    #[test]
    fn t4_two_real_copies() {
        let (h, mut f) = valid();
        f.queue = vec!["a", "d", "a"];
        flags(&run(h, f), T4, "a is stored 2 times: q0@0, q0@2");
    }

    #[test]
    fn t5_a_half_never_resolved() {
        let (h, mut f) = valid();
        f.ops = vec![0, 1];
        let v = run(h, f);
        flags(&v, T5, "half q0@3 (d) was never resolved nor discarded");
        let (h, mut f) = valid();
        f.discards.clear();
        flags(
            &run(h, f),
            T5,
            "half q0@2 (c) was never resolved nor discarded, and every copy is behind the check offset 8",
        );
    }

    #[test]
    fn t6_an_early_check_and_one_past_the_maximum() {
        let (mut h, f) = valid();
        check_back(&mut h, 7_000, "b", 1, 1, Resolution::Rollback);
        check_back(&mut h, 15_000, "c", 2, 4, Resolution::Unknown);
        let v = run(h, f);
        flags(&v, T6, "b was checked back by broker-0 5.000000s after its half was sent");
        flags(&v, T6, "c was checked back a 4th time (maximum 3)");
    }

    #[test]
    fn t7_the_op_offset_passes_a_pending_op_record() {
        let (h, mut f) = valid();
        f.offsets = (3, 3);
        flags(&run(h, f), T7, "passed op record 2 of half 3, whose copy at 3 is at or past the check offset 3");
        // An op record of a half behind the check offset whose put-again copy is ahead of it.
        let (h, mut f) = valid();
        f.offsets = (5, 3);
        flags(&run(h, f), T7, "passed op record 2 of half 3, whose copy at 5 is at or past the check offset 5");
    }

    #[test]
    fn t8_resolved_twice_or_after_discard() {
        let (h, mut f) = valid();
        f.ops = vec![0, 1, 3, 0];
        flags(&run(h, f), T8, "half q0@0 (a) has 2 op records");
        let (h, mut f) = valid();
        f.ops = vec![0, 1, 3, 2];
        flags(&run(h, f), T8, "half q0@2 (c) was discarded and resolved");
    }

    #[test]
    fn nothing_to_judge_or_a_missing_final_read_fails_the_run() {
        let h = History::default();
        let v = check(&h.done(), &spec());
        assert_eq!(v[0].invariant, JUDGED_NOTHING);
        let (mut h, _) = valid();
        h.op(P, 90_000, 90_001, Call::LocalTxs, End::Info);
        let v = check(&h.done(), &spec());
        assert_eq!(
            (v[0].invariant, v[0].detail.as_str()),
            (JUDGED_NOTHING, "no final read of payments/q0 and its transaction logs ended well")
        );
    }
}
