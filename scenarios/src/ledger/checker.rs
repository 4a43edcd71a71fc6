//! The checker of the ledger scenarios. It judges what clients saw (the
//! writer's adds and closes, the recoverer's fences, recoveries and metadata
//! reads, and the checker node's final reads of metadata and entries through
//! the protocol) and the final durable state (what each bookie's journal
//! durably holds):
//!
//! - **L1** no divergence: a closed ledger's last entry L is at least every
//!   acknowledged entry, and a writer's close is at its LAC; reads and every
//!   bookie of an entry's write set give the payload that was acknowledged;
//! - **L2** every acknowledged entry is readable through the protocol after
//!   the faults stop;
//! - **L3** every entry up to L is stored on at least Qa bookies of its write
//!   set (Qw once repaired);
//! - **L4** one writer per ledger: adds are acknowledged only to the node that
//!   created the ledger and to one incarnation of it (each value a writer sends
//!   names both), and none invoked after a recovering client was told the
//!   ledger is fenced;
//! - **L5** after repair, no ledger names a lost bookie;
//! - **L6** entry ids are dense from 0 and acknowledged in entry order (the
//!   order in which the writer's client learned them), and every entry up to
//!   L can be read;
//! - **L7** a fence a bookie acknowledged is durable: at the end, after any
//!   restarts, that bookie still refuses normal adds to that ledger;
//! - **L8** metadata never loses an acknowledged change: every ledger an
//!   operation names is still listed; once a ledger was seen CLOSED at L
//!   (a close, a recovery, a read) it stays CLOSED at L; an ensemble change the
//!   writer made is in the final metadata unless a later change replaced it;
//! - **LL** liveness: after the faults stop every operation completes within
//!   [`BOUND`] (unless its node crashed), every ledger ends closed, and the
//!   final reads are answered.

use crate::ops::{ops, secs, Op, Outcome, Report};
use crate::{Violation, JUDGED_NOTHING};
use mqsim_core::bookie::{self, EntryId, LedgerId};
use mqsim_core::env::{Event, LedgerEvent};
use mqsim_core::ledger::{write_set, LedgerMeta, State};
use mqsim_sim::history::{Body, Call, FaultRecord, Record, Ret};
use std::collections::{BTreeMap, BTreeSet};

/// Once the faults stop, every operation completes within this many
/// microseconds of simulated time (or of its invocation, if later).
pub const BOUND: u64 = 15_000_000;

/// The payloads a bookie durably holds, by (ledger, entry).
pub type Payloads = BTreeMap<(LedgerId, EntryId), Vec<u8>>;

/// The final state of storage, read straight from the bookies' disks, and
/// what the run expects of it.
pub struct Final {
    /// Per bookie: the intact entries its journal durably holds, or why it cannot be read.
    pub stored: BTreeMap<String, Result<Payloads, String>>,
    /// The bookies registered at the end, when repair is being judged.
    pub registered: Option<BTreeSet<String>>,
    /// Whether every entry must have Qw copies (after repair) or Qa.
    pub repaired: bool,
    /// When the faults stopped, and when the run ended (µs).
    pub calm_from: u64,
    pub end: u64,
}

impl Final {
    pub fn from_journals(
        journals: &BTreeMap<String, Vec<u8>>,
        registered: Option<BTreeSet<String>>,
        repaired: bool,
        calm_from: u64,
        end: u64,
    ) -> Final {
        let stored = journals
            .iter()
            .map(|(b, bytes)| {
                let entries = bookie::stored(bytes)
                    .map(|(entries, _)| entries.into_iter().map(|(k, e)| (k, e.payload)).collect())
                    .map_err(|e| e.to_string());
                (b.clone(), entries)
            })
            .collect();
        Final { stored, registered, repaired, calm_from, end }
    }
}

