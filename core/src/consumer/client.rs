//! The consumer client: a RocketMQ-style push consumer of one topic in one
//! group, at least once, with manual commits. A thin async driver over the
//! pure pieces: [`allocate`] and [`Assignment`] decide which queues it holds,
//! [`Progress`] what to pull next and how far it may commit, [`RouteCache`]
//! which broker to ask.
//!
//! One task does everything in turns: keep the group membership, rebalance
//! when due, refresh routes when stale, fetch the committed offset of queues
//! just taken, pull and process every started queue, commit when due. Every
//! request that reaches a broker or the group listing is shown to an
//! [`Observer`] as a [`Step`], so a workload can record it.
//!
//! An ordered consumer ([`Config::ordered`]) first locks each queue it takes
//! at the queue's broker and renews the lock every [`RENEW_EVERY`]. It trusts
//! a lock for [`CLIENT_LEASE`] from when it asked, processes a queue's
//! messages one at a time in offset order while the lease runs, and starts
//! the queue over (lock, committed offset) when a renewal is refused or the
//! lease lapsed. A message the application could not process is retried
//! after [`RECONSUME_AFTER`], before anything after it: nothing is skipped.
//!
//! A non-ordered consumer with a retry [`Policy`] ([`Config::retry`]) sends
//! a message it could not process back, as a new copy, to its group's retry
//! topic with a growing delay, and after the last allowed reconsume to the
//! group's dead-letter topic; the message then counts as consumed. A copy
//! reaches the consumer of the retry topic (another loop of this client, see
//! [`Config::for_retries`]) and waits there until its delay is over. When a
//! send-back fails, the message is processed again after [`RECONSUME_AFTER`].
//! Without a policy a non-ordered consumer retries locally the same way.

use super::offsets::Progress;
use super::rebalance::{allocate, Assignment};
use super::retry::{dlq_topic, retry_topic, Fate, Policy};
use crate::broker::locks::{CLIENT_LEASE, RENEW_EVERY};
use crate::broker::{Broker, Request, Response};
use crate::bugs::Bug;
use crate::env::Env;
use crate::message::{Message, QueueId, Redelivery, StoredMessage};
use crate::meta::{Lock, MetaClient, Session};
use crate::nameserver;
use crate::probe::Probe;
use crate::producer::select::RouteCache;
use crate::producer::{Producer, SendOutcome};
use crate::random::Random;
use crate::rpc::{Rpc, RpcError};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Where the members of a group register: ephemeral keys `/groups/<group>/<consumer>`.
pub const GROUPS: &str = "/groups";
/// How often a consumer rebalances (jittered), as RocketMQ does.
pub const REBALANCE_EVERY: Duration = Duration::from_secs(20);
/// How old cached routes may get before they are fetched again.
pub const ROUTE_REFRESH: Duration = Duration::from_secs(30);
/// How long to wait for a broker's answer.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(3);
const META_TIMEOUT: Duration = Duration::from_secs(1);
const META_RETRY: Duration = Duration::from_millis(500);
/// The pause of a queue after a failed request to its broker (RocketMQ waits 3 s).
const ERROR_DELAY: Duration = Duration::from_secs(1);
/// The least time between two route fetches, so a broker that keeps saying
/// "not owner" does not turn into a flood of route queries.
const ROUTE_RETRY: Duration = Duration::from_secs(1);
const COMMIT_EVERY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3));
const IDLE: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(80));
/// How soon a message whose processing failed is processed again (ordered
/// consumption's `suspendCurrentQueueTimeMillis`, 1 s).
pub const RECONSUME_AFTER: Duration = Duration::from_secs(1);
/// How long a queue whose pull found nothing new waits before the next pull
/// (short polling: the broker does not hold pulls).
const QUEUE_IDLE: (Duration, Duration) = (Duration::from_millis(500), Duration::from_millis(1_500));

/// The ephemeral key by which `consumer` is a member of `group`.
pub fn member_key(group: &str, consumer: &str) -> String {
    format!("{GROUPS}/{group}/{consumer}")
}

#[derive(Clone, Debug)]
pub struct Config {
    pub group: String,
    pub topic: String,
    /// The topic's queue count, fixed: queues `0..queues`.
    pub queues: u32,
    /// Tags to consume; empty: all.
    pub tags: Vec<String>,
    pub nameservers: Vec<String>,
    pub meta_server: String,
    pub session_timeout: Duration,
    /// Normally [`REBALANCE_EVERY`].
    pub rebalance_every: Duration,
    /// At most this many messages per pull.
    pub pull_batch: u32,
    /// Consume each queue in order, under a lock at its broker.
    pub ordered: bool,
    /// Send failed messages to the group's retry and dead-letter topics
    /// (non-ordered consumers only).
    pub retry: Option<Policy>,
}

