//! Requests with timeouts over the unreliable [`Transport`], to typed services.
//!
//! A node serves any number of [`Protocol`]s, each with its own queue of
//! incoming requests; a frame names its service, and its body is that
//! protocol's request or response, serialized (postcard) on every path,
//! simulated or real.
//!
//! Calls are executed at most once, as over a TCP connection: every endpoint
//! has an incarnation nonce; a call names the incarnation of the callee it
//! believes in, and a callee that restarted since answers `Stale` without
//! executing. On first contact (no incarnation known) the caller learns it and
//! resends; after a restart the outcome of the call is unknown (an earlier copy
//! may have run on the old incarnation) and it ends as a timeout. Within one
//! incarnation, a duplicated call (same caller incarnation and id) is dropped.
//! So no call runs twice, none after its answer, none after its callee restarted.

use crate::env::{Clock, Env, EventSink, Kind, MsgKind, Transport};
use crate::probe::Probe;
use futures::channel::{mpsc, oneshot};
use futures::future::{select, Either};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request/response protocol a node can serve.
pub trait Protocol: Send + Sync + 'static {
    /// The service's number on the wire, unique among [`crate::protocols`].
    const SERVICE: u8;
    /// The service's name, for messages.
    const NAME: &'static str;
    type Request: Serialize + DeserializeOwned + Clone + Debug + Send + 'static;
    type Response: Serialize + DeserializeOwned + Debug + Send + 'static;
    /// The kind of `req`, one of the protocol's exported kinds, for fault rules.
    fn kind(req: &Self::Request) -> Kind;
}

/// What precedes a frame's body on the wire.
#[derive(Serialize, Deserialize)]
enum Header {
    /// `caller`: the caller's incarnation; `callee`: the callee's, as the
    /// caller knows it (0 before first contact). The body is a request of `service`.
    Call { id: u64, caller: u64, callee: u64, service: u8 },
    /// The body is the response to call `id` of the caller's incarnation
    /// `caller` (a restarted caller counts its ids afresh: an answer meant
    /// for its previous incarnation must not answer its new calls).
    Reply { id: u64, caller: u64 },
    /// The call was not executed: the callee is now incarnation `callee`.
    Stale { id: u64, caller: u64, callee: u64 },
    /// A one-way request of `service` from the caller's incarnation `caller`:
    /// no answer, whatever incarnation the callee is.
    Notify { caller: u64, service: u8 },
}

