//! The checker of `managed-ledger`: the L invariants across a log's ledger
//! list, and the queue rules (order, density, no phantom, cursors), judged
//! from the owners' operations and the checker node's final reads.

use crate::ops::{ops, secs, Op, Outcome, Report};
use crate::{Violation, JUDGED_NOTHING};
use mqsim_sim::history::{Body, Call, FaultRecord, Record, Ret, Segment};
use std::collections::BTreeMap;

/// What the run was asked to do.
pub struct Spec {
    pub logs: Vec<String>,
    pub groups: Vec<String>,
    /// When the faults stopped (µs): every log must take appends after it.
    pub calm_from: u64,
    /// The node whose final reads are the durable state.
    pub checker: String,
}

/// A log as the checker node read it at the end.
struct FinalLog<'a> {
    segments: &'a [Segment],
    values: &'a [String],
    /// Offsets of each value (more than one is a duplicate).
    offsets: BTreeMap<&'a str, Vec<u64>>,
}

pub fn check(history: &[Record], spec: &Spec) -> Vec<Violation> {
    let ops = match ops(history) {
        Ok(ops) => ops,
        Err(v) => return vec![v],
    };
    let mut out = Report::default();
    if !ops.iter().any(|o| o.ok() && matches!(o.call, Call::Append { .. })) {
        out.add(JUDGED_NOTHING, None, "no append was acknowledged: nothing to judge".into());
        return out.violations();
    }
    let mut crashes: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for r in history {
        if let Body::Fault(FaultRecord::Crash { target, .. }) = &r.body {
            crashes.entry(target).or_default().push(r.t);
        }
    }
    for log in &spec.logs {
        let Some(fin) = final_log(&ops, spec, log, &mut out) else { continue };
        check_structure(log, &fin, &mut out);
        let of_log: Vec<&Op> = ops.iter().filter(|o| op_log(o) == Some(log.as_str())).collect();
        check_values(log, &of_log, &fin, &mut out);
        check_owners(log, &of_log, &fin, &mut out);
        check_reads(log, &of_log, &fin, &mut out);
        for group in &spec.groups {
            check_cursor(log, group, &of_log, &fin, spec, &mut out);
        }
        check_liveness(log, &of_log, &crashes, spec, &mut out);
    }
    out.violations()
}

fn op_log<'a>(o: &Op<'a>) -> Option<&'a str> {
    match o.call {
        Call::OpenLog { log }
        | Call::Append { log, .. }
        | Call::ReadLog { log, .. }
        | Call::CommitCursor { log, .. }
        | Call::ReadCursor { log, .. }
        | Call::FinalLog { log } => Some(log),
        _ => None,
    }
}

