//! The checker of scenario `meta`. From the history alone (client operations,
//! the service's own events, the final reads through the protocol) it decides:
//!
//! - **K1** no acknowledged write is lost: the service's zxid never goes back
//!   in real time, and a key written and acknowledged is seen again with that
//!   write or a later one, or is gone only by a delete, a session close or a
//!   session expiry that could have happened after it;
//! - **K2** versions of a key never go backwards in real time;
//! - **K3** a compare-and-set with a stale version never succeeds: each
//!   (key, creation, version) names one state, and a CAS from version v makes v+1;
//! - **K4** ephemeral keys go with their session: no expiry before the
//!   session's timeout could have run out after its last acknowledged
//!   heartbeat (allowing for the service's clock drift), and none outlives
//!   the end of the run;
//! - **K5** reads return only values that some create or set of that key,
//!   not known to have failed, was invoked to write before the read ended;
//! - **K6** the service answers again once the faults stop.
//!
//! "Before" is real-time precedence: A precedes B when A's answer came before
//! B was invoked. Calls execute at most once (the RPC layer drops duplicates
//! and calls to a restarted callee), so an error answer means the operation
//! did not happen; an operation without an answer may take effect at any time
//! after its invocation, even after the client gave up on it.

use super::{CHECKER, SERVER, SESSION_TIMEOUT};
use crate::ops::{ops, secs, Op};
use crate::Violation;
use mqsim_sim::history::Kind;
use mqsim_sim::{Fault, Record, Schedule};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Deserialize, PartialEq)]
struct Stat {
    czxid: u64,
    mzxid: u64,
    version: u64,
    owner: Option<u64>,
}

/// A state of a key some operation saw or made, for real-time comparisons.
struct Seen {
    end: u64,
    start: u64,
    stat: Stat,
    by_write: bool,
    op: usize,
}

/// The latest-ending-before-t observation with the highest mzxid, per key.
struct Floors {
    by_end: Vec<Seen>,
    /// best[i]: index into by_end of the highest mzxid among by_end[..=i].
    best: Vec<usize>,
}

impl Floors {
    fn new(mut seen: Vec<Seen>) -> Floors {
        seen.sort_by_key(|s| s.end);
        let mut best: Vec<usize> = Vec::with_capacity(seen.len());
        for i in 0..seen.len() {
            let b = match best.last() {
                Some(&b) if seen[b].stat.mzxid >= seen[i].stat.mzxid => b,
                _ => i,
            };
            best.push(b);
        }
        Floors { by_end: seen, best }
    }

    /// The highest state seen by an operation that ended before `t`.
    fn before(&self, t: u64) -> Option<&Seen> {
        let n = self.by_end.partition_point(|s| s.end < t);
        (n > 0).then(|| &self.by_end[self.best[n - 1]])
    }
}

pub fn check(history: &[Record], schedule: &Schedule) -> Vec<Violation> {
    let ops = ops(history);
    let mut out = Vec::new();
    let drift_ppm = schedule
        .actions
        .iter()
        .map(|a| match &a.fault {
            Fault::ClockDrift { node, ppm } if node == SERVER && *ppm > 0 => *ppm,
            _ => 0,
        })
        .sum::<i64>();
    // When each session was first expired by the service, leaving out
    // expiries that a disk failure undid.
    let mut expired: BTreeMap<u64, u64> = BTreeMap::new();
    for r in history.iter().filter(|r| r.kind == Kind::Event) {
        match r.str("event") {
            Some("session_expired") => {
                if let Some(s) = r.u64("session") {
                    expired.entry(s).or_insert(r.t);
                }
            }
            Some("expiry_rolled_back") => {
                for s in r.data.get("sessions").and_then(Value::as_array).into_iter().flatten() {
                    s.as_u64().map(|s| expired.remove(&s));
                }
            }
            _ => {}
        }
    }

    check_zxid(&ops, &mut out);
    check_keys(&ops, &expired, &mut out);
    check_sessions(&ops, &expired, drift_ppm, &mut out);
    check_values(&ops, &mut out);
    check_final(&ops, &mut out);
    out
}

/// K1: the zxid any answer reveals never goes back in real time.
fn check_zxid(ops: &[Op], out: &mut Vec<Violation>) {
    let seen: Vec<Seen> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.ok())
        .filter_map(|(i, o)| {
            let zxid = o.res_field("zxid")?.as_u64()?;
            let stat = Stat { czxid: 0, mzxid: zxid, version: 0, owner: None };
            Some(Seen { end: o.end, start: o.start, stat, by_write: true, op: i })
        })
        .collect();
    let floors = Floors::new(seen);
    for s in &floors.by_end {
        if let Some(f) = floors.before(s.start) {
            if s.stat.mzxid < f.stat.mzxid {
                out.push(Violation::at(
                    "K1",
                    ops[s.op].id,
                    format!(
                        "acknowledged write lost: {} saw zxid {}, but the later {} saw zxid {}",
                        ops[f.op].describe(),
                        f.stat.mzxid,
                        ops[s.op].describe(),
                        s.stat.mzxid
                    ),
                ));
                return;
            }
        }
    }
}

