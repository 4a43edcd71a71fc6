//! What travels between metadata clients and the metadata service.

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

impl Request {
    pub fn kind(&self) -> &'static str {
        match self {
            Request::OpenSession { .. } => "OpenSession",
            Request::Heartbeat { .. } => "Heartbeat",
            Request::CloseSession { .. } => "CloseSession",
            Request::Create { .. } => "Create",
            Request::Get { .. } => "Get",
            Request::Set { .. } => "Set",
            Request::Delete { .. } => "Delete",
            Request::Children { .. } => "Children",
        }
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
