//! Managed ledgers (Pulsar's): a queue's log as an ordered list of ledgers kept
//! in the metadata service and changed only by compare-and-set. One owner at a
//! time appends to the last ledger, which rolls over to a new one on the bookies
//! registered now; a new owner first recovers the last ledger, which fences the
//! previous owner. Reads never go past what is durable. Consumer groups keep
//! durable cursors ([`cursor`]).

pub mod cursor;
pub mod log;

pub use log::{LogMeta, Rollover, Segment};

use crate::bookie::{EntryId, LedgerId};
use crate::bugs::Bug;
use crate::env::LedgerEvent;
use crate::ledger::{self, LedgerClient, LedgerError, LedgerMeta, LedgerWriter};
use crate::meta::MetaError;
use crate::probe::Probe;
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const LOGS: &str = "/logs";

pub fn path(log: &str) -> String {
    format!("{LOGS}/{log}")
}

/// Attempts at opening before giving up (each lost a race or had no answer).
const OPEN_ATTEMPTS: usize = 5;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MlError {
    /// Another owner took the log over; this handle is done.
    #[error("log fenced: another owner took it over")]
    Fenced,
    #[error("metadata service unavailable")]
    Meta,
    #[error("storage: {0}")]
    Storage(LedgerError),
    /// The offset is not durable (or not in the log).
    #[error("offset beyond the durable end")]
    BeyondEnd,
    #[error("entry unreadable")]
    Unreadable,
    #[error("the log's ledger list is broken: {0}")]
    Broken(String),
}

impl From<log::LogError> for MlError {
    fn from(e: log::LogError) -> MlError {
        MlError::Broken(e.to_string())
    }
}

/// Ensemble shape and rollover policy of a log's ledgers.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub e: usize,
    pub qw: usize,
    pub qa: usize,
    pub rollover: Rollover,
}

/// Told the outcome of an append, in the order the ledger writer decides.
type Done = Box<dyn FnOnce(Result<u64, MlError>) + Send>;
/// Told the offset an append will take if it succeeds, as it is handed to the writer.
type Queued = Box<dyn FnOnce(u64) + Send>;

enum Cmd {
    Append(Vec<u8>, Option<Queued>, Done),
    Close(oneshot::Sender<Result<(), MlError>>),
}

/// What the handle and its writer task share.
struct Shared {
    meta: LogMeta,
    /// Offsets below this are acknowledged (stored on Qa bookies).
    durable: u64,
    /// Offsets below this were handed to the writer.
    submitted: u64,
    /// Set once an append failed or another owner took over: every later
    /// append fails with it.
    failed: Option<MlError>,
    /// Metadata of the ledgers read from, for their write sets.
    ledgers: BTreeMap<LedgerId, LedgerMeta>,
    /// The latest acknowledged entries, so reads of what was just written
    /// need no bookie; reads of older entries miss to the bookies.
    cache: BTreeMap<u64, Vec<u8>>,
    /// Each group's cursor as last read or written, and its version.
    cursors: BTreeMap<String, cursor::Known>,
}

/// Entries the cache keeps (the newest).
const CACHE_ENTRIES: usize = 512;

impl Shared {
    fn cache(&mut self, offset: u64, payload: Vec<u8>) {
        self.cache.insert(offset, payload);
        while self.cache.len() > CACHE_ENTRIES {
            self.cache.pop_first();
        }
    }
}

/// An owner's handle on an open log.
#[derive(Clone)]
pub struct ManagedLedger {
    pub name: String,
    /// The ledger this owner added when it opened the log.
    pub opened: LedgerId,
    /// The log had ledgers when this owner opened it: another owner (or an
    /// earlier incarnation of this one) owned it before.
    pub had_owner: bool,
    c: LedgerClient,
    cmds: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Mutex<Shared>>,
}

