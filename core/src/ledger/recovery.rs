//! Opening a ledger with recovery: mark it IN_RECOVERY, fence the last ensemble
//! until no write quorum could still acknowledge an add, read forward from the
//! LAC with fencing reads, rewrite every present entry with recovery adds, and
//! close at the last entry rewritten.

use super::{LedgerClient, LedgerError, LedgerMeta, State};
use crate::bookie::{self, BookieError, EntryId, LedgerId};
use crate::bugs::Bug;
use crate::env::LedgerEvent;
use crate::probe::Probe;
use futures::StreamExt;
use std::collections::BTreeSet;

/// A ledger recovery has fenced: its metadata says IN_RECOVERY, and no write
/// quorum of its last ensemble still has Qa bookies that have not fenced it,
/// so no normal add invoked from now on can be acknowledged.
pub struct Fenced {
    pub ledger: LedgerId,
    /// The highest LAC the fenced bookies reported.
    pub lac: EntryId,
    /// The bookies that acknowledged the fence.
    pub bookies: Vec<String>,
    meta: LedgerMeta,
    version: u64,
}

/// Recovers and closes `ledger`; returns its last entry.
pub async fn recover(c: &LedgerClient, ledger: LedgerId) -> Result<EntryId, LedgerError> {
    match fence(c, ledger).await {
        Ok(fenced) => fenced.recover(c).await,
        Err(LedgerError::AlreadyClosed(last)) => Ok(last),
        Err(e) => Err(e),
    }
}

/// The first half of opening a ledger with recovery: marks it IN_RECOVERY
/// and fences its last ensemble to quorum coverage.
pub async fn fence(c: &LedgerClient, ledger: LedgerId) -> Result<Fenced, LedgerError> {
    let (mut meta, mut version) = c.read_meta(ledger).await?;
    match meta.state {
        State::Closed => return Err(LedgerError::AlreadyClosed(meta.last_entry)),
        State::InRecovery => c.env.probe(Probe::RecoveryResumed),
        State::Open => {
            let marked = LedgerMeta { state: State::InRecovery, ..meta.clone() };
            match c.write_meta(ledger, &marked, version).await? {
                Some(v) => (meta, version) = (marked, v),
                None => return Err(LedgerError::RecoveryIncomplete), // it changed under us: try again later
            }
        }
    }
    c.event(LedgerEvent::RecoveryStarted { ledger });
    let (lac, bookies) = match fence_ensemble(c, ledger, &meta).await {
        Ok(fenced) => fenced,
        Err(e) => {
            c.env.probe(Probe::RecoveryFenceIncomplete);
            return Err(e);
        }
    };
    c.event(LedgerEvent::Fenced { ledger, lac });
    Ok(Fenced { ledger, lac, bookies, meta, version })
}

impl Fenced {
    /// The second half: reads forward from the LAC with fencing reads,
    /// rewrites every entry found with recovery adds, and closes the ledger at
    /// the last one. Returns the last entry.
    pub async fn recover(self, c: &LedgerClient) -> Result<EntryId, LedgerError> {
        let Fenced { ledger, lac, mut meta, version, .. } = self;
        let (first, _) = meta.last_fragment();
        let mut next = if c.env.bug(Bug::RecoveryStartAtLac) { lac + 1 } else { lac.max(first - 1) + 1 };
        if next > lac + 1 {
            c.env.probe(Probe::RecoveryStartBelowLac);
        }
        let fencing_reads = !c.env.bug(Bug::RecoveryReadsNoFence);
        // Entries from `next` on were written to the last ensemble as it was when
        // recovery began; reads go there, rewrites to the ensembles recovery changes.
        let last_ensemble = meta.last_fragment().1.clone();
        while let Some(entry) =
            read_for_recovery(c, &last_ensemble, meta.qw, meta.qa, ledger, next, fencing_reads).await?
        {
            rewrite(c, &mut meta, ledger, entry).await?;
            next += 1;
        }
        let last_entry = next - 1;
        if last_entry > lac {
            c.env.probe(Probe::RecoveryBeyondLac);
        }
        if last_entry < 0 {
            c.env.probe(Probe::RecoveryClosedEmpty);
        }
        let closed = LedgerMeta { state: State::Closed, last_entry, ..meta };
        match c.write_meta(ledger, &closed, version).await? {
            Some(_) => {
                c.event(LedgerEvent::RecoveryClosed { ledger, last_entry });
                Ok(last_entry)
            }
            None => {
                c.env.probe(Probe::RecoveryLostRace);
                match c.read_meta(ledger).await? {
                    (m, _) if m.state == State::Closed => Ok(m.last_entry),
                    _ => Err(LedgerError::RecoveryIncomplete),
                }
            }
        }
    }
}