/// The bookies the checker node found registered at the end.
pub fn registered_at_end(history: &[Record]) -> BTreeSet<String> {
    history
        .iter()
        .filter(|r| r.node == super::CHECKER)
        .filter_map(|r| match &r.body {
            Body::Ok { ret: Ret::ListBookies { bookies }, .. } => Some(bookies.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect()
}

struct Acked<'a> {
    value: &'a str,
    op: &'a Op<'a>,
}

pub fn check(history: &[Record], fin: &Final) -> Vec<Violation> {
    let ops = match ops(history) {
        Ok(ops) => ops,
        Err(v) => return vec![v],
    };
    let checker = |o: &&Op| o.node == super::CHECKER;
    let mut out = Report::default();

    // Acknowledged adds per ledger, and who created each ledger.
    let mut creator: BTreeMap<LedgerId, &str> = BTreeMap::new();
    let mut acked: BTreeMap<LedgerId, BTreeMap<EntryId, Acked>> = BTreeMap::new();
    let mut ack_order: BTreeMap<LedgerId, Vec<(usize, EntryId, &Op)>> = BTreeMap::new();
    // Every value an add to each ledger sent, acknowledged or not.
    let mut sent: BTreeMap<LedgerId, BTreeSet<&str>> = BTreeMap::new();
    for o in &ops {
        if let Call::Add { ledger, value } = o.call {
            sent.entry(*ledger).or_default().insert(value);
        }
        match (o.call, o.ret()) {
            (Call::CreateLedger { .. }, Some(Ret::CreateLedger { ledger })) => {
                creator.insert(*ledger, o.node);
            }
            (Call::Add { ledger, value }, Some(Ret::Add { entry })) => {
                ack_order.entry(*ledger).or_default().push((o.done_at, *entry, o));
                let previous = acked.entry(*ledger).or_default().insert(*entry, Acked { value, op: o });
                if let Some(p) = previous {
                    let detail = format!(
                        "ledger {ledger} entry {entry} was acknowledged to {} and to {}",
                        p.op.describe(),
                        o.describe()
                    );
                    out.add("L6", Some(o), detail);
                }
            }
            _ => {}
        }
    }
    if acked.is_empty() {
        out.add(JUDGED_NOTHING, None, "no add was acknowledged in the whole run".into());
        return out.violations();
    }

    check_writers(&ops, &creator, &acked, &mut out);
    // L1: a writer closes at its LAC, the last entry it acknowledged.
    for o in &ops {
        let (Call::Close { ledger }, Some(Ret::Close { last_entry })) = (o.call, o.ret()) else { continue };
        let lac = acked.get(ledger).and_then(|a| a.keys().next_back()).copied().unwrap_or(-1);
        if *last_entry != lac {
            let detail = format!(
                "ledger {ledger}: {} closed it at entry {last_entry}, but the last entry it acknowledged was {lac}",
                o.describe()
            );
            out.add("L1", Some(o), detail);
        }
    }
    // L6: acknowledged ids are 0, 1, 2, … in the order the writer's client learned them.
    for (ledger, order) in &mut ack_order {
        order.sort_by_key(|(at, _, _)| *at);
        if let Some((i, (_, entry, o))) = order.iter().enumerate().find(|(i, (_, e, _))| *e != *i as i64) {
            let detail = format!("ledger {ledger}: acknowledgement {i} was entry {entry}, not {i} ({})", o.describe());
            out.add("L6", Some(o), detail);
        }
    }

    // The final metadata and entries, read by the checker node.
    let listed: Option<BTreeSet<LedgerId>> = ops.iter().filter(checker).find_map(|o| match o.ret() {
        Some(Ret::ListLedgers { ledgers }) => Some(ledgers.iter().copied().collect()),
        _ => None,
    });
    let mut finals: BTreeMap<LedgerId, (u64, &LedgerMeta)> = BTreeMap::new();
    for o in ops.iter().filter(checker) {
        match (o.call, o.ret()) {
            (Call::ReadMeta { ledger }, Some(Ret::ReadMeta { version, meta })) => {
                finals.insert(*ledger, (*version, meta));
            }
            (Call::ReadMeta { ledger }, None) => out.add(
                "LL",
                Some(o),
                format!("ledger {ledger}: its metadata could not be read after the faults stopped"),
            ),
            _ => {}
        }
    }
    let Some(listed) = listed else {
        out.add("LL", None, "the metadata service did not list the ledgers after the faults stopped".into());
        return out.violations();
    };
    // L8: every ledger an operation named is still there.
    let named = ops.iter().filter_map(|o| {
        Some((
            o.call.ledger().or(match o.ret() {
                Some(Ret::CreateLedger { ledger }) => Some(*ledger),
                _ => None,
            })?,
            o,
        ))
    });
    let mut missing = BTreeSet::new();
    for (ledger, o) in named {
        if !listed.contains(&ledger) && missing.insert(ledger) {
            out.add(
                "L8",
                Some(o),
                format!("ledger {ledger}, named by {}, is missing from the final listing", o.describe()),
            );
        }
    }
    let reads = final_reads(&ops);
    let changes = writer_changes(history, &creator);
    let no_acks = BTreeMap::new();
    for (ledger, &(version, meta)) in &finals {
        let adds = acked.get(ledger).unwrap_or(&no_acks);
        check_closed(&ops, *ledger, meta, &mut out);
        check_ensembles(*ledger, version, meta, changes.get(ledger).map_or(&[], Vec::as_slice), &mut out);
        if meta.state != State::Closed {
            out.add("LL", None, format!("ledger {ledger} is still {:?} after the faults stopped", meta.state));
            continue;
        }
        let last = meta.last_entry;
        if let Some((entry, a)) = adds.range(last + 1..).next() {
            let detail = format!(
                "ledger {ledger} closed at entry {last}, but entry {entry} was acknowledged at {} ({})",
                secs(a.op.end),
                a.op.describe()
            );
            out.add("L1", Some(a.op), detail);
        }
        let sent = sent.get(ledger).cloned().unwrap_or_default();
        for entry in 0..=last {
            let expected = adds.get(&entry);
            let read = check_read(*ledger, entry, expected, &sent, reads.get(&(*ledger, entry)), &mut out);
            check_copies(fin, *ledger, meta, entry, expected, read, &mut out);
        }
        if let Some(registered) = &fin.registered {
            let lost: BTreeSet<&String> =
                meta.ensembles.values().flatten().filter(|b| !registered.contains(*b)).collect();
            if !lost.is_empty() {
                out.add("L5", None, format!("ledger {ledger} still names lost bookies {lost:?} after repair"));
            }
        }
    }
    for (bookie, stored) in &fin.stored {
        if let Err(e) = stored {
            out.add("L3", None, format!("{bookie}'s journal cannot be read at the end: {e}"));
        }
    }
    // L7: a bookie that acknowledged a fence still refuses normal adds.
    for o in ops.iter().filter(checker) {
        if let (Call::ProbeFence { ledger, bookie }, Some(Ret::ProbeFence { refused: false })) = (o.call, o.ret()) {
            out.add(
                "L7",
                Some(o),
                format!(
                    "{bookie} acknowledged a fence of ledger {ledger}, but at the end it took a normal add ({})",
                    o.describe()
                ),
            );
        }
    }
    check_liveness(history, &ops, fin, &mut out);
    out.violations()
}

/// The writer that sent an add: a node and one incarnation of it, which
/// every value it sends names (`node.incarnation.counter`).
fn writer_of<'a>(a: &Acked<'a>) -> (&'a str, &'a str) {
    (a.op.node, a.value.rsplit_once('.').map_or("", |(w, _)| w))
}

/// L4: adds are acknowledged only to the ledger's creator, and none invoked
/// after a recovering client was told the ledger is fenced.
fn check_writers(
    ops: &[Op],
    creator: &BTreeMap<LedgerId, &str>,
    acked: &BTreeMap<LedgerId, BTreeMap<EntryId, Acked>>,
    out: &mut Report,
) {
    let mut fenced: BTreeMap<LedgerId, &Op> = BTreeMap::new();
    for o in ops {
        if let (Call::Fence { ledger }, Some(_)) = (o.call, o.ret()) {
            let first = fenced.entry(*ledger).or_insert(o);
            if o.end < first.end {
                *first = o;
            }
        }
    }
    for (ledger, adds) in acked {
        if let Some(a) = adds.values().find(|a| creator.get(ledger).is_some_and(|c| *c != a.op.node)) {
            let detail = format!(
                "ledger {ledger} was created by {}, but {} was acknowledged to another writer",
                creator[ledger],
                a.op.describe()
            );
            out.add("L4", Some(a.op), detail);
        }
        let mut writers = adds.values().map(|a| (writer_of(a), a));
        if let Some((first, one)) = writers.next() {
            if let Some((_, other)) = writers.find(|(w, _)| *w != first) {
                let detail = format!(
                    "ledger {ledger}: adds of two writers were acknowledged: {} ({:?}) and {} ({:?})",
                    one.op.describe(),
                    one.value,
                    other.op.describe(),
                    other.value
                );
                out.add("L4", Some(other.op), detail);
            }
        }
        let Some(f) = fenced.get(ledger) else { continue };
        if let Some((entry, a)) = adds.iter().find(|(_, a)| a.op.start > f.end) {
            let detail = format!(
                "ledger {ledger}: {} (entry {entry}) was invoked at {} after {} was told the ledger is fenced ({} at {}), and was acknowledged at {}",
                a.op.describe(), secs(a.op.start), f.node, f.describe(), secs(f.end), secs(a.op.end)
            );
            out.add("L4", Some(a.op), detail);
        }
    }
}

/// The checker node's reads of entries, by (ledger, entry).
fn final_reads<'a>(ops: &'a [Op<'a>]) -> BTreeMap<(LedgerId, EntryId), &'a Op<'a>> {
    ops.iter()
        .filter(|o| o.node == super::CHECKER)
        .filter_map(|o| match o.call {
            Call::ReadEntry { ledger, entry } => Some(((*ledger, *entry), o)),
            _ => None,
        })
        .collect()
}

/// L1, L2 and L6 for one entry of a closed ledger, from the reader's answer:
/// an acknowledged entry reads as acknowledged; any other entry up to the last
/// reads as a value some add to the ledger sent. Returns the value read.
fn check_read<'a>(
    ledger: LedgerId,
    entry: EntryId,
    expected: Option<&Acked>,
    sent: &BTreeSet<&str>,
    read: Option<&&'a Op<'a>>,
    out: &mut Report,
) -> Option<&'a str> {
    let at = expected.map(|a| a.op);
    let Some(o) = read else {
        out.add("LL", at, format!("ledger {ledger} entry {entry} was never read by the final reads"));
        return None;
    };
    match (o.outcome, expected) {
        (Outcome::Ok(Ret::ReadEntry { value }), Some(a)) if value != a.value => {
            let detail = format!(
                "ledger {ledger} entry {entry}: {} read {value:?}, but {:?} was acknowledged ({})",
                o.describe(),
                a.value,
                a.op.describe()
            );
            out.add("L1", at, detail);
        }
        (Outcome::Ok(Ret::ReadEntry { value }), None) if !sent.contains(value.as_str()) => {
            let detail =
                format!("ledger {ledger} entry {entry}: {} read {value:?}, which no add to it sent", o.describe());
            out.add("L1", Some(o), detail);
        }
        (Outcome::Ok(Ret::ReadEntry { value }), _) => return Some(value),
        (Outcome::Pending, _) => out.add(
            "LL",
            Some(o),
            format!("ledger {ledger} entry {entry}: the final read never ended ({})", o.describe()),
        ),
        (_, Some(a)) => {
            let detail = format!(
                "ledger {ledger} entry {entry} was acknowledged ({}) but cannot be read through the protocol: {}",
                a.op.describe(),
                o.error().unwrap_or("no answer")
            );
            out.add("L2", at, detail);
        }
        (_, None) => {
            let detail = format!(
                "ledger {ledger} is closed past entry {entry}, which cannot be read: {}",
                o.error().unwrap_or("no answer")
            );
            out.add("L6", Some(o), detail);
        }
    }
    None
}