/// The key a create made (its answer's path, for sequential keys) or an op names.
fn key_of<'a>(o: &Op<'a>) -> Option<&'a str> {
    match o.op {
        "create" => o.res_field("path").and_then(Value::as_str),
        _ => o.arg("key"),
    }
}

/// K1 (per key), K2 and K3.
fn check_keys(ops: &[Op], expired: &BTreeMap<u64, u64>, out: &mut Vec<Violation>) {
    let mut seen: BTreeMap<&str, Vec<Seen>> = BTreeMap::new();
    let mut deletes: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut closes: BTreeMap<u64, u64> = BTreeMap::new();
    let mut states: BTreeMap<(&str, u64, u64), (u64, &str, usize)> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        if o.op == "delete" && o.may_have_happened() {
            deletes.entry(o.arg("key").unwrap_or("")).or_default().push(i);
        }
        if o.op == "close_session" && o.may_have_happened() {
            let s = o.args.u64("session").unwrap_or(0);
            let t = closes.entry(s).or_insert(u64::MAX);
            *t = (*t).min(o.start);
        }
        if !o.ok() {
            continue;
        }
        let (Some(key), Some(stat)) = (key_of(o), o.res_as::<Stat>("stat")) else { continue };
        let value = match o.op {
            "get" => o.res_field("value").and_then(Value::as_str),
            _ => o.arg("value"),
        };
        if o.op == "set" {
            if let Some(v) = o.args.u64("version") {
                if stat.version != v + 1 {
                    out.push(Violation::at(
                        "K3",
                        o.id,
                        format!(
                            "stale compare-and-set succeeded: {} expected version {v} and made version {}",
                            o.describe(),
                            stat.version
                        ),
                    ));
                }
            }
        }
        if let Some(value) = value {
            let st = (stat.mzxid, value, i);
            match states.get(&(key, stat.czxid, stat.version)) {
                Some(&(mzxid, other, j)) if (mzxid, other) != (st.0, st.1) => out.push(Violation::at(
                    "K3",
                    o.id,
                    format!(
                        "two states share version {} of {key}: {} has {other:?} (zxid {mzxid}), {} has {value:?} (zxid {})",
                        stat.version,
                        ops[j].describe(),
                        o.describe(),
                        stat.mzxid
                    ),
                )),
                Some(_) => {}
                None => {
                    states.insert((key, stat.czxid, stat.version), st);
                }
            }
        }
        let by_write = o.op != "get";
        seen.entry(key).or_default().push(Seen { end: o.end, start: o.start, stat, by_write, op: i });
    }
    let floors: BTreeMap<&str, Floors> = seen.into_iter().map(|(k, v)| (k, Floors::new(v))).collect();

    // Was `key`, last seen in state `f`, possibly removed before `t`?
    let removed = |key: &str, f: &Seen, t: u64| {
        let deleted =
            deletes.get(key).is_some_and(|ds| ds.iter().any(|&d| ops[d].start < t && ops[d].effect_end() > f.start));
        let owner_gone = f
            .stat
            .owner
            .is_some_and(|s| closes.get(&s).is_some_and(|&c| c < t) || expired.get(&s).is_some_and(|&e| e < t));
        deleted || owner_gone
    };
    let mut report = |invariant, op, detail| {
        if out.len() < 20 {
            out.push(Violation::at(invariant, op, detail))
        }
    };
    for o in ops.iter().filter(|o| o.ok()) {
        match o.op {
            "get" => {
                let Some(key) = o.arg("key") else { continue };
                let Some(f) = floors.get(key).and_then(|fl| fl.before(o.start)) else { continue };
                match o.res_as::<Stat>("stat") {
                    Some(stat) if stat.mzxid < f.stat.mzxid => {
                        let (inv, what) = if f.by_write { ("K1", "acknowledged write lost") } else { ("K2", "version went backwards") };
                        report(
                            inv,
                            o.id,
                            format!(
                                "{what}: {} saw {key} at zxid {} version {}, the later {} saw zxid {} version {}",
                                ops[f.op].describe(),
                                f.stat.mzxid,
                                f.stat.version,
                                o.describe(),
                                stat.mzxid,
                                stat.version
                            ),
                        );
                    }
                    None if !removed(key, f, o.end) => report(
                        "K1",
                        o.id,
                        format!(
                            "acknowledged write lost: {} saw {key} at zxid {}, the later {} found no such key and nothing removed it",
                            ops[f.op].describe(),
                            f.stat.mzxid,
                            o.describe()
                        ),
                    ),
                    _ => {}
                }
            }
            "children" => {
                let Some(dir) = o.arg("key") else { continue };
                let Some(names) = o.res_field("children").and_then(Value::as_array) else { continue };
                let listed: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
                let prefix = format!("{dir}/");
                for (key, fl) in floors.range(prefix.as_str()..).take_while(|(k, _)| k.starts_with(&prefix)) {
                    let Some(f) = fl.before(o.start) else { continue };
                    if !listed.contains(&&key[prefix.len()..]) && !removed(key, f, o.end) {
                        report(
                            "K1",
                            o.id,
                            format!(
                                "acknowledged write lost: {} saw {key} at zxid {}, the later {} did not list it and nothing removed it",
                                ops[f.op].describe(),
                                f.stat.mzxid,
                                o.describe()
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// K4: expiry never before the session's timeout ran out; no ephemeral key at the end.
fn check_sessions(ops: &[Op], expired: &BTreeMap<u64, u64>, drift_ppm: i64, out: &mut Vec<Violation>) {
    // Acknowledged heartbeats and opens, per session: each was processed
    // between its invocation and its answer.
    let mut renewals: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.ok()) {
        let session = match o.op {
            "heartbeat" => o.args.u64("session"),
            "open_session" => o.res_field("session").and_then(Value::as_u64),
            _ => None,
        };
        if let Some(s) = session {
            renewals.entry(s).or_default().push(o);
        }
    }
    // The service's clock may run fast by up to drift_ppm, shortening the timeout.
    let timeout_us = SESSION_TIMEOUT.as_micros() as i128 * 1_000_000 / (1_000_000 + drift_ppm as i128);
    for (&session, &t) in expired {
        // Only renewals answered before the expiry were surely processed before it.
        let before = renewals.get(&session).into_iter().flatten().filter(|o| o.end < t);
        let Some(last) = before.max_by_key(|o| o.start) else { continue };
        let earliest = last.start + timeout_us as u64;
        if t < earliest {
            out.push(Violation::at(
                "K4",
                last.id,
                format!(
                    "session {session} expired at {} but {} kept it alive until at least {}",
                    secs(t),
                    last.describe(),
                    secs(earliest)
                ),
            ));
        }
    }
    let leftover = ops
        .iter()
        .filter(|o| o.node == CHECKER && o.ok() && o.op == "children" && o.arg("key") == Some("/e"))
        .filter_map(|o| o.res_field("children")?.as_array().filter(|a| !a.is_empty()).map(|a| (o, a)))
        .next();
    if let Some((o, keys)) = leftover {
        out.push(Violation::at(
            "K4",
            o.id,
            format!("ephemeral keys outlived their sessions: {} listed {}", o.describe(), Value::from(keys.clone())),
        ));
    }
}

/// K5: every value read was written to that key by an operation that may have happened.
fn check_values(ops: &[Op], out: &mut Vec<Violation>) {
    let mut writes: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for o in ops.iter().filter(|o| matches!(o.op, "create" | "set") && o.may_have_happened()) {
        if let Some(v) = o.arg("value") {
            writes.entry(v).or_default().push(o);
        }
    }
    for o in ops.iter().filter(|o| o.ok() && o.op == "get") {
        let (Some(key), Some(value)) = (o.arg("key"), o.res_field("value").and_then(Value::as_str)) else {
            continue;
        };
        let written = writes.get(value).is_some_and(|ws| {
            ws.iter().any(|w| {
                let target = w.arg("key").unwrap_or("");
                let same_key = target == key
                    || (w.args.data.get("sequential") == Some(&Value::Bool(true)) && key.starts_with(target));
                same_key && w.start < o.end
            })
        });
        if !written {
            out.push(Violation::at(
                "K5",
                o.id,
                format!("{} read {value:?}, which no create or set wrote to {key}", o.describe()),
            ));
            return;
        }
    }
}

/// K6: the final reads, made after the faults stopped, were all answered.
fn check_final(ops: &[Op], out: &mut Vec<Violation>) {
    let mut answered: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.node == CHECKER && o.op != "final_reads") {
        *answered.entry((o.op, o.arg("key").unwrap_or(""))).or_default() |= o.ok();
    }
    if !ops.iter().any(|o| o.node == CHECKER && o.op == "final_reads" && o.ok()) {
        out.push(Violation::new("K6", "the final reads did not finish before the run ended".into()));
    }
    if let Some(((op, key), _)) = answered.iter().find(|(_, ok)| !**ok) {
        out.push(Violation::new(
            "K6",
            format!("the service did not answer the final {op} {key} after the faults stopped"),
        ));
    }
}
