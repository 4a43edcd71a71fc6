//! The placement checker of `scale-out`. It judges the metadata service's own
//! log, read from its disk at the end (durable state, not a node's claim):
//! which bookies were registered after every transaction, which ensemble each
//! ledger was created on, and which ledgers became each log's segments.
//!
//! A segment's creator read the registry after the log's previous segment
//! was created (a rollover follows it; a takeover reads the list that holds
//! it; the first segment follows the log's key) and before its own ledger
//! was created. That window of transactions is where its choice was made.
//!
//! - **P1** new ledgers land on the bookies registered now.
//!   - *placed-on-unregistered*: a segment's ensemble names a bookie that was
//!     not registered at any moment of the segment's window.
//!   - *new-bookies-unused*: bookies that joined do not take new data. Take
//!     the rollovers (a segment added by the write that closed the one before
//!     it, which no recovery had taken over) of owners whose choice at opening
//!     was made before some bookies registered, where those bookies were
//!     registered throughout the rollover's window. So few of them were
//!     placed on any of those bookies that uniform placement (every E of the
//!     registered bookies equally likely, BookKeeper's default) would do that
//!     with a chance below [`CHANCE`]. This is how a stale view of the
//!     bookies shows.
//!   - *bookie-passed-over*: the same, for each bookie over all the segments
//!     it was registered throughout the windows of.
//!
//!   Each segment counts with its lowest possible odds (computed for the
//!   most bookies registered in its window), so the judgement errs toward
//!   passing. Which segments count does not depend on their own ensembles,
//!   so picking them does not bias the odds.
//!
//! A run in which no log has a segment with a window judged nothing, and fails.

use crate::{Violation, JUDGED_NOTHING, UNREADABLE};
use mqsim_core::bookie::{self, LedgerId};
use mqsim_core::ledger::{self, LEDGERS};
use mqsim_core::managed::{self, LogMeta};
use mqsim_core::meta::{self, SessionId, Txn};
use std::collections::{BTreeMap, BTreeSet};

pub const INVARIANT: &str = "P1";
/// Below this chance under uniform placement, a bookie's few placements are a violation.
pub const CHANCE: f64 = 1e-9;

/// Judges the metadata service's disk files (name → bytes).
pub fn check(files: &BTreeMap<String, Vec<u8>>) -> Vec<Violation> {
    if !files.keys().any(|f| f.starts_with(meta::LOG_NAME)) {
        return vec![Violation::new(UNREADABLE, "placement: the metadata service's disk holds no log".into())];
    }
    match meta::recorded(files) {
        Ok(txns) => judge(&txns),
        Err(e) => vec![Violation::new(UNREADABLE, format!("placement: {e}"))],
    }
}

/// What the log says, replayed.
#[derive(Default)]
struct Durable {
    /// Per bookie, the transactions `[from, to)` after which it was registered.
    registered: BTreeMap<String, Vec<(u64, u64)>>,
    /// How many bookies were registered after each transaction that changed it.
    sizes: Vec<(u64, usize)>,
    /// Each ledger's creating transaction and first ensemble (`None`: undecodable).
    ledgers: BTreeMap<LedgerId, (u64, Option<Vec<String>>)>,
    /// Each log's creating transaction and its latest segments (`None`: undecodable).
    logs: BTreeMap<String, (u64, Option<Vec<LedgerId>>)>,
    /// Ledgers that went into recovery (another node closed them).
    recovered: BTreeSet<LedgerId>,
    /// Segments added by the write that closed the segment before them: rollovers.
    rolled: BTreeSet<LedgerId>,
}

