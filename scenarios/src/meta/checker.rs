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
//!   heartbeat (allowing for the service's clock drift), whether the service
//!   says so or a client sees the session gone; none outlives the run;
//! - **K5** reads return only values that some create or set of that key,
//!   not known to have failed, was invoked to write before the read ended;
//! - **K6** the service answers again once the faults stop, and a sequential
//!   create made then succeeds;
//! - **K7** deletes, session closes and expiries are writes too: a key is never
//!   seen again, in the state it had, after an acknowledged delete of it, nor
//!   after a client saw its owner's session closed or expired;
//! - **K8** a delete with a stale expected version never succeeds;
//! - **K9** sequential keys are unique and increase in real time per parent,
//!   across restarts of the service: no two creates get one number, a create
//!   that began after another was answered gets a higher one, and none fails
//!   because its name exists.
//!
//! "Before" is real-time precedence: A precedes B when A's answer came before
//! B was invoked. Calls execute at most once (the RPC layer drops duplicates
//! and calls to a restarted callee), so an error answer means the operation
//! did not happen; an operation without an answer may take effect at any time
//! after its invocation, even after the client gave up on it.

use super::workload::SEQUENTIAL;
use super::{CHECKER, SERVER, SESSION_TIMEOUT};
use crate::ops::{ops, secs, Op, Report};
use crate::{Violation, JUDGED_NOTHING};
use mqsim_core::env::Event;
use mqsim_core::meta::Stat;
use mqsim_sim::history::{Body, Call, Record, Ret};
use mqsim_sim::{Fault, Schedule};
use std::collections::BTreeMap;

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
    let ops = match ops(history) {
        Ok(ops) => ops,
        Err(v) => return vec![v],
    };
    if !ops.iter().any(|o| o.ok() && o.node != CHECKER && o.call.key().is_some()) {
        let detail = "no client's create, get, set, delete or listing was acknowledged".into();
        return vec![Violation::new(JUDGED_NOTHING, detail)];
    }
    let drift_ppm = schedule
        .actions
        .iter()
        .map(|a| match &a.fault {
            Fault::ClockDrift { node, ppm } if node == SERVER && *ppm > 0 => *ppm,
            _ => 0,
        })
        .sum::<i64>();
    // When each session was first expired by the service, leaving out
    // expiries that a disk failure undid. Used only to excuse a missing key.
    let mut expired: BTreeMap<u64, u64> = BTreeMap::new();
    for r in history {
        match &r.body {
            Body::Event(Event::SessionExpired { session }) => {
                expired.entry(*session).or_insert(r.t);
            }
            Body::Event(Event::ExpiryRolledBack { sessions }) => {
                for s in sessions {
                    expired.remove(s);
                }
            }
            _ => {}
        }
    }
    let mut out = Report::default();
    let zxids = Zxids::new(&ops);
    check_zxid(&ops, &zxids, &mut out);
    check_keys(&ops, &expired, &zxids, &mut out);
    check_sessions(&ops, &expired, drift_ppm, &mut out);
    check_values(&ops, &mut out);
    check_sequential(&ops, &mut out);
    check_final(&ops, &mut out);
    out.violations()
}

/// The zxids acknowledged operations revealed, by when they were answered.
struct Zxids(Floors);

impl Zxids {
    fn new(ops: &[Op]) -> Zxids {
        let seen = ops
            .iter()
            .enumerate()
            .filter_map(|(i, o)| {
                let zxid = o.ret()?.zxid()?;
                let stat = Stat { czxid: 0, mzxid: zxid, version: 0, owner: None };
                Some(Seen { end: o.end, start: o.start, stat, by_write: true, op: i })
            })
            .collect();
        Zxids(Floors::new(seen))
    }

    /// The highest zxid answered before `t`: every transaction applied after
    /// `t` has a higher one.
    fn before(&self, t: u64) -> u64 {
        self.0.before(t).map_or(0, |s| s.stat.mzxid)
    }
}