/// A frame as a message trace shows it: its header, and the body's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Call `id` of caller incarnation `caller` to service `service`.
    Call { id: u64, caller: u64, service: u8, body: &'a [u8] },
    /// The answer to that call.
    Reply { id: u64, caller: u64, body: &'a [u8] },
    /// The call was not executed: the callee restarted as incarnation `callee`.
    Stale { id: u64, caller: u64, callee: u64 },
    /// A one-way request to service `service`.
    Notify { caller: u64, service: u8, body: &'a [u8] },
}

/// Reads a frame's header, for message traces; `None` when it is not a frame.
pub fn frame(bytes: &[u8]) -> Option<Frame<'_>> {
    let (header, body) = postcard::take_from_bytes::<Header>(bytes).ok()?;
    Some(match header {
        Header::Call { id, caller, service, .. } => Frame::Call { id, caller, service, body },
        Header::Reply { id, caller } => Frame::Reply { id, caller, body },
        Header::Stale { id, caller, callee } => Frame::Stale { id, caller, callee },
        Header::Notify { caller, service } => Frame::Notify { caller, service, body },
    })
}

enum Answer {
    /// The frame's bytes and where the response's body starts.
    Reply(Vec<u8>, usize),
    Stale(u64),
}

/// How many call ids from one caller incarnation the duplicate filter holds,
/// as bits: a call older than the newest one by more is too old to tell apart
/// from a duplicate, and dropped (the caller times out).
pub const SEEN_WINDOW: u64 = 1 << 16;
const SEEN_WORDS: usize = (SEEN_WINDOW / 64) as usize;

/// Call ids seen from one incarnation of one caller: a sliding window of bits
/// starting at id `base` (a multiple of 64).
#[derive(Default)]
struct Seen {
    base: u64,
    words: VecDeque<u64>,
}

impl Seen {
    /// Records `id`; false if it was seen before (or is too old to tell).
    fn first_time(&mut self, id: u64) -> bool {
        if id < self.base {
            return false;
        }
        let mut word = ((id - self.base) / 64) as usize;
        if word >= SEEN_WORDS {
            let slide = word + 1 - SEEN_WORDS;
            self.words.drain(..slide.min(self.words.len()));
            self.base += slide as u64 * 64;
            word -= slide;
        }
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << ((id - self.base) % 64);
        let first = self.words[word] & bit == 0;
        self.words[word] |= bit;
        first
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No reply in time: the request may or may not have taken effect.
    #[error("timed out")]
    Timeout,
    /// The callee answered with bytes that are not a response of the protocol.
    #[error("undecodable answer")]
    Undecodable,
}

/// A request received by a service, to be answered with [`Rpc::reply`].
pub struct Incoming<P: Protocol> {
    pub from: String,
    pub kind: Kind,
    pub req: P::Request,
    id: u64,
    caller: u64,
    /// Sent with [`Rpc::notify`]: no one waits for an answer.
    oneway: bool,
}

/// The requests a service receives, in arrival order.
pub type Requests<P> = mpsc::UnboundedReceiver<Incoming<P>>;

/// A service's queue, as the receive loop sees it.
trait Inbox: Send + Sync {
    /// The kind of the request in `body`; `None` when undecodable.
    fn kind_of(&self, body: &[u8]) -> Option<Kind>;
    /// Decodes `body` and queues it; false when undecodable.
    fn deliver(&self, from: String, id: u64, caller: u64, oneway: bool, body: &[u8]) -> bool;
}

struct Queue<P: Protocol>(mpsc::UnboundedSender<Incoming<P>>);

impl<P: Protocol> Inbox for Queue<P> {
    fn kind_of(&self, body: &[u8]) -> Option<Kind> {
        postcard::from_bytes::<P::Request>(body).ok().map(|req| P::kind(&req))
    }

    fn deliver(&self, from: String, id: u64, caller: u64, oneway: bool, body: &[u8]) -> bool {
        let Ok(req) = postcard::from_bytes::<P::Request>(body) else { return false };
        let _ = self.0.unbounded_send(Incoming { from, kind: P::kind(&req), req, id, caller, oneway });
        true
    }
}

/// One node's RPC endpoint, shared by every client and service on it.
pub struct Rpc {
    net: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    events: Arc<dyn EventSink>,
    incarnation: u64,
    state: Mutex<State>,
    /// The services this node serves; calls to any other are dropped, as at a closed port.
    services: Mutex<BTreeMap<u8, Arc<dyn Inbox>>>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    calls: BTreeMap<u64, oneshot::Sender<Answer>>,
    /// Incarnations of the callees this endpoint has talked to.
    callees: BTreeMap<String, u64>,
    /// Calls executed, per caller and caller incarnation.
    seen: BTreeMap<String, BTreeMap<u64, Seen>>,
    /// Calls that gave up waiting, so an answer to them is a late one.
    gave_up: BTreeSet<u64>,
}

fn encode(header: &Header, body: &impl Serialize) -> Vec<u8> {
    let buf = postcard::to_extend(header, Vec::with_capacity(64)).expect("encode header");
    postcard::to_extend(body, buf).expect("encode body")
}

impl Rpc {
    /// Starts serving protocol `P` on this node: the endpoint, and the queue of
    /// requests it receives from now on. A node serves each protocol once.
    pub fn serve<P: Protocol>(env: &Env) -> (Arc<Rpc>, Requests<P>) {
        let rpc = env.rpc();
        let (tx, rx) = mpsc::unbounded();
        let mut services = rpc.services.lock().expect("rpc services");
        assert!(
            services.insert(P::SERVICE, Arc::new(Queue::<P>(tx))).is_none(),
            "{} serves {} twice",
            env.name,
            P::NAME
        );
        drop(services);
        (rpc, rx)
    }

    /// Starts the node's endpoint; use [`Env::rpc`], which makes exactly one.
    pub(crate) fn start(env: &Env) -> Arc<Rpc> {
        let rpc = Arc::new(Rpc {
            net: env.net.clone(),
            clock: env.clock.clone(),
            events: env.events.clone(),
            incarnation: env.random("rpc").range(1..u64::MAX),
            state: Mutex::new(State::default()),
            services: Mutex::default(),
        });
        // The receive loop is the only reader of the transport and is never
        // cancelled mid-receive, so no dequeued message can be lost.
        let weak = Arc::downgrade(&rpc);
        let net = env.net.clone();
        madsim::task::spawn(async move {
            loop {
                let (from, bytes) = net.recv().await;
                let Some(rpc) = weak.upgrade() else { return };
                rpc.received(from, bytes).await;
            }
        });
        rpc
    }

    async fn received(&self, from: String, bytes: Vec<u8>) {
        let (header, body) = match postcard::take_from_bytes::<Header>(&bytes) {
            Ok(decoded) => decoded,
            Err(e) => return tracing::warn!(%from, "undecodable frame dropped: {e}"),
        };
        match header {
            Header::Call { id, caller, callee, service } => {
                let inbox = self.services.lock().expect("rpc services").get(&service).cloned();
                let Some(inbox) = inbox else { return };
                if callee != self.incarnation {
                    let Some(kind) = inbox.kind_of(body) else { return };
                    let frame = encode(&Header::Stale { id, caller, callee: self.incarnation }, &());
                    return self.net.send(&from, MsgKind { kind, reply: true }, frame).await;
                }
                if !self.first_time(&from, caller, id) {
                    return self.events.probe(Probe::RpcDuplicateDropped);
                }
                if !inbox.deliver(from, id, caller, false, body) {
                    tracing::warn!(service, "undecodable request dropped");
                }
            }
            // One-way: as a message on a connection opened for it, it runs
            // whatever the incarnations, and a copy the network duplicated runs again.
            Header::Notify { caller, service } => {
                let inbox = self.services.lock().expect("rpc services").get(&service).cloned();
                let Some(inbox) = inbox else { return };
                if !inbox.deliver(from, 0, caller, true, body) {
                    tracing::warn!(service, "undecodable one-way request dropped");
                }
            }
            // Meant for this node's previous incarnation: no call of ours waits for it.
            Header::Reply { caller, .. } | Header::Stale { caller, .. } if caller != self.incarnation => {
                self.events.probe(Probe::RpcAnswerForPreviousIncarnation);
            }
            Header::Reply { id, .. } => {
                let start = bytes.len() - body.len();
                self.answer(id, Answer::Reply(bytes, start));
            }
            Header::Stale { id, callee, .. } => self.answer(id, Answer::Stale(callee)),
        }
    }

    /// Whether call `id` of `caller`'s incarnation runs for the first time here.
    fn first_time(&self, from: &str, caller: u64, id: u64) -> bool {
        let mut st = self.lock();
        // Looked up by reference: a caller's entry is made once, not per call.
        if !st.seen.contains_key(from) {
            st.seen.insert(from.to_string(), BTreeMap::new());
        }
        let incarnations = st.seen.get_mut(from).expect("just made");
        incarnations.entry(caller).or_default().first_time(id)
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

    /// Sends `req` to service `P` on `to` and waits up to `timeout` (on this node's clock).
    pub async fn call<P: Protocol>(
        &self,
        to: &str,
        req: &P::Request,
        timeout: Duration,
    ) -> Result<P::Response, RpcError> {
        let deadline = self.clock.mono() + timeout;
        let kind = MsgKind { kind: P::kind(req), reply: false };
        loop {
            let (tx, rx) = oneshot::channel();
            let (id, callee) = {
                let mut st = self.lock();
                st.next_id += 1;
                let id = st.next_id;
                st.calls.insert(id, tx);
                (id, st.callees.get(to).copied().unwrap_or(0))
            };
            let frame = encode(&Header::Call { id, caller: self.incarnation, callee, service: P::SERVICE }, req);
            self.net.send(to, kind, frame).await;
            let left = deadline.saturating_sub(self.clock.mono());
            match select(rx, self.clock.sleep(left)).await {
                Either::Left((Ok(Answer::Reply(bytes, start)), _)) => {
                    return postcard::from_bytes(&bytes[start..]).map_err(|_| RpcError::Undecodable);
                }
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

    /// Sends `req` to service `P` on `to` one-way (RocketMQ's `invokeOneway`):
    /// no answer, no resend; it may be lost, delayed or duplicated.
    pub async fn notify<P: Protocol>(&self, to: &str, req: &P::Request) {
        let kind = MsgKind { kind: P::kind(req), reply: false };
        let frame = encode(&Header::Notify { caller: self.incarnation, service: P::SERVICE }, req);
        self.net.send(to, kind, frame).await;
    }

    /// Answers `to`; nothing is sent for a one-way request.
    pub async fn reply<P: Protocol>(&self, to: &Incoming<P>, resp: &P::Response) {
        if to.oneway {
            return;
        }
        let frame = encode(&Header::Reply { id: to.id, caller: to.caller }, resp);
        self.net.send(&to.from, MsgKind { kind: to.kind, reply: true }, frame).await;
    }
}

/// Takes every request already queued, without waiting (for group commit).
pub fn drain_ready<P: Protocol>(rx: &mut Requests<P>, into: &mut Vec<Incoming<P>>) {
    while let Ok(inc) = rx.try_recv() {
        into.push(inc);
    }
}

/// Waits for the next request; `None` once the endpoint is gone.
pub async fn next_request<P: Protocol>(rx: &mut Requests<P>) -> Option<Incoming<P>> {
    rx.next().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    /// A flood of calls from one caller, each delivered twice, out of order
    /// within spans of 20,000 ids: every first copy runs, no second copy does.
    #[test]
    fn duplicate_filter_holds_under_a_flood() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut seen = Seen::default();
        let (mut ran, mut dropped) = (0u64, 0u64);
        let ids: Vec<u64> = (1..=400_000).collect();
        for span in ids.chunks(20_000) {
            let mut copies: Vec<u64> = span.iter().flat_map(|&id| [id, id]).collect();
            copies.shuffle(&mut rng);
            for id in copies {
                if seen.first_time(id) {
                    ran += 1;
                } else {
                    dropped += 1;
                }
            }
        }
        assert_eq!((ran, dropped), (400_000, 400_000));
    }

    #[test]
    fn duplicate_filter_forgets_only_beyond_its_window() {
        let mut seen = Seen::default();
        assert!(seen.first_time(1));
        assert!(seen.first_time(SEEN_WINDOW));
        assert!(!seen.first_time(1), "still inside the window");
        assert!(seen.first_time(10 * SEEN_WINDOW));
        assert!(!seen.first_time(SEEN_WINDOW), "too old to tell: dropped");
        assert!(seen.first_time(9 * SEEN_WINDOW + 100), "late but inside the window");
        assert!(!seen.first_time(9 * SEEN_WINDOW + 100));
    }
}