impl ManagedLedger {
    /// Opens `name` as its new owner: recovers (and so fences) the previous
    /// owner's open ledger, records how many entries it holds, and adds a new
    /// ledger for this owner, all by compare-and-set of the ledger list.
    pub async fn open(c: &LedgerClient, name: &str, config: Config) -> Result<ManagedLedger, MlError> {
        for _ in 0..OPEN_ATTEMPTS {
            let Some((meta, version)) = read_log(c, name).await? else {
                let empty = postcard::to_allocvec(&LogMeta::default()).expect("encode log");
                match c.meta.create(&path(name), empty, None, false).await {
                    Ok(_) | Err(MetaError::NodeExists | MetaError::Timeout) => continue,
                    Err(_) => return Err(MlError::Meta),
                }
            };
            let meta = match meta.open_ledger() {
                Some(ledger) => {
                    c.env.probe(Probe::ManagedTakeoverOpenLedger);
                    let last = last_entry_of(c, ledger).await?;
                    meta.closed_last((last + 1) as u64)?
                }
                None => meta,
            };
            let bookies = c.registered_bookies().await.map_err(MlError::Storage)?;
            let writer =
                c.create_among(bookies.clone(), config.e, config.qw, config.qa).await.map_err(MlError::Storage)?;
            let next = meta.with_new(writer.ledger)?;
            match write_log(c, name, &next, version).await? {
                Some(version) => {
                    let end = next.end();
                    c.event(LedgerEvent::LogOpened { log: name.to_string(), ledger: writer.ledger, end });
                    let mut ml = Actor::start(c, name, config, next, version, writer, bookies);
                    ml.had_owner = !meta.segments.is_empty();
                    return Ok(ml);
                }
                None => c.env.probe(Probe::ManagedOpenRaced),
            }
        }
        Err(MlError::Meta)
    }

    /// Queues an append; `done` gets its offset once Qa bookies stored it. An
    /// error means the outcome is unknown: a later owner's recovery may keep it.
    pub fn append_then(&self, payload: Vec<u8>, done: impl FnOnce(Result<u64, MlError>) + Send + 'static) {
        self.send(Cmd::Append(payload, None, Box::new(done)));
    }

    /// As [`ManagedLedger::append_then`], and `queued` is told the offset the
    /// append will take, once it is handed to the writer (not yet durable).
    pub fn append_queued(
        &self,
        payload: Vec<u8>,
        queued: impl FnOnce(u64) + Send + 'static,
        done: impl FnOnce(Result<u64, MlError>) + Send + 'static,
    ) {
        self.send(Cmd::Append(payload, Some(Box::new(queued)), Box::new(done)));
    }

    fn send(&self, cmd: Cmd) {
        if let Err(e) = self.cmds.unbounded_send(cmd) {
            if let Cmd::Append(_, _, done) = e.into_inner() {
                done(Err(self.failure()));
            }
        }
    }

    pub fn append(&self, payload: Vec<u8>) -> impl std::future::Future<Output = Result<u64, MlError>> {
        let (tx, rx) = oneshot::channel();
        self.append_then(payload, move |r| {
            let _ = tx.send(r);
        });
        let fallback = self.failure();
        async move { rx.await.unwrap_or(Err(fallback)) }
    }

    /// Why appends fail now (`Fenced` if the writer task is gone unexplained).
    fn failure(&self) -> MlError {
        self.shared.lock().expect("shared").failed.clone().unwrap_or(MlError::Fenced)
    }

    /// Whether appends fail from now on.
    pub fn failed(&self) -> Option<MlError> {
        self.shared.lock().expect("shared").failed.clone()
    }

    /// The durable end: every offset below it is acknowledged.
    pub fn end(&self) -> u64 {
        self.shared.lock().expect("shared").durable
    }

