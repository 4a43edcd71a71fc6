//! The ledger client: ledger metadata kept in the metadata service (every state
//! change a compare-and-set on its version), the writer, recovery and readers.

mod recovery;
mod writer;

pub use recovery::{fence, recover, Fenced};
pub use writer::LedgerWriter;

use crate::bookie::{self, BookieError, Entry, EntryId, LedgerId};
use crate::env::{Env, Event, LedgerEvent};
use crate::meta::{MetaClient, MetaError};
use crate::rpc::Rpc;
use futures::stream::{FuturesUnordered, StreamExt};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const LEDGERS: &str = "/ledgers";
pub const BOOKIE_TIMEOUT: Duration = Duration::from_secs(1);
const META_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Open,
    InRecovery,
    Closed,
}

/// A ledger's metadata: E ≥ Qw ≥ Qa, and its fragments (first entry → ensemble).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerMeta {
    pub state: State,
    /// The last entry, once closed (-1 for an empty ledger).
    pub last_entry: EntryId,
    pub qw: usize,
    pub qa: usize,
    #[serde(with = "fragment_list")]
    pub ensembles: BTreeMap<EntryId, Vec<String>>,
}

/// Fragments as a list of (first entry, ensemble) pairs. Postcard encodes a map
/// and such a list alike; JSON could not key a map by number once serde buffers
/// a record (tagged or flattened), as the history does.
mod fragment_list {
    use super::EntryId;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(map: &BTreeMap<EntryId, Vec<String>>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<EntryId, Vec<String>>, D::Error> {
        Ok(Vec::<(EntryId, Vec<String>)>::deserialize(d)?.into_iter().collect())
    }
}

impl LedgerMeta {
    /// The fragment holding `entry`: its first entry and ensemble.
    pub fn fragment(&self, entry: EntryId) -> (EntryId, &Vec<String>) {
        let (first, ensemble) = self.ensembles.range(..=entry.max(0)).next_back().expect("fragment 0 exists");
        (*first, ensemble)
    }

    pub fn last_fragment(&self) -> (EntryId, &Vec<String>) {
        let (first, ensemble) = self.ensembles.iter().next_back().expect("fragment 0 exists");
        (*first, ensemble)
    }

    /// The bookies that store `entry`: `(entry + w) mod E` for `w < Qw`.
    pub fn write_set(&self, entry: EntryId) -> Vec<String> {
        write_set(self.fragment(entry).1, entry, self.qw)
    }

    /// Whether `bookie` is in the write set of `entry` (without building the set).
    pub fn stores(&self, entry: EntryId, bookie: &str) -> bool {
        let ensemble = self.fragment(entry).1;
        (0..self.qw).any(|w| ensemble[(entry as usize + w) % ensemble.len()] == bookie)
    }
}

pub fn write_set(ensemble: &[String], entry: EntryId, qw: usize) -> Vec<String> {
    let e = ensemble.len();
    (0..qw).map(|w| ensemble[(entry as usize + w) % e].clone()).collect()
}

pub fn path(ledger: LedgerId) -> String {
    format!("{LEDGERS}/L{ledger:010}")
}

/// The ledger metadata stored at a ledger's path, or `None` when the bytes are not one.
pub fn decode_meta(bytes: &[u8]) -> Option<LedgerMeta> {
    postcard::from_bytes(bytes).ok()
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger fenced by recovery")]
    Fenced,
    #[error("ledger closed")]
    Closed,
    /// Recovery found the ledger closed already, at this last entry.
    #[error("ledger already closed at entry {0}")]
    AlreadyClosed(EntryId),
    #[error("not enough bookies")]
    NotEnoughBookies,
    #[error("metadata service unavailable")]
    Meta,
    #[error("no such ledger")]
    NoSuchLedger,
    /// Recovery could not decide an entry or reach quorum coverage; try later.
    #[error("recovery incomplete")]
    RecoveryIncomplete,
    #[error("entry unreadable")]
    Unreadable,
}

/// A handle for ledger operations on one node.
#[derive(Clone)]
pub struct LedgerClient {
    pub env: Env,
    pub meta: MetaClient,
    pub rpc: Arc<Rpc>,
}

impl LedgerClient {
    pub fn new(env: &Env, meta_server: &str) -> LedgerClient {
        LedgerClient { env: env.clone(), meta: MetaClient::new(env, meta_server, META_TIMEOUT), rpc: env.rpc() }
    }