fn replay(txns: &[(u64, Txn)]) -> Durable {
    let mut d = Durable::default();
    let bookie_prefix = format!("{}/", bookie::REGISTRY);
    let log_prefix = managed::path("");
    let ledger_prefix = format!("{LEDGERS}/L");
    // Registered now: bookie → (since, owning session).
    let mut now: BTreeMap<String, (u64, Option<SessionId>)> = BTreeMap::new();
    let decode = |value: &[u8]| postcard::from_bytes::<LogMeta>(value).ok();
    let ids = |list: &Option<LogMeta>| list.as_ref().map(|l| l.segments.iter().map(|s| s.ledger).collect());
    // Each log's latest list, to tell a rollover from the write that made it.
    let mut lists: BTreeMap<String, LogMeta> = BTreeMap::new();
    for (zxid, txn) in txns {
        let before = now.len();
        let mut gone: Vec<String> = Vec::new();
        match txn {
            Txn::Create { path, value, owner, .. } => {
                if let Some(b) = path.strip_prefix(&bookie_prefix) {
                    now.insert(b.to_string(), (*zxid, *owner));
                } else if let Some(id) = path.strip_prefix(&ledger_prefix).and_then(|n| n.parse().ok()) {
                    let ensemble = ledger::decode_meta(value).and_then(|m| m.ensembles.get(&0).cloned());
                    d.ledgers.insert(id, (*zxid, ensemble));
                } else if let Some(log) = path.strip_prefix(&log_prefix) {
                    let list = decode(value);
                    d.logs.insert(log.to_string(), (*zxid, ids(&list)));
                    lists.insert(log.to_string(), list.unwrap_or_default());
                }
            }
            Txn::Set { path, value } => {
                if let Some(id) = path.strip_prefix(&ledger_prefix).and_then(|n| n.parse::<LedgerId>().ok()) {
                    if ledger::decode_meta(value).is_some_and(|m| m.state == ledger::State::InRecovery) {
                        d.recovered.insert(id);
                    }
                } else if let Some(log) = path.strip_prefix(&log_prefix) {
                    let list = decode(value);
                    if let (Some(before), Some(after)) = (lists.get(log), &list) {
                        d.rolled.extend(rolled_over(before, after));
                    }
                    if let Some((_, segments)) = d.logs.get_mut(log) {
                        *segments = ids(&list);
                    }
                    lists.insert(log.to_string(), list.unwrap_or_default());
                }
            }
            Txn::Delete { path } => gone.extend(path.strip_prefix(&bookie_prefix).map(str::to_string)),
            Txn::CloseSession { id } => {
                gone.extend(now.iter().filter(|(_, (_, owner))| *owner == Some(*id)).map(|(b, _)| b.clone()))
            }
            Txn::OpenSession { .. } => {}
        }
        for b in gone {
            if let Some((since, _)) = now.remove(&b) {
                d.registered.entry(b).or_default().push((since, *zxid));
            }
        }
        if now.len() != before {
            d.sizes.push((*zxid, now.len()));
        }
    }
    for (b, (since, _)) in now {
        d.registered.entry(b).or_default().push((since, u64::MAX));
    }
    d
}

/// The segment `after` adds in the same write that closes the open one of `before`.
fn rolled_over(before: &LogMeta, after: &LogMeta) -> Option<LedgerId> {
    let n = before.segments.len();
    let closed = before.segments.last().is_some_and(|s| s.entries.is_none())
        && after.segments.get(n.wrapping_sub(1)).is_some_and(|s| s.entries.is_some());
    (closed && after.segments.len() == n + 1).then(|| after.segments[n].ledger)
}

impl Durable {
    /// The most bookies registered after any transaction in `lo..hi`.
    fn most_registered(&self, lo: u64, hi: u64) -> usize {
        let at_lo = self.sizes.iter().take_while(|(z, _)| *z <= lo).last().map_or(0, |(_, n)| *n);
        self.sizes.iter().filter(|(z, _)| *z > lo && *z < hi).map(|(_, n)| *n).fold(at_lo, usize::max)
    }

    /// Whether `bookie` was registered after some transaction in `lo..hi`.
    fn registered_during(&self, bookie: &str, lo: u64, hi: u64) -> bool {
        self.registered.get(bookie).is_some_and(|r| r.iter().any(|(from, to)| *from < hi && *to > lo))
    }
}

/// Whether a bookie with registrations `ranges` was registered after every
/// transaction in `lo..hi`.
fn throughout(ranges: &[(u64, u64)], lo: u64, hi: u64) -> bool {
    ranges.iter().any(|(from, to)| *from <= lo && *to >= hi)
}

/// The chance that independent trials with success odds `odds` succeed at most `k` times.
pub fn at_most(odds: &[f64], k: usize) -> f64 {
    let mut p = vec![0.0; k + 1];
    p[0] = 1.0;
    for q in odds.iter().map(|q| q.clamp(0.0, 1.0)) {
        for j in (0..=k).rev() {
            p[j] = p[j] * (1.0 - q) + if j > 0 { p[j - 1] * q } else { 0.0 };
        }
    }
    p.iter().sum::<f64>().min(1.0)
}