impl Config {
    /// The consumer of the group's retry topic (`retry_queues` queues) that
    /// goes with this one: same group and servers, every tag.
    pub fn for_retries(&self, retry_queues: u32) -> Config {
        Config { topic: retry_topic(&self.group), queues: retry_queues, tags: Vec::new(), ..self.clone() }
    }

    fn is_retry_topic(&self) -> bool {
        self.topic == retry_topic(&self.group)
    }

    /// The name under which the group's consumers of this topic register
    /// (see [`member_key`]): the group's, or for its retry topic the topic's,
    /// which is split among its own members.
    fn members(&self) -> &str {
        if self.is_retry_topic() {
            &self.topic
        } else {
            &self.group
        }
    }
}

/// What the consumer does, as steps a workload can record: [`Observer::start`]
/// before a step, [`Observer::end`] with its result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Lists the group and takes this consumer's share of the queues (also
    /// recorded when a lost session makes the consumer drop every queue).
    Rebalance,
    /// Asks the owning broker for the group's committed offset of a queue just taken.
    FetchOffset { queue: u32 },
    /// Pulls from `offset` on.
    Poll { queue: u32, offset: u64 },
    /// Hands one message to the application.
    Process { queue: u32, offset: u64, msg_id: String },
    /// Moves the group's committed offset of `queue` to `offset`.
    Commit { queue: u32, offset: u64 },
    /// Locks (or renews the lock of) `queue` for this consumer at its broker (ordered consumers).
    Lock { queue: u32 },
    /// Gives the lock of `queue` back.
    Unlock { queue: u32 },
    /// Sends `copy` of the message at `offset` of `queue` (`msg_id`), which
    /// failed, to the group's retry or dead-letter topic.
    SendBack { queue: u32, offset: u64, msg_id: String, copy: Message },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepResult {
    /// The queues held now, ascending.
    Rebalanced {
        queues: Vec<u32>,
    },
    Offset(u64),
    /// `msgs`: (offset, message id, tag) of every message the broker returned,
    /// in its order; `next`: where the broker says to pull from next.
    Polled {
        msgs: Vec<(u64, String, String)>,
        next: u64,
    },
    Processed,
    Committed,
    Locked,
    Unlocked,
    /// A send-back stored its copy at `offset` of `queue` on `broker`.
    SentBack {
        broker: String,
        queue: u32,
        offset: u64,
    },
    /// Certainly had no effect.
    Failed(String),
    /// May have had effect.
    Unknown(String),
}

/// Sees every step of a consumer (a workload records them).
pub trait Observer: Send + Sync {
    /// `step` is about to happen; the token is handed back with its result.
    fn start(&self, step: &Step) -> u64;
    fn end(&self, token: u64, result: &StepResult);
}

/// What the application made of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumed {
    Done,
    /// It could not process the message now: try it again later.
    Later,
}

/// The application: processes one message (may take time).
pub trait Handler: Send + Sync {
    fn process(&self, msg: &StoredMessage) -> BoxFuture<'static, Consumed>;
}

/// Runs a consumer until `until()` is true (checked between requests), then
/// gives its queues up (committing what is processed), closes its session
/// and returns.
pub async fn run(
    env: Env,
    config: Config,
    observer: Arc<dyn Observer>,
    handler: Arc<dyn Handler>,
    until: impl Fn() -> bool,
) {
    let random = env.random(if config.is_retry_topic() { "consumer-retry" } else { "consumer" });
    let first_ns = random.range(0..config.nameservers.len().max(1));
    let sending_back = config.retry.is_some() && !config.ordered;
    let producer = sending_back.then(|| Producer::new(&env, config.nameservers.clone()));
    let copies = sending_back.then(|| {
        let r = env.random(if config.is_retry_topic() { "consumer-retry-copies" } else { "consumer-copies" });
        (r.range(0..u32::MAX), 0)
    });
    let mut c = Consumer {
        producer,
        copies,
        meta: MetaClient::new(&env, &config.meta_server, META_TIMEOUT),
        rpc: env.rpc(),
        env,
        config,
        observer,
        handler,
        until,
        random,
        first_ns,
        session: None,
        assignment: Assignment::default(),
        held: BTreeMap::new(),
        routes: RouteCache::default(),
        routes_not_before: Duration::ZERO,
    };
    if c.join().await {
        let mut rebalance_at = Duration::ZERO;
        let mut commit_at = c.now() + c.random.duration(COMMIT_EVERY.0, COMMIT_EVERY.1);
        loop {
            if (c.until)() {
                break;
            }
            if c.session.as_ref().is_none_or(Session::is_expired) {
                c.drop_all().await;
                if !c.join().await {
                    break;
                }
                rebalance_at = Duration::ZERO;
            }
            if c.now() >= rebalance_at {
                c.rebalance().await;
                rebalance_at = c.now() + c.random.jitter(c.config.rebalance_every);
            }
            c.refresh_routes().await;
            c.renew_locks().await;
            c.start_pending().await;
            let busy = c.pull_all().await;
            if c.now() >= commit_at {
                c.commit_all().await;
                commit_at = c.now() + c.random.duration(COMMIT_EVERY.0, COMMIT_EVERY.1);
            }
            if !busy {
                c.env.sleep(c.random.duration(IDLE.0, IDLE.1)).await;
            }
            madsim::task::yield_now().await;
        }
    }
    // Leaving the group gives every queue up: what is processed is
    // committed, and locks go back so that the others need not wait for them to lapse.
    c.drop_all().await;
    if let Some(session) = c.session.take() {
        let _ = session.close().await;
    }
}