/// K1: the zxid any answer reveals never goes back in real time.
fn check_zxid(ops: &[Op], zxids: &Zxids, out: &mut Report) {
    for s in &zxids.0.by_end {
        if let Some(f) = zxids.0.before(s.start) {
            if s.stat.mzxid < f.stat.mzxid {
                out.at(
                    "K1",
                    &ops[s.op],
                    format!(
                        "acknowledged write lost: {} saw zxid {}, but the later {} saw zxid {}",
                        ops[f.op].describe(),
                        f.stat.mzxid,
                        ops[s.op].describe(),
                        s.stat.mzxid
                    ),
                );
                return;
            }
        }
    }
}

/// The key a create made (its answer's path, for sequential keys) or an op names.
fn key_of<'a>(o: &Op<'a>) -> Option<&'a str> {
    match (o.call, o.ret()) {
        (Call::Create { .. }, Some(Ret::Create { path, .. })) => Some(path),
        (Call::Create { sequential: true, .. }, _) => None,
        (call, _) => call.key(),
    }
}

/// The session a client saw end (closed, or answered "expired"), and when its answer came.
fn session_seen_gone(o: &Op) -> Option<(u64, u64)> {
    let session = match o.call {
        Call::Heartbeat { session } | Call::CloseSession { session } => *session,
        Call::Create { session: Some(session), .. } => *session,
        _ => return None,
    };
    let gone = matches!((o.call, o.ret()), (Call::CloseSession { .. }, Some(_))) || o.error() == Some("SessionExpired");
    gone.then_some((session, o.end))
}