/// Fences the last ensemble; returns the highest LAC reported and the bookies
/// that acknowledged. Waits until no Qw-wide window of the ensemble has Qa
/// bookies that have not answered.
async fn fence_ensemble(
    c: &LedgerClient,
    ledger: LedgerId,
    meta: &LedgerMeta,
) -> Result<(EntryId, Vec<String>), LedgerError> {
    let (_, ensemble) = meta.last_fragment();
    let mut answers = c.fan_out(ensemble, |_| bookie::Request::ReadLac { ledger, fence: true });
    let (mut answered, mut lac) = (BTreeSet::new(), -1);
    let one_is_enough = c.env.bug(Bug::FenceOneResponse);
    while let Some((b, res)) = answers.next().await {
        if let Ok(bookie::Response::Lac(l)) = res {
            answered.insert(b);
            lac = lac.max(l);
            if covered(ensemble, meta.qw, meta.qa, &answered) || one_is_enough {
                return Ok((lac, answered.into_iter().collect()));
            }
        }
    }
    Err(LedgerError::RecoveryIncomplete)
}

/// True when every write quorum has fewer than Qa bookies that did not answer.
fn covered(ensemble: &[String], qw: usize, qa: usize, answered: &BTreeSet<String>) -> bool {
    let e = ensemble.len();
    (0..e).all(|i| (0..qw).filter(|w| !answered.contains(&ensemble[(i + w) % e])).count() < qa)
}

/// Present after one intact read; absent after "no such entry" from Qw-Qa+1
/// bookies of its write set; anything else is unknown and aborts recovery.
async fn read_for_recovery(
    c: &LedgerClient,
    ensemble: &[String],
    qw: usize,
    qa: usize,
    ledger: LedgerId,
    entry: EntryId,
    fence: bool,
) -> Result<Option<bookie::Entry>, LedgerError> {
    let mut answers =
        c.fan_out(&super::write_set(ensemble, entry, qw), |_| bookie::Request::Read { ledger, entry, fence });
    let mut missing = 0;
    while let Some((_, res)) = answers.next().await {
        match res {
            Ok(bookie::Response::Entry(e)) if e.intact() && e.ledger == ledger && e.entry == entry => {
                return Ok(Some(e))
            }
            Err(BookieError::NoSuchEntry) => {
                missing += 1;
                if missing > qw - qa {
                    return Ok(None);
                }
            }
            _ => {}
        }
    }
    c.env.probe(Probe::RecoveryEntryUnknown);
    Err(LedgerError::RecoveryIncomplete)
}

/// Writes `entry` to its write set with recovery adds until Qa stored it,
/// replacing failed bookies (the change reaches the metadata only at close).
async fn rewrite(
    c: &LedgerClient,
    meta: &mut LedgerMeta,
    ledger: LedgerId,
    entry: bookie::Entry,
) -> Result<(), LedgerError> {
    for _ in 0..5 {
        let set = meta.write_set(entry.entry);
        let mut answers = c.fan_out(&set, |_| bookie::Request::Add { entry: entry.clone(), recovery: true });
        let (mut stored, mut failed) = (0, Vec::new());
        while let Some((b, res)) = answers.next().await {
            match res {
                Ok(bookie::Response::Added) => stored += 1,
                _ => failed.push(b),
            }
        }
        if stored >= meta.qa {
            return Ok(());
        }
        let (first, ensemble) = meta.fragment(entry.entry);
        let mut ensemble = ensemble.clone();
        for b in failed {
            let replacement = c.replacement(&ensemble).await?;
            ensemble.iter_mut().filter(|x| **x == b).for_each(|x| *x = replacement.clone());
        }
        // Entries before this one keep their fragment; this one and later get the new ensemble.
        let from = entry.entry.max(first);
        meta.ensembles.insert(from, ensemble.clone());
        c.env.probe(Probe::RecoveryEnsembleChange);
        c.event(LedgerEvent::EnsembleChanged { ledger, from_entry: from, ensemble, version: None });
    }
    Err(LedgerError::RecoveryIncomplete)
}