/// How an ordered consumer's request for a lock ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Locking {
    Locked,
    /// Refused, or the broker no longer owns the queue.
    Refused,
    /// No answer (or no broker to ask): the lock may or may not be ours.
    NoAnswer,
}

/// A queue this consumer holds.
#[derive(Debug, Default)]
struct Held {
    /// `None` until the group's committed offset is fetched.
    progress: Option<Progress>,
    /// Pulled and accepted, not processed yet, in offset order.
    buffer: VecDeque<StoredMessage>,
    /// Ordered: until when this consumer's lock of the queue may be trusted
    /// (its clock); `None` while it holds none.
    lease_until: Option<Duration>,
    /// Ordered: when to renew the lock.
    renew_at: Duration,
    /// Ordered: the broker's id of the lock this consumer holds.
    grant: Option<u64>,
    /// The message at the front of the buffer failed once and waits to be processed again.
    retrying: bool,
    /// The last offset the broker confirmed as committed (at first, the fetched one).
    committed: u64,
    /// No request for this queue before this time (a pause after a failure).
    not_before: Duration,
    /// The broker that last said "not owner" or did not answer: another
    /// broker listing the queue is preferred.
    avoid: Option<String>,
}

struct Consumer<U> {
    env: Env,
    /// Sends failed messages back (a consumer with a retry policy).
    producer: Option<Producer>,
    /// Names the copies it sends back: a nonce drawn per run, and a count.
    copies: Option<(u32, u64)>,
    config: Config,
    observer: Arc<dyn Observer>,
    handler: Arc<dyn Handler>,
    until: U,
    meta: MetaClient,
    rpc: Arc<Rpc>,
    random: Random,
    /// The NameServer asked first.
    first_ns: usize,
    session: Option<Session>,
    assignment: Assignment,
    held: BTreeMap<u32, Held>,
    routes: RouteCache,
    routes_not_before: Duration,
}

impl<U: Fn() -> bool> Consumer<U> {
    fn now(&self) -> Duration {
        self.env.clock.mono()
    }

    /// Opens a session (unless the current one lives) and registers the
    /// member key under it. False when `until()` became true first.
    async fn join(&mut self) -> bool {
        let key = member_key(self.config.members(), &self.env.name);
        loop {
            if (self.until)() {
                return false;
            }
            let session = match self.session.take() {
                Some(s) if !s.is_expired() => s,
                _ => match Session::try_open(&self.env, &self.meta, self.config.session_timeout).await {
                    Ok(s) => s,
                    Err(_) => {
                        self.env.sleep(self.random.jitter(META_RETRY)).await;
                        continue;
                    }
                },
            };
            self.session = Some(session.clone());
            match session.lock(&key).await {
                Lock::Taken | Lock::AlreadyOurs => return true,
                Lock::NotOurs if session.is_expired() => {}
                Lock::NotOurs => match self.meta.get(&key).await {
                    // Left by this consumer's previous incarnation, whose session
                    // has not expired yet: it would vanish with that session.
                    Ok(Some(_)) => {
                        let _ = self.meta.delete(&key, None).await;
                    }
                    _ => self.env.sleep(self.random.jitter(META_RETRY)).await,
                },
            }
        }
    }

    /// Takes this consumer's share of the queues among the group's members;
    /// skips the round when the group cannot be listed.
    async fn rebalance(&mut self) {
        let token = self.observer.start(&Step::Rebalance);
        let mut members = match self.meta.children(&format!("{GROUPS}/{}", self.config.members())).await {
            Ok(members) => members,
            Err(e) => return self.observer.end(token, &StepResult::Failed(format!("listing the group: {e}"))),
        };
        members.sort();
        let all: Vec<QueueId> = (0..self.config.queues).map(|q| QueueId::new(&self.config.topic, q)).collect();
        let mine = allocate(&all, &members, &self.env.name);
        self.reassign(token, mine).await;
    }

    /// Gives up every queue (the session is gone, so others may take them).
    async fn drop_all(&mut self) {
        let token = self.observer.start(&Step::Rebalance);
        self.reassign(token, Vec::new()).await;
    }