    /// Reads the entry at `offset`, never past the durable end.
    pub async fn read(&self, offset: u64) -> Result<Vec<u8>, MlError> {
        let (ledger, entry, cached) = {
            let s = self.shared.lock().expect("shared");
            // The planted bug serves what was only handed to the writer.
            let end = if self.c.env.bug(Bug::CacheServesPastLac) { s.submitted } else { s.durable };
            if offset >= end {
                return Err(MlError::BeyondEnd);
            }
            if let Some(payload) = s.cache.get(&offset) {
                return Ok(payload.clone());
            }
            self.c.env.probe(Probe::ManagedCacheMiss);
            let (ledger, entry) = s.meta.locate(offset).ok_or(MlError::BeyondEnd)?;
            (ledger, entry, s.ledgers.get(&ledger).cloned())
        };
        if let Some(meta) = cached {
            if let Ok(e) = self.c.read_entry(&meta, ledger, entry).await {
                return Ok(e.payload);
            }
        }
        // Not cached, or its ensemble changed since (a writer's ensemble
        // change, or re-replication): read the metadata again.
        let (meta, _) = self.c.read_meta(ledger).await.map_err(|_| MlError::Meta)?;
        self.shared.lock().expect("shared").ledgers.insert(ledger, meta.clone());
        self.read_from(&meta, ledger, entry).await
    }

    async fn read_from(&self, meta: &LedgerMeta, ledger: LedgerId, entry: EntryId) -> Result<Vec<u8>, MlError> {
        self.c.read_entry(meta, ledger, entry).await.map(|e| e.payload).map_err(|_| MlError::Unreadable)
    }

    /// Moves `group`'s durable cursor to `offset`, never past the durable end.
    pub async fn commit_cursor(&self, group: &str, offset: u64) -> Result<(), MlError> {
        if offset > self.end() {
            return Err(MlError::BeyondEnd);
        }
        let known = self.shared.lock().expect("shared").cursors.get(group).copied();
        let now = cursor::commit(&self.c.meta, &self.name, group, offset, known).await?;
        self.shared.lock().expect("shared").cursors.insert(group.to_string(), now);
        Ok(())
    }

    pub async fn read_cursor(&self, group: &str) -> Result<u64, MlError> {
        let known = cursor::read_versioned(&self.c.meta, &self.name, group).await?;
        self.shared.lock().expect("shared").cursors.insert(group.to_string(), known);
        Ok(known.offset)
    }

    /// Waits for the appends queued so far, then closes the open ledger and
    /// records it closed, so the next owner need not recover it.
    pub async fn close(&self) -> Result<(), MlError> {
        let (tx, rx) = oneshot::channel();
        if self.cmds.unbounded_send(Cmd::Close(tx)).is_err() {
            return Err(self.failure());
        }
        rx.await.unwrap_or_else(|_| Err(self.failure()))
    }
}

/// Every entry of `name` in offset order, with its ledgers as (ledger, first
/// offset, entries), read by someone who is not its owner: an open last
/// ledger is recovered first (fencing its writer), and a closed ledger must
/// hold what the list says it holds.
pub async fn read_whole(c: &LedgerClient, name: &str) -> Result<(Vec<(LedgerId, u64, u64)>, Vec<Vec<u8>>), MlError> {
    let (list, _) = read_log(c, name).await?.ok_or(MlError::BeyondEnd)?;
    let (mut segments, mut payloads) = (Vec::new(), Vec::new());
    for s in &list.segments {
        let (mut meta, _) = c.read_meta(s.ledger).await.map_err(MlError::Storage)?;
        if meta.state != ledger::State::Closed {
            ledger::recover(c, s.ledger).await.map_err(MlError::Storage)?;
            meta = c.read_meta(s.ledger).await.map_err(MlError::Storage)?.0;
        }
        let entries = s.entries.unwrap_or((meta.last_entry + 1) as u64);
        if entries as i64 > meta.last_entry + 1 {
            return Err(MlError::Storage(LedgerError::Unreadable));
        }
        let mut read = c.read_all(&meta, s.ledger).await;
        for entry in 0..entries as i64 {
            let e = match read.remove(&entry) {
                Some(e) => e,
                None => c.read_entry(&meta, s.ledger, entry).await.map_err(MlError::Storage)?,
            };
            payloads.push(e.payload);
        }
        segments.push((s.ledger, s.first, entries));
    }
    Ok((segments, payloads))
}

