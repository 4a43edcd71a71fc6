//! The client operations a history records: what each was asked to do (a
//! [`Call`], at invocation) and what it answered (a [`Ret`], when it ended
//! well). Both are tagged by `op`, so a completion names its operation too and
//! a reader can tell when it does not match its invocation.

use mqsim_core::bookie::{EntryId, LedgerId};
use mqsim_core::broker::txn::Resolution;
use mqsim_core::ledger::LedgerMeta;
use mqsim_core::meta::{SessionId, Stat};
use mqsim_core::producer::local_tx::TxState;
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
    // Managed ledgers (scenario `managed-ledger`): a queue's log over ledgers.
    /// Opening the log as its new owner (which fences the previous owner).
    OpenLog {
        log: String,
    },
    Append {
        log: String,
        value: String,
    },
    /// A read for consumer group `group`.
    ReadLog {
        log: String,
        group: String,
        offset: u64,
    },
    /// Moves a group's durable cursor to `offset` (the next offset to read).
    CommitCursor {
        log: String,
        group: String,
        offset: u64,
    },
    ReadCursor {
        log: String,
        group: String,
    },
    /// The checker node's read of a whole log, after it closed the log.
    FinalLog {
        log: String,
    },
    // Messaging (scenarios `pubsub`, `routes`).
    /// A producer's send: `msg_id` is set once and kept across its retries;
    /// `body` is unique per send; `shard` picks the queue by hash when given.
    /// A consumer's send of a message it failed to process to its group's
    /// retry or dead-letter topic names the message it consumed (`back`).
    Send {
        topic: String,
        tag: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keys: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<String>,
        msg_id: String,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        back: Option<SentBack>,
    },
    /// A client's route query to one NameServer.
    Routes {
        nameserver: String,
        topic: String,
    },
    /// A broker's registration with one NameServer: the queues it owns.
    Register {
        nameserver: String,
        queues: Vec<QueueRef>,
    },
    /// A consumer's rebalance: which queues of `topic` it now holds for `group`.
    Rebalance {
        group: String,
        topic: String,
    },
    /// A group's committed offset of a queue, as the broker reports it.
    FetchOffset {
        group: String,
        topic: String,
        queue: u32,
    },
    /// A pull from `offset` on.
    Poll {
        group: String,
        topic: String,
        queue: u32,
        offset: u64,
    },
    /// The application processed one delivered message.
    Process {
        group: String,
        topic: String,
        queue: u32,
        offset: u64,
        msg_id: String,
    },
    /// Commits `offset` (the smallest offset not yet processed) for the group.
    Commit {
        group: String,
        topic: String,
        queue: u32,
        offset: u64,
    },
    /// An ordered consumer locks (or renews its lock of) a queue at its broker.
    Lock {
        group: String,
        topic: String,
        queue: u32,
    },
    /// An ordered consumer gives its lock of a queue back.
    Unlock {
        group: String,
        topic: String,
        queue: u32,
    },
    /// A broker that took the leader lock reads its term.
    Lead {},
    /// The leader broker of `term` writes its assignments with these moves.
    Assign {
        term: u64,
        moves: Vec<Moved>,
    },
    /// Asks one broker for the messages with `key` in its queues of `topic`.
    QueryKey {
        broker: String,
        topic: String,
        key: String,
    },
    /// The checker node's read of a whole queue at the end.
    ReadQueue {
        topic: String,
        queue: u32,
    },
    // Transactions (scenarios `tx-checkback`, `tx-crash`).
    /// A producer of `group` sends the half of transaction `msg_id` (its
    /// local transaction began durably first).
    SendHalf {
        group: String,
        topic: String,
        tag: String,
        msg_id: String,
        body: String,
    },
    /// The producer records its local decision about `msg_id` durably.
    Decide {
        msg_id: String,
        state: TxState,
    },
    /// The producer sends its end message about `msg_id`, one-way: it ends at once.
    EndTx {
        msg_id: String,
        broker: String,
        queue: u32,
        half: u64,
        word: Resolution,
    },
    /// A check-back from `broker` about the half at `half` of `queue`
    /// reached the producer, which answered `answer`; `check` counts the
    /// half's check-backs, this one included. Recorded as it is answered.
    CheckBack {
        broker: String,
        queue: u32,
        half: u64,
        msg_id: String,
        check: u32,
        answer: Resolution,
    },
    /// A producer reads its whole local transaction store at the end.
    LocalTxs,
    /// The checker node's read of a queue's half, op and discard logs and the check service's offsets.
    ReadTxLogs {
        topic: String,
        queue: u32,
    },
    // Scenario `selftest`.
    Tick,
}

/// A transaction in a producer's local store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalState {
    pub msg_id: String,
    pub state: TxState,
}

/// One copy of a half in a half log (or the discard log).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxHalf {
    pub offset: u64,
    /// The offset of its first copy in the half log.
    pub origin: u64,
    pub msg_id: String,
    pub checks: u32,
}

/// One queue of a topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueueRef {
    pub topic: String,
    pub queue: u32,
}

/// A broker's queues in a route answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub broker: String,
    pub queues: Vec<u32>,
}

/// The message a consumer of `group` processed at `offset` of `topic`/`queue`
/// and sent back because it failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentBack {
    pub group: String,
    pub topic: String,
    pub queue: u32,
    pub offset: u64,
    pub msg_id: String,
}