    /// Ends the rebalance step `token` holding `mine`: commits and forgets the
    /// queues given up; the new ones wait for their committed offset.
    async fn reassign(&mut self, token: u64, mine: Vec<QueueId>) {
        let change = self.assignment.apply(mine);
        let queues = self.assignment.held().iter().map(|q| q.queue).collect();
        self.observer.end(token, &StepResult::Rebalanced { queues });
        for q in change.removed {
            if self.env.bug(Bug::RebalanceOverlap) {
                // The queue is never stopped: it goes on being pulled,
                // processed and committed beside its new holder.
                continue;
            }
            self.release(q.queue).await;
        }
        for q in change.added {
            self.held.insert(q.queue, Held::default());
        }
    }

    /// Commits what is processed of `queue`, if anything, gives its lock
    /// back, and forgets it.
    async fn release(&mut self, queue: u32) {
        let point = self.held.get(&queue).and_then(|h| commit_due(h.progress.as_ref()?, h.committed));
        if let Some(point) = point {
            self.commit(queue, point).await;
            if self.held.get(&queue).is_some_and(|h| h.committed < point) {
                self.env.probe(Probe::ConsumerRebalanceUncommitted);
            }
        }
        if self.held.get(&queue).is_some_and(|h| h.lease_until.is_some()) {
            self.unlock(queue).await;
        }
        self.held.remove(&queue);
    }

    /// Ordered: the queue is no longer this consumer's to consume (its lock
    /// was refused at renewal, or its lease lapsed). What is processed is
    /// committed; the rest is dropped, and the queue starts over from its
    /// lock and committed offset after a pause.
    async fn start_over(&mut self, queue: u32) {
        let point = self.held.get(&queue).and_then(|h| commit_due(h.progress.as_ref()?, h.committed));
        if let Some(point) = point {
            self.commit(queue, point).await;
        }
        let pause = self.now() + self.random.jitter(ERROR_DELAY);
        if let Some(h) = self.held.get_mut(&queue) {
            *h = Held { not_before: pause, avoid: h.avoid.take(), ..Held::default() };
        }
    }

    /// Whether this consumer may process `queue` now: any time when not
    /// ordered, else while its lease runs.
    fn may_process(&self, queue: u32) -> bool {
        !self.config.ordered || self.held.get(&queue).and_then(|h| h.lease_until).is_some_and(|t| self.now() < t)
    }

    /// Ordered: locks `queue` at its owner.
    async fn lock(&mut self, queue: u32) -> Locking {
        let Some(broker) = self.owner(queue) else { return Locking::NoAnswer };
        let renew = self.held.get(&queue).and_then(|h| h.grant);
        let req =
            Request::Lock { group: self.config.group.clone(), queue: QueueId::new(&self.config.topic, queue), renew };
        let asked = self.now();
        let token = self.observer.start(&Step::Lock { queue });
        let (result, locked) = match self.call(&broker, &req).await {
            Ok(Response::Locked { grant }) => {
                if let Some(h) = self.held.get_mut(&queue) {
                    h.grant = Some(grant);
                    h.lease_until = Some(asked + CLIENT_LEASE);
                    h.renew_at = self.env.clock.mono() + self.random.jitter(RENEW_EVERY);
                }
                (StepResult::Locked, Locking::Locked)
            }
            Ok(Response::Refused(why)) => {
                let pause = self.now() + self.random.jitter(ERROR_DELAY);
                if let Some(h) = self.held.get_mut(&queue) {
                    h.not_before = pause;
                }
                (StepResult::Failed(why), Locking::Refused)
            }
            other => {
                let locking =
                    if matches!(other, Ok(Response::NotOwner)) { Locking::Refused } else { Locking::NoAnswer };
                (self.failed(queue, &broker, other, true), locking)
            }
        };
        self.observer.end(token, &result);
        locked
    }

    /// Ordered: gives the lock of `queue` back (one try; the lease ends anyway).
    async fn unlock(&mut self, queue: u32) {
        let Some(grant) = self.held.get(&queue).and_then(|h| h.grant) else { return };
        let Some(broker) = self.owner(queue) else { return };
        let topic_queue = QueueId::new(&self.config.topic, queue);
        let req = Request::Unlock { group: self.config.group.clone(), queue: topic_queue, grant };
        let token = self.observer.start(&Step::Unlock { queue });
        let result = match self.call(&broker, &req).await {
            Ok(Response::Committed) => StepResult::Unlocked,
            other => failure(other, true),
        };
        self.observer.end(token, &result);
    }

    /// Ordered: renews every lock that is due, and starts over every queue
    /// whose renewal was refused or whose lease lapsed.
    async fn renew_locks(&mut self) {
        if !self.config.ordered {
            return;
        }
        let now = self.now();
        let lapsed: Vec<u32> =
            self.held.iter().filter(|(_, h)| h.lease_until.is_some_and(|t| t <= now)).map(|(q, _)| *q).collect();
        for queue in lapsed {
            self.env.probe(Probe::OrderedLeaseLapsed);
            self.start_over(queue).await;
        }
        let due: Vec<u32> =
            self.held.iter().filter(|(_, h)| h.lease_until.is_some() && h.renew_at <= now).map(|(q, _)| *q).collect();
        for queue in due {
            if (self.until)() {
                return;
            }
            match self.lock(queue).await {
                Locking::Locked => {}
                Locking::Refused => {
                    self.env.probe(Probe::OrderedLockLostAtRenewal);
                    self.start_over(queue).await;
                }
                Locking::NoAnswer => {
                    // Try again soon while the lease runs.
                    let at = self.now() + self.random.jitter(ERROR_DELAY);
                    if let Some(h) = self.held.get_mut(&queue) {
                        h.renew_at = at;
                    }
                }
            }
        }
    }