/// The last entry of the previous owner's open ledger, found by recovery,
/// which fences that owner's writer first.
async fn last_entry_of(c: &LedgerClient, ledger: LedgerId) -> Result<EntryId, MlError> {
    if c.env.bug(Bug::TakeoverWithoutFencing) {
        // Opening without recovery: the ledger's LAC as its bookies report it,
        // while its writer goes on.
        let (meta, _) = c.read_meta(ledger).await.map_err(MlError::Storage)?;
        return Ok(c.read_lac(&meta, ledger).await);
    }
    ledger::recover(c, ledger).await.map_err(MlError::Storage)
}

/// The ledger list of `name` and its version; `None` if the log does not exist.
pub async fn read_log(c: &LedgerClient, name: &str) -> Result<Option<(LogMeta, u64)>, MlError> {
    match c.meta.get(&path(name)).await {
        Ok(Some((bytes, stat))) => {
            let meta: LogMeta = postcard::from_bytes(&bytes).map_err(|_| MlError::Broken("undecodable".into()))?;
            meta.well_formed().map_err(MlError::Broken)?;
            Ok(Some((meta, stat.version)))
        }
        Ok(None) => Ok(None),
        Err(_) => Err(MlError::Meta),
    }
}

/// Compare-and-set of the ledger list. `Ok(None)`: the version moved on.
async fn write_log(c: &LedgerClient, name: &str, meta: &LogMeta, version: u64) -> Result<Option<u64>, MlError> {
    let bytes = postcard::to_allocvec(meta).expect("encode log");
    match c.meta.set(&path(name), bytes, Some(version)).await {
        Ok(stat) => Ok(Some(stat.version)),
        Err(MetaError::BadVersion) => Ok(None),
        // The outcome is unknown: look, and take it as done if it is there.
        Err(MetaError::Timeout) => match read_log(c, name).await? {
            Some((now, v)) if now == *meta => Ok(Some(v)),
            _ => Ok(None),
        },
        Err(_) => Err(MlError::Meta),
    }
}

fn storage(e: LedgerError) -> MlError {
    match e {
        LedgerError::Fenced | LedgerError::Closed => MlError::Fenced,
        e => MlError::Storage(e),
    }
}

/// The task that owns the open ledger's writer: it rolls over between appends.
struct Actor {
    c: LedgerClient,
    name: String,
    config: Config,
    shared: Arc<Mutex<Shared>>,
    version: u64,
    writer: LedgerWriter,
    /// The log offset of the open ledger's entry 0.
    first: u64,
    opened: Duration,
    entries: u64,
    bytes: u64,
    /// The bookies registered when this owner opened the log (for the planted bug).
    seen_at_open: Vec<String>,
}

impl Actor {
    fn start(
        c: &LedgerClient,
        name: &str,
        config: Config,
        meta: LogMeta,
        version: u64,
        w: LedgerWriter,
        seen_at_open: Vec<String>,
    ) -> ManagedLedger {
        let (first, w_ledger) = (meta.end(), w.ledger);
        let shared = Arc::new(Mutex::new(Shared {
            meta,
            durable: first,
            submitted: first,
            failed: None,
            ledgers: BTreeMap::new(),
            cache: BTreeMap::new(),
            cursors: BTreeMap::new(),
        }));
        let (tx, rx) = mpsc::unbounded();
        let actor = Actor {
            c: c.clone(),
            name: name.to_string(),
            config,
            shared: shared.clone(),
            version,
            writer: w,
            first,
            opened: c.env.clock.mono(),
            entries: 0,
            bytes: 0,
            seen_at_open,
        };
        madsim::task::spawn(actor.run(rx));
        ManagedLedger { name: name.to_string(), opened: w_ledger, had_owner: false, c: c.clone(), cmds: tx, shared }
    }

    fn fail(&self, e: MlError) {
        self.shared.lock().expect("shared").failed.get_or_insert(e);
    }

