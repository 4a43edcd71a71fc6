//! The bookie: stores ledger entries through a journal that is fsynced before an
//! add is acknowledged (group commit), serves reads from disk with checksums,
//! keeps permanent fence flags, and registers itself in the metadata service.

mod proto;

pub use proto::{kind, Bookie, BookieError, Entry, EntryId, LedgerId, Request, Response, KINDS};

use crate::bugs::Bug;
use crate::env::{Env, Event};
use crate::meta::{Lock, MetaClient, Session};
use crate::probe::Probe;
use crate::rpc::{self, Incoming, Rpc};
use crate::wal::{Wal, WalError};
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Where bookies register (ephemeral keys named after the bookie).
pub const REGISTRY: &str = "/bookies";
const JOURNAL: &str = "journal";
const DISK_RETRY: Duration = Duration::from_millis(100);
const CORRUPT_RETRIES: u32 = 10;
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
const META_TIMEOUT: Duration = Duration::from_secs(1);
const META_RETRY: Duration = Duration::from_millis(200);
/// How often a registered bookie looks that its key is still there.
const REGISTRATION_LOOK: Duration = Duration::from_secs(5);

/// A journal record. Replaying the journal rebuilds the index and fence flags.
#[derive(Serialize, Deserialize)]
enum Record {
    Add(Entry),
    Fence(LedgerId),
}

/// A [`Record::Add`] to write, borrowing its entry: the same bytes, no copy.
#[derive(Serialize)]
enum AddRef<'a> {
    Add(&'a Entry),
}

/// Runs a bookie until the node is killed: registration, then serving.
pub async fn serve(env: Env, meta_server: String) {
    let meta = MetaClient::new(&env, &meta_server, META_TIMEOUT);
    madsim::task::spawn(keep_registered(env.clone(), meta));
    let (rpc, mut requests) = Rpc::serve::<Bookie>(&env);
    let mut bookie = Server::recover(&env).await;
    while let Some(first) = rpc::next_request(&mut requests).await {
        let mut batch = vec![first];
        rpc::drain_ready(&mut requests, &mut batch);
        bookie.handle(&env, &rpc, batch).await;
    }
}

/// Keeps an ephemeral `/bookies/<name>` key alive, re-registering after
/// expiry, and looking every few seconds that it is still there: the delete
/// of a key left by this bookie's previous incarnation may arrive late and
/// remove the new one, which would leave the bookie unregistered for good.
pub async fn keep_registered(env: Env, meta: MetaClient) {
    let path = format!("{REGISTRY}/{}", env.name);
    let random = env.random("bookie-registration");
    loop {
        let session = Session::open(&env, &meta, SESSION_TIMEOUT).await;
        let mut registered = false;
        while !session.is_expired() {
            match session.lock(&path).await {
                Lock::Taken | Lock::AlreadyOurs => {
                    if registered {
                        env.probe(Probe::BookieRegistrationVanished);
                    }
                    registered = true;
                }
                Lock::NotOurs if session.is_expired() => break,
                // A key left by this bookie's previous incarnation goes first.
                Lock::NotOurs => {
                    match meta.get(&path).await {
                        Ok(Some(_)) => {
                            env.probe(Probe::BookieRemovedOldRegistration);
                            let _ = meta.delete(&path, None).await;
                        }
                        _ => env.sleep(random.jitter(META_RETRY)).await,
                    }
                    continue;
                }
            }
            // Registered: until the session ends, or the key is gone.
            loop {
                let mut expired = session.expired().fuse();
                let mut next_look = env.sleep(random.jitter(REGISTRATION_LOOK)).fuse();
                futures::select_biased! {
                    _ = expired => break,
                    _ = next_look => {}
                }
                match meta.get(&path).await {
                    Ok(Some((_, stat))) if stat.owner != Some(session.id()) => break,
                    Ok(None) => break,
                    _ => {}
                }
            }
        }
        if registered {
            env.probe(Probe::BookieReregistered);
        }
    }
}

struct Server {
    /// `None`: the journal is damaged beyond repair; every request gets `Fault`.
    journal: Option<Wal>,
    index: BTreeMap<(LedgerId, EntryId), u64>,
    fenced: BTreeSet<LedgerId>,
    lac: BTreeMap<LedgerId, EntryId>,
}