/// L1 and L3 for one entry of a closed ledger, from the bookies' journals:
/// every copy on its write set holds the acknowledged payload (or, for an
/// entry never acknowledged, the one read), and Qa (Qw) copies exist.
fn check_copies(
    fin: &Final,
    ledger: LedgerId,
    meta: &LedgerMeta,
    entry: EntryId,
    expected: Option<&Acked>,
    read: Option<&str>,
    out: &mut Report,
) {
    let need = if fin.repaired { meta.qw } else { meta.qa };
    let (_, ensemble) = meta.fragment(entry);
    let set = write_set(ensemble, entry, meta.qw);
    let copies: Vec<(&String, &Vec<u8>)> =
        set.iter().filter_map(|b| Some((b, fin.stored.get(b)?.as_ref().ok()?.get(&(ledger, entry))?))).collect();
    let at = expected.map(|a| a.op);
    let (value, what) = match (expected, read) {
        (Some(a), _) => (Some(a.value), "was acknowledged"),
        (None, Some(v)) => (Some(v), "was read"),
        (None, None) => (None, ""),
    };
    if let Some(v) = value {
        if let Some((b, other)) = copies.iter().find(|(_, p)| p.as_slice() != v.as_bytes()) {
            let other = String::from_utf8_lossy(other);
            out.add("L1", at, format!("ledger {ledger} entry {entry}: {b} holds {other:?}, but {v:?} {what}"));
        }
    }
    if copies.len() < need {
        let holders: Vec<&String> = copies.iter().map(|(b, _)| *b).collect();
        out.add(
            "L3",
            at,
            format!("ledger {ledger} entry {entry} is stored on {holders:?} only; {need} of {set:?} must hold it"),
        );
    }
}

