//! The producer client: a thin async driver over [`RouteCache`] and
//! [`Selector`], with RocketMQ's `DefaultMQProducer` defaults.
//!
//! Routes come from a NameServer and are refreshed when 30 s old or after a
//! broker answered "not owner". A send makes 1 + 2 tries within 3 s in all,
//! each retry on another broker when there is one, always with the same
//! message id (unless the planted bug [`Bug::ProducerRetryNewId`] is on).

use super::select::{RouteCache, Selector, Shard};
use crate::broker::proto::{self as broker, Broker};
use crate::bugs::Bug;
use crate::env::Env;
use crate::message::{Message, QueueId};
use crate::nameserver::proto::{self as nameserver, NameServer};
use crate::probe::Probe;
use crate::rpc::{Rpc, RpcError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Routes older than this are fetched again before use (`pollNameServerInterval`).
pub const REFRESH: Duration = Duration::from_secs(30);
/// The time for all tries of one send together (`sendMsgTimeout`).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest one try waits for its broker's answer.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(1);
/// Tries after the first (`retryTimesWhenSendFailed`).
pub const RETRIES: u32 = 2;
/// The longest a route query waits for one NameServer before asking the next.
pub const NAMESERVER_TIMEOUT: Duration = Duration::from_secs(1);

/// The most messages one broker returns for a query by key (`maxNum`).
pub const QUERY_MAX: u32 = 64;
/// The longest a query by key waits for its broker.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// A broker's answer to a query by key: the queues it searched, each up to
/// its durable end then, as (queue, end), and the messages with the key it
/// found there, by queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyAnswer {
    pub searched: Vec<(u32, u64)>,
    pub found: Vec<(u32, crate::message::StoredMessage)>,
}

/// How a send ended, as the producer's handler learns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendOutcome {
    /// Stored at `offset` of `queue` on `broker` (SEND_OK).
    Ok { broker: String, queue: QueueId, offset: u64 },
    /// Certainly not stored: every try was refused, or there was nowhere to send.
    Failed(String),
    /// May or may not be stored: some try timed out or failed on its broker.
    Unknown(String),
}

/// What one try of a send came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TryResult {
    /// The broker stored the message.
    Sent { broker: String, queue: QueueId, offset: u64 },
    /// The broker does not own the queue: nothing was stored.
    NotOwner { broker: String },
    /// No queue to send to: nothing was sent.
    NoRoute,
    /// The broker failed the send, or its answer made no sense: maybe stored.
    Failed { broker: String, reason: String },
    /// No answer in time: maybe stored.
    Timeout { broker: String },
}

impl TryResult {
    /// Whether the message may have been stored by this try.
    fn maybe_stored(&self) -> bool {
        matches!(self, TryResult::Failed { .. } | TryResult::Timeout { .. })
    }
}

impl fmt::Display for TryResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryResult::Sent { broker, queue, offset } => write!(f, "{broker}: stored at {queue}@{offset}"),
            TryResult::NotOwner { broker } => write!(f, "{broker}: not owner"),
            TryResult::NoRoute => f.write_str("no route"),
            TryResult::Failed { broker, reason } => write!(f, "{broker}: failed: {reason}"),
            TryResult::Timeout { broker } => write!(f, "{broker}: timed out"),
        }
    }
}

/// The outcome of a send from its tries, in order: `Ok` on the first `Sent`;
/// else `Unknown` if any try may have stored the message; else `Failed`
/// (also when no try was made at all).
pub fn outcome(tries: &[TryResult]) -> SendOutcome {
    if let Some(TryResult::Sent { broker, queue, offset }) = tries.iter().find(|t| matches!(t, TryResult::Sent { .. }))
    {
        return SendOutcome::Ok { broker: broker.clone(), queue: queue.clone(), offset: *offset };
    }
    if tries.is_empty() {
        return SendOutcome::Failed("no try within the send timeout".to_string());
    }
    let reason = tries.iter().enumerate().map(|(i, t)| format!("try {}: {t}", i + 1)).collect::<Vec<_>>().join("; ");
    if tries.iter().any(TryResult::maybe_stored) {
        SendOutcome::Unknown(reason)
    } else {
        SendOutcome::Failed(reason)
    }
}

/// The message id of try `attempt` (0 is the first) of a send of `original`:
/// the same on every try, unless the planted bug gives each retry a new one.
fn try_id(original: &str, attempt: u32, new_id_on_retry: bool) -> String {
    if new_id_on_retry && attempt > 0 {
        format!("{original}.r{attempt}")
    } else {
        original.to_string()
    }
}

/// A node's producer, cheap to clone (clones share routes and round-robin
/// positions). Concurrent sends are fine.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    env: Env,
    rpc: Arc<Rpc>,
    nameservers: Vec<String>,
    state: Mutex<State>,
}

struct State {
    routes: RouteCache,
    selector: Selector,
    /// Index of the NameServer asked first: a random one at start, then the
    /// last that answered, or the one after the last that did not.
    nameserver: usize,
}