impl Server {
    async fn recover(env: &Env) -> Server {
        let mut bookie =
            Server { journal: None, index: BTreeMap::new(), fenced: BTreeSet::new(), lac: BTreeMap::new() };
        // Damage seen on read may be a transient flip: look again for a while
        // before refusing to serve until a restart.
        let mut damaged_opens = 0;
        loop {
            match Wal::open(env.disk.clone(), JOURNAL, 1).await {
                Ok((wal, found)) => {
                    for (bytes, offset) in found.records.iter().zip(&found.offsets) {
                        match postcard::from_bytes::<Record>(bytes) {
                            Ok(Record::Add(e)) => bookie.index_entry(&e, *offset),
                            Ok(Record::Fence(ledger)) => {
                                bookie.fenced.insert(ledger);
                            }
                            Err(_) => {
                                env.events.event(Event::RefusesCorruptState { record: *offset });
                                return bookie;
                            }
                        }
                    }
                    for p in found.probes() {
                        env.probe(p);
                    }
                    env.events.event(Event::Recovered {
                        records: found.records.len() as u64,
                        zxid: 0,
                        repaired: found.repaired,
                        dropped_tail_bytes: found.dropped_tail_bytes,
                    });
                    bookie.journal = Some(wal);
                    return bookie;
                }
                Err(WalError::Corrupt { .. }) if damaged_opens < CORRUPT_RETRIES => {
                    env.probe(Probe::BookieJournalLookedAgain);
                    damaged_opens += 1;
                    env.sleep(DISK_RETRY * 5).await;
                }
                Err(WalError::Corrupt { seq }) => {
                    env.events.event(Event::RefusesCorruptState { record: seq });
                    return bookie;
                }
                Err(WalError::Disk(_)) => env.sleep(DISK_RETRY).await,
            }
        }
    }

    fn index_entry(&mut self, e: &Entry, offset: u64) {
        self.index.insert((e.ledger, e.entry), offset);
        let lac = self.lac.entry(e.ledger).or_insert(-1);
        *lac = (*lac).max(e.lac);
    }

    /// Executes a batch; journal writes are made durable with one fsync before
    /// anyone is answered.
    async fn handle(&mut self, env: &Env, rpc: &Rpc, batch: Vec<Incoming<Bookie>>) {
        let mut answers = Vec::with_capacity(batch.len());
        let mut disk_ok = true;
        for inc in &batch {
            match self.execute(env, &inc.req) {
                Ok(answer) => answers.push(answer),
                Err(()) => {
                    disk_ok = false;
                    break;
                }
            }
        }
        let ack_first = env.bug(Bug::BookieAckBeforeFsync);
        if disk_ok && ack_first {
            reply_all(rpc, &batch, &answers).await;
        }
        if let Some(journal) = self.journal.as_mut().filter(|j| disk_ok && j.has_unsynced()) {
            disk_ok = journal.sync().await.is_ok();
        }
        if disk_ok && !ack_first {
            reply_all(rpc, &batch, &answers).await;
        }
        if !disk_ok {
            env.probe(Probe::BookieJournalFailed);
            env.events.event(Event::DiskFailed { op: "journal".into() });
            if let Some(journal) = self.journal.as_mut() {
                while journal.rollback().is_err() {
                    env.sleep(DISK_RETRY).await;
                }
            }
            *self = Server::recover(env).await;
            if !ack_first {
                let fault = vec![Response::Error(BookieError::Fault); batch.len()];
                reply_all(rpc, &batch, &fault).await;
            }
        }
    }

