//! Requests with timeouts over the unreliable [`Transport`]: every message is
//! serialized to bytes (postcard) on every path, simulated or real.
//!
//! Calls are executed at most once, as over a TCP connection: every endpoint
//! has an incarnation nonce; a call names the incarnation of the callee it
//! believes in, and a callee that restarted since answers `Stale` without
//! executing. On first contact (no incarnation known) the caller learns it and
//! resends; after a restart the outcome of the call is unknown (an earlier copy
//! may have run on the old incarnation) and it ends as a timeout. Within one
//! incarnation, a duplicated call (same caller incarnation and id) is dropped.
//! So no call runs twice, none after its answer, none after its callee restarted.

use crate::env::{Clock, Env, EventSink, MsgKind, Transport};
use crate::probe::Probe;
use crate::{bookie, meta};
use futures::channel::{mpsc, oneshot};
use futures::future::{select, Either};
use futures::StreamExt;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every request any node can receive.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    Meta(meta::Request),
    Bookie(bookie::Request),
}

/// Every reply any node can send.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    Meta(meta::Response),
    Bookie(bookie::Response),
}

impl Request {
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Meta(r) => r.kind(),
            Request::Bookie(r) => r.kind(),
        }
    }
}

#[derive(Serialize, Deserialize)]
enum Frame {
    /// `caller`: the caller's incarnation; `callee`: the callee's, as the
    /// caller knows it (0 before first contact).
    Call {
        id: u64,
        caller: u64,
        callee: u64,
        req: Request,
    },
    Reply {
        id: u64,
        resp: Response,
    },
    /// The call was not executed: the callee is now incarnation `callee`.
    Stale {
        id: u64,
        callee: u64,
    },
}

enum Answer {
    Reply(Response),
    Stale(u64),
}

/// Call ids seen from one incarnation of one caller: all up to `floor`, and `ids`.
#[derive(Default)]
struct Seen {
    floor: u64,
    ids: std::collections::BTreeSet<u64>,
}

const SEEN_WINDOW: usize = 512;

impl Seen {
    /// Records `id`; false if it was seen before (or is too old to tell).
    fn first_time(&mut self, id: u64) -> bool {
        if id <= self.floor || !self.ids.insert(id) {
            return false;
        }
        if self.ids.len() > SEEN_WINDOW {
            self.floor = self.ids.pop_first().expect("non-empty");
        }
        true
    }
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
    events: Arc<dyn EventSink>,
    incarnation: u64,
    state: Mutex<State>,
    /// Where requests go once a server on this node serves them; dropped until then.
    incoming: Mutex<Option<mpsc::UnboundedSender<Incoming>>>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    calls: BTreeMap<u64, oneshot::Sender<Answer>>,
    /// Incarnations of the callees this endpoint has talked to.
    callees: BTreeMap<String, u64>,
    /// Calls executed, per (caller, caller incarnation).
    seen: BTreeMap<(String, u64), Seen>,
    /// Calls that gave up waiting, so an answer to them is a late one.
    gave_up: std::collections::BTreeSet<u64>,
}

impl Rpc {
    /// This node's endpoint, for making calls.
    pub fn client(env: &Env) -> Arc<Rpc> {
        env.rpc()
    }

    /// This node's endpoint, and the stream of requests it receives from now on.
    pub fn server(env: &Env) -> (Arc<Rpc>, mpsc::UnboundedReceiver<Incoming>) {
        let rpc = env.rpc();
        let (tx, rx) = mpsc::unbounded();
        *rpc.incoming.lock().expect("rpc incoming") = Some(tx);
        (rpc, rx)
    }

