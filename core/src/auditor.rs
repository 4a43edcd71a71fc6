//! Auditor and replication worker (BookKeeper's autorecovery), run on every
//! bookie. One auditor, elected by an ephemeral lock in the metadata service,
//! marks the ledgers that name lost (unregistered) bookies under-replicated.
//! Workers lock an under-replicated ledger, copy each affected fragment of a
//! closed ledger to a replacement bookie with recovery adds, compare-and-set
//! the fragment's ensemble, and mark the ledger replicated only after a
//! re-check. An open ledger gets a grace period, then is recovered (fencing
//! its writer) and closed first.

use crate::bookie::{self, EntryId, LedgerId};
use crate::bugs::Bug;
use crate::env::{Env, LedgerEvent};
use crate::ledger::{self, write_set, LedgerClient, LedgerError, State};
use crate::meta::{Lock, Session};
use crate::probe::Probe;
use futures::future::select;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

pub const UNDER_REPLICATED: &str = "/underreplicated";
const AUDITOR_LOCK: &str = "/auditor";
const REPLICATION_LOCKS: &str = "/replicating";
pub const AUDIT_INTERVAL: Duration = Duration::from_secs(3);
/// How long an open ledger with a lost bookie is left to its writer.
pub const OPEN_LEDGER_GRACE: Duration = Duration::from_secs(30);
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// Requests to bookies in flight at once while checking or copying.
const PARALLEL: usize = 32;

/// Runs the auditor election and the replication worker until the node dies,
/// each with its own session.
pub async fn run(env: Env, meta_server: String) {
    madsim::task::spawn(replication_worker(env.clone(), meta_server.clone()));
    auditor(env, meta_server).await
}

/// Competes for the auditor lock and audits while it holds it.
async fn auditor(env: Env, meta_server: String) {
    let c = LedgerClient::new(&env, &meta_server);
    let random = env.random("auditor");
    let mut verified = BTreeSet::new();
    loop {
        let session = Session::open(&env, &c.meta, SESSION_TIMEOUT).await;
        let leader = AtomicBool::new(false);
        let passes = async {
            loop {
                env.sleep(random.jitter(AUDIT_INTERVAL)).await;
                leader.store(session.lock(AUDITOR_LOCK).await.held(), Relaxed);
                if leader.load(Relaxed) {
                    env.probe(Probe::AuditorElected);
                    let _ = audit(&c, &mut verified).await;
                }
            }
        };
        // The session ends the passes, even in the middle of one.
        select(session.expired(), Box::pin(passes)).await;
        if leader.load(Relaxed) {
            env.probe(Probe::SessionExpiredHoldingLock);
        }
    }
}

/// Repairs the ledgers marked under-replicated, one lock at a time.
async fn replication_worker(env: Env, meta_server: String) {
    let c = LedgerClient::new(&env, &meta_server);
    let random = env.random("replication-worker");
    // When this worker first saw each open ledger waiting for replication.
    let mut waiting_since: BTreeMap<LedgerId, Duration> = BTreeMap::new();
    loop {
        let session = Session::open(&env, &c.meta, SESSION_TIMEOUT).await;
        let holding = AtomicBool::new(false);
        let passes = async {
            loop {
                env.sleep(random.jitter(AUDIT_INTERVAL)).await;
                let _ = replicate_all(&c, &session, &holding, &mut waiting_since).await;
            }
        };
        select(session.expired(), Box::pin(passes)).await;
        if holding.load(Relaxed) {
            env.probe(Probe::SessionExpiredHoldingLock);
        }
    }
}

/// Marks under-replicated every ledger that names a lost bookie, or (checked
/// once per closed ledger, like BookKeeper's periodic check) lacks a copy of
/// an entry on a live bookie of its write set.
async fn audit(c: &LedgerClient, verified: &mut BTreeSet<LedgerId>) -> Result<(), LedgerError> {
    let registered: BTreeSet<String> = c.registered_bookies().await?.into_iter().collect();
    for ledger in c.ledgers().await? {
        let (meta, _) = c.read_meta(ledger).await?;
        let lost: BTreeSet<String> =
            meta.ensembles.values().flatten().filter(|b| !registered.contains(*b)).cloned().collect();
        if lost.is_empty() {
            if meta.state != State::Closed || verified.contains(&ledger) {
                continue;
            }
            let copies = check_copies(c, ledger, &meta, &registered).await;
            if !copies.answered {
                c.env.probe(Probe::AuditorCheckUnanswered);
                continue; // ask again next time
            }
            if copies.missing.is_empty() {
                verified.insert(ledger);
                continue;
            }
            c.env.probe(Probe::AuditorFoundMissingCopy);
        } else {
            c.env.probe(Probe::AuditorMarkedLostBookie);
        }
        let mark = format!("{UNDER_REPLICATED}/L{ledger:010}");
        if c.meta.create(&mark, vec![], None, false).await.is_ok() {
            c.event(LedgerEvent::MarkedUnderReplicated { ledger, lost: lost.into_iter().collect() });
        }
    }
    Ok(())
}