/// L8: the metadata version never goes back in real time, and once seen
/// CLOSED at L (by a close, a recovery or a read), a ledger is CLOSED at L
/// ever after.
fn check_closed(ops: &[Op], ledger: LedgerId, fin: &LedgerMeta, out: &mut Report) {
    let mut seen: Vec<(&Op, EntryId)> = Vec::new();
    let mut reads: Vec<(&Op, u64, &LedgerMeta)> = Vec::new();
    for o in ops.iter().filter(|o| o.call.ledger() == Some(ledger)) {
        match o.ret() {
            Some(Ret::Close { last_entry } | Ret::Recover { last_entry }) => seen.push((o, *last_entry)),
            Some(Ret::ReadMeta { version, meta }) => {
                reads.push((o, *version, meta));
                if meta.state == State::Closed {
                    seen.push((o, meta.last_entry));
                }
            }
            _ => {}
        }
    }
    for &(a, va, _) in &reads {
        if let Some((b, vb, _)) = reads.iter().find(|(b, vb, _)| b.start > a.end && *vb < va) {
            let detail = format!(
                "ledger {ledger}: {} saw metadata version {va}, the later {} saw version {vb}",
                a.describe(),
                b.describe()
            );
            out.add("L8", Some(b), detail);
            return;
        }
    }
    let describe = |m: &LedgerMeta| match m.state {
        State::Closed => format!("CLOSED at {}", m.last_entry),
        s => format!("{s:?}"),
    };
    for &(o, last) in &seen {
        if fin.state != State::Closed || fin.last_entry != last {
            let detail = format!(
                "ledger {ledger}: {} saw it CLOSED at {last}, but at the end it is {}",
                o.describe(),
                describe(fin)
            );
            out.add("L8", Some(o), detail);
            return;
        }
        if let Some((r, _, m)) =
            reads.iter().find(|(r, _, m)| r.start > o.end && (m.state != State::Closed || m.last_entry != last))
        {
            let detail = format!(
                "ledger {ledger}: {} saw it CLOSED at {last}, but the later {} saw it {}",
                o.describe(),
                r.describe(),
                describe(m)
            );
            out.add("L8", Some(r), detail);
            return;
        }
    }
}

