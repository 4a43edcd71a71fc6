//! What travels between producers, consumers and brokers.

use super::txn::Resolution;
use crate::env::Kind;
use crate::message::{Message, QueueId, StoredMessage};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Appends `message` to `queue`; answered once Qa bookies stored it.
    Send { queue: QueueId, message: Message },
    /// Up to `max` messages from `offset` on whose tag is in `tags` (all
    /// tags when `tags` is empty), never past what is durable.
    Pull { queue: QueueId, offset: u64, max: u32, tags: Vec<String> },
    /// The group's committed offset of `queue`.
    FetchOffset { group: String, queue: QueueId },
    /// Moves the group's committed offset forward to `offset`, durably.
    Commit { group: String, queue: QueueId, offset: u64 },
    /// The messages with `key` in the queues of `topic` this broker owns, up
    /// to `max` of them, never past what is durable (RocketMQ's queryMessage).
    QueryKey { topic: String, key: String, max: u32 },
    /// Stores `message` as the half of a transaction of producer group
    /// `group`, for `queue`, in the queue's half log (never served to
    /// consumers); answered with the half's offset there once durable.
    /// `born_ms`: the producer's wall clock when it sent the half.
    SendHalf { queue: QueueId, group: String, message: Message, born_ms: u64 },
    /// One-way: the producer's word about the half at `half` (its first
    /// copy) of `queue`: an end message, or (`from_check`) the answer to a check-back.
    EndTx { queue: QueueId, half: u64, msg_id: String, word: Resolution, from_check: bool },
    /// One-way, every few seconds: this producer of `group` is alive, so
    /// check-backs for the group's halves may go to it.
    Heartbeat { group: String },
    /// Locks `queue` for the asking consumer of `group`, so that it alone
    /// consumes the queue in order, for [`super::locks::LEASE`]; `renew`
    /// names the grant the consumer holds, to extend it.
    Lock { group: String, queue: QueueId, renew: Option<u64> },
    /// Drops the asking consumer's lock of `queue` for `group`, if it is still grant `grant`.
    Unlock { group: String, queue: QueueId, grant: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Sent {
        offset: u64,
    },
    /// `next`: where to pull from next (past messages the tags left out).
    Pulled {
        msgs: Vec<StoredMessage>,
        next: u64,
    },
    Offset(u64),
    Committed,
    /// `searched`: the queues, each with its durable end at the time of the
    /// query, whose every message with the key below that end is in `found`,
    /// as (queue, message).
    KeyFound {
        searched: Vec<(u32, u64)>,
        found: Vec<(u32, StoredMessage)>,
    },
    /// The lock is the asker's now, as grant `grant`.
    Locked {
        grant: u64,
    },
    /// The lock was refused (the reason given): nothing changed.
    Refused(String),
    /// This broker does not own the queue: nothing was done; ask the routes again.
    NotOwner,
    /// The request failed here; a send may or may not have been stored.
    Failed(String),
}

pub mod kind {
    use crate::env::Kind;
    pub const SEND: Kind = Kind::new("SendMessage");
    pub const PULL: Kind = Kind::new("PullMessage");
    pub const FETCH_OFFSET: Kind = Kind::new("FetchOffset");
    pub const COMMIT: Kind = Kind::new("CommitOffset");
    pub const QUERY_KEY: Kind = Kind::new("QueryMessage");
    pub const SEND_HALF: Kind = Kind::new("SendHalfMessage");
    pub const END_TX: Kind = Kind::new("EndTransaction");
    /// An end message that answers a check-back (its own kind, so that fault
    /// rules can lose or delay end messages and answers apart).
    pub const CHECK_ANSWER: Kind = Kind::new("EndTransactionFromCheck");
    pub const HEARTBEAT: Kind = Kind::new("ProducerHeartbeat");
    pub const LOCK: Kind = Kind::new("LockBatchMQ");
    pub const UNLOCK: Kind = Kind::new("UnlockBatchMQ");
}

pub const KINDS: &[Kind] = &[
    kind::SEND,
    kind::PULL,
    kind::FETCH_OFFSET,
    kind::COMMIT,
    kind::QUERY_KEY,
    kind::SEND_HALF,
    kind::END_TX,
    kind::CHECK_ANSWER,
    kind::HEARTBEAT,
    kind::LOCK,
    kind::UNLOCK,
];

/// The broker, as a protocol a node serves.
pub struct Broker;

impl crate::rpc::Protocol for Broker {
    const SERVICE: u8 = 4;
    const NAME: &'static str = "broker";
    type Request = Request;
    type Response = Response;
    fn kind(req: &Request) -> Kind {
        match req {
            Request::Send { .. } => kind::SEND,
            Request::Pull { .. } => kind::PULL,
            Request::FetchOffset { .. } => kind::FETCH_OFFSET,
            Request::Commit { .. } => kind::COMMIT,
            Request::QueryKey { .. } => kind::QUERY_KEY,
            Request::SendHalf { .. } => kind::SEND_HALF,
            Request::EndTx { from_check: false, .. } => kind::END_TX,
            Request::EndTx { from_check: true, .. } => kind::CHECK_ANSWER,
            Request::Heartbeat { .. } => kind::HEARTBEAT,
            Request::Lock { .. } => kind::LOCK,
            Request::Unlock { .. } => kind::UNLOCK,
        }
    }
}