/// A record over segments that could each have been placed on some bookies:
/// the least odds each had, and how many were.
#[derive(Default)]
struct Share {
    odds: Vec<f64>,
    placed: usize,
}

impl Share {
    fn add(&mut self, odds: f64, placed: bool) {
        self.odds.push(odds);
        self.placed += usize::from(placed);
    }

    /// The chance under uniform placement of being placed this seldom or less.
    fn chance(&self) -> f64 {
        at_most(&self.odds, self.placed)
    }

    fn describe(&self) -> String {
        let expected: f64 = self.odds.iter().sum();
        format!(
            "uniform placement would do so {expected:.1} times on average, and {} or fewer times with chance {:.1e}",
            self.placed,
            self.chance()
        )
    }
}

/// The chance that `e` of `n` bookies drawn uniformly include one of `m` given ones.
fn odds_of_any(n: usize, m: usize, e: usize) -> f64 {
    let none: f64 = (0..e).map(|i| n.saturating_sub(m + i) as f64 / (n - i).max(1) as f64).product();
    1.0 - none
}

/// Segments placed on a bookie that was not registered in their windows.
#[derive(Default)]
struct Strays {
    count: usize,
    first: String,
}

fn judge(txns: &[(u64, Txn)]) -> Vec<Violation> {
    let d = replay(txns);
    let mut violations = Vec::new();
    // Each bookie over the segments it was registered throughout the windows of.
    let mut shares: BTreeMap<&str, Share> = BTreeMap::new();
    // Rollovers by owners that opened their log before some bookies registered,
    // over whether they used any of those bookies; and which bookies they were.
    let (mut fresh, mut joined) = (Share::default(), BTreeSet::new());
    let mut strays: BTreeMap<String, Strays> = BTreeMap::new();
    let mut judged = 0;
    for (log, (created, list)) in &d.logs {
        let Some(list) = list else {
            violations
                .push(Violation::new(UNREADABLE, format!("placement: the ledger list of log {log} is undecodable")));
            continue;
        };
        let mut lo = *created;
        // The window in which the current owner chose its first segment.
        let (mut opening, mut previous) = ((0, 0), None);
        for ledger in list {
            let (hi, ensemble) = match d.ledgers.get(ledger) {
                Some((hi, Some(ensemble))) => (*hi, ensemble),
                Some((_, None)) => {
                    let detail = format!("placement: the metadata of ledger {ledger} (log {log}) is undecodable");
                    violations.push(Violation::new(UNREADABLE, detail));
                    continue;
                }
                None => {
                    let detail = format!("segment-of-unknown-ledger: log {log} names ledger {ledger}, never created");
                    violations.push(Violation::new(INVARIANT, detail));
                    continue;
                }
            };
            let rollover = d.rolled.contains(ledger) && previous.is_some_and(|p| !d.recovered.contains(p));
            if !rollover {
                opening = (lo, hi);
            }
            previous = Some(ledger);
            if hi <= lo {
                // Created before the segment it follows: not a choice made in a window.
                lo = lo.max(hi);
                continue;
            }
            judged += 1;
            for b in ensemble.iter().filter(|b| !d.registered_during(b, lo, hi)) {
                let s = strays.entry(b.clone()).or_default();
                if s.count == 0 {
                    s.first = format!("ledger {ledger} of log {log}, created at zxid {hi}");
                }
                s.count += 1;
            }
            // The least odds: the creator saw at most this many bookies.
            let most = d.most_registered(lo, hi).max(1);
            let mut late = Vec::new();
            for (b, ranges) in &d.registered {
                if !throughout(ranges, lo, hi) {
                    continue;
                }
                shares.entry(b.as_str()).or_default().add(ensemble.len() as f64 / most as f64, ensemble.contains(b));
                if rollover && !d.registered_during(b, opening.0, opening.1) {
                    late.push(b.as_str());
                }
            }
            if !late.is_empty() {
                fresh.add(
                    odds_of_any(most, late.len(), ensemble.len()),
                    late.iter().any(|b| ensemble.iter().any(|e| e == b)),
                );
                joined.extend(late);
            }
            lo = hi;
        }
    }
    if judged == 0 {
        violations.push(Violation::new(JUDGED_NOTHING, "placement: no log has a segment to judge".into()));
    }
    for (b, s) in strays {
        let detail = format!(
            "placed-on-unregistered: {} segment(s) were placed on {b}, which was not registered while they were placed; the first is {}",
            s.count, s.first
        );
        violations.push(Violation::new(INVARIANT, detail));
    }
    if fresh.chance() < CHANCE {
        let detail = format!(
            "new-bookies-unused: {} segments were rolled over by owners that opened their log before some of {} registered, while those were registered; {} of them were placed on one of those bookies: {}",
            fresh.odds.len(),
            joined.into_iter().collect::<Vec<_>>().join(", "),
            fresh.placed,
            fresh.describe()
        );
        violations.push(Violation::new(INVARIANT, detail));
    }
    for (b, s) in shares.iter().filter(|(_, s)| s.chance() < CHANCE) {
        let detail = format!(
            "bookie-passed-over: {b} was registered throughout the placement of {} segments and was placed in {}: {}",
            s.odds.len(),
            s.placed,
            s.describe()
        );
        violations.push(Violation::new(INVARIANT, detail));
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqsim_core::ledger::{LedgerMeta, State};
    use mqsim_core::managed::Segment;

    /// A metadata log built by hand, one transaction after another.
    #[derive(Default)]
    struct Log {
        txns: Vec<(u64, Txn)>,
        sessions: BTreeMap<String, SessionId>,
        next_ledger: LedgerId,
        segments: BTreeMap<String, Vec<LedgerId>>,
    }

    impl Log {
        fn push(&mut self, txn: Txn) {
            self.txns.push((self.txns.len() as u64 + 1, txn));
        }

        fn register(&mut self, bookie: &str) {
            let id = self.txns.len() as SessionId + 100;
            self.sessions.insert(bookie.into(), id);
            self.push(Txn::OpenSession { id, timeout_ms: 5_000 });
            let path = format!("{}/{bookie}", bookie::REGISTRY);
            self.push(Txn::Create { path, value: vec![], owner: Some(id), sequential: false });
        }

        fn expire(&mut self, bookie: &str) {
            let id = self.sessions[bookie];
            self.push(Txn::CloseSession { id });
        }

        /// A ledger on `ensemble`, added as the next segment of `log`.
        fn segment(&mut self, log: &str, ensemble: &[&str]) {
            if !self.segments.contains_key(log) {
                self.segments.insert(log.into(), vec![]);
                let value = postcard::to_allocvec(&LogMeta::default()).unwrap();
                self.push(Txn::Create { path: managed::path(log), value, owner: None, sequential: false });
            }
            self.next_ledger += 1;
            let ensemble: Vec<String> = ensemble.iter().map(|b| b.to_string()).collect();
            let meta = LedgerMeta {
                state: State::Open,
                last_entry: -1,
                qw: 2,
                qa: 2,
                ensembles: BTreeMap::from([(0, ensemble)]),
            };
            let value = postcard::to_allocvec(&meta).unwrap();
            self.push(Txn::Create { path: ledger::path(self.next_ledger), value, owner: None, sequential: true });
            let list = self.segments.get_mut(log).unwrap();
            list.push(self.next_ledger);
            // Every segment but the new last one is closed: each write is a rollover.
            let last = self.next_ledger;
            let segments =
                list.iter().map(|l| Segment { ledger: *l, first: 0, entries: (*l != last).then_some(1) }).collect();
            let value = postcard::to_allocvec(&LogMeta { segments }).unwrap();
            self.push(Txn::Set { path: managed::path(log), value });
        }

        /// The last segment of `log` is taken over: recovery puts its ledger in recovery.
        fn recover_last(&mut self, log: &str) {
            let ledger = *self.segments[log].last().unwrap();
            let meta = LedgerMeta {
                state: State::InRecovery,
                last_entry: -1,
                qw: 2,
                qa: 2,
                ensembles: BTreeMap::from([(0, vec![])]),
            };
            let value = postcard::to_allocvec(&meta).unwrap();
            self.push(Txn::Set { path: ledger::path(ledger), value });
        }
    }

    fn names(v: &[Violation]) -> Vec<(&'static str, String)> {
        v.iter().map(|v| (v.invariant, v.detail.split(':').next().unwrap_or("").to_string())).collect()
    }

    const OLD: [&str; 4] = ["b0", "b1", "b2", "b3"];

    /// Four bookies, then `segments` rollovers of each of two logs, with b4
    /// joining after the first; `place` picks the i-th ensemble.
    fn scale_out(segments: usize, place: impl Fn(usize) -> Vec<&'static str>) -> Log {
        let mut log = Log::default();
        OLD.iter().for_each(|b| log.register(b));
        log.segment("q0", &["b0", "b1", "b2"]);
        log.segment("q1", &["b1", "b2", "b3"]);
        log.register("b4");
        for i in 0..segments {
            log.segment("q0", &place(2 * i));
            log.segment("q1", &place(2 * i + 1));
        }
        log
    }

    /// Every 3 of the 5 bookies in turn: b4 is in 6 of every 10.
    fn rotating(i: usize) -> Vec<&'static str> {
        let all = ["b0", "b1", "b2", "b3", "b4"];
        let mut triples = Vec::new();
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    triples.push(vec![all[a], all[b], all[c]]);
                }
            }
        }
        triples[i % triples.len()].clone()
    }

    #[test]
    fn placements_spread_over_the_registered_bookies_pass() {
        let log = scale_out(30, rotating);
        assert_eq!(judge(&log.txns), vec![]);
    }

    #[test]
    fn p1_bookie_passed_over_after_it_joined() {
        let old = [["b0", "b1", "b2"], ["b0", "b1", "b3"], ["b0", "b2", "b3"], ["b1", "b2", "b3"]];
        let log = scale_out(30, |i| old[i % 4].to_vec());
        let v = judge(&log.txns);
        assert_eq!(
            names(&v),
            vec![("P1", "new-bookies-unused".to_string()), ("P1", "bookie-passed-over".to_string())],
            "{v:?}"
        );
        // The first segment of each log after b4 joined may have been placed before it did.
        assert!(
            v[1].detail.contains("b4 was registered throughout the placement of 58 segments and was placed in 0"),
            "{}",
            v[1].detail
        );
    }

    #[test]
    fn p1_new_bookies_unused_by_rollovers_of_an_owner_from_before_they_joined() {
        // q0's owner opened it before b4 joined and never places on b4; q1
        // is taken over after b4 joined, and its new owner always does. Over
        // all segments b4's share is plausible; over q0's rollovers it is not.
        let old = [["b0", "b1", "b2"], ["b0", "b1", "b3"], ["b0", "b2", "b3"], ["b1", "b2", "b3"]];
        let mut log = Log::default();
        OLD.iter().for_each(|b| log.register(b));
        log.segment("q0", &["b0", "b1", "b2"]);
        log.segment("q1", &["b1", "b2", "b3"]);
        log.register("b4");
        log.recover_last("q1");
        for i in 0..30 {
            log.segment("q0", &old[i % 4]);
            log.segment("q1", &["b4", old[i % 4][0], old[i % 4][1]]);
        }
        let v = judge(&log.txns);
        assert_eq!(names(&v), vec![("P1", "new-bookies-unused".to_string())], "{v:?}");
        let expected = "29 segments were rolled over by owners that opened their log before some of b4 registered, while those were registered; 0 of them";
        assert!(v[0].detail.contains(expected), "{}", v[0].detail);
    }

    #[test]
    fn p1_bookie_passed_over_alone_when_it_was_there_from_the_start() {
        // b4 registered before any log opened: no bookie is new to an owner,
        // yet no segment ever lands on it.
        let old = [["b0", "b1", "b2"], ["b0", "b1", "b3"], ["b0", "b2", "b3"], ["b1", "b2", "b3"]];
        let mut log = Log::default();
        OLD.iter().chain(&["b4"]).for_each(|b| log.register(b));
        for i in 0..30 {
            log.segment("q0", &old[i % 4]);
        }
        let v = judge(&log.txns);
        assert_eq!(names(&v), vec![("P1", "bookie-passed-over".to_string())], "{v:?}");
        assert!(
            v[0].detail.starts_with(
                "bookie-passed-over: b4 was registered throughout the placement of 30 segments and was placed in 0"
            ),
            "{}",
            v[0].detail
        );
    }

    #[test]
    fn p1_placed_on_a_bookie_whose_key_was_deleted() {
        let mut log = scale_out(30, rotating);
        log.push(Txn::Delete { path: format!("{}/b3", bookie::REGISTRY) });
        log.segment("q1", &["b0", "b1", "b4"]);
        log.segment("q1", &["b0", "b3", "b4"]);
        let v = judge(&log.txns);
        assert_eq!(names(&v), vec![("P1", "placed-on-unregistered".to_string())], "{v:?}");
    }

    #[test]
    fn a_few_segments_are_not_evidence_enough() {
        let log = scale_out(4, |_| vec!["b0", "b1", "b2"]);
        assert_eq!(judge(&log.txns), vec![]);
    }

    #[test]
    fn a_bookie_that_joins_after_a_segments_window_opened_is_not_counted_for_it() {
        // b4 registers between q0's first segment and its second: only the
        // segments whose windows open after that count for it.
        let mut log = Log::default();
        OLD.iter().for_each(|b| log.register(b));
        log.segment("q0", &["b0", "b1", "b2"]);
        log.register("b4");
        log.segment("q0", &["b0", "b1", "b3"]);
        let d = replay(&log.txns);
        let (first, second) = (d.ledgers[&1].0, d.ledgers[&2].0);
        assert!(!throughout(&d.registered["b4"], first, second));
        assert!(d.registered_during("b4", first, second));
    }

    #[test]
    fn p1_placed_on_unregistered() {
        let mut log = scale_out(30, rotating);
        log.expire("b3");
        log.segment("q0", &["b0", "b3", "b4"]);
        log.segment("q0", &["b3", "b1", "b4"]);
        let v = judge(&log.txns);
        assert_eq!(names(&v), vec![("P1", "placed-on-unregistered".to_string())], "{v:?}");
        // The first may have been placed before b3's session expired; the second not.
        assert!(v[0].detail.starts_with("placed-on-unregistered: 1 segment(s) were placed on b3"), "{}", v[0].detail);
    }

    #[test]
    fn p1_segment_of_unknown_ledger() {
        let mut log = scale_out(1, rotating);
        let segments = vec![Segment { ledger: 99, first: 0, entries: None }];
        let value = postcard::to_allocvec(&LogMeta { segments }).unwrap();
        log.push(Txn::Set { path: managed::path("q0"), value });
        let v = judge(&log.txns);
        assert_eq!(names(&v), vec![("P1", "segment-of-unknown-ledger".to_string())], "{v:?}");
    }

    #[test]
    fn no_segment_judged_nothing_and_an_unreadable_log_fails() {
        let mut log = Log::default();
        log.register("b0");
        assert_eq!(judge(&log.txns)[0].invariant, JUDGED_NOTHING);
        let garbage = (0..2).map(|i| (format!("{}.{i}", meta::LOG_NAME), vec![7u8; 40])).collect();
        assert_eq!(check(&garbage)[0].invariant, UNREADABLE);
        assert_eq!(check(&BTreeMap::new())[0].invariant, UNREADABLE);
    }

    #[test]
    fn the_log_is_read_from_the_disk_files() {
        let log = scale_out(30, rotating);
        let bytes: Vec<u8> = log
            .txns
            .iter()
            .enumerate()
            .flat_map(|(i, t)| mqsim_core::wal::encode(i as u64, &postcard::to_allocvec(t).unwrap()))
            .collect();
        let files = BTreeMap::from([(format!("{}.0", meta::LOG_NAME), bytes.clone())]);
        assert_eq!(check(&files), vec![]);
        let d = replay(&meta::recorded(&files).unwrap());
        assert_eq!(d.logs["q1"].1.as_ref().map(Vec::len), Some(31));
    }

    #[test]
    fn the_chance_of_at_most_k_successes() {
        assert!((at_most(&[0.5; 4], 0) - 1.0 / 16.0).abs() < 1e-12);
        assert!((at_most(&[0.5; 4], 1) - 5.0 / 16.0).abs() < 1e-12);
        assert!((at_most(&[0.5; 4], 4) - 1.0).abs() < 1e-12);
        assert!((odds_of_any(5, 1, 3) - 0.6).abs() < 1e-12);
        assert!((odds_of_any(6, 2, 3) - 0.8).abs() < 1e-12);
        assert_eq!(odds_of_any(4, 2, 3), 1.0);
        assert!(at_most(&[0.6; 60], 0) < 1e-20);
    }
}