    /// Fetches routes when they are stale, at most once per [`ROUTE_RETRY`].
    async fn refresh_routes(&mut self) {
        let now = self.now();
        let topic = &self.config.topic;
        if now < self.routes_not_before || !self.routes.stale(topic, ms(now), ms(ROUTE_REFRESH)) {
            return;
        }
        self.routes_not_before = now + self.random.jitter(ROUTE_RETRY);
        if let Some(routes) =
            nameserver::client::routes(&self.env, &self.config.nameservers, self.first_ns, topic).await
        {
            self.routes.update(topic, routes, ms(self.now()));
        }
    }

    /// The broker to ask about `queue`; with none known, the routes are marked stale.
    fn owner(&mut self, queue: u32) -> Option<String> {
        let avoid = self.held.get(&queue).and_then(|h| h.avoid.as_deref());
        let owner = owner_of(&self.routes.queues(&self.config.topic), queue, avoid);
        if owner.is_none() {
            self.routes.invalidate(&self.config.topic);
        }
        owner
    }

    async fn call(&self, broker: &str, req: &Request) -> Result<Response, RpcError> {
        self.rpc.call::<Broker>(broker, req, BROKER_TIMEOUT).await
    }

    /// What a failed request about `queue` to `broker` leaves behind: a pause
    /// of the queue, and after "not owner" or silence, routes to fetch again
    /// and another broker to prefer. Returns the step's result.
    fn failed(&mut self, queue: u32, broker: &str, answer: Result<Response, RpcError>, writes: bool) -> StepResult {
        let moved = matches!(answer, Ok(Response::NotOwner) | Err(_));
        if moved {
            self.routes.invalidate(&self.config.topic);
        }
        let pause = self.now() + self.random.jitter(ERROR_DELAY);
        if let Some(h) = self.held.get_mut(&queue) {
            h.not_before = pause;
            if moved {
                h.avoid = Some(broker.to_string());
            }
        }
        failure(answer, writes)
    }

    /// Fetches the committed offset of every held queue not started yet (and not paused).
    async fn start_pending(&mut self) {
        let now = self.now();
        let waiting: Vec<u32> =
            self.held.iter().filter(|(_, h)| h.progress.is_none() && h.not_before <= now).map(|(q, _)| *q).collect();
        for queue in waiting {
            if (self.until)() {
                return;
            }
            if self.config.ordered && !self.may_process(queue) && self.lock(queue).await != Locking::Locked {
                continue;
            }
            let Some(broker) = self.owner(queue) else { continue };
            let req = Request::FetchOffset {
                group: self.config.group.clone(),
                queue: QueueId::new(&self.config.topic, queue),
            };
            let token = self.observer.start(&Step::FetchOffset { queue });
            let result = match self.call(&broker, &req).await {
                Ok(Response::Offset(offset)) => {
                    if let Some(h) = self.held.get_mut(&queue) {
                        h.progress = Some(Progress::new(offset));
                        h.committed = offset;
                    }
                    StepResult::Offset(offset)
                }
                other => self.failed(queue, &broker, other, false),
            };
            self.observer.end(token, &result);
        }
    }

    /// Pulls and processes every started queue once. True when any pull moved on.
    async fn pull_all(&mut self) -> bool {
        let now = self.now();
        let ready: Vec<u32> =
            self.held.iter().filter(|(_, h)| h.progress.is_some() && h.not_before <= now).map(|(q, _)| *q).collect();
        let mut busy = false;
        for queue in ready {
            if (self.until)() {
                break;
            }
            if self.held.get(&queue).is_some_and(|h| h.buffer.is_empty()) {
                busy |= self.pull(queue).await;
            }
            busy |= self.process(queue).await;
        }
        busy
    }

