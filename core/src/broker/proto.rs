//! What travels between producers, consumers and brokers.

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
}

pub const KINDS: &[Kind] = &[kind::SEND, kind::PULL, kind::FETCH_OFFSET, kind::COMMIT, kind::QUERY_KEY];

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
        }
    }
}