/// K1 (per key), K2, K3, K7 and K8.
fn check_keys(ops: &[Op], expired: &BTreeMap<u64, u64>, zxids: &Zxids, out: &mut Report) {
    let mut seen: BTreeMap<&str, Vec<Seen>> = BTreeMap::new();
    let mut deletes: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut creates: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut closes: BTreeMap<u64, u64> = BTreeMap::new();
    // When a client first saw each session gone.
    let mut gone: BTreeMap<u64, u64> = BTreeMap::new();
    // The session each ephemeral key was created for; `None` when creates for
    // several sessions may have made it, so its owner is unknown.
    let mut owner: BTreeMap<&str, Option<u64>> = BTreeMap::new();
    let mut states: BTreeMap<(&str, u64, u64), (u64, &str, usize)> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        if let Some((s, t)) = session_seen_gone(o) {
            let g = gone.entry(s).or_insert(t);
            *g = (*g).min(t);
        }
        match o.call {
            Call::Delete { key, .. } if o.may_have_happened() => deletes.entry(key).or_default().push(i),
            Call::Create { key, session, sequential: false, .. } if o.may_have_happened() => {
                creates.entry(key).or_default().push(i);
                if let Some(s) = session {
                    let o = owner.entry(key).or_insert(Some(*s));
                    if *o != Some(*s) {
                        *o = None;
                    }
                }
            }
            Call::CloseSession { session } if o.may_have_happened() => {
                let t = closes.entry(*session).or_insert(u64::MAX);
                *t = (*t).min(o.start);
            }
            _ => {}
        }
        let (Some(key), Some(stat)) = (key_of(o), o.ret().and_then(Ret::stat)) else { continue };
        let value = match (o.call, o.ret()) {
            (_, Some(Ret::Get { value, .. })) => value.as_deref(),
            (Call::Create { value, .. } | Call::Set { value, .. }, _) => Some(value.as_str()),
            _ => None,
        };
        if let (Call::Set { version: Some(v), .. }, Some(Ret::Set { stat, .. })) = (o.call, o.ret()) {
            if stat.version != v + 1 {
                out.at(
                    "K3",
                    o,
                    format!(
                        "stale compare-and-set succeeded: {} expected version {v} and made version {}",
                        o.describe(),
                        stat.version
                    ),
                );
            }
        }
        if let Some(value) = value {
            let st = (stat.mzxid, value, i);
            match states.get(&(key, stat.czxid, stat.version)) {
                Some(&(mzxid, other, j)) if (mzxid, other) != (st.0, st.1) => out.at(
                    "K3",
                    o,
                    format!(
                        "two states share version {} of {key}: {} has {other:?} (zxid {mzxid}), {} has {value:?} (zxid {})",
                        stat.version,
                        ops[j].describe(),
                        o.describe(),
                        stat.mzxid
                    ),
                ),
                Some(_) => {}
                None => {
                    states.insert((key, stat.czxid, stat.version), st);
                }
            }
        }
        let by_write = !matches!(o.call, Call::Get { .. });
        seen.entry(key).or_default().push(Seen { end: o.end, start: o.start, stat: stat.clone(), by_write, op: i });
    }
    let floors: BTreeMap<&str, Floors> = seen.into_iter().map(|(k, v)| (k, Floors::new(v))).collect();

    // Was `key`, last seen in state `f`, possibly removed before `t` by
    // something other than operation `except`?
    let removed_but = |key: &str, f: &Seen, t: u64, except: usize| {
        let deleted = deletes
            .get(key)
            .is_some_and(|ds| ds.iter().any(|&d| d != except && ops[d].start < t && ops[d].effect_end() > f.start));
        // Closed, expired as the service says, or seen gone by a client (an
        // expiry a failed disk write seemed to undo may still have survived).
        let owner_gone = f
            .stat
            .owner
            .is_some_and(|s| [closes.get(&s), expired.get(&s), gone.get(&s)].into_iter().flatten().any(|&at| at < t));
        deleted || owner_gone
    };
    let removed = |key: &str, f: &Seen, t: u64| removed_but(key, f, t, usize::MAX);
    // Could a create of `key` have taken effect after `after` and before `before`?
    let recreated = |key: &str, after: u64, before: u64| {
        creates.get(key).is_some_and(|cs| cs.iter().any(|&c| ops[c].effect_end() > after && ops[c].start < before))
    };
    for (i, o) in ops.iter().enumerate().filter(|(_, o)| o.ok()) {
        match (o.call, o.ret()) {
            (Call::Get { key }, Some(Ret::Get { stat, .. })) => {
                if let Some(stat) = stat {
                    // K7: an acknowledged delete removed the incarnation this read saw.
                    let undone = deletes
                        .get(key.as_str())
                        .into_iter()
                        .flatten()
                        .map(|&d| &ops[d])
                        .find(|d| d.ok() && d.end < o.start && stat.czxid <= zxids.before(d.start));
                    if let Some(d) = undone {
                        out.at(
                            "K7",
                            o,
                            format!(
                                "a deleted key came back: {} was acknowledged, but the later {} saw the incarnation it deleted (created at zxid {})",
                                d.describe(),
                                o.describe(),
                                stat.czxid
                            ),
                        );
                    }
                    // K7: the owner's session was seen gone before this read began.
                    if let Some((s, t)) =
                        stat.owner.and_then(|s| Some((s, *gone.get(&s)?))).filter(|(_, t)| *t < o.start)
                    {
                        out.at(
                            "K7",
                            o,
                            format!(
                                "an ephemeral key outlived its session: a client saw session {s} gone at {}, and the later {} still found it",
                                secs(t),
                                o.describe()
                            ),
                        );
                    }
                }
                let Some(f) = floors.get(key.as_str()).and_then(|fl| fl.before(o.start)) else { continue };
                match stat {
                    Some(stat) if stat.mzxid < f.stat.mzxid => {
                        let (inv, what) = if f.by_write { ("K1", "acknowledged write lost") } else { ("K2", "version went backwards") };
                        out.at(
                            inv,
                            o,
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
                    None if !removed(key, f, o.end) => out.at(
                        "K1",
                        o,
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
            (Call::Children { key: dir }, Some(Ret::Children { children, .. })) => {
                let prefix = format!("{dir}/");
                for (key, fl) in floors.range(prefix.as_str()..).take_while(|(k, _)| k.starts_with(&prefix)) {
                    let Some(f) = fl.before(o.start) else { continue };
                    if !children.iter().any(|c| c == &key[prefix.len()..]) && !removed(key, f, o.end) {
                        out.at(
                            "K1",
                            o,
                            format!(
                                "acknowledged write lost: {} saw {key} at zxid {}, the later {} did not list it and nothing removed it",
                                ops[f.op].describe(),
                                f.stat.mzxid,
                                o.describe()
                            ),
                        );
                    }
                }
                for name in children {
                    let key = format!("{prefix}{name}");
                    // K7: listed after an acknowledged delete that no create could have followed.
                    let undone = deletes
                        .get(key.as_str())
                        .into_iter()
                        .flatten()
                        .map(|&d| &ops[d])
                        .find(|d| d.ok() && d.end < o.start && !recreated(&key, d.start, o.end));
                    if let Some(d) = undone {
                        out.at(
                            "K7",
                            o,
                            format!(
                                "a deleted key came back: {} was acknowledged, the later {} listed {key}, and no create of it could have come between",
                                d.describe(),
                                o.describe()
                            ),
                        );
                    }
                    let seen_gone = owner.get(key.as_str()).copied().flatten().and_then(|s| Some((s, *gone.get(&s)?)));
                    if let Some((s, t)) = seen_gone.filter(|(_, t)| *t < o.start) {
                        out.at(
                            "K7",
                            o,
                            format!(
                                "an ephemeral key outlived its session: a client saw session {s} gone at {}, and the later {} still listed {key}",
                                secs(t),
                                o.describe()
                            ),
                        );
                    }
                }
            }
            (Call::Delete { key, version: Some(v) }, Some(_)) => {
                // K8: the key was seen at a later version, and nothing else could have replaced it since.
                let Some(f) = floors.get(key.as_str()).and_then(|fl| fl.before(o.start)) else { continue };
                if f.stat.version > *v && !removed_but(key, f, o.end, i) {
                    out.at(
                        "K8",
                        o,
                        format!(
                            "stale delete succeeded: {} expected version {v}, but {} had already seen version {} of that incarnation",
                            o.describe(),
                            ops[f.op].describe(),
                            f.stat.version
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

/// K4: expiry never before the session's timeout ran out; no ephemeral key at the end.
fn check_sessions(ops: &[Op], expired: &BTreeMap<u64, u64>, drift_ppm: i64, out: &mut Report) {
    // Acknowledged heartbeats and opens, per session: each was processed
    // between its invocation and its answer.
    let mut renewals: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
    for o in ops.iter() {
        let session = match (o.call, o.ret()) {
            (Call::Heartbeat { session }, Some(_)) => *session,
            (Call::OpenSession { .. }, Some(Ret::OpenSession { session, .. })) => *session,
            _ => continue,
        };
        renewals.entry(session).or_default().push(o);
    }
    // The service's clock may run fast by up to drift_ppm, shortening the timeout.
    let timeout_us = (SESSION_TIMEOUT.as_micros() as i128 * 1_000_000 / (1_000_000 + drift_ppm as i128)) as u64;
    // The latest renewal surely processed before `t`, and the earliest the session could expire after it.
    let last_renewal = |session: u64, t: u64| {
        let before = renewals.get(&session).into_iter().flatten().filter(|o| o.end < t);
        before.max_by_key(|o| o.start).map(|o| (*o, o.start + timeout_us))
    };
    // What the service says it did.
    for (&session, &t) in expired {
        if let Some((last, earliest)) = last_renewal(session, t).filter(|(_, e)| t < *e) {
            out.at(
                "K4",
                last,
                format!(
                    "session {session} expired at {} but {} kept it alive until at least {}",
                    secs(t),
                    last.describe(),
                    secs(earliest)
                ),
            );
        }
    }
    // What clients saw: "expired" answered before the timeout could have run
    // out, for a session no close could have ended first.
    let mut closed: BTreeMap<u64, u64> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.may_have_happened()) {
        if let Call::CloseSession { session } = o.call {
            let t = closed.entry(*session).or_insert(o.start);
            *t = (*t).min(o.start);
        }
    }
    for o in ops.iter().filter(|o| o.error() == Some("SessionExpired")) {
        let Some((session, _)) = session_seen_gone(o) else { continue };
        if closed.get(&session).is_some_and(|&c| c < o.end) {
            continue;
        }
        if let Some((last, earliest)) = last_renewal(session, o.start).filter(|(_, e)| o.end < *e) {
            out.at(
                "K4",
                o,
                format!(
                    "{} was told session {session} expired at {}, but {} kept it alive until at least {}",
                    o.describe(),
                    secs(o.end),
                    last.describe(),
                    secs(earliest)
                ),
            );
        }
    }
    let leftover = ops.iter().find_map(|o| match (o.node, o.call, o.ret()) {
        (CHECKER, Call::Children { key }, Some(Ret::Children { children, .. }))
            if key == "/e" && !children.is_empty() =>
        {
            Some((o, children))
        }
        _ => None,
    });
    if let Some((o, keys)) = leftover {
        out.at("K4", o, format!("ephemeral keys outlived their sessions: {} listed {keys:?}", o.describe()));
    }
}

/// K5: every value read was written to that key by an operation that may have happened.
fn check_values(ops: &[Op], out: &mut Report) {
    let mut writes: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.may_have_happened()) {
        if let Call::Create { value, .. } | Call::Set { value, .. } = o.call {
            writes.entry(value).or_default().push(o);
        }
    }
    for o in ops.iter() {
        let (Call::Get { key }, Some(Ret::Get { value: Some(value), .. })) = (o.call, o.ret()) else { continue };
        let written = writes.get(value.as_str()).is_some_and(|ws| {
            ws.iter().any(|w| {
                let same_key = match w.call {
                    Call::Create { key: prefix, sequential: true, .. } => key.starts_with(prefix.as_str()),
                    call => call.key() == Some(key.as_str()),
                };
                same_key && w.start < o.end
            })
        });
        if !written {
            out.at("K5", o, format!("{} read {value:?}, which no create or set wrote to {key}", o.describe()));
            return;
        }
    }
}

/// K9: sequential numbers are unique and increase in real time; a sequential
/// create never fails because its name exists.
fn check_sequential(ops: &[Op], out: &mut Report) {
    let mut numbered: Vec<(u64, &Op)> = Vec::new();
    for o in ops.iter() {
        let Call::Create { key: prefix, sequential: true, .. } = o.call else { continue };
        if o.error() == Some("NodeExists") {
            out.at("K9", o, format!("{} failed because its name exists: a sequence number was reused", o.describe()));
        }
        let Some(Ret::Create { path, .. }) = o.ret() else { continue };
        match path.strip_prefix(prefix.as_str()).and_then(|n| n.parse::<u64>().ok()) {
            Some(n) => numbered.push((n, o)),
            None => out.at("K9", o, format!("{} made {path}, which does not continue {prefix}", o.describe())),
        }
    }
    let mut by_number: BTreeMap<u64, &Op> = BTreeMap::new();
    for &(n, o) in &numbered {
        if let Some(first) = by_number.insert(n, o) {
            out.at(
                "K9",
                o,
                format!("sequence number {n} given twice: to {} and to {}", first.describe(), o.describe()),
            );
        }
    }
    // In answer order, the highest number answered so far.
    numbered.sort_by_key(|(_, o)| o.end);
    let mut highest: Vec<(u64, u64, usize)> = Vec::new();
    for (i, &(n, o)) in numbered.iter().enumerate() {
        let best = match highest.last() {
            Some(&(m, _, j)) if m >= n => (m, o.end, j),
            _ => (n, o.end, i),
        };
        highest.push(best);
    }
    for &(n, o) in &numbered {
        let k = numbered.partition_point(|(_, p)| p.end < o.start);
        if k == 0 {
            continue;
        }
        let (m, _, j) = highest[k - 1];
        if m >= n {
            out.at(
                "K9",
                o,
                format!(
                    "sequence numbers went back: {} got {m}, the later {} got {n}",
                    numbered[j].1.describe(),
                    o.describe()
                ),
            );
            return;
        }
    }
}

/// K6: the final reads, made after the faults stopped, were all answered,
/// and the final sequential create succeeded.
fn check_final(ops: &[Op], out: &mut Report) {
    let Some(all) = ops.iter().find(|o| o.node == CHECKER && matches!(o.call, Call::FinalReads)) else {
        out.add("K6", None, "the checker node never began its final reads".into());
        return;
    };
    if !all.ok() {
        out.at("K6", all, "the final reads did not finish before the run ended".into());
    }
    let mut answered: BTreeMap<(&str, &str), (bool, &Op)> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.node == CHECKER && !matches!(o.call, Call::FinalReads)) {
        let e = answered.entry((o.call.name(), o.call.key().unwrap_or(""))).or_insert((false, o));
        e.0 |= o.ok();
    }
    if let Some(((op, key), (_, o))) = answered.iter().find(|(_, (ok, _))| !*ok) {
        out.at("K6", o, format!("the service did not answer the final {op} {key} after the faults stopped"));
    }
    if all.ok() && !answered.contains_key(&("create", SEQUENTIAL)) {
        out.at("K6", all, "the final sequential create was never made".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::build::{End, History};
    use mqsim_sim::FaultAction;

    fn stat(czxid: u64, mzxid: u64, version: u64, owner: Option<u64>) -> Stat {
        Stat { czxid, mzxid, version, owner }
    }

    fn get(key: &str) -> Call {
        Call::Get { key: key.into() }
    }

    fn got(value: &str, stat: Stat) -> End {
        End::Ok(Ret::Get { value: Some(value.into()), zxid: stat.mzxid, stat: Some(stat) })
    }

    fn missing(zxid: u64) -> End {
        End::Ok(Ret::Get { value: None, stat: None, zxid })
    }

    fn create(key: &str, value: &str) -> Call {
        Call::Create { key: key.into(), value: value.into(), session: None, sequential: false }
    }

    fn created(path: &str, stat: Stat) -> End {
        End::Ok(Ret::Create { path: path.into(), zxid: stat.mzxid, stat })
    }

    fn seq() -> Call {
        Call::Create { key: SEQUENTIAL.into(), value: "s".into(), session: None, sequential: true }
    }

    /// A valid run's skeleton: a key written and read, and final reads that all succeed.
    fn base() -> History {
        let mut h = History::default();
        h.op("c", 10, 20, create("/k/1", "a"), created("/k/1", stat(1, 1, 0, None)));
        h.op("c", 30, 40, get("/k/1"), got("a", stat(1, 1, 0, None)));
        finals(&mut h, 90_000);
        h
    }

    /// A listing of `dir` by `node`, started at `t` (ms), that found `names`.
    fn list(h: &mut History, node: &str, t: u64, dir: &str, names: &[&str], zxid: u64) {
        let children = names.iter().map(|n| n.to_string()).collect();
        h.op(node, t, t + 10, Call::Children { key: dir.into() }, End::Ok(Ret::Children { children, zxid }));
    }

    fn finals(h: &mut History, at: u64) {
        h.op(CHECKER, at, at + 50, Call::FinalReads, End::Ok(Ret::FinalReads));
        h.op(
            CHECKER,
            at + 1,
            at + 2,
            Call::Children { key: "/e".into() },
            End::Ok(Ret::Children { children: vec![], zxid: 50 }),
        );
        let last = format!("{SEQUENTIAL}0000000099");
        h.op(CHECKER, at + 3, at + 4, seq(), created(&last, stat(51, 51, 0, None)));
    }

    fn invariants(h: History) -> Vec<&'static str> {
        check(&h.done(), &Schedule::default()).iter().map(|v| v.invariant).collect()
    }

    fn flags(h: History, invariant: &str) {
        let found = invariants(h);
        assert!(found.contains(&invariant), "expected {invariant}, found {found:?}");
    }

    #[test]
    fn a_valid_history_passes() {
        let mut h = base();
        h.op(
            "c",
            50,
            60,
            Call::Set { key: "/k/1".into(), value: "b".into(), version: Some(0) },
            End::Ok(Ret::Set { stat: stat(1, 2, 1, None), zxid: 2 }),
        );
        h.op("c", 70, 80, Call::Delete { key: "/k/1".into(), version: Some(1) }, End::Ok(Ret::Delete { zxid: 3 }));
        h.op("c", 90, 100, get("/k/1"), missing(3));
        h.op("c", 110, 120, seq(), created(&format!("{SEQUENTIAL}0000000000"), stat(4, 4, 0, None)));
        h.op("c", 130, 140, seq(), created(&format!("{SEQUENTIAL}0000000001"), stat(5, 5, 0, None)));
        assert_eq!(invariants(h), Vec::<&str>::new());
    }

    #[test]
    fn nothing_to_judge_fails() {
        let mut h = History::default();
        finals(&mut h, 100);
        flags(h, JUDGED_NOTHING);
    }

    #[test]
    fn k1_a_lost_write() {
        let mut h = base();
        h.op(
            "c",
            50,
            60,
            Call::Set { key: "/k/1".into(), value: "b".into(), version: None },
            End::Ok(Ret::Set { stat: stat(1, 2, 1, None), zxid: 2 }),
        );
        h.op("c", 70, 80, get("/k/1"), got("a", stat(1, 1, 0, None)));
        flags(h, "K1");
    }

    #[test]
    fn k2_a_version_going_back() {
        let mut h = base();
        h.op("d", 50, 60, get("/k/1"), got("b", stat(1, 5, 3, None)));
        h.op("d", 70, 80, get("/k/1"), got("a", stat(1, 4, 2, None)));
        flags(h, "K2");
    }

    #[test]
    fn k3_a_stale_compare_and_set() {
        let mut h = base();
        h.op(
            "c",
            50,
            60,
            Call::Set { key: "/k/1".into(), value: "b".into(), version: Some(4) },
            End::Ok(Ret::Set { stat: stat(1, 2, 1, None), zxid: 2 }),
        );
        flags(h, "K3");
    }

    #[test]
    fn k4_an_early_expiry_seen_by_a_client() {
        let mut h = base();
        h.op("c", 50, 60, Call::OpenSession { timeout_ms: 10_000 }, End::Ok(Ret::OpenSession { session: 7, zxid: 2 }));
        h.op("c", 1_000, 1_010, Call::Heartbeat { session: 7 }, End::Ok(Ret::Heartbeat { zxid: 2 }));
        h.op("c", 2_000, 2_010, Call::Heartbeat { session: 7 }, End::Fail("SessionExpired"));
        flags(h, "K4");
    }

    #[test]
    fn k4_an_early_expiry_the_service_records() {
        let mut h = base();
        h.op("c", 50, 60, Call::OpenSession { timeout_ms: 10_000 }, End::Ok(Ret::OpenSession { session: 7, zxid: 2 }));
        h.event(3_000, SERVER, Event::SessionExpired { session: 7 });
        flags(h, "K4");
    }

    #[test]
    fn k5_a_value_nobody_wrote() {
        let mut h = base();
        h.op("c", 50, 60, get("/k/1"), got("zzz", stat(1, 1, 0, None)));
        flags(h, "K5");
    }

    #[test]
    fn k6_an_unanswered_final_read_or_a_failing_final_create() {
        let mut h = base();
        h.op(CHECKER, 90_010, 90_020, get("/k/1"), End::Info);
        flags(h, "K6");
        let mut h = History::default();
        h.op("c", 10, 20, create("/k/1", "a"), created("/k/1", stat(1, 1, 0, None)));
        h.op(CHECKER, 100, 200, Call::FinalReads, End::Ok(Ret::FinalReads));
        h.op(CHECKER, 101, 102, seq(), End::Fail("Unavailable"));
        flags(h, "K6");
    }

    #[test]
    fn k7_a_deleted_key_read_again() {
        let mut h = base();
        h.op("c", 50, 60, Call::Delete { key: "/k/1".into(), version: None }, End::Ok(Ret::Delete { zxid: 2 }));
        h.op("d", 70, 80, get("/k/1"), got("a", stat(1, 1, 0, None)));
        flags(h, "K7");
    }

    #[test]
    fn k7_a_deleted_key_listed_again() {
        let mut h = base();
        h.op("c", 50, 60, Call::Delete { key: "/k/1".into(), version: None }, End::Ok(Ret::Delete { zxid: 2 }));
        list(&mut h, "d", 70, "/k", &["1"], 2);
        flags(h, "K7");
    }

    #[test]
    fn k7_an_ephemeral_key_after_its_session_was_seen_gone() {
        let mut h = base();
        let eph = Call::Create { key: "/e/c-1".into(), value: "e".into(), session: Some(7), sequential: false };
        h.op("c", 50, 60, eph, created("/e/c-1", stat(2, 2, 0, Some(7))));
        h.op("c", 70, 80, Call::CloseSession { session: 7 }, End::Ok(Ret::CloseSession { zxid: 3 }));
        list(&mut h, "d", 90, "/e", &["c-1"], 3);
        flags(h, "K7");
    }

    #[test]
    fn k7_spares_a_listed_key_whose_owner_is_unknown() {
        // Two sessions may have made /e/c-1 (the second create's answer was
        // lost); the second session closing says nothing about the first's key.
        let mut h = base();
        let eph =
            |s| Call::Create { key: "/e/c-1".into(), value: format!("e{s}"), session: Some(s), sequential: false };
        h.op("c", 50, 60, eph(5), created("/e/c-1", stat(2, 2, 0, Some(5))));
        h.op("c", 70, 80, eph(9), End::Info);
        h.op("c", 90, 100, Call::CloseSession { session: 9 }, End::Ok(Ret::CloseSession { zxid: 4 }));
        let listed = End::Ok(Ret::Children { children: vec!["c-1".into()], zxid: 4 });
        h.op("d", 110, 120, Call::Children { key: "/e".into() }, listed);
        // Session 5 expires later, so the key is gone by the final listing.
        h.event(30_000, SERVER, Event::SessionExpired { session: 5 });
        assert_eq!(invariants(h), Vec::<&str>::new());
    }

    #[test]
    fn k8_a_stale_delete() {
        let mut h = base();
        h.op(
            "c",
            50,
            60,
            Call::Set { key: "/k/1".into(), value: "b".into(), version: Some(0) },
            End::Ok(Ret::Set { stat: stat(1, 2, 1, None), zxid: 2 }),
        );
        h.op("d", 70, 80, Call::Delete { key: "/k/1".into(), version: Some(0) }, End::Ok(Ret::Delete { zxid: 3 }));
        flags(h, "K8");
    }

    #[test]
    fn k9_sequence_numbers_reused_going_back_or_refused() {
        let n = |i: u64| format!("{SEQUENTIAL}{i:010}");
        let mut h = base();
        h.op("c", 50, 60, seq(), created(&n(5), stat(2, 2, 0, None)));
        h.op("d", 70, 80, seq(), created(&n(3), stat(3, 3, 0, None)));
        flags(h, "K9");
        let mut h = base();
        h.op("c", 50, 60, seq(), created(&n(5), stat(2, 2, 0, None)));
        h.op("d", 55, 80, seq(), created(&n(5), stat(3, 3, 0, None)));
        flags(h, "K9");
        let mut h = base();
        h.op("c", 50, 60, seq(), End::Fail("NodeExists"));
        flags(h, "K9");
    }

    #[test]
    fn an_unreadable_history_fails() {
        let mut h = base();
        h.records.push(Record { t: 5, node: "c".into(), body: Body::Ok { id: 99, ret: Ret::Delete { zxid: 1 } } });
        flags(h, crate::UNREADABLE);
    }

    #[test]
    fn drift_allowance_comes_from_the_schedule() {
        // A 5% fast service clock may expire 10 s sessions after 9.52 s.
        let mut h = base();
        h.op("c", 50, 60, Call::OpenSession { timeout_ms: 10_000 }, End::Ok(Ret::OpenSession { session: 7, zxid: 2 }));
        h.event(9_600, SERVER, Event::SessionExpired { session: 7 });
        let drift = FaultAction { at_ms: 0, for_ms: 1, fault: Fault::ClockDrift { node: SERVER.into(), ppm: 50_000 } };
        let found = check(&h.done(), &Schedule { actions: vec![drift] });
        assert!(found.is_empty(), "{found:?}");
    }
}