    /// One pull of `queue`; what it accepted waits in the queue's buffer.
    /// True when the pull moved on (messages, or filtered ones skipped).
    async fn pull(&mut self, queue: u32) -> bool {
        let Some(from) = self.held.get(&queue).and_then(|h| h.progress.as_ref()).map(Progress::next_pull) else {
            return false;
        };
        let Some(broker) = self.owner(queue) else { return false };
        let req = Request::Pull {
            queue: QueueId::new(&self.config.topic, queue),
            offset: from,
            max: self.config.pull_batch,
            tags: self.config.tags.clone(),
        };
        let token = self.observer.start(&Step::Poll { queue, offset: from });
        let (msgs, next) = match self.call(&broker, &req).await {
            Ok(Response::Pulled { msgs, next }) => {
                self.observer.end(token, &polled(&msgs, next));
                (msgs, next)
            }
            other => {
                if matches!(other, Ok(Response::NotOwner)) {
                    self.env.probe(Probe::ConsumerPulledFromFormerOwner);
                }
                let result = self.failed(queue, &broker, other, false);
                self.observer.end(token, &result);
                return false;
            }
        };
        let offsets: Vec<u64> =
            msgs.iter().filter(|m| wanted(&self.config.tags, &m.message.tag)).map(|m| m.offset).collect();
        let Some(progress) = self.held.get_mut(&queue).and_then(|h| h.progress.as_mut()) else { return false };
        let accepted = progress.pulled(&offsets, next).accepted;
        let moved = progress.next_pull() > from;
        if !moved {
            let pause = self.now() + self.random.duration(QUEUE_IDLE.0, QUEUE_IDLE.1);
            if let Some(h) = self.held.get_mut(&queue) {
                h.not_before = pause;
            }
        }
        if accepted.is_empty() {
            return moved;
        }
        if self.env.bug(Bug::ConsumerCommitBeforeProcess) {
            self.commit(queue, next).await;
        }
        let mut accepted = accepted.into_iter().peekable();
        let mut taken = Vec::new();
        for m in msgs {
            if accepted.peek() == Some(&m.offset) {
                accepted.next();
                taken.push(m);
            }
        }
        if let Some(h) = self.held.get_mut(&queue) {
            h.buffer.extend(taken);
        }
        true
    }

    /// Hands the buffered messages of `queue` to the application one at a
    /// time, in offset order, while this consumer may process the queue. A
    /// message the application could not process is sent back when the
    /// consumer has a retry policy; otherwise, or when that failed, it stops
    /// the queue for [`RECONSUME_AFTER`] and is processed again first. A
    /// retried copy whose delay is not over stops the queue until it is.
    /// True when a message was processed.
    async fn process(&mut self, queue: u32) -> bool {
        let mut processed = false;
        loop {
            if (self.until)() || !self.may_process(queue) {
                break;
            }
            let Some((m, retrying)) = self.held.get(&queue).and_then(|h| Some((h.buffer.front()?.clone(), h.retrying)))
            else {
                break;
            };
            if let Some(wait) = self.not_due(&m) {
                self.env.probe(Probe::RetryNotDue);
                let at = self.now() + wait;
                if let Some(h) = self.held.get_mut(&queue) {
                    h.not_before = at;
                }
                break;
            }
            if retrying && self.config.ordered {
                self.env.probe(Probe::OrderedReconsume);
            }
            let step = Step::Process { queue, offset: m.offset, msg_id: m.message.msg_id.clone() };
            let token = self.observer.start(&step);
            let consumed = self.handler.process(&m).await;
            let skip = consumed == Consumed::Later && self.config.ordered && self.env.bug(Bug::OrderedSkipOnFailure);
            let sent_back = match (consumed, self.config.retry) {
                (Consumed::Later, Some(policy)) if !self.config.ordered => {
                    self.observer.end(token, &StepResult::Failed("consume later".into()));
                    Some(self.send_back(queue, &m, policy).await)
                }
                _ => None,
            };
            let Some(h) = self.held.get_mut(&queue) else { break };
            if let Some(sent) = sent_back {
                if sent {
                    if let Some(p) = h.progress.as_mut() {
                        p.processed(m.offset);
                    }
                    h.buffer.pop_front();
                    h.retrying = false;
                    processed = true;
                    continue;
                }
                h.retrying = true;
                h.not_before = self.env.clock.mono() + RECONSUME_AFTER;
                break;
            }
            if consumed == Consumed::Done || skip {
                if let Some(p) = h.progress.as_mut() {
                    p.processed(m.offset);
                }
                h.buffer.pop_front();
                h.retrying = false;
                processed = true;
            } else {
                h.retrying = true;
                h.not_before = self.env.clock.mono() + RECONSUME_AFTER;
            }
            let result = if consumed == Consumed::Done {
                StepResult::Processed
            } else {
                StepResult::Failed("consume later".into())
            };
            self.observer.end(token, &result);
            if consumed == Consumed::Later && !skip {
                break;
            }
        }
        processed
    }

    /// How long a retried copy must still wait before it may be processed,
    /// if at all. Its due time is by its sender's clock: a wait is never
    /// longer than the longest delay, so a sender's skewed clock cannot hold
    /// the retry queue up for longer.
    fn not_due(&self, m: &StoredMessage) -> Option<Duration> {
        let due = m.message.redelivery.as_ref().filter(|_| self.config.is_retry_topic())?.due_ms;
        let now = self.env.clock.wall_ms();
        let longest = self.config.retry.unwrap_or_default().longest_delay();
        (due > now).then(|| Duration::from_millis(due - now).min(longest))
    }

