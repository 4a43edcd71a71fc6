//! What travels between metadata clients and the metadata service.

use crate::env::Kind;
use serde::{Deserialize, Serialize};

pub type SessionId = u64;

/// Per-key metadata: the transaction that created the key, the one that last
/// changed it, its version (0 at creation) and its ephemeral owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    pub czxid: u64,
    pub mzxid: u64,
    pub version: u64,
    pub owner: Option<SessionId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    OpenSession {
        timeout_ms: u64,
    },
    Heartbeat {
        session: SessionId,
    },
    CloseSession {
        session: SessionId,
    },
    /// Fails with `NodeExists`; `sequential` appends a 10-digit counter kept per parent.
    Create {
        path: String,
        value: Vec<u8>,
        ephemeral: Option<SessionId>,
        sequential: bool,
    },
    Get {
        path: String,
    },
    /// Compare-and-set when `version` is given.
    Set {
        path: String,
        value: Vec<u8>,
        version: Option<u64>,
    },
    Delete {
        path: String,
        version: Option<u64>,
    },
    /// Names (not paths) of the keys directly below `path`, sorted.
    Children {
        path: String,
    },
}

/// The metadata protocol's kinds of message, for fault rules.
pub mod kind {
    use crate::env::Kind;
    pub const OPEN_SESSION: Kind = Kind::new("OpenSession");
    pub const HEARTBEAT: Kind = Kind::new("Heartbeat");
    pub const CLOSE_SESSION: Kind = Kind::new("CloseSession");
    pub const CREATE: Kind = Kind::new("Create");
    pub const GET: Kind = Kind::new("Get");
    pub const SET: Kind = Kind::new("Set");
    pub const DELETE: Kind = Kind::new("Delete");
    pub const CHILDREN: Kind = Kind::new("Children");
}

pub const KINDS: &[Kind] = &[
    kind::OPEN_SESSION,
    kind::HEARTBEAT,
    kind::CLOSE_SESSION,
    kind::CREATE,
    kind::GET,
    kind::SET,
    kind::DELETE,
    kind::CHILDREN,
];

impl Request {
    pub fn kind(&self) -> Kind {
        match self {
            Request::OpenSession { .. } => kind::OPEN_SESSION,
            Request::Heartbeat { .. } => kind::HEARTBEAT,
            Request::CloseSession { .. } => kind::CLOSE_SESSION,
            Request::Create { .. } => kind::CREATE,
            Request::Get { .. } => kind::GET,
            Request::Set { .. } => kind::SET,
            Request::Delete { .. } => kind::DELETE,
            Request::Children { .. } => kind::CHILDREN,
        }
    }
}

/// The metadata service, as a protocol a node serves.
pub struct Meta;

impl crate::rpc::Protocol for Meta {
    const SERVICE: u8 = 1;
    const NAME: &'static str = "meta";
    type Request = Request;
    type Response = Response;
    fn kind(req: &Request) -> Kind {
        req.kind()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Session(SessionId),
    Done,
    Created { path: String, stat: Stat },
    Value(Option<(Vec<u8>, Stat)>),
    Stat(Stat),
    Children(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetaError {
    #[error("key exists")]
    NodeExists,
    #[error("no such key")]
    NoNode,
    #[error("version mismatch")]
    BadVersion,
    #[error("session expired")]
    SessionExpired,
    /// The service failed this request without applying it.
    #[error("unavailable")]
    Unavailable,
    /// The service found damaged state and refuses to serve.
    #[error("refusing: damaged state")]
    Corrupt,
    /// No answer in time: the request may or may not have taken effect.
    #[error("timed out")]
    Timeout,
}

impl MetaError {
    /// True when the request certainly did not take effect.
    pub fn is_definite(self) -> bool {
        self != MetaError::Timeout
    }
}

/// Every answer carries the service's last committed transaction id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub zxid: u64,
    pub result: Result<Reply, MetaError>,
}