    pub fn event(&self, e: LedgerEvent) {
        self.env.events.event(Event::Ledger(e));
    }

    /// The metadata of `ledger` and its version.
    pub async fn read_meta(&self, ledger: LedgerId) -> Result<(LedgerMeta, u64), LedgerError> {
        match self.meta.get(&path(ledger)).await {
            Ok(Some((bytes, stat))) => {
                let meta = decode_meta(&bytes).ok_or(LedgerError::Meta)?;
                Ok((meta, stat.version))
            }
            Ok(None) => Err(LedgerError::NoSuchLedger),
            Err(_) => Err(LedgerError::Meta),
        }
    }

    /// Compare-and-set of the metadata. `Ok(None)`: the version moved on.
    pub async fn write_meta(
        &self,
        ledger: LedgerId,
        meta: &LedgerMeta,
        version: u64,
    ) -> Result<Option<u64>, LedgerError> {
        let bytes = postcard::to_allocvec(meta).expect("encode ledger metadata");
        match self.meta.set(&path(ledger), bytes, Some(version)).await {
            Ok(stat) => Ok(Some(stat.version)),
            Err(MetaError::BadVersion) => Ok(None),
            // The outcome is unknown: look, and take it as done if it is there.
            Err(MetaError::Timeout) => match self.read_meta(ledger).await {
                Ok((now, v)) if now == *meta => Ok(Some(v)),
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            },
            Err(_) => Err(LedgerError::Meta),
        }
    }

    pub async fn registered_bookies(&self) -> Result<Vec<String>, LedgerError> {
        self.meta.children(bookie::REGISTRY).await.map_err(|_| LedgerError::Meta)
    }

    /// Creates a ledger on `e` registered bookies chosen at random.
    pub async fn create(&self, e: usize, qw: usize, qa: usize) -> Result<LedgerWriter, LedgerError> {
        let bookies = self.registered_bookies().await?;
        self.create_among(bookies, e, qw, qa).await
    }

    /// Creates a ledger on `e` of `bookies` chosen at random, every choice
    /// equally likely (BookKeeper's default placement).
    pub async fn create_among(
        &self,
        mut bookies: Vec<String>,
        e: usize,
        qw: usize,
        qa: usize,
    ) -> Result<LedgerWriter, LedgerError> {
        if bookies.len() < e {
            return Err(LedgerError::NotEnoughBookies);
        }
        self.env.random("ledger-placement").with(|r| bookies.shuffle(r));
        bookies.truncate(e);
        let meta = LedgerMeta { state: State::Open, last_entry: -1, qw, qa, ensembles: BTreeMap::from([(0, bookies)]) };
        let bytes = postcard::to_allocvec(&meta).expect("encode ledger metadata");
        let (created, _) =
            self.meta.create(&format!("{LEDGERS}/L"), bytes, None, true).await.map_err(|_| LedgerError::Meta)?;
        let ledger: LedgerId = created.rsplit('L').next().and_then(|n| n.parse().ok()).ok_or(LedgerError::Meta)?;
        self.event(LedgerEvent::Created { ledger, ensemble: meta.ensembles[&0].clone(), qw, qa });
        Ok(LedgerWriter::start(self.clone(), ledger, meta, 0))
    }

    /// Ids of every ledger in the metadata service.
    pub async fn ledgers(&self) -> Result<Vec<LedgerId>, LedgerError> {
        let names = self.meta.children(LEDGERS).await.map_err(|_| LedgerError::Meta)?;
        Ok(names.iter().filter_map(|n| n.strip_prefix('L')?.parse().ok()).collect())
    }

    /// A bookie not in `avoid`, chosen at random among the registered ones.
    pub async fn replacement(&self, avoid: &[String]) -> Result<String, LedgerError> {
        let candidates: Vec<String> =
            self.registered_bookies().await?.into_iter().filter(|b| !avoid.contains(b)).collect();
        self.env.random("ledger-placement").with(|r| candidates.choose(r).cloned()).ok_or(LedgerError::NotEnoughBookies)
    }