    /// Sends a new copy of `m`, which failed, to the group's retry topic, or
    /// after its last allowed reconsume to the dead-letter topic. True when
    /// the copy is stored: `m` then counts as consumed.
    async fn send_back(&mut self, queue: u32, m: &StoredMessage, policy: Policy) -> bool {
        let (Some(producer), Some((nonce, count))) = (&self.producer, self.copies.as_mut()) else { return false };
        *count += 1;
        let msg_id = format!("{}.{nonce:08x}.back{count}", self.env.name);
        let (origin, reconsumes) =
            m.message.redelivery.as_ref().map_or((&m.message.msg_id, 0), |r| (&r.origin, r.reconsumes));
        let mut fate = policy.fate(reconsumes);
        if self.env.bug(Bug::DlqBeforeMaxRetries)
            && matches!(fate, Fate::Retry { reconsumes, .. } if reconsumes >= policy.max_reconsumes)
        {
            fate = Fate::DeadLetter;
        }
        let group = &self.config.group;
        let (topic, reconsumes, delay) = match fate {
            Fate::Retry { reconsumes, delay } => (retry_topic(group), reconsumes, delay),
            Fate::DeadLetter => (dlq_topic(group), reconsumes, Duration::ZERO),
        };
        let dead = matches!(fate, Fate::DeadLetter);
        let copy = Message {
            body: format!("back.{msg_id}").into_bytes(),
            msg_id,
            topic,
            tag: m.message.tag.clone(),
            keys: m.message.keys.clone(),
            redelivery: Some(Redelivery {
                origin: origin.clone(),
                reconsumes,
                due_ms: self.env.clock.wall_ms() + delay.as_millis() as u64,
            }),
        };
        let step = Step::SendBack { queue, offset: m.offset, msg_id: m.message.msg_id.clone(), copy: copy.clone() };
        let token = self.observer.start(&step);
        let (result, stored) = match producer.send(copy, None).await {
            SendOutcome::Ok { broker, queue, offset } => {
                self.env.probe(if dead { Probe::RetryDeadLettered } else { Probe::RetrySentBack });
                (StepResult::SentBack { broker, queue: queue.queue, offset }, true)
            }
            SendOutcome::Failed(e) => (StepResult::Failed(e), false),
            SendOutcome::Unknown(e) => (StepResult::Unknown(e), false),
        };
        if !stored {
            self.env.probe(Probe::RetrySendBackFailed);
        }
        self.observer.end(token, &result);
        stored
    }

    /// Commits every started queue whose commit point moved past its committed offset.
    async fn commit_all(&mut self) {
        let due: Vec<(u32, u64)> =
            self.held.iter().filter_map(|(q, h)| Some((*q, commit_due(h.progress.as_ref()?, h.committed)?))).collect();
        for (queue, offset) in due {
            self.commit(queue, offset).await;
        }
    }