/// Tries every under-replicated ledger this worker can lock; one that cannot
/// be repaired yet does not hold up the others.
async fn replicate_all(
    c: &LedgerClient,
    session: &Session,
    holding: &AtomicBool,
    waiting_since: &mut BTreeMap<LedgerId, Duration>,
) -> Result<(), LedgerError> {
    let marked = c.meta.children(UNDER_REPLICATED).await.map_err(|_| LedgerError::Meta)?;
    for name in marked {
        let Some(ledger) = name.strip_prefix('L').and_then(|n| n.parse::<LedgerId>().ok()) else { continue };
        let lock = format!("{REPLICATION_LOCKS}/{name}");
        match session.lock(&lock).await {
            Lock::NotOurs => continue,
            // Its release (or creation) timed out earlier; it would leak forever otherwise.
            Lock::AlreadyOurs => c.env.probe(Probe::ReplicationLockReentered),
            Lock::Taken => {}
        }
        holding.store(true, Relaxed);
        let _ = replicate(c, ledger, waiting_since).await;
        session.unlock(&lock).await;
        holding.store(false, Relaxed);
    }
    Ok(())
}

async fn replicate(
    c: &LedgerClient,
    ledger: LedgerId,
    waiting_since: &mut BTreeMap<LedgerId, Duration>,
) -> Result<(), LedgerError> {
    let (meta, _) = c.read_meta(ledger).await?;
    if meta.state != State::Closed {
        let now = c.env.clock.mono();
        let since = *waiting_since.entry(ledger).or_insert(now);
        if now - since < OPEN_LEDGER_GRACE {
            return Ok(());
        }
        ledger::recover(c, ledger).await?;
        c.env.probe(Probe::ReplicationRecoveredOpenLedger);
    }
    waiting_since.remove(&ledger);
    let marks_first = c.env.bug(Bug::AuditorMarksBeforeCopy);
    let registered: BTreeSet<String> = c.registered_bookies().await?.into_iter().collect();
    let (mut meta, mut version) = c.read_meta(ledger).await?;
    let fragments: Vec<(EntryId, Vec<String>)> = meta.ensembles.iter().map(|(f, e)| (*f, e.clone())).collect();
    for (i, (first, ensemble)) in fragments.iter().enumerate() {
        let last = fragments.get(i + 1).map_or(meta.last_entry, |(next, _)| next - 1).min(meta.last_entry);
        for lost in ensemble.iter().filter(|b| !registered.contains(*b)) {
            let current = meta.ensembles[first].clone();
            let replacement = c.replacement(&current).await?;
            let repaired: Vec<String> =
                current.iter().map(|b| if b == lost { replacement.clone() } else { b.clone() }).collect();
            let mut next = meta.clone();
            next.ensembles.insert(*first, repaired.clone());
            if marks_first {
                // The planted mistake: the fragment counts as replicated once the
                // metadata names the new bookie; how the copy went is not checked.
                version = c.write_meta(ledger, &next, version).await?.ok_or(LedgerError::RecoveryIncomplete)?;
                meta = next;
                let _ = copy_fragment(c, ledger, &current, meta.qw, *first, last, lost, &replacement).await;
            } else {
                copy_fragment(c, ledger, &current, meta.qw, *first, last, lost, &replacement).await?;
                version = c.write_meta(ledger, &next, version).await?.ok_or(LedgerError::RecoveryIncomplete)?;
                meta = next;
            }
            c.env.probe(Probe::ReplicationCopiedFragment);
            c.event(LedgerEvent::FragmentReplicated {
                ledger,
                first_entry: *first,
                from: lost.clone(),
                to: replacement,
            });
        }
    }
    // Copies missing on live bookies (a write that failed after Qa acks).
    let missing = if marks_first { Vec::new() } else { check_copies(c, ledger, &meta, &registered).await.missing };
    let copies = futures::stream::iter(missing)
        .map(|(entry, bookie)| {
            let (c, set) = (c.clone(), meta.write_set(entry));
            async move { copy_entry(&c, ledger, &set, entry, &bookie).await }
        })
        .buffer_unordered(PARALLEL);
    copies.collect::<Vec<_>>().await.into_iter().collect::<Result<(), _>>()?;
    // Re-check before calling it done.
    let (meta, _) = c.read_meta(ledger).await?;
    let registered: BTreeSet<String> = c.registered_bookies().await?.into_iter().collect();
    let complete = marks_first || {
        let copies = check_copies(c, ledger, &meta, &registered).await;
        copies.answered && copies.missing.is_empty()
    };
    if !complete {
        c.env.probe(Probe::ReplicationIncomplete);
    }
    if complete && meta.ensembles.values().flatten().all(|b| registered.contains(b)) {
        let mark = format!("{UNDER_REPLICATED}/L{ledger:010}");
        c.meta.delete(&mark, None).await.map_err(|_| LedgerError::Meta)?;
        c.event(LedgerEvent::MarkedReplicated { ledger });
    }
    Ok(())
}