/// The checker node's read of `log`; its absence or failure is itself a violation.
fn final_log<'a>(ops: &'a [Op<'a>], spec: &Spec, log: &str, out: &mut Report) -> Option<FinalLog<'a>> {
    let read = ops.iter().find(|o| o.node == spec.checker && matches!(o.call, Call::FinalLog { log: l } if l == log));
    let Some(read) = read else {
        out.add(JUDGED_NOTHING, None, format!("{log} was never read at the end"));
        return None;
    };
    let Some(Ret::FinalLog { segments, values }) = read.ret() else {
        let why = read.error().unwrap_or("it never ended");
        out.at("L2", read, format!("{log} could not be read through the protocol at the end: {why}"));
        return None;
    };
    let mut offsets: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (o, v) in values.iter().enumerate() {
        offsets.entry(v.as_str()).or_default().push(o as u64);
    }
    Some(FinalLog { segments, values, offsets })
}

/// L6: the ledgers of the list cover the offsets densely, in order.
fn check_structure(log: &str, fin: &FinalLog, out: &mut Report) {
    let mut end = 0;
    for s in fin.segments {
        if s.first != end {
            let detail =
                format!("{log}: ledger {} starts at offset {} but the one before ends at {end}", s.ledger, s.first);
            out.add("L6", None, detail);
        }
        end = s.first + s.entries;
    }
    if end != fin.values.len() as u64 {
        out.add("L6", None, format!("{log}: the ledgers hold {end} entries but {} were read", fin.values.len()));
    }
}

/// L1: every acknowledged append is at its offset; M3: no value twice; no
/// phantom (M6): every stored value was appended; M7: never a failed one.
fn check_values(log: &str, of_log: &[&Op], fin: &FinalLog, out: &mut Report) {
    let mut appends: BTreeMap<&str, &Op> = BTreeMap::new();
    for o in of_log {
        let Call::Append { value, .. } = o.call else { continue };
        appends.insert(value, o);
        let Some(Ret::Append { offset }) = o.ret() else { continue };
        match fin.values.get(*offset as usize) {
            Some(v) if v == value => {}
            found => {
                let elsewhere =
                    fin.offsets.get(value.as_str()).map_or(String::new(), |at| format!(", found at {at:?}"));
                let detail = match found {
                    None => format!(
                        "lost-write: {log} offset {offset} was acknowledged but the log ends at {}{elsewhere}",
                        fin.values.len()
                    ),
                    Some(v) => format!(
                        "lost-write: {log} offset {offset} was acknowledged for {value:?} but holds {v:?}{elsewhere}"
                    ),
                };
                out.at("L1", o, detail);
            }
        }
    }
    for (value, at) in &fin.offsets {
        if at.len() > 1 {
            out.add("M3", None, format!("duplicate: {log} holds {value:?} at offsets {at:?}"));
        }
        match appends.get(value) {
            None => out.add(
                "M6",
                None,
                format!("phantom: {log} offset {} holds {value:?}, which no client appended", at[0]),
            ),
            Some(o) if o.failed() => {
                out.at("M7", o, format!("G1a: {log} offset {} holds {value:?}, whose append failed", at[0]))
            }
            Some(_) => {}
        }
    }
}

/// One owner's tenure of a log: an acknowledged open and the appends that
/// owner invoked after it.
struct Tenure<'o, 'a> {
    open: &'o Op<'a>,
    end: u64,
    ledger: u64,
    appends: Vec<&'o Op<'a>>,
}

/// Order and density (L6): each tenure's acknowledged appends take offsets
/// `end, end+1, …` in the order acknowledged. Fencing (L4): no tenure has an
/// append acknowledged at or past the start of a tenure opened after it.
fn check_owners(log: &str, of_log: &[&Op], fin: &FinalLog, out: &mut Report) {
    let mut tenures: Vec<Tenure> = Vec::new();
    let mut current: BTreeMap<&str, usize> = BTreeMap::new();
    for o in of_log {
        match (o.call, o.ret()) {
            (Call::OpenLog { .. }, ret) => {
                current.remove(o.node);
                if let Some(Ret::OpenLog { end, ledger }) = ret {
                    current.insert(o.node, tenures.len());
                    tenures.push(Tenure { open: o, end: *end, ledger: *ledger, appends: Vec::new() });
                }
            }
            (Call::Append { .. }, _) => {
                if let Some(&t) = current.get(o.node) {
                    tenures[t].appends.push(o);
                }
            }
            _ => {}
        }
    }
    for t in &mut tenures {
        t.appends.retain(|a| a.ok());
        t.appends.sort_by_key(|a| a.done_at);
        let mut expect = t.end;
        for a in &t.appends {
            let Some(Ret::Append { offset }) = a.ret() else { continue };
            if *offset != expect {
                let detail = format!(
                    "nonmonotonic-send: {log}: {} acknowledged offset {offset} where {expect} came next (opened at {})",
                    a.node, t.end
                );
                out.at("L6", a, detail);
                break;
            }
            expect += 1;
        }
    }
    // A later tenure's start bounds every earlier one. Tenures follow one
    // another in the order their ledgers joined the list (an owner may learn
    // it opened the log after a later owner did).
    let position = |t: &Tenure| fin.segments.iter().position(|s| s.ledger == t.ledger).unwrap_or(usize::MAX);
    let mut by_open: Vec<&Tenure> = tenures.iter().collect();
    by_open.sort_by_key(|t| (position(t), t.open.done_at));
    let mut bound: Option<(u64, &Op)> = None;
    for t in by_open.iter().rev() {
        if let Some((limit, later)) = bound {
            for a in &t.appends {
                let Some(Ret::Append { offset }) = a.ret() else { continue };
                if *offset >= limit {
                    let detail = format!(
                        "{log}: {} was acknowledged offset {offset}, but {} opened the log at {limit} ({}) after {} did",
                        a.node,
                        later.node,
                        later.describe(),
                        t.open.node
                    );
                    out.at("L4", a, detail);
                    break;
                }
            }
        }
        if bound.is_none_or(|(limit, _)| t.end <= limit) {
            bound = Some((t.end, t.open));
        }
    }
}

/// M6: a read returns what the log holds at that offset in the end (no
/// phantom read of an entry that recovery later cut off).
fn check_reads(log: &str, of_log: &[&Op], fin: &FinalLog, out: &mut Report) {
    for o in of_log {
        let (Call::ReadLog { offset, .. }, Some(Ret::ReadLog { value })) = (o.call, o.ret()) else { continue };
        match fin.values.get(*offset as usize) {
            Some(v) if v == value => {}
            found => {
                let detail = format!(
                    "inconsistent-offsets: {log} offset {offset} was read as {value:?}, but holds {found:?} at the end"
                );
                out.at("M6", o, detail);
            }
        }
    }
}

/// M5: a group's cursor never moves back, never passes an offset the group
/// had not read when it was committed, and never passes the log's end.
fn check_cursor(log: &str, group: &str, of_log: &[&Op], fin: &FinalLog, spec: &Spec, out: &mut Report) {
    let of_group = |o: &&&Op| match o.call {
        Call::CommitCursor { group: g, .. } | Call::ReadCursor { group: g, .. } | Call::ReadLog { group: g, .. } => {
            g == group
        }
        _ => false,
    };
    let ops: Vec<&Op> = of_log.iter().filter(of_group).copied().collect();
    // When each offset was first read, and by when every offset below k was.
    let mut first_read: BTreeMap<u64, u64> = BTreeMap::new();
    for o in &ops {
        if let (Call::ReadLog { offset, .. }, true) = (o.call, o.ok()) {
            let t = first_read.entry(*offset).or_insert(o.end);
            *t = (*t).min(o.end);
        }
    }
    let mut read_by = vec![0u64];
    for k in 0..fin.values.len() as u64 {
        let prev = *read_by.last().expect("starts with 0");
        read_by.push(first_read.get(&k).map_or(u64::MAX, |t| prev.max(*t)));
    }
    let mut commits: Vec<(u64, u64, &Op)> = Vec::new();
    for o in &ops {
        let Call::CommitCursor { offset, .. } = o.call else { continue };
        if !o.may_have_happened() {
            continue;
        }
        let unread = read_by.get(*offset as usize).is_none_or(|t| *t > o.start);
        if unread {
            let detail = format!("{log}: {group}'s cursor committed at {offset} before every offset below it was read");
            out.at("M5", o, detail);
        }
        if o.ok() {
            commits.push((o.end, *offset, o));
        }
    }
    commits.sort_by_key(|c| c.0);
    // The durable cursor at the end is judged below: its read must have ended well.
    let final_read = |o: &&Op| o.node == spec.checker && matches!(o.ret(), Some(Ret::ReadCursor { .. }));
    if !ops.iter().any(final_read) {
        out.add(JUDGED_NOTHING, None, format!("{log}: {group}'s cursor was never read at the end"));
    }
    for o in &ops {
        let (Call::ReadCursor { .. }, Some(Ret::ReadCursor { offset })) = (o.call, o.ret()) else { continue };
        let before = commits.partition_point(|c| c.0 < o.start);
        if let Some((_, c, commit)) = commits[..before].iter().max_by_key(|c| c.1) {
            if offset < c {
                let detail = format!(
                    "{log}: {group}'s cursor read as {offset} after {} committed {c} ({})",
                    commit.node,
                    secs(commit.end)
                );
                out.at("M5", o, detail);
            }
        }
        if o.node == spec.checker && *offset > fin.values.len() as u64 {
            let detail = format!("{log}: {group}'s cursor is at {offset}, past the log's end {}", fin.values.len());
            out.at("M5", o, detail);
        }
    }
}

/// LL: once the faults stop, every log takes appends again, and every
/// operation ends unless a crash of its node cut it short.
fn check_liveness(log: &str, of_log: &[&Op], crashes: &BTreeMap<&str, Vec<u64>>, spec: &Spec, out: &mut Report) {
    let writable = of_log.iter().any(|o| matches!(o.call, Call::Append { .. }) && o.ok() && o.start >= spec.calm_from);
    if !writable {
        out.add("LL", None, format!("{log} took no append after the faults stopped at {}", secs(spec.calm_from)));
    }
    let crashed = |o: &Op| crashes.get(o.node).is_some_and(|ts| ts.iter().any(|t| *t >= o.start));
    if let Some(o) = of_log.iter().find(|o| o.outcome == Outcome::Pending && !crashed(o)) {
        out.at("LL", o, format!("{} never completed", o.describe()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::build::{End, History};

    const CHECKER: &str = "checker-0";
    const A: &str = "owner-0";
    const B: &str = "owner-1";

    fn spec() -> Spec {
        Spec { logs: vec!["log-0".into()], groups: vec!["g0".into()], calm_from: 5_000_000, checker: CHECKER.into() }
    }

    /// `node` opens the log at `end`, adding ledger 1 at offset 0 and ledger 2 after it.
    fn open(h: &mut History, node: &str, t: u64, end: u64) {
        let ledger = if end == 0 { 1 } else { 2 };
        h.op(node, t, t + 5, Call::OpenLog { log: "log-0".into() }, End::Ok(Ret::OpenLog { end, ledger }));
    }

    fn append(h: &mut History, node: &str, t: u64, value: &str, end: End) -> u64 {
        h.op(node, t, t + 5, Call::Append { log: "log-0".into(), value: value.into() }, end)
    }

    fn acked(offset: u64) -> End {
        End::Ok(Ret::Append { offset })
    }

    fn read(h: &mut History, node: &str, t: u64, offset: u64, value: &str) {
        let call = Call::ReadLog { log: "log-0".into(), group: "g0".into(), offset };
        h.op(node, t, t + 2, call, End::Ok(Ret::ReadLog { value: value.into() }));
    }

    fn commit(h: &mut History, node: &str, t: u64, offset: u64) {
        let call = Call::CommitCursor { log: "log-0".into(), group: "g0".into(), offset };
        h.op(node, t, t + 2, call, End::Ok(Ret::CommitCursor));
    }

    fn cursor(h: &mut History, node: &str, t: u64, offset: u64) {
        let call = Call::ReadCursor { log: "log-0".into(), group: "g0".into() };
        h.op(node, t, t + 2, call, End::Ok(Ret::ReadCursor { offset }));
    }

    fn final_log(h: &mut History, segments: Vec<(u64, u64, u64)>, values: &[&str]) {
        let segments =
            segments.into_iter().map(|(ledger, first, entries)| Segment { ledger, first, entries }).collect();
        let values = values.iter().map(|v| v.to_string()).collect();
        h.op(
            CHECKER,
            60_000,
            60_100,
            Call::FinalLog { log: "log-0".into() },
            End::Ok(Ret::FinalLog { segments, values }),
        );
    }

    /// A takes the log, appends a, b; B takes over at 2 and appends c (after
    /// the calm begins); the group reads and commits as it goes.
    fn valid() -> History {
        let mut h = History::default();
        open(&mut h, A, 100, 0);
        append(&mut h, A, 200, "a", acked(0));
        append(&mut h, A, 300, "b", acked(1));
        read(&mut h, A, 400, 0, "a");
        commit(&mut h, A, 410, 1);
        open(&mut h, B, 1_000, 2);
        cursor(&mut h, B, 1_010, 1);
        read(&mut h, B, 1_020, 1, "b");
        append(&mut h, B, 6_000, "c", acked(2));
        read(&mut h, B, 6_100, 2, "c");
        commit(&mut h, B, 6_200, 3);
        h
    }

    fn judge(mut h: History, segments: Vec<(u64, u64, u64)>, values: &[&str]) -> Vec<Violation> {
        final_log(&mut h, segments, values);
        let mut h2 = h;
        cursor(&mut h2, CHECKER, 60_200, 3);
        check(&h2.done(), &spec())
    }

    fn flags(found: Vec<Violation>, invariant: &str, word: &str) {
        assert!(
            found.iter().any(|v| v.invariant == invariant && v.detail.contains(word)),
            "expected {invariant} ({word}), found {:?}",
            found.iter().map(|v| (v.invariant, v.detail.as_str())).collect::<Vec<_>>()
        );
    }

    const FINE: &[(u64, u64, u64)] = &[(1, 0, 2), (2, 2, 1)];

    #[test]
    fn a_valid_history_passes() {
        let found = judge(valid(), FINE.to_vec(), &["a", "b", "c"]);
        assert!(found.is_empty(), "{:?}", found.iter().map(|v| &v.detail).collect::<Vec<_>>());
    }

    #[test]
    fn an_acknowledged_append_missing_at_the_end_is_a_lost_write() {
        flags(judge(valid(), vec![(1, 0, 1), (2, 1, 1)], &["a", "c"]), "L1", "lost-write");
    }

    #[test]
    fn a_gap_between_ledgers_breaks_density() {
        flags(judge(valid(), vec![(1, 0, 2), (2, 3, 1)], &["a", "b", "c"]), "L6", "starts at offset 3");
    }

    #[test]
    fn a_value_nobody_appended_is_a_phantom() {
        let mut h = valid();
        append(&mut h, B, 6_300, "d", End::Fail("refused"));
        flags(judge(h, vec![(1, 0, 2), (2, 2, 3)], &["a", "b", "c", "x", "d"]), "M6", "phantom");
        let mut h = valid();
        append(&mut h, B, 6_300, "d", End::Fail("refused"));
        flags(judge(h, vec![(1, 0, 2), (2, 2, 2)], &["a", "b", "c", "d"]), "M7", "G1a");
    }

    #[test]
    fn a_value_twice_is_a_duplicate() {
        flags(judge(valid(), vec![(1, 0, 2), (2, 2, 2)], &["a", "b", "c", "b"]), "M3", "duplicate");
    }

    #[test]
    fn an_append_acknowledged_to_a_fenced_owner_is_flagged() {
        // A goes on after B opened the log at 2: A's third append is acknowledged at 2.
        let mut h = valid();
        append(&mut h, A, 1_100, "z", acked(2));
        flags(judge(h, FINE.to_vec(), &["a", "b", "c"]), "L4", "opened the log at 2");
    }

    #[test]
    fn owners_follow_one_another_in_the_order_their_ledgers_joined_the_list() {
        // A's open took effect first (ledger 1, empty) but A learned it last;
        // B, which fenced A, then had its appends acknowledged: valid.
        let mut h = History::default();
        h.op(A, 100, 1_200, Call::OpenLog { log: "log-0".into() }, End::Ok(Ret::OpenLog { end: 0, ledger: 1 }));
        h.op(B, 1_000, 1_005, Call::OpenLog { log: "log-0".into() }, End::Ok(Ret::OpenLog { end: 0, ledger: 2 }));
        append(&mut h, B, 1_100, "a", acked(0));
        append(&mut h, B, 6_000, "b", acked(1));
        read(&mut h, B, 6_100, 0, "a");
        read(&mut h, B, 6_110, 1, "b");
        read(&mut h, B, 6_120, 2, "c");
        commit(&mut h, B, 6_200, 3);
        append(&mut h, B, 6_010, "c", acked(2));
        let found = judge(h, vec![(1, 0, 0), (2, 0, 3)], &["a", "b", "c"]);
        assert!(found.is_empty(), "{:?}", found.iter().map(|v| &v.detail).collect::<Vec<_>>());
    }

    #[test]
    fn acknowledgements_out_of_order_are_flagged() {
        let mut h = History::default();
        open(&mut h, A, 100, 0);
        append(&mut h, A, 200, "a", acked(1));
        append(&mut h, A, 300, "b", acked(0));
        append(&mut h, A, 6_000, "c", acked(2));
        flags(judge(h, vec![(1, 0, 3)], &["b", "a", "c"]), "L6", "nonmonotonic-send");
    }

    #[test]
    fn a_read_of_what_recovery_later_cut_is_flagged() {
        let mut h = valid();
        read(&mut h, A, 500, 1, "q");
        flags(judge(h, FINE.to_vec(), &["a", "b", "c"]), "M6", "inconsistent-offsets");
    }

    #[test]
    fn cursors_never_move_back_nor_pass_unread_offsets() {
        let mut h = valid();
        cursor(&mut h, B, 6_500, 1);
        flags(judge(h, FINE.to_vec(), &["a", "b", "c"]), "M5", "after owner-1 committed 3");
        let mut h = valid();
        commit(&mut h, A, 450, 2);
        flags(judge(h, FINE.to_vec(), &["a", "b", "c"]), "M5", "before every offset below it was read");
    }

    #[test]
    fn a_log_that_takes_no_append_after_the_faults_is_flagged() {
        let mut h = History::default();
        open(&mut h, A, 100, 0);
        append(&mut h, A, 200, "a", acked(0));
        flags(judge(h, vec![(1, 0, 1)], &["a"]), "LL", "took no append");
    }

    #[test]
    fn missing_or_failed_final_reads_and_empty_runs_fail_the_run() {
        let h = valid();
        flags(check(&h.done(), &spec()), JUDGED_NOTHING, "never read");
        let mut h = valid();
        final_log(&mut h, FINE.to_vec(), &["a", "b", "c"]);
        flags(check(&h.done(), &spec()), JUDGED_NOTHING, "cursor was never read at the end");
        let mut h = valid();
        h.op(CHECKER, 60_000, 60_100, Call::FinalLog { log: "log-0".into() }, End::Info);
        flags(check(&h.done(), &spec()), "L2", "could not be read");
        let mut h = History::default();
        open(&mut h, A, 100, 0);
        flags(check(&h.done(), &spec()), JUDGED_NOTHING, "nothing to judge");
    }
}
