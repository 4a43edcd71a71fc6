//! The client library of the metadata service.

use super::proto::{Meta, MetaError, Reply, Request, SessionId, Stat};
use crate::env::Env;
use crate::rpc::{self, Rpc};
use std::sync::Arc;
use std::time::Duration;

/// A handle on the metadata service, cheap to clone. It never retries a
/// request on its own: a timeout is reported as [`MetaError::Timeout`]
/// (outcome unknown) and the caller decides.
#[derive(Clone)]
pub struct MetaClient {
    rpc: Arc<Rpc>,
    server: String,
    timeout: Duration,
    observer: Option<Arc<dyn Observer>>,
}

/// Sees every request a client sends and how it ended (a workload records them).
pub trait Observer: Send + Sync {
    /// `req` is about to be sent; the token is handed back with its outcome.
    fn sent(&self, req: &Request) -> u64;
    fn answered(&self, token: u64, req: &Request, result: &Result<(Reply, u64), MetaError>);
}

impl MetaClient {
    pub fn new(env: &Env, server: &str, timeout: Duration) -> MetaClient {
        MetaClient { rpc: env.rpc(), server: server.to_string(), timeout, observer: None }
    }

    /// This client, with every request shown to `observer`.
    pub fn observed(mut self, observer: Arc<dyn Observer>) -> MetaClient {
        self.observer = Some(observer);
        self
    }

    /// Sends one request; on success also returns the service's zxid.
    pub async fn request(&self, req: Request) -> Result<(Reply, u64), MetaError> {
        let token = self.observer.as_ref().map(|o| o.sent(&req));
        let result = match self.rpc.call::<Meta>(&self.server, &req, self.timeout).await {
            Ok(resp) => resp.result.map(|r| (r, resp.zxid)),
            Err(rpc::RpcError::Timeout) => Err(MetaError::Timeout),
            Err(rpc::RpcError::Undecodable) => Err(MetaError::Unavailable),
        };
        if let (Some(o), Some(token)) = (&self.observer, token) {
            o.answered(token, &req, &result);
        }
        result
    }

    pub async fn close_session(&self, session: SessionId) -> Result<(), MetaError> {
        self.request(Request::CloseSession { session }).await.map(|_| ())
    }

    pub async fn open_session(&self, timeout: Duration) -> Result<SessionId, MetaError> {
        match self.request(Request::OpenSession { timeout_ms: timeout.as_millis() as u64 }).await? {
            (Reply::Session(id), _) => Ok(id),
            (other, _) => unexpected(other),
        }
    }

    pub async fn heartbeat(&self, session: SessionId) -> Result<(), MetaError> {
        self.request(Request::Heartbeat { session }).await.map(|_| ())
    }

    pub async fn create(
        &self,
        path: &str,
        value: Vec<u8>,
        ephemeral: Option<SessionId>,
        sequential: bool,
    ) -> Result<(String, Stat), MetaError> {
        let req = Request::Create { path: path.to_string(), value, ephemeral, sequential };
        match self.request(req).await? {
            (Reply::Created { path, stat }, _) => Ok((path, stat)),
            (other, _) => unexpected(other),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Option<(Vec<u8>, Stat)>, MetaError> {
        match self.request(Request::Get { path: path.to_string() }).await? {
            (Reply::Value(v), _) => Ok(v),
            (other, _) => unexpected(other),
        }
    }

    pub async fn set(&self, path: &str, value: Vec<u8>, version: Option<u64>) -> Result<Stat, MetaError> {
        match self.request(Request::Set { path: path.to_string(), value, version }).await? {
            (Reply::Stat(stat), _) => Ok(stat),
            (other, _) => unexpected(other),
        }
    }

    pub async fn delete(&self, path: &str, version: Option<u64>) -> Result<(), MetaError> {
        self.request(Request::Delete { path: path.to_string(), version }).await.map(|_| ())
    }

    pub async fn children(&self, path: &str) -> Result<Vec<String>, MetaError> {
        match self.request(Request::Children { path: path.to_string() }).await? {
            (Reply::Children(names), _) => Ok(names),
            (other, _) => unexpected(other),
        }
    }
}

fn unexpected<T>(reply: Reply) -> Result<T, MetaError> {
    tracing::error!("metadata service sent an answer of the wrong kind: {reply:?}");
    Err(MetaError::Unavailable)
}
