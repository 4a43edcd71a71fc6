//! The client operations a history records: what each was asked to do (a
//! [`Call`], at invocation) and what it answered (a [`Ret`], when it ended
//! well). Both are tagged by `op`, so a completion names its operation too and
//! a reader can tell when it does not match its invocation.

use mqsim_core::bookie::{EntryId, LedgerId};
use mqsim_core::ledger::LedgerMeta;
use mqsim_core::meta::{SessionId, Stat};
use serde::{Deserialize, Serialize};

/// What a client operation was asked to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    // The metadata service (scenario `meta`).
    OpenSession {
        timeout_ms: u64,
    },
    Heartbeat {
        session: SessionId,
    },
    CloseSession {
        session: SessionId,
    },
    /// `session`: the owner of an ephemeral key. A sequential create names the
    /// prefix in `key`; the service appends a counter.
    Create {
        key: String,
        value: String,
        session: Option<SessionId>,
        sequential: bool,
    },
    Get {
        key: String,
    },
    /// A compare-and-set when `version` is given.
    Set {
        key: String,
        value: String,
        version: Option<u64>,
    },
    Delete {
        key: String,
        version: Option<u64>,
    },
    Children {
        key: String,
    },
    /// The checker node's final reads, as one operation around them all.
    FinalReads,
    // Ledgers (scenarios `ledger-fencing`, `ledger-repair`).
    CreateLedger {
        e: usize,
        qw: usize,
        qa: usize,
    },
    Add {
        ledger: LedgerId,
        value: String,
    },
    Close {
        ledger: LedgerId,
    },
    /// The first half of recovery: IN_RECOVERY, then fencing to quorum coverage.
    Fence {
        ledger: LedgerId,
    },
    /// The rest of a recovery whose fence succeeded: read forward, rewrite, close.
    Recover {
        ledger: LedgerId,
    },
    ReadMeta {
        ledger: LedgerId,
    },
    /// A reader client's read of one entry through the protocol.
    ReadEntry {
        ledger: LedgerId,
        entry: EntryId,
    },
    /// A normal add sent straight to `bookie`, which must refuse it if it ever
    /// acknowledged a fence of `ledger`.
    ProbeFence {
        ledger: LedgerId,
        bookie: String,
    },
    ListBookies,
    ListLedgers,
    // Scenario `selftest`.
    Tick,
}

/// What a client operation answered, when it succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Ret {
    // The metadata service: every answer carries the service's zxid.
    OpenSession {
        session: SessionId,
        zxid: u64,
    },
    Heartbeat {
        zxid: u64,
    },
    CloseSession {
        zxid: u64,
    },
    Create {
        path: String,
        stat: Stat,
        zxid: u64,
    },
    /// `value` and `stat` are absent when the key does not exist.
    Get {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stat: Option<Stat>,
        zxid: u64,
    },
    Set {
        stat: Stat,
        zxid: u64,
    },
    Delete {
        zxid: u64,
    },
    Children {
        children: Vec<String>,
        zxid: u64,
    },
    FinalReads,
    // Ledgers.
    CreateLedger {
        ledger: LedgerId,
    },
    Add {
        entry: EntryId,
    },
    Close {
        last_entry: EntryId,
    },
    /// The highest LAC the fenced bookies reported, and which bookies acknowledged the fence.
    Fence {
        lac: EntryId,
        bookies: Vec<String>,
    },
    Recover {
        last_entry: EntryId,
    },
    /// The metadata and its version.
    ReadMeta {
        version: u64,
        #[serde(flatten)]
        meta: LedgerMeta,
    },
    ReadEntry {
        value: String,
    },
    /// Whether the bookie refused the add as fenced.
    ProbeFence {
        refused: bool,
    },
    ListBookies {
        bookies: Vec<String>,
    },
    ListLedgers {
        ledgers: Vec<LedgerId>,
    },
    Tick,
}

impl Call {
    /// The operation's name, as the `op` field spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Call::OpenSession { .. } => "open_session",
            Call::Heartbeat { .. } => "heartbeat",
            Call::CloseSession { .. } => "close_session",
            Call::Create { .. } => "create",
            Call::Get { .. } => "get",
            Call::Set { .. } => "set",
            Call::Delete { .. } => "delete",
            Call::Children { .. } => "children",
            Call::FinalReads => "final_reads",
            Call::CreateLedger { .. } => "create_ledger",
            Call::Add { .. } => "add",
            Call::Close { .. } => "close",
            Call::Fence { .. } => "fence",
            Call::Recover { .. } => "recover",
            Call::ReadMeta { .. } => "read_meta",
            Call::ReadEntry { .. } => "read_entry",
            Call::ProbeFence { .. } => "probe_fence",
            Call::ListBookies => "list_bookies",
            Call::ListLedgers => "list_ledgers",
            Call::Tick => "tick",
        }
    }

    /// The key a metadata operation names.
    pub fn key(&self) -> Option<&str> {
        match self {
            Call::Create { key, .. }
            | Call::Get { key }
            | Call::Set { key, .. }
            | Call::Delete { key, .. }
            | Call::Children { key } => Some(key),
            _ => None,
        }
    }

    /// The ledger a ledger operation names.
    pub fn ledger(&self) -> Option<LedgerId> {
        match self {
            Call::Add { ledger, .. }
            | Call::Close { ledger }
            | Call::Fence { ledger }
            | Call::Recover { ledger }
            | Call::ReadMeta { ledger }
            | Call::ReadEntry { ledger, .. }
            | Call::ProbeFence { ledger, .. } => Some(*ledger),
            _ => None,
        }
    }
}

impl Ret {
    /// The operation's name, as the `op` field spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Ret::OpenSession { .. } => "open_session",
            Ret::Heartbeat { .. } => "heartbeat",
            Ret::CloseSession { .. } => "close_session",
            Ret::Create { .. } => "create",
            Ret::Get { .. } => "get",
            Ret::Set { .. } => "set",
            Ret::Delete { .. } => "delete",
            Ret::Children { .. } => "children",
            Ret::FinalReads => "final_reads",
            Ret::CreateLedger { .. } => "create_ledger",
            Ret::Add { .. } => "add",
            Ret::Close { .. } => "close",
            Ret::Fence { .. } => "fence",
            Ret::Recover { .. } => "recover",
            Ret::ReadMeta { .. } => "read_meta",
            Ret::ReadEntry { .. } => "read_entry",
            Ret::ProbeFence { .. } => "probe_fence",
            Ret::ListBookies { .. } => "list_bookies",
            Ret::ListLedgers { .. } => "list_ledgers",
            Ret::Tick => "tick",
        }
    }

    /// The metadata service's zxid, for answers of the metadata service.
    pub fn zxid(&self) -> Option<u64> {
        match self {
            Ret::OpenSession { zxid, .. }
            | Ret::Heartbeat { zxid }
            | Ret::CloseSession { zxid }
            | Ret::Create { zxid, .. }
            | Ret::Get { zxid, .. }
            | Ret::Set { zxid, .. }
            | Ret::Delete { zxid }
            | Ret::Children { zxid, .. } => Some(*zxid),
            _ => None,
        }
    }

    /// The key's state an answer reveals (create, get of a present key, set).
    pub fn stat(&self) -> Option<&Stat> {
        match self {
            Ret::Create { stat, .. } | Ret::Set { stat, .. } => Some(stat),
            Ret::Get { stat, .. } => stat.as_ref(),
            _ => None,
        }
    }
}
