//! The checker of the ledger scenarios, from the history (adds, closes,
//! recoveries, protocol events, the final metadata read through the protocol)
//! and what every bookie's journal durably holds at the end:
//!
//! - **L1** no divergence: a closed ledger's last entry L is at least every
//!   acknowledged entry, and no bookie of an entry's write set holds another
//!   payload for it than the one acknowledged;
//! - **L2** every acknowledged entry is stored intact on a bookie of its write set;
//! - **L3** every entry up to L is stored on at least Qa bookies of its write
//!   set (Qw once repaired);
//! - **L4** no normal add invoked after its ledger was fenced is acknowledged;
//! - **L5** after repair, no ledger names a lost bookie;
//! - **L6** acknowledged entry ids are dense from 0 and acknowledged in order,
//!   and every entry up to L exists;
//! - **LL** every ledger is closed once the faults have stopped.

use crate::ops::{ops, secs};
use crate::Violation;
use mqsim_core::bookie;
use mqsim_core::ledger::{write_set, LedgerMeta, State};
use mqsim_sim::history::Kind;
use mqsim_sim::Record;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The final state of storage, read straight from the bookies' disks.
pub struct Final {
    /// Per bookie: the intact entries its journal durably holds.
    pub stored: BTreeMap<String, BTreeMap<(u64, i64), Vec<u8>>>,
    /// The bookies registered at the end, when repair is being judged.
    pub registered: Option<BTreeSet<String>>,
    /// Whether every entry must have Qw copies (after repair) or Qa.
    pub repaired: bool,
}

impl Final {
    pub fn from_journals(
        journals: &BTreeMap<String, Vec<u8>>,
        registered: Option<BTreeSet<String>>,
        repaired: bool,
    ) -> Final {
        let stored = journals
            .iter()
            .map(|(b, bytes)| {
                let entries = bookie::stored(bytes).0.into_iter().map(|(k, e)| (k, e.payload)).collect();
                (b.clone(), entries)
            })
            .collect();
        Final { stored, registered, repaired }
    }
}

/// The bookies the checker node found registered at the end.
pub fn registered_at_end(history: &[Record]) -> BTreeSet<String> {
    ops(history)
        .iter()
        .filter(|o| o.node == super::CHECKER && o.op == "list_bookies" && o.ok())
        .filter_map(|o| o.res_as::<Vec<String>>("bookies"))
        .flatten()
        .collect()
}

struct Acked {
    value: String,
    start: u64,
    end: u64,
    op: u64,
}