    /// Commits `offset` of `queue` at its owner; remembered only when the broker confirms.
    async fn commit(&mut self, queue: u32, offset: u64) {
        let Some(broker) = self.owner(queue) else { return };
        let req = Request::Commit {
            group: self.config.group.clone(),
            queue: QueueId::new(&self.config.topic, queue),
            offset,
        };
        let token = self.observer.start(&Step::Commit { queue, offset });
        let result = match self.call(&broker, &req).await {
            Ok(Response::Committed) => {
                if let Some(h) = self.held.get_mut(&queue) {
                    h.committed = h.committed.max(offset);
                }
                StepResult::Committed
            }
            other => self.failed(queue, &broker, other, true),
        };
        self.observer.end(token, &result);
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// The broker to ask about `queue`, from a topic's (broker, queue) pairs: the
/// first in sorted order listing it, unless that is `avoid` and another one
/// lists it too (an ownership move the NameServer has not caught up with).
pub fn owner_of(routes: &[(String, QueueId)], queue: u32, avoid: Option<&str>) -> Option<String> {
    let mut listing: Vec<&str> = routes.iter().filter(|(_, q)| q.queue == queue).map(|(b, _)| b.as_str()).collect();
    listing.sort_unstable();
    listing.iter().find(|b| Some(**b) != avoid).or(listing.first()).map(|b| b.to_string())
}

/// Whether a message tagged `tag` is consumed under `tags` (empty: every tag).
pub fn wanted(tags: &[String], tag: &str) -> bool {
    tags.is_empty() || tags.iter().any(|t| t == tag)
}

/// The offset to commit for `progress`, if its commit point moved past `committed`.
pub fn commit_due(progress: &Progress, committed: u64) -> Option<u64> {
    let point = progress.commit_point();
    (point > committed).then_some(point)
}

/// The step result of a pull answered with `msgs` and `next`.
fn polled(msgs: &[StoredMessage], next: u64) -> StepResult {
    let msgs = msgs.iter().map(|m| (m.offset, m.message.msg_id.clone(), m.message.tag.clone())).collect();
    StepResult::Polled { msgs, next }
}

/// The step result of a request that did not get the answer it wanted.
/// "Not owner" did nothing; a broker's own failure of a write (`writes`), a
/// wrong answer to one, and silence may have had effect.
fn failure(answer: Result<Response, RpcError>, writes: bool) -> StepResult {
    match answer {
        Ok(Response::NotOwner) => StepResult::Failed("not owner".to_string()),
        Ok(Response::Failed(why)) if writes => StepResult::Unknown(why),
        Ok(Response::Failed(why)) => StepResult::Failed(why),
        Ok(other) if writes => StepResult::Unknown(format!("unexpected answer: {other:?}")),
        Ok(other) => StepResult::Failed(format!("unexpected answer: {other:?}")),
        Err(e) => StepResult::Unknown(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn pairs(v: &[(&str, u32)]) -> Vec<(String, QueueId)> {
        v.iter().map(|(b, q)| (b.to_string(), QueueId::new("t", *q))).collect()
    }

    fn stored(offset: u64, id: &str, tag: &str) -> StoredMessage {
        let message = Message {
            msg_id: id.into(),
            topic: "t".into(),
            tag: tag.into(),
            keys: Vec::new(),
            body: Vec::new(),
            redelivery: None,
        };
        StoredMessage { offset, message }
    }

    #[test]
    fn the_owner_is_the_first_broker_listing_the_queue_unless_avoided() {
        let routes = pairs(&[("b2", 0), ("b1", 1), ("b0", 1), ("b2", 1)]);
        assert_eq!(owner_of(&routes, 0, None), Some("b2".into()));
        assert_eq!(owner_of(&routes, 1, None), Some("b0".into()));
        assert_eq!(owner_of(&routes, 1, Some("b0")), Some("b1".into()));
        assert_eq!(owner_of(&routes, 1, Some("b1")), Some("b0".into()));
        // The only broker listing it is asked even when avoided.
        assert_eq!(owner_of(&routes, 0, Some("b2")), Some("b2".into()));
        assert_eq!(owner_of(&routes, 7, None), None);
        assert_eq!(owner_of(&[], 0, None), None);
    }

    #[test]
    fn no_tags_means_every_tag() {
        let tags = vec!["a".to_string(), "b".to_string()];
        assert!(wanted(&[], "x"));
        assert!(wanted(&tags, "b"));
        assert!(!wanted(&tags, "x"));
        assert!(!wanted(&tags, ""));
    }

    #[test]
    fn a_commit_is_due_only_past_the_committed_offset() {
        let mut p = Progress::new(5);
        assert_eq!(commit_due(&p, 5), None);
        let _ = p.pulled(&[5, 6], 7);
        assert_eq!(commit_due(&p, 5), None, "nothing processed yet");
        assert!(p.processed(5));
        assert_eq!(commit_due(&p, 5), Some(6));
        assert!(p.processed(6));
        assert_eq!(commit_due(&p, 5), Some(7));
        assert_eq!(commit_due(&p, 7), None);
        assert_eq!(commit_due(&p, 9), None, "a commit further on (the planted bug's) is not undone");
    }

    #[test]
    fn a_pull_is_recorded_with_every_message_the_broker_returned() {
        let msgs = vec![stored(4, "m4", "a"), stored(6, "m6", "b")];
        assert_eq!(
            polled(&msgs, 9),
            StepResult::Polled { msgs: vec![(4, "m4".into(), "a".into()), (6, "m6".into(), "b".into())], next: 9 }
        );
    }

    #[test]
    fn failures_are_certain_only_when_nothing_can_have_happened() {
        let not_owner = || Ok(Response::NotOwner);
        assert_eq!(failure(not_owner(), false), StepResult::Failed("not owner".into()));
        assert_eq!(failure(not_owner(), true), StepResult::Failed("not owner".into()));
        assert_eq!(failure(Ok(Response::Failed("disk".into())), false), StepResult::Failed("disk".into()));
        assert_eq!(failure(Ok(Response::Failed("disk".into())), true), StepResult::Unknown("disk".into()));
        assert!(matches!(failure(Ok(Response::Committed), false), StepResult::Failed(_)));
        assert!(matches!(failure(Ok(Response::Offset(3)), true), StepResult::Unknown(_)));
        assert_eq!(failure(Err(RpcError::Timeout), false), StepResult::Unknown("timed out".into()));
        assert_eq!(failure(Err(RpcError::Timeout), true), StepResult::Unknown("timed out".into()));
    }

    /// The consumer can be spawned as a task: its future is `Send`.
    #[allow(dead_code)]
    fn run_is_send(env: Env, config: Config, o: Arc<dyn Observer>, h: Arc<dyn Handler>) -> impl Send {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        run(env, config, o, h, move || stop.load(std::sync::atomic::Ordering::Relaxed))
    }

    #[test]
    fn member_keys_sit_under_the_group() {
        assert_eq!(member_key("g", "consumer-1"), "/groups/g/consumer-1");
    }
}
