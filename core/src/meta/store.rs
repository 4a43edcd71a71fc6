//! The metadata state machine: requests are validated into transactions, and
//! transactions are applied deterministically (live, and again on replay).

use super::proto::{MetaError, Reply, Request, SessionId, Stat};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A state change, as logged. Replaying the log rebuilds the store exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Txn {
    OpenSession {
        id: SessionId,
        timeout_ms: u64,
    },
    /// Removes the session and every ephemeral key it owns.
    CloseSession {
        id: SessionId,
    },
    Create {
        path: String,
        value: Vec<u8>,
        owner: Option<SessionId>,
        sequential: bool,
    },
    Set {
        path: String,
        value: Vec<u8>,
    },
    Delete {
        path: String,
    },
}

#[derive(Clone, Debug)]
struct Znode {
    value: Vec<u8>,
    stat: Stat,
}

#[derive(Default)]
pub struct Store {
    /// The id of the last applied transaction.
    pub zxid: u64,
    nodes: BTreeMap<String, Znode>,
    /// Live sessions and their timeouts in milliseconds.
    pub sessions: BTreeMap<SessionId, u64>,
    next_session: SessionId,
    /// Sequence counters for sequential children, per parent.
    seq: BTreeMap<String, u64>,
}

/// The parent path of `path` ("/" for top-level keys).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

impl Store {
    /// Whether any sequential key was ever created (the counters live in the log).
    pub fn has_sequence_counters(&self) -> bool {
        !self.seq.is_empty()
    }

    /// Answers a read-only request, or `None` when `req` is a write.
    pub fn read(&self, req: &Request) -> Option<Result<Reply, MetaError>> {
        match req {
            Request::Get { path } => {
                Some(Ok(Reply::Value(self.nodes.get(path).map(|n| (n.value.clone(), n.stat.clone())))))
            }
            Request::Children { path } => {
                let prefix = if path.ends_with('/') { path.clone() } else { format!("{path}/") };
                let names = self
                    .nodes
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| &k[prefix.len()..])
                    .filter(|rest| !rest.contains('/'))
                    .map(str::to_string)
                    .collect();
                Some(Ok(Reply::Children(names)))
            }
            _ => None,
        }
    }

    /// Validates a write against the current state.
    pub fn prepare(&self, req: &Request) -> Result<Txn, MetaError> {
        let live = |s: &SessionId| self.sessions.contains_key(s);
        let check_version = |n: &Znode, v: &Option<u64>| match v {
            Some(v) if *v != n.stat.version => Err(MetaError::BadVersion),
            _ => Ok(()),
        };
        match req {
            Request::OpenSession { timeout_ms } => {
                Ok(Txn::OpenSession { id: self.next_session + 1, timeout_ms: *timeout_ms })
            }
            Request::CloseSession { session } => match live(session) {
                true => Ok(Txn::CloseSession { id: *session }),
                false => Err(MetaError::SessionExpired),
            },
            Request::Create { path, value, ephemeral, sequential } => {
                if ephemeral.is_some_and(|s| !live(&s)) {
                    return Err(MetaError::SessionExpired);
                }
                let path = match sequential {
                    true => {
                        let n = self.seq.get(parent(path)).copied().unwrap_or(0);
                        format!("{path}{n:010}")
                    }
                    false => path.clone(),
                };
                if self.nodes.contains_key(&path) {
                    return Err(MetaError::NodeExists);
                }
                Ok(Txn::Create { path, value: value.clone(), owner: *ephemeral, sequential: *sequential })
            }
            Request::Set { path, value, version } => {
                let n = self.nodes.get(path).ok_or(MetaError::NoNode)?;
                check_version(n, version)?;
                Ok(Txn::Set { path: path.clone(), value: value.clone() })
            }
            Request::Delete { path, version } => {
                let n = self.nodes.get(path).ok_or(MetaError::NoNode)?;
                check_version(n, version)?;
                Ok(Txn::Delete { path: path.clone() })
            }
            Request::Heartbeat { .. } | Request::Get { .. } | Request::Children { .. } => {
                unreachable!("not a write: {req:?}")
            }
        }
    }

    /// Applies a prepared (or replayed) transaction as transaction `zxid + 1`.
    pub fn apply(&mut self, txn: Txn) -> Reply {
        self.zxid += 1;
        let zxid = self.zxid;
        match txn {
            Txn::OpenSession { id, timeout_ms } => {
                self.sessions.insert(id, timeout_ms);
                self.next_session = self.next_session.max(id);
                Reply::Session(id)
            }
            Txn::CloseSession { id } => {
                self.sessions.remove(&id);
                self.nodes.retain(|_, n| n.stat.owner != Some(id));
                Reply::Done
            }
            Txn::Create { path, value, owner, sequential } => {
                if sequential {
                    *self.seq.entry(parent(&path).to_string()).or_default() += 1;
                }
                let stat = Stat { czxid: zxid, mzxid: zxid, version: 0, owner };
                self.nodes.insert(path.clone(), Znode { value, stat: stat.clone() });
                Reply::Created { path, stat }
            }
            Txn::Set { path, value } => {
                let n = self.nodes.get_mut(&path).expect("prepared set of a missing key");
                n.value = value;
                n.stat.version += 1;
                n.stat.mzxid = zxid;
                Reply::Stat(n.stat.clone())
            }
            Txn::Delete { path } => {
                self.nodes.remove(&path);
                Reply::Done
            }
        }
    }
}