/// The ensemble changes each ledger's writer was told succeeded: (record
/// index, first entry, ensemble, metadata version made).
type WriterChanges<'a> = BTreeMap<LedgerId, Vec<(usize, EntryId, &'a Vec<String>, u64)>>;

fn writer_changes<'a>(history: &'a [Record], creator: &BTreeMap<LedgerId, &str>) -> WriterChanges<'a> {
    let mut changes: WriterChanges = BTreeMap::new();
    for (i, r) in history.iter().enumerate() {
        if let Body::Event(Event::Ledger(LedgerEvent::EnsembleChanged {
            ledger,
            from_entry,
            ensemble,
            version: Some(made),
        })) = &r.body
        {
            if creator.get(ledger) == Some(&r.node.as_str()) {
                changes.entry(*ledger).or_default().push((i, *from_entry, ensemble, *made));
            }
        }
    }
    changes
}

/// L8: every ensemble change the ledger's writer was told succeeded is in the
/// final metadata: the final version is not older than the one the change
/// made, and if it is that version, it holds the change. (A later version may
/// have replaced it: a recovery, a re-replication, or the writer's own
/// compare-and-set whose answer it never got.)
fn check_ensembles(
    ledger: LedgerId,
    version: u64,
    fin: &LedgerMeta,
    changes: &[(usize, EntryId, &Vec<String>, u64)],
    out: &mut Report,
) {
    for &(i, from_entry, ensemble, made) in changes {
        let lost = match version.cmp(&made) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal => fin.ensembles.get(&from_entry) != Some(ensemble),
            std::cmp::Ordering::Greater => false,
        };
        if lost {
            let now = fin.ensembles.get(&from_entry).map_or("no such fragment".to_string(), |e| format!("{e:?}"));
            let detail = format!(
                "ledger {ledger}: the writer changed the ensemble from entry {from_entry} to {ensemble:?} as version {made} (record {i}), but the final metadata, version {version}, has {now}"
            );
            out.add("L8", None, detail);
        }
    }
}