/// One queue a leader moved: `topic`/`queue` to broker `to` (from `from`, if assigned).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    pub topic: String,
    pub queue: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
}

/// One message of a poll answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Polled {
    pub offset: u64,
    pub msg_id: String,
    pub tag: String,
}

/// A queue a query by key searched, below offset `end` (its durable end then).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Searched {
    pub queue: u32,
    pub end: u64,
}

/// One message a query by key found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    pub queue: u32,
    pub offset: u64,
    pub msg_id: String,
}

/// One message of a queue as it is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub offset: u64,
    pub msg_id: String,
    pub tag: String,
    pub body: String,
}

/// One ledger of a log, as the final read found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub ledger: LedgerId,
    /// The log offset of the ledger's entry 0.
    pub first: u64,
    pub entries: u64,
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
    /// `end`: the log's length when the new owner could write (offsets below
    /// it exist); `ledger`: the ledger it added for its appends.
    OpenLog {
        end: u64,
        ledger: LedgerId,
    },
    Append {
        offset: u64,
    },
    ReadLog {
        value: String,
    },
    CommitCursor,
    ReadCursor {
        offset: u64,
    },
    /// The log's ledgers and every value in offset order.
    FinalLog {
        segments: Vec<Segment>,
        values: Vec<String>,
    },
    /// Where the message was stored.
    Send {
        broker: String,
        queue: u32,
        offset: u64,
    },
    Routes {
        brokers: Vec<Route>,
    },
    Register,
    Rebalance {
        queues: Vec<u32>,
    },
    FetchOffset {
        offset: u64,
    },
    /// The messages of the group's tags from the pulled range, and the offset
    /// to pull from next (past messages the tag filter left out).
    Poll {
        msgs: Vec<Polled>,
        next: u64,
    },
    Process,
    Commit,
    Lock,
    Unlock,
    Lead {
        term: u64,
    },
    /// The version of the assignments written.
    Assign {
        version: u64,
    },
    /// The queues the broker searched, each up to its durable end then, and what it found there.
    QueryKey {
        searched: Vec<Searched>,
        found: Vec<Found>,
    },
    ReadQueue {
        msgs: Vec<Stored>,
    },
    /// Where the half was stored: its offset in the queue's half log.
    SendHalf {
        broker: String,
        queue: u32,
        offset: u64,
    },
    /// The transaction's state now (a decided one keeps its first decision).
    Decide {
        state: TxState,
    },
    EndTx,
    CheckBack,
    LocalTxs {
        txs: Vec<LocalState>,
    },
    /// `ops`: the origin each op record names, in log order; `check_offset`
    /// and `op_offset`: the check service's durable offsets.
    ReadTxLogs {
        halves: Vec<TxHalf>,
        ops: Vec<u64>,
        discards: Vec<TxHalf>,
        check_offset: u64,
        op_offset: u64,
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
            Call::OpenLog { .. } => "open_log",
            Call::Append { .. } => "append",
            Call::ReadLog { .. } => "read_log",
            Call::CommitCursor { .. } => "commit_cursor",
            Call::ReadCursor { .. } => "read_cursor",
            Call::FinalLog { .. } => "final_log",
            Call::Send { .. } => "send",
            Call::Routes { .. } => "routes",
            Call::Register { .. } => "register",
            Call::Rebalance { .. } => "rebalance",
            Call::FetchOffset { .. } => "fetch_offset",
            Call::Poll { .. } => "poll",
            Call::Process { .. } => "process",
            Call::Commit { .. } => "commit",
            Call::Lock { .. } => "lock",
            Call::Unlock { .. } => "unlock",
            Call::Lead {} => "lead",
            Call::Assign { .. } => "assign",
            Call::QueryKey { .. } => "query_key",
            Call::ReadQueue { .. } => "read_queue",
            Call::SendHalf { .. } => "send_half",
            Call::Decide { .. } => "decide",
            Call::EndTx { .. } => "end_tx",
            Call::CheckBack { .. } => "check_back",
            Call::LocalTxs => "local_txs",
            Call::ReadTxLogs { .. } => "read_tx_logs",
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
            Ret::OpenLog { .. } => "open_log",
            Ret::Append { .. } => "append",
            Ret::ReadLog { .. } => "read_log",
            Ret::CommitCursor => "commit_cursor",
            Ret::ReadCursor { .. } => "read_cursor",
            Ret::FinalLog { .. } => "final_log",
            Ret::Send { .. } => "send",
            Ret::Routes { .. } => "routes",
            Ret::Register => "register",
            Ret::Rebalance { .. } => "rebalance",
            Ret::FetchOffset { .. } => "fetch_offset",
            Ret::Poll { .. } => "poll",
            Ret::Process => "process",
            Ret::Commit => "commit",
            Ret::Lock => "lock",
            Ret::Unlock => "unlock",
            Ret::Lead { .. } => "lead",
            Ret::Assign { .. } => "assign",
            Ret::QueryKey { .. } => "query_key",
            Ret::ReadQueue { .. } => "read_queue",
            Ret::SendHalf { .. } => "send_half",
            Ret::Decide { .. } => "decide",
            Ret::EndTx => "end_tx",
            Ret::CheckBack => "check_back",
            Ret::LocalTxs { .. } => "local_txs",
            Ret::ReadTxLogs { .. } => "read_tx_logs",
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
