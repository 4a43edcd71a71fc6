//! The world a node runs in: transport, disk, clock, randomness, event sink and
//! planted bugs. The simulator implements these traits; the core only uses them.

use crate::bugs::{Bug, Bugs};
use crate::probe::Probe;
use crate::random::{Random, Streams};
use crate::rpc::Rpc;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A kind of request of some protocol (`Create`, `Fence`, …). Each protocol
/// exports its kinds as constants; fault rules name them, and a name no
/// protocol exports does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind(&'static str);

impl Kind {
    /// For a protocol's own constants; names are unique across [`crate::protocols`].
    pub const fn new(name: &'static str) -> Kind {
        Kind(name)
    }

    pub fn name(self) -> &'static str {
        self.0
    }

    /// The kind some protocol exports under `name`.
    pub fn named(name: &str) -> Result<Kind, String> {
        crate::protocols::kinds().find(|k| k.0 == name).ok_or_else(|| {
            let known: Vec<&str> = crate::protocols::kinds().map(Kind::name).collect();
            format!("unknown message kind '{name}' (known: {})", known.join(", "))
        })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Kind::named(&name).map_err(serde::de::Error::custom)
    }
}

/// What a message is, for fault filters: its request's kind, and whether this
/// is the reply to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgKind {
    pub kind: Kind,
    pub reply: bool,
}

/// Unreliable datagrams between named nodes. Messages may be lost, delayed,
/// duplicated or reordered; a sender is never told.
pub trait Transport: Send + Sync {
    fn send(&self, to: &str, kind: MsgKind, bytes: Vec<u8>) -> BoxFuture<'_, ()>;
    /// The next datagram addressed to this node, with its sender's name.
    fn recv(&self) -> BoxFuture<'_, (String, Vec<u8>)>;
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum DiskError {
    #[error("I/O error")]
    Io,
    #[error("read past the end of {0}")]
    OutOfRange(String),
}

/// A node's private disk: named append-only files. Appends are volatile until
/// `sync`; a crash keeps the synced bytes and maybe a prefix of the rest.
/// `truncate` and `remove` are durable at once.
pub trait Disk: Send + Sync {
    fn append(&self, file: &str, data: &[u8]) -> Result<(), DiskError>;
    fn read(&self, file: &str, offset: u64, len: u64) -> Result<Vec<u8>, DiskError>;
    /// Current length (0 when the file does not exist).
    fn len(&self, file: &str) -> u64;
    fn truncate(&self, file: &str, len: u64) -> Result<(), DiskError>;
    fn remove(&self, file: &str) -> Result<(), DiskError>;
    fn list(&self) -> Vec<String>;
    fn sync<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<(), DiskError>>;
}

/// A node's clocks. The wall clock may be skewed, drift and jump; the monotonic
/// clock only drifts. Timers run on the monotonic clock.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch, as this node believes.
    fn wall_ms(&self) -> u64;
    /// Time since an arbitrary start, at this node's rate.
    fn mono(&self) -> Duration;
    /// Sleeps `d` as measured by this node's monotonic clock.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
}

/// Protocol events worth a timeline; the simulator stamps them with time and node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A node recovered its state from disk.
    Recovered { records: u64, zxid: u64, repaired: u64, dropped_tail_bytes: u64 },
    /// A node found a record it cannot trust and refuses to serve.
    RefusesCorruptState { record: u64 },
    /// A disk operation failed; the node fell back to its durable state.
    DiskFailed { op: String },
    /// The service decided to expire a session (before making it durable).
    SessionExpired { session: u64 },
    /// A disk failure undid these expiries: the sessions live on.
    ExpiryRolledBack { sessions: Vec<u64> },
    /// A stored entry failed its checksum on read; it was not returned.
    ChecksumFailed { ledger: u64, entry: i64 },
    /// Protocol steps of the ledger layer, for timelines and checkers.
    Ledger(LedgerEvent),
}

/// What the ledger protocol did, as recorded for timelines and checkers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum LedgerEvent {
    Created {
        ledger: u64,
        ensemble: Vec<String>,
        qw: usize,
        qa: usize,
    },
    /// `version`: the metadata version the change made, once it is durable
    /// (a writer's compare-and-set); absent for a recovery's change, which
    /// reaches the metadata only with its close.
    EnsembleChanged {
        ledger: u64,
        from_entry: i64,
        ensemble: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    RecoveryStarted {
        ledger: u64,
    },
    /// Fencing reached quorum coverage: every write quorum has fewer than Qa
    /// unfenced bookies, so no add that reaches a bookie only from now on can
    /// reach Qa (copies stored before still count).
    Fenced {
        ledger: u64,
        lac: i64,
    },
    RecoveryClosed {
        ledger: u64,
        last_entry: i64,
    },
    Closed {
        ledger: u64,
        last_entry: i64,
    },
    /// A managed ledger's new owner can append from offset `end` on, to `ledger`.
    LogOpened {
        log: String,
        ledger: u64,
        end: u64,
    },
    /// A managed ledger continued on `ledger`, whose entry 0 is offset `first`.
    LogRolledOver {
        log: String,
        ledger: u64,
        first: u64,
    },
    MarkedUnderReplicated {
        ledger: u64,
        lost: Vec<String>,
    },
    FragmentReplicated {
        ledger: u64,
        first_entry: i64,
        from: String,
        to: String,
    },
    MarkedReplicated {
        ledger: u64,
    },
}

/// Where a node's protocol events and coverage probes go.
pub trait EventSink: Send + Sync {
    fn event(&self, event: Event);
    /// The node reached a rare point of the protocol (DESIGN.md §9).
    fn probe(&self, probe: Probe);
}

/// Everything a node may touch. Cloned freely; all parts are shared.
#[derive(Clone)]
pub struct Env {
    pub name: String,
    pub net: Arc<dyn Transport>,
    pub disk: Arc<dyn Disk>,
    pub clock: Arc<dyn Clock>,
    pub events: Arc<dyn EventSink>,
    pub bugs: Bugs,
    streams: Streams,
    /// The node's one RPC endpoint (one receive loop per transport), made on first use.
    rpc: Arc<Mutex<Option<Arc<Rpc>>>>,
}

impl Env {
    pub fn new(
        name: String,
        net: Arc<dyn Transport>,
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        events: Arc<dyn EventSink>,
        bugs: Bugs,
        rng_seed: u64,
    ) -> Env {
        Env { name, net, disk, clock, events, bugs, streams: Streams::new(rng_seed), rpc: Arc::default() }
    }

    /// This node's RPC endpoint, shared by every client and server on it.
    pub fn rpc(&self) -> Arc<Rpc> {
        let mut slot = self.rpc.lock().expect("rpc slot");
        slot.get_or_insert_with(|| Rpc::start(self)).clone()
    }

    /// Marks that this node reached `probe`.
    pub fn probe(&self, probe: Probe) {
        self.events.probe(probe);
    }

    pub fn bug(&self, bug: Bug) -> bool {
        self.bugs.has(bug)
    }

    /// This node's random stream for `purpose` (a component's name): its own
    /// sequence, unaffected by draws for any other purpose.
    pub fn random(&self, purpose: &'static str) -> Random {
        self.streams.get(purpose)
    }

    pub fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        self.clock.sleep(d)
    }
}