pub fn check(history: &[Record], fin: &Final) -> Vec<Violation> {
    let ops = ops(history);
    let mut out = Vec::new();
    let mut report = |invariant: &'static str, op: Option<u64>, detail: String| {
        if out.len() < 20 {
            out.push(Violation { invariant, detail, op });
        }
    };

    // Acknowledged adds per ledger, in acknowledgement order.
    let mut acked: BTreeMap<u64, BTreeMap<i64, Acked>> = BTreeMap::new();
    let mut ack_order: BTreeMap<u64, Vec<(u64, i64)>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.op == "add" && o.ok()) {
        let (Some(ledger), Some(entry)) = (o.args.u64("ledger"), o.res_as::<i64>("entry")) else { continue };
        let value = o.arg("value").unwrap_or_default().to_string();
        ack_order.entry(ledger).or_default().push((o.end, entry));
        acked.entry(ledger).or_default().insert(entry, Acked { value, start: o.start, end: o.end, op: o.id });
    }
    // When each ledger was first fenced with quorum coverage.
    let mut fenced: BTreeMap<u64, (u64, &str)> = BTreeMap::new();
    for r in history.iter().filter(|r| r.kind == Kind::Event && r.str("step") == Some("fenced")) {
        if let Some(ledger) = r.u64("ledger") {
            fenced.entry(ledger).or_insert((r.t, &r.node));
        }
    }
    // The final metadata, read by the checker node.
    let mut metas: BTreeMap<u64, LedgerMeta> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.node == super::CHECKER && o.op == "read_meta" && o.ok()) {
        let (Some(ledger), Some(res)) = (o.args.u64("ledger"), o.res) else { continue };
        if let Ok(m) = serde_json::from_value::<LedgerMeta>(Value::Object(res.data.clone())) {
            metas.insert(ledger, m);
        }
    }
    let listed = ops.iter().any(|o| o.node == super::CHECKER && o.op == "list_ledgers" && o.ok());
    if !listed {
        report("LL", None, "the metadata service did not list the ledgers after the faults stopped".into());
    }

    // L4: after fencing, no normal add is acknowledged.
    for (ledger, adds) in &acked {
        let Some(&(fenced_at, by)) = fenced.get(ledger) else { continue };
        if let Some((entry, a)) = adds.iter().find(|(_, a)| a.start > fenced_at) {
            report(
                "L4",
                Some(a.op),
                format!(
                    "ledger {ledger}: add #{} (entry {entry}) was invoked at {} after {by} fenced the ledger at {}, and was acknowledged at {}",
                    a.op,
                    secs(a.start),
                    secs(fenced_at),
                    secs(a.end)
                ),
            );
        }
    }
    // L6: acknowledged ids are 0, 1, 2, … in acknowledgement order.
    for (ledger, order) in &mut ack_order {
        order.sort();
        if let Some((i, (_, entry))) = order.iter().enumerate().find(|(i, (_, e))| *e != *i as i64) {
            report("L6", None, format!("ledger {ledger}: acknowledgement {i} was entry {entry}, not {i}"));
        }
    }

    for o in ops.iter().filter(|o| o.node == super::CHECKER && o.op == "read_meta" && !o.ok()) {
        report(
            "LL",
            Some(o.id),
            format!(
                "ledger {}: its metadata could not be read after the faults stopped",
                o.args.u64("ledger").unwrap_or(0)
            ),
        );
    }
    let no_acks = BTreeMap::new();
    for (ledger, meta) in &metas {
        let adds = acked.get(ledger).unwrap_or(&no_acks);
        if meta.state != State::Closed {
            report("LL", None, format!("ledger {ledger} is still {:?} after the faults stopped", meta.state));
            continue;
        }
        let last = meta.last_entry;
        if let Some((entry, a)) = adds.range(last + 1..).next() {
            report(
                "L1",
                Some(a.op),
                format!(
                    "ledger {ledger} closed at entry {last}, but entry {entry} was acknowledged (add #{} at {})",
                    a.op,
                    secs(a.end)
                ),
            );
        }
        let need = if fin.repaired { meta.qw } else { meta.qa };
        for entry in 0..=last {
            let (_, ensemble) = meta.fragment(entry);
            let set = write_set(ensemble, entry, meta.qw);
            let copies: Vec<(&String, &Vec<u8>)> =
                set.iter().filter_map(|b| Some((b, fin.stored.get(b)?.get(&(*ledger, entry))?))).collect();
            let expected = adds.get(&entry).map(|a| a.value.as_bytes());
            if let Some(v) = expected {
                if let Some((b, other)) = copies.iter().find(|(_, p)| p.as_slice() != v) {
                    let other = String::from_utf8_lossy(other);
                    report(
                        "L1",
                        adds.get(&entry).map(|a| a.op),
                        format!(
                            "ledger {ledger} entry {entry}: {b} holds {other:?}, but {:?} was acknowledged",
                            String::from_utf8_lossy(v)
                        ),
                    );
                }
                if copies.is_empty() {
                    report(
                        "L2",
                        adds.get(&entry).map(|a| a.op),
                        format!("ledger {ledger} entry {entry} was acknowledged but no bookie of {set:?} stores it"),
                    );
                    continue;
                }
            }
            if copies.is_empty() {
                report(
                    "L6",
                    None,
                    format!("ledger {ledger} closed at {last} but entry {entry} is stored nowhere in {set:?}"),
                );
            } else if copies.len() < need {
                let holders: Vec<&String> = copies.iter().map(|(b, _)| *b).collect();
                report(
                    "L3",
                    adds.get(&entry).map(|a| a.op),
                    format!(
                        "ledger {ledger} entry {entry} is stored on {holders:?} only; {need} of {set:?} must hold it"
                    ),
                );
            }
        }
        if let Some(registered) = &fin.registered {
            let lost: BTreeSet<&String> =
                meta.ensembles.values().flatten().filter(|b| !registered.contains(*b)).collect();
            if !lost.is_empty() {
                report("L5", None, format!("ledger {ledger} still names lost bookies {lost:?} after repair"));
            }
        }
    }
    out
}
