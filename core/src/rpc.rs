//! Requests with timeouts over the unreliable [`Transport`]: every message is
//! serialized to bytes (postcard) on every path, simulated or real.

use crate::env::{Clock, Env, MsgKind, Transport};
use crate::meta;
use futures::channel::{mpsc, oneshot};
use futures::future::{select, Either};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every request any node can receive.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    Meta(meta::Request),
}

/// Every reply any node can send.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    Meta(meta::Response),
}

impl Request {
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Meta(r) => r.kind(),
        }
    }
}

#[derive(Serialize, Deserialize)]
enum Frame {
    Call { id: u64, req: Request },
    Reply { id: u64, resp: Response },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No reply in time: the request may or may not have taken effect.
    #[error("timed out")]
    Timeout,
}

/// A request received by a server, to be answered with [`Rpc::reply`].
pub struct Incoming {
    pub from: String,
    pub kind: &'static str,
    pub req: Request,
    id: u64,
}

/// One node's RPC endpoint.
pub struct Rpc {
    net: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    state: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    next_id: u64,
    calls: BTreeMap<u64, oneshot::Sender<Response>>,
}

impl Rpc {
    /// An endpoint that only makes calls; requests sent to it are dropped.
    pub fn client(env: &Env) -> Arc<Rpc> {
        Rpc::start(env, None)
    }

    /// An endpoint that makes calls and serves requests from the returned stream.
    pub fn server(env: &Env) -> (Arc<Rpc>, mpsc::UnboundedReceiver<Incoming>) {
        let (tx, rx) = mpsc::unbounded();
        (Rpc::start(env, Some(tx)), rx)
    }

    fn start(env: &Env, incoming: Option<mpsc::UnboundedSender<Incoming>>) -> Arc<Rpc> {
        let rpc = Arc::new(Rpc {
            net: env.net.clone(),
            clock: env.clock.clone(),
            state: Mutex::new(Pending::default()),
        });
        // The receive loop is the only reader of the transport and is never
        // cancelled mid-receive, so no dequeued message can be lost.
        let weak = Arc::downgrade(&rpc);
        let net = env.net.clone();
        madsim::task::spawn(async move {
            loop {
                let (from, bytes) = net.recv().await;
                let Some(rpc) = weak.upgrade() else { return };
                match postcard::from_bytes::<Frame>(&bytes) {
                    Ok(Frame::Call { id, req }) => {
                        if let Some(tx) = &incoming {
                            let kind = req.kind();
                            let _ = tx.unbounded_send(Incoming { from, kind, req, id });
                        }
                    }
                    Ok(Frame::Reply { id, resp }) => {
                        // A duplicate or late reply finds no waiter and is dropped.
                        if let Some(tx) = rpc.state.lock().expect("rpc").calls.remove(&id) {
                            let _ = tx.send(resp);
                        }
                    }
                    Err(e) => tracing::warn!(%from, "undecodable frame dropped: {e}"),
                }
            }
        });
        rpc
    }

    /// Sends `req` to `to` and waits up to `timeout` (on this node's clock).
    pub async fn call(&self, to: &str, req: Request, timeout: Duration) -> Result<Response, RpcError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = self.state.lock().expect("rpc");
            st.next_id += 1;
            let id = st.next_id;
            st.calls.insert(id, tx);
            id
        };
        let kind = MsgKind { name: req.kind(), reply: false };
        let bytes = postcard::to_allocvec(&Frame::Call { id, req }).expect("encode request");
        self.net.send(to, kind, bytes).await;
        match select(rx, self.clock.sleep(timeout)).await {
            Either::Left((Ok(resp), _)) => Ok(resp),
            _ => {
                self.state.lock().expect("rpc").calls.remove(&id);
                Err(RpcError::Timeout)
            }
        }
    }

    pub async fn reply(&self, to: &Incoming, resp: Response) {
        let kind = MsgKind { name: to.kind, reply: true };
        let bytes = postcard::to_allocvec(&Frame::Reply { id: to.id, resp }).expect("encode reply");
        self.net.send(&to.from, kind, bytes).await;
    }
}

/// Takes every request already queued, without waiting (for group commit).
pub fn drain_ready(rx: &mut mpsc::UnboundedReceiver<Incoming>, into: &mut Vec<Incoming>) {
    while let Ok(inc) = rx.try_recv() {
        into.push(inc);
    }
}

/// Waits for the next request; `None` once the endpoint is gone.
pub async fn next_request(rx: &mut mpsc::UnboundedReceiver<Incoming>) -> Option<Incoming> {
    rx.next().await
}