    pub async fn call(&self, bookie: &str, req: bookie::Request) -> Result<bookie::Response, BookieError> {
        match self.rpc.call::<bookie::Bookie>(bookie, &req, BOOKIE_TIMEOUT).await {
            Ok(bookie::Response::Error(e)) => Err(e),
            Ok(resp) => Ok(resp),
            Err(e) => {
                tracing::debug!(%bookie, "no answer: {e}");
                Err(BookieError::Fault)
            }
        }
    }

    /// Sends `req(bookie)` to every bookie at once; answers as they come.
    pub fn fan_out<'a>(
        &'a self,
        bookies: &[String],
        req: impl Fn(&str) -> bookie::Request,
    ) -> FuturesUnordered<futures::future::BoxFuture<'a, (String, Result<bookie::Response, BookieError>)>> {
        bookies
            .iter()
            .map(|b| {
                let (b, r) = (b.clone(), req(b));
                Box::pin(async move {
                    let res = self.call(&b, r).await;
                    (b, res)
                }) as futures::future::BoxFuture<'a, _>
            })
            .collect()
    }

    /// Reads `entry` from the first bookie of its write set that has it intact.
    pub async fn read_entry(&self, meta: &LedgerMeta, ledger: LedgerId, entry: EntryId) -> Result<Entry, LedgerError> {
        for b in meta.write_set(entry) {
            if let Ok(bookie::Response::Entry(e)) =
                self.call(&b, bookie::Request::Read { ledger, entry, fence: false }).await
            {
                if e.intact() && e.ledger == ledger && e.entry == entry {
                    return Ok(e);
                }
            }
        }
        Err(LedgerError::Unreadable)
    }

    /// Reads every entry of a closed ledger with one batch read per bookie of
    /// each fragment; each entry is taken, as [`LedgerClient::read_entry`]
    /// would, from the first bookie of its write set that returned it intact.
    /// Entries no bookie returned are left out: read them one by one.
    pub async fn read_all(&self, meta: &LedgerMeta, ledger: LedgerId) -> BTreeMap<EntryId, Entry> {
        let mut fragments: Vec<(EntryId, EntryId, &Vec<String>)> = Vec::new();
        let bounds: Vec<(&EntryId, &Vec<String>)> = meta.ensembles.iter().collect();
        for (i, (first, ensemble)) in bounds.iter().enumerate() {
            let last = bounds.get(i + 1).map_or(meta.last_entry, |(next, _)| **next - 1).min(meta.last_entry);
            if **first <= last {
                fragments.push((**first, last, ensemble));
            }
        }
        let mut copies: BTreeMap<(EntryId, String), Entry> = BTreeMap::new();
        for (first, last, ensemble) in fragments {
            let mut answers = self.fan_out(ensemble, |_| bookie::Request::ReadBatch { ledger, first, last });
            while let Some((b, res)) = answers.next().await {
                if let Ok(bookie::Response::Batch(entries)) = res {
                    for e in entries.into_iter().filter(|e| e.intact() && e.ledger == ledger) {
                        copies.insert((e.entry, b.clone()), e);
                    }
                }
            }
        }
        let mut read = BTreeMap::new();
        for entry in 0..=meta.last_entry {
            if let Some(e) = meta.write_set(entry).into_iter().find_map(|b| copies.remove(&(entry, b))) {
                read.insert(entry, e);
            }
        }
        read
    }

    /// The last add confirmed of an open ledger, as its last ensemble reports it.
    pub async fn read_lac(&self, meta: &LedgerMeta, ledger: LedgerId) -> EntryId {
        let mut answers = self.fan_out(meta.last_fragment().1, |_| bookie::Request::ReadLac { ledger, fence: false });
        let mut lac = -1;
        while let Some((_, res)) = answers.next().await {
            if let Ok(bookie::Response::Lac(l)) = res {
                lac = lac.max(l);
            }
        }
        lac
    }
}