    fn failed(&self) -> Option<MlError> {
        self.shared.lock().expect("shared").failed.clone()
    }

    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        while let Some(cmd) = cmds.next().await {
            match cmd {
                Cmd::Append(payload, queued, done) => self.append(payload, queued, done).await,
                Cmd::Close(done) => {
                    let closed = self.close().await;
                    if let Err(e) = &closed {
                        self.fail(e.clone());
                    }
                    let _ = done.send(closed);
                    return;
                }
            }
        }
    }

    async fn append(&mut self, payload: Vec<u8>, queued: Option<Queued>, done: Done) {
        if let Some(e) = self.failed() {
            return done(Err(e));
        }
        let age = self.c.env.clock.mono().saturating_sub(self.opened);
        if self.config.rollover.due(self.entries, self.bytes, age) {
            if let Err(e) = self.roll_over().await {
                self.fail(e.clone());
                return done(Err(e));
            }
        }
        let offset = self.first + self.entries;
        self.entries += 1;
        self.bytes += payload.len() as u64;
        let (shared, first) = (self.shared.clone(), self.first);
        let copy = payload.clone();
        {
            let mut s = self.shared.lock().expect("shared");
            s.submitted = offset + 1;
            if self.c.env.bug(Bug::CacheServesPastLac) {
                s.cache(offset, payload.clone());
            }
        }
        if let Some(queued) = queued {
            queued(offset);
        }
        self.writer.add_then(payload, move |result| match result {
            Ok(entry) => {
                let offset = first + entry as u64;
                let mut s = shared.lock().expect("shared");
                s.durable = s.durable.max(offset + 1);
                s.cache(offset, copy);
                drop(s);
                done(Ok(offset))
            }
            Err(e) => {
                let e = storage(e);
                shared.lock().expect("shared").failed.get_or_insert(e.clone());
                done(Err(e))
            }
        });
    }

    /// Closes the open ledger at its LAC and records it closed in the list.
    async fn close(&mut self) -> Result<(), MlError> {
        let last = self.writer.close().await.map_err(storage)?;
        let next = self.shared.lock().expect("shared").meta.closed_last((last + 1) as u64)?;
        self.commit(next).await
    }

    /// Closes the open ledger and adds a new one on the bookies registered
    /// now, in one compare-and-set of the list.
    async fn roll_over(&mut self) -> Result<(), MlError> {
        let last = self.writer.close().await.map_err(storage)?;
        // The planted bug places the new ledger from a stale view of the bookies.
        let bookies = match self.c.env.bug(Bug::RolloverOnOldBookies) {
            true => self.seen_at_open.clone(),
            false => self.c.registered_bookies().await.map_err(MlError::Storage)?,
        };
        let (e, qw, qa) = (self.config.e, self.config.qw, self.config.qa);
        let writer = self.c.create_among(bookies, e, qw, qa).await.map_err(MlError::Storage)?;
        let closed = self.shared.lock().expect("shared").meta.closed_last((last + 1) as u64)?;
        let next = closed.with_new(writer.ledger)?;
        let first = next.end();
        self.commit(next).await?;
        self.c.env.probe(Probe::ManagedRolledOver);
        self.c.event(LedgerEvent::LogRolledOver { log: self.name.clone(), ledger: writer.ledger, first });
        (self.writer, self.first, self.opened) = (writer, first, self.c.env.clock.mono());
        (self.entries, self.bytes) = (0, 0);
        Ok(())
    }

    /// Writes the list by compare-and-set; losing means another owner has it.
    async fn commit(&mut self, next: LogMeta) -> Result<(), MlError> {
        match write_log(&self.c, &self.name, &next, self.version).await? {
            Some(version) => {
                let mut s = self.shared.lock().expect("shared");
                s.meta = next;
                self.version = version;
                Ok(())
            }
            None => {
                self.c.env.probe(Probe::ManagedLostOwnership);
                Err(MlError::Fenced)
            }
        }
    }
}