/// Copies the entries `first..=last` that `lost` held in `ensemble` to `to`.
#[allow(clippy::too_many_arguments)]
async fn copy_fragment(
    c: &LedgerClient,
    ledger: LedgerId,
    ensemble: &[String],
    qw: usize,
    first: EntryId,
    last: EntryId,
    lost: &str,
    to: &str,
) -> Result<(), LedgerError> {
    let sets: Vec<(EntryId, Vec<String>)> = (first..=last)
        .map(|entry| (entry, write_set(ensemble, entry, qw)))
        .filter(|(_, set)| set.iter().any(|b| b == lost))
        .collect();
    let copies = sets.into_iter().map(|(entry, set)| {
        let (c, to) = (c.clone(), to.to_string());
        async move { copy_entry(&c, ledger, &set, entry, &to).await }
    });
    let done: Vec<_> = futures::stream::iter(copies).buffer_unordered(PARALLEL).collect().await;
    done.into_iter().collect()
}

/// Copies `entry` to `to` from an intact copy on another bookie of `set`.
async fn copy_entry(
    c: &LedgerClient,
    ledger: LedgerId,
    set: &[String],
    entry: EntryId,
    to: &str,
) -> Result<(), LedgerError> {
    for source in set.iter().filter(|b| *b != to) {
        let Ok(bookie::Response::Entry(e)) =
            c.call(source, bookie::Request::Read { ledger, entry, fence: false }).await
        else {
            continue;
        };
        if e.intact() {
            let added = c.call(to, bookie::Request::Add { entry: e, recovery: true }).await;
            return match added {
                Ok(bookie::Response::Added) => Ok(()),
                _ => Err(LedgerError::Unreadable),
            };
        }
    }
    Err(LedgerError::Unreadable)
}

/// What a check of a closed ledger's copies found.
struct Copies {
    /// (entry, bookie) pairs where a live bookie of the write set lacks the entry.
    missing: Vec<(EntryId, String)>,
    /// Whether every live bookie answered; only then is an empty `missing` proof.
    answered: bool,
}

/// Asks every live bookie of the ledger's ensembles which entries it holds,
/// and finds the entries a live bookie of their write set lacks: one request
/// per bookie, not one per entry.
async fn check_copies(
    c: &LedgerClient,
    ledger: LedgerId,
    meta: &ledger::LedgerMeta,
    registered: &BTreeSet<String>,
) -> Copies {
    if meta.state != State::Closed {
        return Copies { missing: Vec::new(), answered: false };
    }
    let bookies: BTreeSet<String> =
        meta.ensembles.values().flatten().filter(|b| registered.contains(*b)).cloned().collect();
    let asked = futures::stream::iter(bookies).map(|b| {
        let c = c.clone();
        async move {
            let answer = c.call(&b, bookie::Request::ListEntries { ledger }).await;
            (b, answer)
        }
    });
    let mut held: BTreeMap<String, BTreeSet<EntryId>> = BTreeMap::new();
    let mut answered = true;
    for (b, answer) in asked.buffered(PARALLEL).collect::<Vec<_>>().await {
        match answer {
            Ok(bookie::Response::Entries(entries)) => {
                held.insert(b, entries.into_iter().collect());
            }
            _ => answered = false,
        }
    }
    let mut missing = Vec::new();
    for entry in 0..=meta.last_entry {
        for b in meta.write_set(entry) {
            if held.get(&b).is_some_and(|h| !h.contains(&entry)) {
                missing.push((entry, b));
            }
        }
    }
    Copies { missing, answered }
}
