//! The ledger writer: adds are striped round-robin over the ensemble, each sent
//! to its Qw bookies and acknowledged, in order, once Qa of them stored it; the
//! LAC is the contiguous acknowledged prefix. A failed bookie is replaced from
//! LAC+1 on by compare-and-set of the metadata, and pending adds are resent.
//! "Fenced" from a bookie, or metadata found IN_RECOVERY or CLOSED, stops it.

use super::{LedgerClient, LedgerError, LedgerMeta, State};
use crate::bookie::{self, BookieError, Entry, EntryId, LedgerId};
use crate::bugs::Bug;
use crate::env::LedgerEvent;
use crate::probe::Probe;
use futures::channel::{mpsc, oneshot};
use futures::stream::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Told the outcome of an add or a close, from within the writer, in the
/// order the writer decides (BookKeeper's add callbacks); dropped unsaid only
/// when the writer itself is gone.
type Done = Box<dyn FnOnce(Result<EntryId, LedgerError>) + Send>;

enum Cmd {
    Add(Vec<u8>, Done),
    Close(Done),
}

/// A handle on an open ledger's writer task; adds may be pipelined.
pub struct LedgerWriter {
    pub ledger: LedgerId,
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl LedgerWriter {
    pub(super) fn start(client: LedgerClient, ledger: LedgerId, meta: LedgerMeta, version: u64) -> LedgerWriter {
        let (tx, rx) = mpsc::unbounded();
        let (answers, answers_rx) = mpsc::unbounded();
        let actor = Actor {
            c: client,
            answers,
            ledger,
            meta,
            version,
            lac: -1,
            next: 0,
            pending: BTreeMap::new(),
            failed: None,
            closing: None,
        };
        madsim::task::spawn(actor.run(rx, answers_rx));
        LedgerWriter { ledger, cmds: tx }
    }

    /// Queues an add; the returned future resolves when it is acknowledged.
    pub fn add(&self, payload: Vec<u8>) -> impl std::future::Future<Output = Result<EntryId, LedgerError>> {
        let (tx, rx) = oneshot::channel();
        self.add_then(payload, move |result| {
            let _ = tx.send(result);
        });
        async move { rx.await.unwrap_or(Err(LedgerError::Closed)) }
    }

    /// Queues an add; `done` is called with its outcome as the writer decides
    /// it, so outcomes are seen in exactly the writer's order.
    pub fn add_then(&self, payload: Vec<u8>, done: impl FnOnce(Result<EntryId, LedgerError>) + Send + 'static) {
        if let Err(e) = self.cmds.unbounded_send(Cmd::Add(payload, Box::new(done))) {
            if let Cmd::Add(_, done) = e.into_inner() {
                done(Err(LedgerError::Closed));
            }
        }
    }

    /// Waits for pending adds, then closes the ledger at its LAC.
    pub async fn close(&self) -> Result<EntryId, LedgerError> {
        let (tx, rx) = oneshot::channel();
        let done: Done = Box::new(move |result| {
            let _ = tx.send(result);
        });
        let _ = self.cmds.unbounded_send(Cmd::Close(done));
        rx.await.unwrap_or(Err(LedgerError::Closed))
    }
}

struct Pending {
    entry: Entry,
    acks: BTreeSet<String>,
    done: Done,
}

/// A bookie's answer to an add: the entry, the bookie, the metadata version
/// the add was sent under, and the result.
type Answer = (EntryId, String, u64, Result<bookie::Response, BookieError>);

struct Actor {
    c: LedgerClient,
    /// Where the bookies' answers to adds come back to the actor.
    answers: mpsc::UnboundedSender<Answer>,
    ledger: LedgerId,
    meta: LedgerMeta,
    version: u64,
    lac: EntryId,
    next: EntryId,
    pending: BTreeMap<EntryId, Pending>,
    failed: Option<LedgerError>,
    closing: Option<Done>,
}

const ENSEMBLE_CHANGE_ATTEMPTS: usize = 10;
/// How long to wait before asking the metadata service again (jittered).
const RETRY: Duration = Duration::from_millis(300);

impl Actor {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>, mut answers: mpsc::UnboundedReceiver<Answer>) {
        // Once the handle is gone, the adds already queued still end and are told.
        let mut orphaned = false;
        loop {
            if self.pending.is_empty() {
                if let Some(done) = self.closing.take() {
                    done(self.close().await);
                    return;
                }
                if orphaned {
                    return;
                }
            }
            // Biased, not `select!`: its random branch order comes from a
            // thread-local generator outside the seed (DESIGN.md section 7).
            futures::select_biased! {
                (entry, bookie, sent_under, result) = answers.select_next_some() => {
                    self.answer(entry, bookie, sent_under, result).await;
                }
                cmd = cmds.next() => match cmd {
                    Some(Cmd::Add(payload, done)) => self.add(payload, done),
                    Some(Cmd::Close(done)) => self.closing = Some(done),
                    None => orphaned = true,
                },
                complete => return,
            }
        }
    }