    /// Starts the node's endpoint; use [`Env::rpc`], which makes exactly one.
    pub(crate) fn start(env: &Env) -> Arc<Rpc> {
        let rpc = Arc::new(Rpc {
            net: env.net.clone(),
            clock: env.clock.clone(),
            events: env.events.clone(),
            incarnation: env.rng(|r| r.gen_range(1..u64::MAX)),
            state: Mutex::new(State::default()),
            incoming: Mutex::new(None),
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
                    Ok(Frame::Call { id, caller, callee, req }) => {
                        let Some(tx) = rpc.incoming.lock().expect("rpc incoming").clone() else { continue };
                        let kind = req.kind();
                        if callee != rpc.incarnation {
                            let stale = Frame::Stale { id, callee: rpc.incarnation };
                            rpc.send(&from, MsgKind { name: kind, reply: true }, &stale).await;
                            continue;
                        }
                        let first = rpc.lock().seen.entry((from.clone(), caller)).or_default().first_time(id);
                        if first {
                            let _ = tx.unbounded_send(Incoming { from, kind, req, id });
                        } else {
                            rpc.events.probe(Probe::RpcDuplicateDropped);
                        }
                    }
                    Ok(Frame::Reply { id, resp }) => rpc.answer(id, Answer::Reply(resp)),
                    Ok(Frame::Stale { id, callee }) => rpc.answer(id, Answer::Stale(callee)),
                    Err(e) => tracing::warn!(%from, "undecodable frame dropped: {e}"),
                }
            }
        });
        rpc
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("rpc")
    }

    /// Hands an answer to its waiting call; a duplicate or late one finds none.
    fn answer(&self, id: u64, answer: Answer) {
        let call = self.lock().calls.remove(&id);
        match call {
            Some(tx) => {
                let _ = tx.send(answer);
            }
            // A late answer, or a duplicated copy of one already taken.
            None if self.lock().gave_up.remove(&id) => self.events.probe(Probe::RpcLateAnswer),
            None => {}
        }
    }

    async fn send(&self, to: &str, kind: MsgKind, frame: &Frame) {
        let bytes = postcard::to_allocvec(frame).expect("encode frame");
        self.net.send(to, kind, bytes).await;
    }

    /// Sends `req` to `to` and waits up to `timeout` (on this node's clock).
    pub async fn call(&self, to: &str, req: Request, timeout: Duration) -> Result<Response, RpcError> {
        let deadline = self.clock.mono() + timeout;
        let kind = MsgKind { name: req.kind(), reply: false };
        loop {
            let (tx, rx) = oneshot::channel();
            let (id, callee) = {
                let mut st = self.lock();
                st.next_id += 1;
                let id = st.next_id;
                st.calls.insert(id, tx);
                (id, st.callees.get(to).copied().unwrap_or(0))
            };
            let frame = Frame::Call { id, caller: self.incarnation, callee, req: req.clone() };
            self.send(to, kind, &frame).await;
            let left = deadline.saturating_sub(self.clock.mono());
            match select(rx, self.clock.sleep(left)).await {
                Either::Left((Ok(Answer::Reply(resp)), _)) => return Ok(resp),
                // First contact: a call naming no incarnation is never executed,
                // so it is safe to resend now that the callee's is known.
                Either::Left((Ok(Answer::Stale(now)), _)) if callee == 0 && self.clock.mono() < deadline => {
                    self.lock().callees.insert(to.to_string(), now);
                }
                // The callee restarted. An earlier copy of this call may have run
                // on the old incarnation, so resending could run it twice: unknown.
                Either::Left((Ok(Answer::Stale(now)), _)) => {
                    self.events.probe(Probe::RpcCalleeRestarted);
                    self.lock().callees.insert(to.to_string(), now);
                    return Err(RpcError::Timeout);
                }
                _ => {
                    let mut st = self.lock();
                    st.calls.remove(&id);
                    st.gave_up.insert(id);
                    return Err(RpcError::Timeout);
                }
            }
        }
    }

    pub async fn reply(&self, to: &Incoming, resp: Response) {
        let kind = MsgKind { name: to.kind, reply: true };
        self.send(&to.from, kind, &Frame::Reply { id: to.id, resp }).await;
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