impl Producer {
    pub fn new(env: &Env, nameservers: Vec<String>) -> Producer {
        let random = env.random("producer");
        let nameserver = if nameservers.is_empty() { 0 } else { random.range(0..nameservers.len()) };
        let selector = Selector::new(random.range(0..u64::MAX));
        Producer {
            inner: Arc::new(Inner {
                env: env.clone(),
                rpc: env.rpc(),
                nameservers,
                state: Mutex::new(State { routes: RouteCache::default(), selector, nameserver }),
            }),
        }
    }

    /// Sends `message` (its msg_id already set by the caller) to a queue of its
    /// topic: round-robin, or by hash of `shard`'s key when given.
    pub async fn send(&self, message: Message, shard: Option<Shard<'_>>) -> SendOutcome {
        self.send_as(message, shard, |queue, message| broker::Request::Send { queue, message }).await
    }

    /// Sends `message` as the half of a transaction of producer group `group`
    /// (tries and retries as [`Producer::send`]); `Ok` names the half's offset
    /// in its queue's half log.
    pub async fn send_half(&self, message: Message, group: &str) -> SendOutcome {
        let born_ms = self.inner.env.clock.wall_ms();
        let group = group.to_string();
        self.send_as(message, None, move |queue, message| broker::Request::SendHalf {
            queue,
            group: group.clone(),
            message,
            born_ms,
        })
        .await
    }

    /// Sends `req` one-way to `broker`.
    pub async fn notify(&self, broker: &str, req: &broker::Request) {
        self.inner.rpc.notify::<Broker>(broker, req).await;
    }

    async fn send_as(
        &self,
        message: Message,
        shard: Option<Shard<'_>>,
        request: impl Fn(QueueId, Message) -> broker::Request,
    ) -> SendOutcome {
        let env = &self.inner.env;
        let deadline = env.clock.mono() + SEND_TIMEOUT;
        let original_id = message.msg_id.clone();
        let mut message = message;
        let mut tries: Vec<TryResult> = Vec::new();
        // The broker of the last failed try, which a retry avoids.
        let mut avoid: Option<String> = None;
        for attempt in 0..=RETRIES {
            let queues = self.queues(&message.topic, Some(deadline)).await;
            let left = deadline.saturating_sub(env.clock.mono());
            if left.is_zero() {
                break;
            }
            let picked = self.lock().selector.select(&message.topic, &queues, shard, avoid.as_deref());
            let Some((broker, queue)) = picked else {
                if shard.is_some() {
                    // The key's queue is unowned in these routes: the next send asks again.
                    self.lock().routes.invalidate(&message.topic);
                }
                tries.push(TryResult::NoRoute);
                break;
            };
            if avoid.as_ref().is_some_and(|a| *a != broker) {
                env.probe(Probe::ProducerRetriedOtherBroker);
            }
            message.msg_id = try_id(&original_id, attempt, env.bug(Bug::ProducerRetryNewId));
            let req = request(queue.clone(), message.clone());
            let result = match self.inner.rpc.call::<Broker>(&broker, &req, left.min(TRY_TIMEOUT)).await {
                Ok(broker::Response::Sent { offset }) => TryResult::Sent { broker, queue, offset },
                Ok(broker::Response::NotOwner) => {
                    self.lock().routes.invalidate(&message.topic);
                    TryResult::NotOwner { broker }
                }
                Ok(broker::Response::Failed(reason)) => TryResult::Failed { broker, reason },
                Ok(other) => TryResult::Failed { broker, reason: format!("unexpected answer {other:?}") },
                Err(RpcError::Undecodable) => TryResult::Failed { broker, reason: "undecodable answer".to_string() },
                Err(RpcError::Timeout) => TryResult::Timeout { broker },
            };
            let sent = matches!(result, TryResult::Sent { .. });
            avoid = match &result {
                TryResult::NotOwner { broker } | TryResult::Failed { broker, .. } | TryResult::Timeout { broker } => {
                    Some(broker.clone())
                }
                TryResult::Sent { .. } | TryResult::NoRoute => None,
            };
            tries.push(result);
            if sent {
                break;
            }
        }
        let outcome = outcome(&tries);
        if !matches!(outcome, SendOutcome::Ok { .. }) {
            tracing::debug!(msg_id = %original_id, ?outcome, "send did not succeed");
        }
        outcome
    }