    fn add(&mut self, payload: Vec<u8>, done: Done) {
        if let Some(err) = self.failed.clone().or(self.closing.as_ref().map(|_| LedgerError::Closed)) {
            done(Err(err));
            return;
        }
        let id = self.next;
        self.next += 1;
        let entry = Entry::new(self.ledger, id, self.lac, payload);
        for b in self.meta.write_set(id) {
            self.send(&entry, b);
        }
        self.pending.insert(id, Pending { entry, acks: BTreeSet::new(), done });
    }

    /// Sends an add to `bookie` now, in a task of its own, so its timeout runs
    /// from now even while the actor waits on the metadata service (an
    /// ensemble change); the answer comes back through `answers`.
    fn send(&self, entry: &Entry, bookie: String) {
        let (c, id, answers, version) = (self.c.clone(), entry.entry, self.answers.clone(), self.version);
        let req = bookie::Request::Add { entry: entry.clone(), recovery: false };
        madsim::task::spawn(async move {
            let res = c.call(&bookie, req).await;
            let _ = answers.unbounded_send((id, bookie, version, res));
        });
    }

    async fn answer(
        &mut self,
        id: EntryId,
        bookie: String,
        sent_under: u64,
        result: Result<bookie::Response, BookieError>,
    ) {
        // An answer from a bookie replaced since is moot.
        if !self.meta.stores(id, &bookie) {
            return;
        }
        // So is a failure of a pending add sent before the last ensemble
        // change: that change sent it again to every bookie of its write set
        // without an acknowledgement, this one included. Taking such failures
        // as new ones replaced bookies over and over, long after a fault ended
        // (a livelock `tx-crash` seed 75 found: delayed adds all timed out,
        // and each stale timeout changed the ensemble again).
        let failed = !matches!(result, Ok(bookie::Response::Added) | Err(BookieError::Fenced));
        if failed && sent_under < self.version && self.pending.contains_key(&id) {
            return;
        }
        // A failure after the entry reached Qa elsewhere (a delayed write
        // failure) still replaces the bookie, so later entries get Qw copies.
        if !self.pending.contains_key(&id) {
            if failed && self.failed.is_none() && self.meta.last_fragment().1.contains(&bookie) {
                self.c.env.probe(Probe::WriterDelayedWriteFailure);
                self.replace(&bookie).await;
            }
            return;
        }
        match result {
            Ok(bookie::Response::Added) => {
                self.pending.get_mut(&id).expect("pending").acks.insert(bookie);
                self.acknowledge_prefix();
            }
            Err(BookieError::Fenced) if !self.c.env.bug(Bug::WriterIgnoresFenced) => {
                self.c.env.probe(Probe::WriterFenced);
                self.fail(LedgerError::Fenced)
            }
            other => {
                tracing::debug!(%bookie, entry = id, ?other, "add failed: replacing the bookie");
                self.replace(&bookie).await
            }
        }
    }