    /// One request; `Err(())` when the journal write failed.
    fn execute(&mut self, env: &Env, req: &Request) -> Result<Response, ()> {
        let Some(journal) = self.journal.as_mut() else { return Ok(Response::Error(BookieError::Fault)) };
        let known = |ledger: &LedgerId| self.lac.contains_key(ledger);
        let fence = |journal: &mut Wal, fenced: &mut BTreeSet<LedgerId>, ledger: LedgerId| {
            if fenced.contains(&ledger) {
                return Ok(());
            }
            if !known(&ledger) {
                env.probe(Probe::BookieFencedUnseenLedger);
            }
            let record = postcard::to_allocvec(&Record::Fence(ledger)).expect("encode fence");
            journal.append(&record).map_err(|_| ())?;
            fenced.insert(ledger);
            Ok(())
        };
        match req {
            Request::Add { entry, recovery } => {
                if !entry.intact() {
                    return Ok(Response::Error(BookieError::BadDigest));
                }
                if self.fenced.contains(&entry.ledger) {
                    if !recovery {
                        env.probe(Probe::BookieRefusedFencedAdd);
                        return Ok(Response::Error(BookieError::Fenced));
                    }
                    env.probe(Probe::BookieRecoveryAddWhileFenced);
                }
                let record = postcard::to_allocvec(&AddRef::Add(entry)).expect("encode add");
                let offset = journal.append(&record).map_err(|_| ())?;
                self.index_entry(entry, offset);
                Ok(Response::Added)
            }
            Request::Read { ledger, entry, fence: f } => {
                if *f {
                    fence(journal, &mut self.fenced, *ledger)?;
                }
                let Some(&offset) = self.index.get(&(*ledger, *entry)) else {
                    return Ok(Response::Error(BookieError::NoSuchEntry));
                };
                let stored = journal.read(offset).ok().and_then(|b| postcard::from_bytes::<Record>(&b).ok());
                Ok(match stored {
                    Some(Record::Add(e)) if e.intact() && e.ledger == *ledger && e.entry == *entry => {
                        Response::Entry(e)
                    }
                    _ => {
                        env.probe(Probe::BookieChecksumFailed);
                        env.events.event(Event::ChecksumFailed { ledger: *ledger, entry: *entry });
                        Response::Error(BookieError::Fault)
                    }
                })
            }
            Request::ReadLac { ledger, fence: f } => {
                if *f {
                    fence(journal, &mut self.fenced, *ledger)?;
                }
                Ok(Response::Lac(self.lac.get(ledger).copied().unwrap_or(-1)))
            }
            Request::ReadBatch { ledger, first, last } => {
                let mut batch = Vec::new();
                for (&(_, entry), &offset) in self.index.range((*ledger, *first)..=(*ledger, *last)) {
                    let stored = journal.read(offset).ok().and_then(|b| postcard::from_bytes::<Record>(&b).ok());
                    match stored {
                        Some(Record::Add(e)) if e.intact() && e.ledger == *ledger && e.entry == entry => batch.push(e),
                        _ => {
                            env.probe(Probe::BookieChecksumFailed);
                            env.events.event(Event::ChecksumFailed { ledger: *ledger, entry });
                        }
                    }
                }
                Ok(Response::Batch(batch))
            }
            Request::ListEntries { ledger } => {
                let held = self.index.range((*ledger, EntryId::MIN)..=(*ledger, EntryId::MAX)).map(|((_, e), _)| *e);
                Ok(Response::Entries(held.collect()))
            }
        }
    }
}

async fn reply_all(rpc: &Rpc, batch: &[Incoming<Bookie>], answers: &[Response]) {
    for (inc, answer) in batch.iter().zip(answers) {
        rpc.reply(inc, answer).await;
    }
}

/// The journal's file on a bookie's disk.
pub const JOURNAL_FILE: &str = "journal.0";

/// What a bookie's journal bytes hold: intact entries and fenced ledgers;
/// an error when the journal cannot be read.
pub type Stored = (BTreeMap<(LedgerId, EntryId), Entry>, BTreeSet<LedgerId>);

pub fn stored(journal: &[u8]) -> Result<Stored, WalError> {
    let (mut entries, mut fenced) = (BTreeMap::new(), BTreeSet::new());
    let found = crate::wal::parse(&[journal.to_vec()])?;
    for (seq, bytes) in found.records.iter().enumerate() {
        match postcard::from_bytes::<Record>(bytes) {
            Ok(Record::Add(e)) if e.intact() => {
                entries.insert((e.ledger, e.entry), e);
            }
            Ok(Record::Add(_)) | Err(_) => return Err(WalError::Corrupt { seq: seq as u64 }),
            Ok(Record::Fence(ledger)) => {
                fenced.insert(ledger);
            }
        }
    }
    Ok((entries, fenced))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_add_record_encodes_as_the_owned_one() {
        let e = Entry::new(3, 7, 6, b"payload".to_vec());
        let owned = postcard::to_allocvec(&Record::Add(e.clone())).unwrap();
        assert_eq!(postcard::to_allocvec(&AddRef::Add(&e)).unwrap(), owned);
    }
}