    /// Asks `broker` for the messages with `key` in the queues of `topic` it
    /// owns (RocketMQ's queryMessage goes to every broker of the routes):
    /// the queues it searched whole, and what it found there.
    pub async fn query_key_at(&self, broker: &str, topic: &str, key: &str) -> Result<KeyAnswer, String> {
        let req = broker::Request::QueryKey { topic: topic.to_string(), key: key.to_string(), max: QUERY_MAX };
        match self.inner.rpc.call::<Broker>(broker, &req, QUERY_TIMEOUT).await {
            Ok(broker::Response::KeyFound { searched, found }) => Ok(KeyAnswer { searched, found }),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The routes the producer would use now (after a refresh if stale):
    /// every (broker, queue) of `topic`, sorted; `None` when it knows none.
    pub async fn routes(&self, topic: &str) -> Option<Vec<(String, QueueId)>> {
        let queues = self.queues(topic, None).await;
        (!queues.is_empty()).then_some(queues)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().expect("producer state")
    }

    fn now_ms(&self) -> u64 {
        self.inner.env.clock.mono().as_millis() as u64
    }

    /// The queues of `topic`, fetched first when the cached routes are stale
    /// (and there is time before `deadline`). A failed fetch leaves the old
    /// routes in use, as a stale route beats none.
    async fn queues(&self, topic: &str, deadline: Option<Duration>) -> Vec<(String, QueueId)> {
        let stale = self.lock().routes.stale(topic, self.now_ms(), REFRESH.as_millis() as u64);
        if stale {
            // An empty answer (a NameServer that has not heard of the topic
            // yet) does not replace known routes, as in RocketMQ.
            if let Some(routes) = self.fetch(topic, deadline).await.filter(|r| !r.is_empty()) {
                let now = self.now_ms();
                self.lock().routes.update(topic, routes, now);
            }
        }
        self.lock().routes.queues(topic)
    }

    /// Asks the NameServers in turn for `topic`'s routes, from the one that
    /// answered last, moving on after a timeout; `None` when none answered.
    async fn fetch(&self, topic: &str, deadline: Option<Duration>) -> Option<Vec<(String, Vec<u32>)>> {
        let servers = &self.inner.nameservers;
        let first = self.lock().nameserver;
        let req = nameserver::Request::Routes { topic: topic.to_string() };
        for i in 0..servers.len() {
            let index = (first + i) % servers.len();
            let timeout = match deadline {
                Some(d) => d.saturating_sub(self.inner.env.clock.mono()).min(NAMESERVER_TIMEOUT),
                None => NAMESERVER_TIMEOUT,
            };
            if timeout.is_zero() {
                return None;
            }
            match self.inner.rpc.call::<NameServer>(&servers[index], &req, timeout).await {
                Ok(nameserver::Response::Routes(routes)) => {
                    self.lock().nameserver = index;
                    return Some(routes);
                }
                Ok(other) => {
                    tracing::warn!(nameserver = %servers[index], "unexpected answer to a route query: {other:?}")
                }
                Err(e) => tracing::debug!(nameserver = %servers[index], "route query failed: {e}"),
            }
            self.lock().nameserver = (index + 1) % servers.len();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(name: &str) -> String {
        name.to_string()
    }

    #[test]
    fn the_outcome_follows_from_the_tries() {
        let sent = TryResult::Sent { broker: b("b1"), queue: QueueId::new("t", 2), offset: 7 };
        let not_owner = TryResult::NotOwner { broker: b("b0") };
        let failed = TryResult::Failed { broker: b("b0"), reason: b("bookies down") };
        let timeout = TryResult::Timeout { broker: b("b1") };
        let ok = SendOutcome::Ok { broker: b("b1"), queue: QueueId::new("t", 2), offset: 7 };

        // The first Sent wins, whatever failed before it.
        assert_eq!(outcome(std::slice::from_ref(&sent)), ok);
        assert_eq!(outcome(&[timeout.clone(), failed.clone(), sent.clone()]), ok);
        assert_eq!(outcome(&[not_owner.clone(), sent]), ok);

        // Only refusals: certainly not stored.
        assert!(matches!(outcome(&[]), SendOutcome::Failed(_)));
        assert!(matches!(outcome(&[TryResult::NoRoute]), SendOutcome::Failed(_)));
        assert_eq!(
            outcome(&[not_owner.clone(), not_owner.clone(), TryResult::NoRoute]),
            SendOutcome::Failed(b("try 1: b0: not owner; try 2: b0: not owner; try 3: no route"))
        );

        // Any try that may have stored it makes the outcome unknown, even if
        // later tries were refused.
        assert!(matches!(outcome(std::slice::from_ref(&timeout)), SendOutcome::Unknown(_)));
        assert!(matches!(outcome(&[failed.clone(), not_owner.clone()]), SendOutcome::Unknown(_)));
        assert_eq!(
            outcome(&[not_owner, timeout, failed]),
            SendOutcome::Unknown(b("try 1: b0: not owner; try 2: b1: timed out; try 3: b0: failed: bookies down"))
        );
    }

    #[test]
    fn retries_keep_the_id_unless_the_bug_is_on() {
        assert_eq!((0..=RETRIES).map(|a| try_id("p-1", a, false)).collect::<Vec<_>>(), ["p-1"; 3]);
        assert_eq!((0..=RETRIES).map(|a| try_id("p-1", a, true)).collect::<Vec<_>>(), ["p-1", "p-1.r1", "p-1.r2"]);
    }
}