/// LL: after the faults stop, every operation completes within [`BOUND`],
/// unless its node crashed while it was under way.
fn check_liveness(history: &[Record], ops: &[Op], fin: &Final, out: &mut Report) {
    let mut crashes: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for r in history {
        if let Body::Fault(FaultRecord::Crash { target, .. }) = &r.body {
            crashes.entry(target).or_default().push(r.t);
        }
    }
    for o in ops {
        let end = o.end.min(fin.end);
        if crashes.get(o.node).is_some_and(|ts| ts.iter().any(|t| *t >= o.start && *t <= end)) {
            continue;
        }
        let due = o.start.max(fin.calm_from) + BOUND;
        if end > due {
            let when =
                if o.end == u64::MAX { "never completed".to_string() } else { format!("completed at {}", secs(o.end)) };
            let detail = format!(
                "{} {when}, more than {} s after the faults stopped at {}",
                o.describe(),
                BOUND / 1_000_000,
                secs(fin.calm_from)
            );
            out.add("LL", Some(o), detail);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::CHECKER;
    use crate::ops::build::{End, History};

    const W: &str = "writer-0";
    const R: &str = "recoverer-0";

    fn meta(state: State, last_entry: EntryId) -> LedgerMeta {
        let ensemble = vec!["bookie-0".to_string(), "bookie-1".to_string(), "bookie-2".to_string()];
        LedgerMeta { state, last_entry, qw: 2, qa: 2, ensembles: [(0, ensemble)].into() }
    }

    /// Journals where every entry of ledger 1 up to `last` has its value on its whole write set.
    fn journals(values: &[&str]) -> Final {
        let m = meta(State::Closed, values.len() as i64 - 1);
        let mut stored: BTreeMap<String, Result<Payloads, String>> = BTreeMap::new();
        for b in ["bookie-0", "bookie-1", "bookie-2"] {
            stored.insert(b.into(), Ok(BTreeMap::new()));
        }
        for (e, v) in values.iter().enumerate() {
            for b in m.write_set(e as i64) {
                stored.get_mut(&b).unwrap().as_mut().unwrap().insert((1, e as i64), v.as_bytes().to_vec());
            }
        }
        Final { stored, registered: None, repaired: false, calm_from: 50_000_000, end: 80_000_000 }
    }

    /// A writer that created ledger 1, had `values` acknowledged as entries 0.., and closed it.
    fn writer(values: &[&str]) -> History {
        let mut h = History::default();
        h.op(W, 10, 20, Call::CreateLedger { e: 3, qw: 2, qa: 2 }, End::Ok(Ret::CreateLedger { ledger: 1 }));
        for (i, v) in values.iter().enumerate() {
            let t = 100 + 10 * i as u64;
            h.op(W, t, t + 5, Call::Add { ledger: 1, value: v.to_string() }, End::Ok(Ret::Add { entry: i as i64 }));
        }
        let last = values.len() as i64 - 1;
        h.op(W, 1_000, 1_010, Call::Close { ledger: 1 }, End::Ok(Ret::Close { last_entry: last }));
        h
    }

    /// A successful read of ledger 1's metadata by `node`, started at `t` (ms).
    fn read_meta(h: &mut History, node: &str, t: u64, version: u64, m: LedgerMeta) {
        h.op(node, t, t + 1, Call::ReadMeta { ledger: 1 }, End::Ok(Ret::ReadMeta { version, meta: m }));
    }

    /// The checker node's final reads: listing, metadata, entries, and fence probes.
    fn finals(h: &mut History, m: LedgerMeta, values: &[&str]) {
        h.op(CHECKER, 60_000, 60_001, Call::ListLedgers, End::Ok(Ret::ListLedgers { ledgers: vec![1] }));
        read_meta(h, CHECKER, 60_002, 10, m.clone());
        for e in 0..=m.last_entry {
            let value = values.get(e as usize).map_or("x".to_string(), |v| v.to_string());
            h.op(CHECKER, 60_010, 60_020, Call::ReadEntry { ledger: 1, entry: e }, End::Ok(Ret::ReadEntry { value }));
        }
    }

    fn valid() -> (History, Final) {
        let values = ["a", "b", "c"];
        let mut h = writer(&values);
        finals(&mut h, meta(State::Closed, 2), &values);
        (h, journals(&values))
    }

    fn invariants(h: History, fin: &Final) -> Vec<&'static str> {
        check(&h.done(), fin).iter().map(|v| v.invariant).collect()
    }

    fn flags(h: History, fin: &Final, invariant: &str) {
        let found = invariants(h, fin);
        assert!(found.contains(&invariant), "expected {invariant}, found {found:?}");
    }

    #[test]
    fn a_valid_history_passes() {
        let (mut h, fin) = valid();
        read_meta(&mut h, R, 2_000, 10, meta(State::Closed, 2));
        h.op(
            CHECKER,
            60_100,
            60_110,
            Call::ProbeFence { ledger: 1, bookie: "bookie-0".into() },
            End::Ok(Ret::ProbeFence { refused: true }),
        );
        assert_eq!(invariants(h, &fin), Vec::<&str>::new());
    }

    #[test]
    fn nothing_to_judge_fails() {
        let mut h = History::default();
        h.op(W, 10, 20, Call::CreateLedger { e: 3, qw: 2, qa: 2 }, End::Ok(Ret::CreateLedger { ledger: 1 }));
        finals(&mut h, meta(State::Closed, -1), &[]);
        flags(h, &journals(&[]), JUDGED_NOTHING);
    }

    #[test]
    fn l1_an_acknowledged_entry_beyond_the_close() {
        let values = ["a", "b", "c"];
        let mut h = writer(&values);
        finals(&mut h, meta(State::Closed, 1), &values);
        flags(h, &journals(&values), "L1");
    }

    #[test]
    fn l1_a_close_that_is_not_at_the_writers_lac() {
        let values = ["a", "b"];
        let mut h = History::default();
        h.op(W, 10, 20, Call::CreateLedger { e: 3, qw: 2, qa: 2 }, End::Ok(Ret::CreateLedger { ledger: 1 }));
        for (i, v) in values.iter().enumerate() {
            h.op(
                W,
                100 + i as u64,
                105 + i as u64,
                Call::Add { ledger: 1, value: v.to_string() },
                End::Ok(Ret::Add { entry: i as i64 }),
            );
        }
        h.op(W, 1_000, 1_010, Call::Close { ledger: 1 }, End::Ok(Ret::Close { last_entry: 2 }));
        finals(&mut h, meta(State::Closed, 2), &values);
        flags(h, &journals(&["a", "b", "x"]), "L1");
    }

    #[test]
    fn l1_a_read_of_another_payload() {
        let mut h = writer(&["a", "b", "c"]);
        finals(&mut h, meta(State::Closed, 2), &["a", "z", "c"]);
        flags(h, &journals(&["a", "b", "c"]), "L1");
    }

    #[test]
    fn l1_an_entry_nobody_sent_or_copies_that_disagree() {
        // Entry 2 was never acknowledged, and no add sent the value read there.
        let mut h = writer(&["a", "b"]);
        h.records.retain(|r| {
            !matches!(r.body, Body::Ok { ret: Ret::Close { .. }, .. } | Body::Invoke { call: Call::Close { .. }, .. })
        });
        finals(&mut h, meta(State::Closed, 2), &["a", "b", "zzz"]);
        flags(h, &journals(&["a", "b", "zzz"]), "L1");
        // Entry 2 was sent (not acknowledged) and read, but a bookie holds another payload.
        let mut h = writer(&["a", "b"]);
        h.records.retain(|r| {
            !matches!(r.body, Body::Ok { ret: Ret::Close { .. }, .. } | Body::Invoke { call: Call::Close { .. }, .. })
        });
        h.op(W, 500, 600, Call::Add { ledger: 1, value: "c".into() }, End::Info);
        finals(&mut h, meta(State::Closed, 2), &["a", "b", "c"]);
        let mut fin = journals(&["a", "b", "c"]);
        fin.stored.get_mut("bookie-2").unwrap().as_mut().unwrap().insert((1, 2), b"other".to_vec());
        flags(h, &fin, "L1");
    }

    #[test]
    fn l2_an_acknowledged_entry_that_cannot_be_read() {
        let values = ["a", "b", "c"];
        let mut h = writer(&values);
        h.op(CHECKER, 60_000, 60_001, Call::ListLedgers, End::Ok(Ret::ListLedgers { ledgers: vec![1] }));
        read_meta(&mut h, CHECKER, 60_002, 10, meta(State::Closed, 2));
        for e in 0..3 {
            let end = if e == 1 { End::Info } else { End::Ok(Ret::ReadEntry { value: values[e as usize].into() }) };
            h.op(CHECKER, 60_010, 60_020, Call::ReadEntry { ledger: 1, entry: e }, end);
        }
        flags(h, &journals(&values), "L2");
    }

    #[test]
    fn l3_too_few_copies() {
        let (h, mut fin) = valid();
        fin.stored.get_mut("bookie-1").unwrap().as_mut().unwrap().clear();
        flags(h, &fin, "L3");
    }

    #[test]
    fn l4_an_add_acknowledged_after_the_fence() {
        let mut h = History::default();
        h.op(W, 10, 20, Call::CreateLedger { e: 3, qw: 2, qa: 2 }, End::Ok(Ret::CreateLedger { ledger: 1 }));
        h.op(W, 100, 105, Call::Add { ledger: 1, value: "a".into() }, End::Ok(Ret::Add { entry: 0 }));
        let bookies = vec!["bookie-0".to_string(), "bookie-1".to_string()];
        h.op(R, 200, 210, Call::Fence { ledger: 1 }, End::Ok(Ret::Fence { lac: 0, bookies }));
        h.op(W, 220, 230, Call::Add { ledger: 1, value: "b".into() }, End::Ok(Ret::Add { entry: 1 }));
        h.op(R, 240, 250, Call::Recover { ledger: 1 }, End::Ok(Ret::Recover { last_entry: 1 }));
        finals(&mut h, meta(State::Closed, 1), &["a", "b"]);
        flags(h, &journals(&["a", "b"]), "L4");
    }

    #[test]
    fn l4_an_add_acknowledged_to_another_writer() {
        let (mut h, fin) = valid();
        h.op("writer-1", 500, 505, Call::Add { ledger: 1, value: "d".into() }, End::Ok(Ret::Add { entry: 9 }));
        flags(h, &fin, "L4");
    }

    #[test]
    fn l4_adds_of_two_incarnations_of_the_writer() {
        let mut h = History::default();
        h.op(W, 10, 20, Call::CreateLedger { e: 3, qw: 2, qa: 2 }, End::Ok(Ret::CreateLedger { ledger: 1 }));
        h.op(W, 100, 105, Call::Add { ledger: 1, value: "writer-0.0000000a.1".into() }, End::Ok(Ret::Add { entry: 0 }));
        h.op(W, 110, 115, Call::Add { ledger: 1, value: "writer-0.0000000b.1".into() }, End::Ok(Ret::Add { entry: 1 }));
        let values = ["writer-0.0000000a.1", "writer-0.0000000b.1"];
        finals(&mut h, meta(State::Closed, 1), &values);
        flags(h, &journals(&values), "L4");
    }

    #[test]
    fn l5_a_lost_bookie_still_named() {
        let (h, mut fin) = valid();
        fin.registered = Some(["bookie-0".to_string(), "bookie-1".to_string()].into());
        flags(h, &fin, "L5");
    }

    #[test]
    fn l6_acknowledgements_out_of_order() {
        let mut h = History::default();
        h.op(W, 10, 20, Call::CreateLedger { e: 3, qw: 2, qa: 2 }, End::Ok(Ret::CreateLedger { ledger: 1 }));
        h.op(W, 100, 130, Call::Add { ledger: 1, value: "a".into() }, End::Ok(Ret::Add { entry: 0 }));
        h.op(W, 101, 120, Call::Add { ledger: 1, value: "b".into() }, End::Ok(Ret::Add { entry: 1 }));
        h.op(W, 1_000, 1_010, Call::Close { ledger: 1 }, End::Ok(Ret::Close { last_entry: 1 }));
        finals(&mut h, meta(State::Closed, 1), &["a", "b"]);
        flags(h, &journals(&["a", "b"]), "L6");
    }

    #[test]
    fn l6_a_hole_below_the_last_entry() {
        let (mut h, fin) = valid();
        h.records.retain(|r| r.node != CHECKER);
        h.op(CHECKER, 60_000, 60_001, Call::ListLedgers, End::Ok(Ret::ListLedgers { ledgers: vec![1] }));
        read_meta(&mut h, CHECKER, 60_002, 10, meta(State::Closed, 3));
        for (e, v) in ["a", "b", "c"].iter().enumerate() {
            h.op(
                CHECKER,
                60_010,
                60_020,
                Call::ReadEntry { ledger: 1, entry: e as i64 },
                End::Ok(Ret::ReadEntry { value: v.to_string() }),
            );
        }
        h.op(CHECKER, 60_010, 60_020, Call::ReadEntry { ledger: 1, entry: 3 }, End::Fail("Unreadable"));
        flags(h, &fin, "L6");
    }

    #[test]
    fn l7_a_fence_forgotten_after_a_restart() {
        let (mut h, fin) = valid();
        h.op(
            CHECKER,
            60_100,
            60_110,
            Call::ProbeFence { ledger: 1, bookie: "bookie-0".into() },
            End::Ok(Ret::ProbeFence { refused: false }),
        );
        flags(h, &fin, "L7");
    }

    #[test]
    fn l8_a_closed_ledger_reopened_or_missing_or_an_ensemble_change_lost() {
        let (mut h, fin) = valid();
        read_meta(&mut h, R, 2_000, 3, meta(State::Open, -1));
        flags(h, &fin, "L8");
        let (mut h, fin) = valid();
        h.op(W, 3_000, 3_010, Call::CreateLedger { e: 3, qw: 2, qa: 2 }, End::Ok(Ret::CreateLedger { ledger: 2 }));
        flags(h, &fin, "L8");
        let (mut h, fin) = valid();
        let ensemble = vec!["bookie-0".to_string(), "bookie-1".to_string(), "bookie-3".to_string()];
        let change =
            |version| LedgerEvent::EnsembleChanged { ledger: 1, from_entry: 2, ensemble: ensemble.clone(), version };
        h.event(500, W, Event::Ledger(change(Some(10))));
        flags(h, &fin, "L8");
        // A version newer than the final one is lost whatever it held; an older one may have been replaced.
        let (mut h, fin) = valid();
        h.event(500, W, Event::Ledger(change(Some(11))));
        flags(h, &fin, "L8");
        let (mut h, fin) = valid();
        h.event(500, W, Event::Ledger(change(Some(9))));
        h.event(500, R, Event::Ledger(change(None)));
        assert_eq!(invariants(h, &fin), Vec::<&str>::new());
        // The version going back between two reads.
        let (mut h, fin) = valid();
        read_meta(&mut h, R, 1_100, 10, meta(State::Closed, 2));
        read_meta(&mut h, R, 1_200, 9, meta(State::Closed, 2));
        flags(h, &fin, "L8");
    }

    #[test]
    fn ll_an_open_ledger_and_an_operation_that_never_ends() {
        let values = ["a"];
        let mut h = writer(&values);
        finals(&mut h, meta(State::Open, -1), &values);
        flags(h, &journals(&values), "LL");
        let (mut h, fin) = valid();
        h.op(W, 51_000, 0, Call::Add { ledger: 1, value: "late".into() }, End::Pending);
        flags(h, &fin, "LL");
    }

    #[test]
    fn ll_a_final_read_that_never_ends() {
        let values = ["a", "b"];
        let mut h = writer(&values);
        h.op(CHECKER, 60_000, 60_001, Call::ListLedgers, End::Ok(Ret::ListLedgers { ledgers: vec![1] }));
        let m = meta(State::Closed, 1);
        read_meta(&mut h, CHECKER, 60_002, 10, m);
        h.op(
            CHECKER,
            60_010,
            60_020,
            Call::ReadEntry { ledger: 1, entry: 0 },
            End::Ok(Ret::ReadEntry { value: "a".into() }),
        );
        h.op(CHECKER, 79_990, 0, Call::ReadEntry { ledger: 1, entry: 1 }, End::Pending);
        let found = invariants(h, &journals(&values));
        assert_eq!(found, vec!["LL"], "a read still under way at the end is liveness, not a lost entry");
    }

    #[test]
    fn ll_spares_an_operation_whose_node_crashed() {
        let (mut h, fin) = valid();
        h.op(W, 51_000, 0, Call::Add { ledger: 1, value: "late".into() }, End::Pending);
        h.fault(52_000, FaultRecord::Crash { target: W.into(), lost: vec![], during_fsync_of: None });
        assert_eq!(invariants(h, &fin), Vec::<&str>::new());
    }
}