    /// Acknowledges, in entry order, every pending add that reached Qa.
    fn acknowledge_prefix(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().acks.len() < self.meta.qa {
                return;
            }
            let p = entry.remove();
            self.lac = p.entry.entry;
            (p.done)(Ok(p.entry.entry));
        }
    }

    fn fail(&mut self, err: LedgerError) {
        self.failed = Some(err.clone());
        for (_, p) in std::mem::take(&mut self.pending) {
            (p.done)(Err(err.clone()));
        }
    }

    /// Ensemble change: replace `bookie` in the last ensemble from LAC+1 on,
    /// then resend every pending add to the bookies it now lacks.
    async fn replace(&mut self, bookie: &str) {
        let ignores_fence = self.c.env.bug(Bug::WriterIgnoresFenced);
        for attempt in 0.. {
            if attempt == ENSEMBLE_CHANGE_ATTEMPTS {
                return self.fail(LedgerError::NotEnoughBookies);
            }
            let (_, last) = self.meta.last_fragment();
            if !last.iter().any(|b| b == bookie) {
                break; // already replaced
            }
            let Ok(new_bookie) = self.c.replacement(last).await else {
                self.c.env.sleep(self.c.env.random("ledger-writer").jitter(RETRY)).await;
                continue;
            };
            let ensemble: Vec<String> =
                last.iter().map(|b| if b == bookie { new_bookie.clone() } else { b.clone() }).collect();
            let mut next = self.meta.clone();
            next.ensembles.insert(self.lac + 1, ensemble.clone());
            match self.c.write_meta(self.ledger, &next, self.version).await {
                Ok(Some(version)) => {
                    self.c.env.probe(Probe::WriterEnsembleChange);
                    (self.meta, self.version) = (next, version);
                    let event = LedgerEvent::EnsembleChanged {
                        ledger: self.ledger,
                        from_entry: self.lac + 1,
                        ensemble,
                        version: Some(version),
                    };
                    self.c.event(event);
                    break;
                }
                Ok(None) => match self.c.read_meta(self.ledger).await {
                    Ok((meta, _)) if meta.state == State::InRecovery && !ignores_fence => {
                        self.c.env.probe(Probe::WriterFoundInRecovery);
                        return self.fail(LedgerError::Fenced);
                    }
                    Ok((meta, _)) if meta.state == State::Closed && !ignores_fence => {
                        return self.fail(LedgerError::Closed)
                    }
                    Ok((meta, version)) => {
                        self.c.env.probe(Probe::WriterMetadataRace);
                        // Keep our fragments (only this writer adds them); take the rest as it is now.
                        let ensembles = std::mem::take(&mut self.meta.ensembles);
                        (self.meta, self.version) = (LedgerMeta { ensembles, ..meta }, version);
                    }
                    Err(_) => self.c.env.sleep(self.c.env.random("ledger-writer").jitter(RETRY)).await,
                },
                Err(_) => self.c.env.sleep(self.c.env.random("ledger-writer").jitter(RETRY)).await,
            }
        }
        let mut resend = Vec::new();
        for p in self.pending.values_mut() {
            let set = self.meta.write_set(p.entry.entry);
            p.acks.retain(|b| set.contains(b));
            resend.extend(set.into_iter().filter(|b| !p.acks.contains(b)).map(|b| (p.entry.clone(), b)));
        }
        if !resend.is_empty() {
            self.c.env.probe(Probe::WriterResentPending);
        }
        for (entry, b) in resend {
            self.send(&entry, b);
        }
    }

    /// Closes the ledger at its LAC by compare-and-set.
    async fn close(&mut self) -> Result<EntryId, LedgerError> {
        if let Some(err) = self.failed.clone() {
            return Err(err);
        }
        for _ in 0..ENSEMBLE_CHANGE_ATTEMPTS {
            let closed = LedgerMeta { state: State::Closed, last_entry: self.lac, ..self.meta.clone() };
            match self.c.write_meta(self.ledger, &closed, self.version).await {
                Ok(Some(_)) => {
                    self.c.event(LedgerEvent::Closed { ledger: self.ledger, last_entry: self.lac });
                    return Ok(self.lac);
                }
                Ok(None) => match self.c.read_meta(self.ledger).await {
                    Ok((m, _)) if m.state == State::Closed => {
                        self.c.env.probe(Probe::WriterCloseLostRace);
                        return if m.last_entry == self.lac { Ok(self.lac) } else { Err(LedgerError::Closed) };
                    }
                    Ok((m, _)) if m.state == State::InRecovery => {
                        self.c.env.probe(Probe::WriterCloseLostRace);
                        return Err(LedgerError::Fenced);
                    }
                    Ok((m, v)) => (self.meta, self.version) = (m, v),
                    Err(_) => self.c.env.sleep(self.c.env.random("ledger-writer").jitter(RETRY)).await,
                },
                Err(_) => self.c.env.sleep(self.c.env.random("ledger-writer").jitter(RETRY)).await,
            }
        }
        Err(LedgerError::Meta)
    }
}
