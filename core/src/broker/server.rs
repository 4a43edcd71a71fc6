//! The broker node. Stateless: what it owns is in the metadata service (an
//! ephemeral lock per queue, held by its session), what it stores is in the
//! queues' managed ledgers, and consumer offsets are their durable cursors.
//! It takes the queues it was chosen for, takes over queues left unowned for
//! a while (a dead broker's), registers with every NameServer, and serves.
//! With a leader ([`Config::balance`]) it instead takes the queues the leader
//! broker assigned to it and gives up those assigned away (see [`super::balance`]).

use super::balance::{Assignments, Load, ASSIGNMENTS};
use super::index::KeyIndex;
use super::leader::{self, Balance};
use super::locks::{self, LockTable};
use super::proto::{Broker, Request, Response};
use super::tx::{self, Producers, TxLogs};
use super::txn::CheckConfig;
use crate::bugs::Bug;
use crate::env::Env;
use crate::ledger::LedgerClient;
use crate::managed::{self, ManagedLedger, MlError};
use crate::message::{self, QueueId, StoredMessage};
use crate::meta::{Lock, Session};
use crate::nameserver::routes::Version;
use crate::nameserver::{self, NameServer, REGISTER_EVERY};
use crate::probe::Probe;
use crate::rpc::{self, Incoming, Rpc};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A topic and the brokers chosen for it: queue q goes first to
/// `brokers[q % brokers.len()]`.
#[derive(Clone, Debug)]
pub struct Topic {
    pub name: String,
    pub queues: u32,
    pub brokers: Vec<String>,
    /// Takes transactional messages: its queues have half, op and discard logs.
    pub transactional: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub meta_server: String,
    pub nameservers: Vec<String>,
    pub topics: Vec<Topic>,
    pub ledger: managed::Config,
    pub session_timeout: Duration,
    /// How long a queue must be seen unowned before a broker it was not
    /// chosen for takes it.
    pub takeover_after: Duration,
    /// Told of every registration, for a workload to record.
    pub registrations: Option<Registrations>,
    /// The check-back service of transactional topics.
    pub check: CheckConfig,
    /// Queues go where a leader broker assigns them (`Topic::brokers` and
    /// `takeover_after` are then unused); every broker is a candidate leader.
    pub balance: Option<Balance>,
}

/// Sees a broker's registrations: `start` before each is sent (a token
/// back), `end` with whether the NameServer acknowledged it.
pub trait RegistrationObserver: Send + Sync {
    fn start(&self, nameserver: &str, queues: &[QueueId]) -> u64;
    fn end(&self, token: u64, acknowledged: bool);
}

#[derive(Clone)]
pub struct Registrations(pub Arc<dyn RegistrationObserver>);

impl std::fmt::Debug for Registrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registrations")
    }
}

/// The log of a queue.
pub fn log_name(q: &QueueId) -> String {
    format!("{}-q{}", q.topic, q.queue)
}

pub fn owner_lock(q: &QueueId) -> String {
    format!("/owners/{}", log_name(q))
}

/// How often ownership is looked at.
const OWNERSHIP_EVERY: Duration = Duration::from_millis(2_000);
/// Entries a pull looks at, at most, per message it may return.
const SCAN_PER_MESSAGE: u64 = 4;
const NAMESERVER_TIMEOUT: Duration = Duration::from_secs(1);
/// How soon a registration a NameServer did not acknowledge is sent again.
const REGISTER_RETRY: Duration = Duration::from_secs(3);

/// A queue this broker owns: its log, the log's index by key, its
/// transaction logs if its topic is transactional, and the session whose
/// lock makes it the owner.
#[derive(Clone)]
struct Owned {
    ml: ManagedLedger,
    index: Arc<Mutex<KeyIndex>>,
    tx: Option<Arc<TxLogs>>,
    session: Session,
}

impl Owned {
    /// A log just opened, with an empty index that queries catch up from the
    /// log (unless the planted bug takes the log as indexed already).
    fn new(env: &Env, ml: ManagedLedger, tx: Option<TxLogs>, session: Session) -> Owned {
        let upto = if env.bug(Bug::IndexSkipsTakenOverLog) { ml.end() } else { 0 };
        Owned { ml, index: Arc::new(Mutex::new(KeyIndex::starting_at(upto))), tx: tx.map(Arc::new), session }
    }

    /// Why the queue takes no more writes, if it does not.
    fn failed(&self) -> Option<MlError> {
        self.ml.failed().or_else(|| self.tx.as_ref().and_then(|t| t.failed()))
    }
}

/// The keys a message is indexed under: its own, and its id (a key no
/// producer can give), so a commit can tell its real message is stored.
fn index_keys(m: &message::Message) -> Vec<String> {
    let mut keys = m.keys.clone();
    keys.push(id_key(&m.msg_id));
    keys
}

fn id_key(msg_id: &str) -> String {
    format!("\u{1}id {msg_id}")
}

#[derive(Default)]
struct State {
    owned: BTreeMap<QueueId, Owned>,
    /// Set when ownership changed, so the NameServers hear of it soon.
    changed: bool,
    /// Offsets kept only here (the planted bug `offsets-in-memory`).
    offsets: BTreeMap<(String, QueueId), u64>,
    /// The producers of each group heard from, for check-backs.
    producers: Producers,
    /// Which consumer of a group consumes each owned queue in order.
    locks: LockTable,
}

type Shared = Arc<Mutex<State>>;

pub async fn serve(env: Env, config: Config) {
    // Grant ids of this incarnation start past any an earlier one gave (1,000 a millisecond).
    let locks = LockTable::starting_after(ms(env.clock.mono()) * 1_000);
    let state: Shared = Arc::new(Mutex::new(State { locks, ..State::default() }));
    let c = LedgerClient::new(&env, &config.meta_server);
    madsim::task::spawn(own(env.clone(), c.clone(), config.clone(), state.clone()));
    madsim::task::spawn(register(env.clone(), config.clone(), state.clone()));
    if config.balance.is_some() {
        let s = state.clone();
        let load = Arc::new(move || Load { queues: s.lock().expect("broker").owned.len() as u32 });
        madsim::task::spawn(leader::lead(env.clone(), c.meta.clone(), config.clone(), load));
    }
    if config.topics.iter().any(|t| t.transactional) {
        madsim::task::spawn(check_back(env.clone(), config.check, state.clone()));
    }
    let (rpc, mut requests) = Rpc::serve::<Broker>(&env);
    while let Some(inc) = rpc::next_request(&mut requests).await {
        let (env, rpc, state) = (env.clone(), rpc.clone(), state.clone());
        madsim::task::spawn(async move {
            let resp = handle(&env, &state, &inc).await;
            rpc.reply(&inc, &resp).await;
        });
    }
}

/// The queue if this broker owns it and its log still takes writes.
fn owner_of(state: &Shared, q: &QueueId) -> Option<Owned> {
    state.lock().expect("broker").owned.get(q).filter(|o| o.failed().is_none()).cloned()
}

async fn handle(env: &Env, state: &Shared, inc: &Incoming<Broker>) -> Response {
    let queue = match &inc.req {
        Request::Send { queue, .. }
        | Request::Pull { queue, .. }
        | Request::FetchOffset { queue, .. }
        | Request::Commit { queue, .. }
        | Request::SendHalf { queue, .. }
        | Request::EndTx { queue, .. }
        | Request::Lock { queue, .. }
        | Request::Unlock { queue, .. } => queue,
        Request::QueryKey { topic, key, max } => return query_key(env, state, topic, key, *max).await,
        Request::Heartbeat { group } => {
            let now = env.clock.mono().as_millis() as u64;
            state.lock().expect("broker").producers.heard(group, &inc.from, now);
            return Response::Committed;
        }
    };
    let Some(owned) = owner_of(state, queue) else { return Response::NotOwner };
    let ml = &owned.ml;
    match &inc.req {
        Request::Send { message, .. } => send(env, &owned, message).await,
        Request::Pull { offset, max, tags, .. } => pull(ml, *offset, *max, tags).await,
        Request::FetchOffset { group, .. } => {
            if env.bug(Bug::OffsetsInMemory) {
                let s = state.lock().expect("broker");
                return Response::Offset(s.offsets.get(&(group.clone(), queue.clone())).copied().unwrap_or(0));
            }
            match ml.read_cursor(group).await {
                Ok(offset) => Response::Offset(offset),
                Err(e) => Response::Failed(e.to_string()),
            }
        }
        Request::Commit { group, offset, .. } => {
            if env.bug(Bug::OffsetsInMemory) {
                let mut s = state.lock().expect("broker");
                let at = s.offsets.entry((group.clone(), queue.clone())).or_default();
                *at = (*at).max(*offset);
                return Response::Committed;
            }
            match ml.commit_cursor(group, *offset).await {
                Ok(()) => Response::Committed,
                Err(e) => Response::Failed(e.to_string()),
            }
        }
        Request::SendHalf { group, message, born_ms, .. } => {
            let Some(tx) = &owned.tx else { return Response::Failed(format!("{queue} is not transactional")) };
            if env.bug(Bug::TxHalfVisible) {
                if let Err(e) = append_real(&owned, message.clone()).await {
                    return Response::Failed(e.to_string());
                }
            }
            match tx.store_half(env, group, &inc.from, message, *born_ms).await {
                Ok(offset) => Response::Sent { offset },
                Err(e) => Response::Failed(e.to_string()),
            }
        }
        Request::EndTx { half, msg_id, word, from_check, .. } => {
            let Some(tx) = &owned.tx else { return Response::Failed(format!("{queue} is not transactional")) };
            let write_real = |m: message::Message| -> futures::future::BoxFuture<'static, Result<u64, MlError>> {
                let owned = owned.clone();
                Box::pin(async move { append_real(&owned, m).await })
            };
            let is_written = is_written(env, &owned);
            let m = tx::EndMessage { origin: *half, msg_id, word: *word, from_check: *from_check };
            match tx::end(env, tx, m, &write_real, &is_written).await {
                Ok(()) => Response::Committed,
                Err(e) => Response::Failed(e.to_string()),
            }
        }
        Request::Lock { group, renew, .. } => {
            // A lease outlives the asking, so only an owner whose session
            // lives grants one: a zombie's grant would overlap its successor's.
            if owned.session.is_expired() || env.clock.mono() >= owned.session.trusted_until() {
                env.probe(Probe::OrderedLockRefusedStaleOwner);
                return Response::NotOwner;
            }
            let now = ms(env.clock.mono());
            match state.lock().expect("broker").locks.lock(group, queue, &inc.from, *renew, now, ms(locks::LEASE)) {
                Ok(grant) => Response::Locked { grant },
                Err(refusal) => {
                    env.probe(match refusal {
                        locks::Refusal::HeldBy(_) => Probe::OrderedLockRefusedHeld,
                        locks::Refusal::Opened { .. } => Probe::OrderedLockRefusedOpened,
                    });
                    Response::Refused(refusal.to_string())
                }
            }
        }
        Request::Unlock { group, grant, .. } => {
            state.lock().expect("broker").locks.unlock(group, queue, &inc.from, *grant);
            Response::Committed
        }
        Request::QueryKey { .. } | Request::Heartbeat { .. } => unreachable!("answered above"),
    }
}

/// Whether a message of an id is in `owned`'s queue log, by its key index
/// caught up to the durable end.
fn is_written(
    env: &Env,
    owned: &Owned,
) -> impl Fn(String) -> futures::future::BoxFuture<'static, Result<bool, MlError>> + Sync {
    let (env, owned) = (env.clone(), owned.clone());
    move |id: String| -> futures::future::BoxFuture<'static, Result<bool, MlError>> {
        let (env, owned) = (env.clone(), owned.clone());
        Box::pin(async move {
            if !catch_up(&env, &owned, owned.ml.end()).await {
                return Err(MlError::Unreadable);
            }
            Ok(!owned.index.lock().expect("key index").lookup(&id_key(&id)).is_empty())
        })
    }
}

/// Appends `message` to the queue's log and indexes it; its offset once durable.
async fn append_real(owned: &Owned, message: message::Message) -> Result<u64, MlError> {
    let (done_tx, done_rx) = futures::channel::oneshot::channel();
    let (index, keys) = (owned.index.clone(), index_keys(&message));
    owned.ml.append_then(message::encode(&message), move |r| {
        if let Ok(offset) = r {
            index.lock().expect("key index").add(offset, &keys);
        }
        let _ = done_tx.send(r);
    });
    done_rx.await.unwrap_or(Err(MlError::Fenced))
}

/// Every interval, a check pass over each owned transactional queue.
async fn check_back(env: Env, cfg: CheckConfig, state: Shared) {
    if env.bug(Bug::TxNoCheckback) {
        return;
    }
    loop {
        env.sleep(tx::interval(&cfg)).await;
        let queues: Vec<(QueueId, Owned, Arc<TxLogs>)> = {
            let s = state.lock().expect("broker");
            s.owned.iter().filter_map(|(q, o)| Some((q.clone(), o.clone(), o.tx.clone()?))).collect()
        };
        for (q, owned, logs) in queues {
            if logs.failed().is_some() {
                continue;
            }
            let pick = |group: &str, sender: &str| {
                let now = env.clock.mono().as_millis() as u64;
                state.lock().expect("broker").producers.pick(group, sender, now)
            };
            let is_written = is_written(&env, &owned);
            if let Err(e) = tx::check_pass(&env, &cfg, &q, &logs, &pick, &is_written).await {
                tracing::debug!(queue = %q, "check pass failed: {e}");
            }
        }
    }
}

/// SEND_OK only once Qa bookies stored the message (unless the planted bug
/// answers as soon as the append is queued). A stored message is indexed by
/// its keys as the log acknowledges it, in offset order.
async fn send(env: &Env, owned: &Owned, message: &message::Message) -> Response {
    let (queued_tx, queued_rx) = futures::channel::oneshot::channel();
    let (done_tx, done_rx) = futures::channel::oneshot::channel();
    let (index, keys) = (owned.index.clone(), index_keys(message));
    owned.ml.append_queued(
        message::encode(message),
        move |offset| {
            let _ = queued_tx.send(offset);
        },
        move |r| {
            if let Ok(offset) = r {
                index.lock().expect("key index").add(offset, &keys);
            }
            let _ = done_tx.send(r);
        },
    );
    if env.bug(Bug::BrokerAckBeforeQuorum) {
        if let Ok(offset) = queued_rx.await {
            return Response::Sent { offset };
        }
    }
    match done_rx.await {
        Ok(Ok(offset)) => Response::Sent { offset },
        Ok(Err(e)) => Response::Failed(e.to_string()),
        Err(_) => Response::Failed(MlError::Fenced.to_string()),
    }
}

/// Messages of `tags` from `offset` on, never past what is durable.
async fn pull(ml: &ManagedLedger, offset: u64, max: u32, tags: &[String]) -> Response {
    let mut msgs = Vec::new();
    let mut next = offset;
    let limit = offset + max as u64 * SCAN_PER_MESSAGE;
    while next < limit && msgs.len() < max as usize {
        let payload = match ml.read(next).await {
            Ok(p) => p,
            Err(MlError::BeyondEnd) => break,
            Err(e) if msgs.is_empty() && next == offset => return Response::Failed(e.to_string()),
            Err(_) => break,
        };
        let Some(message) = message::decode(&payload) else {
            return Response::Failed(format!("entry at offset {next} is not a message"));
        };
        if tags.is_empty() || tags.contains(&message.tag) {
            msgs.push(StoredMessage { offset: next, message });
        }
        next += 1;
    }
    Response::Pulled { msgs, next }
}

/// The messages with `key` in the queues of `topic` owned here. Each queue's
/// index is first caught up to the log's durable end by reading the log; a
/// queue whose log could not be read, or whose matches do not fit in `max`,
/// is left out of `searched`.
async fn query_key(env: &Env, state: &Shared, topic: &str, key: &str, max: u32) -> Response {
    let queues: Vec<(u32, Owned)> = {
        let s = state.lock().expect("broker");
        let owned = s.owned.iter().filter(|(q, o)| q.topic == topic && o.failed().is_none());
        owned.map(|(q, o)| (q.queue, o.clone())).collect()
    };
    let (mut searched, mut found) = (Vec::new(), Vec::new());
    'queues: for (queue, owned) in queues {
        let end = owned.ml.end();
        if !catch_up(env, &owned, end).await {
            continue;
        }
        let offsets: Vec<u64> =
            owned.index.lock().expect("key index").lookup(key).iter().copied().filter(|o| *o < end).collect();
        if found.len() + offsets.len() > max as usize {
            continue;
        }
        let mut matches = Vec::with_capacity(offsets.len());
        for offset in offsets {
            let Some(message) = owned.ml.read(offset).await.ok().and_then(|p| message::decode(&p)) else {
                continue 'queues;
            };
            if message.keys.iter().any(|k| k == key) {
                matches.push((queue, StoredMessage { offset, message }));
            }
        }
        searched.push((queue, end));
        found.extend(matches);
    }
    Response::KeyFound { searched, found }
}

/// Indexes `owned`'s log up to `end`, reading what the index lacks; false
/// when a read failed.
async fn catch_up(env: &Env, owned: &Owned, end: u64) -> bool {
    loop {
        let next = owned.index.lock().expect("key index").upto();
        if next >= end {
            return true;
        }
        let Some(message) = owned.ml.read(next).await.ok().and_then(|p| message::decode(&p)) else { return false };
        env.probe(Probe::KeyIndexReadFromLog);
        owned.index.lock().expect("key index").add(next, &index_keys(&message));
    }
}

/// Takes and keeps queues, one session at a time.
async fn own(env: Env, c: LedgerClient, config: Config, state: Shared) {
    let random = env.random("broker-ownership");
    let queues: Vec<(QueueId, bool, bool)> = config
        .topics
        .iter()
        .flat_map(|t| {
            (0..t.queues).map(|q| {
                let chosen = t.brokers.get(q as usize % t.brokers.len().max(1)) == Some(&env.name);
                (QueueId::new(t.name.clone(), q), chosen, t.transactional)
            })
        })
        .collect();
    loop {
        let session = Session::open(&env, &c.meta, config.session_timeout).await;
        let mut memo = Memo::default();
        while !session.is_expired() {
            // With a leader: its assignments, read once a round (`None`: not known now).
            let assigned = match &config.balance {
                None => None,
                Some(_) => match c.meta.get(ASSIGNMENTS).await {
                    Ok(Some((bytes, _))) => Assignments::decode(&bytes),
                    Ok(None) => Some(Assignments::default()),
                    Err(_) => None,
                },
            };
            for (q, chosen, transactional) in &queues {
                if session.is_expired() {
                    break;
                }
                let chosen = match (&config.balance, &assigned) {
                    (None, _) => Chosen::Statically(*chosen),
                    (Some(_), None) => Chosen::Unknown,
                    (Some(_), Some(a)) => Chosen::ByLeader(a.queues.get(q).is_some_and(|b| *b == env.name)),
                };
                let how = Look { chosen, transactional: *transactional };
                look_at(&env, &c, &config, &state, &session, q, how, &mut memo).await;
            }
            env.sleep(random.jitter(OWNERSHIP_EVERY)).await;
        }
        // The locks went with the session: every log is given up.
        {
            let mut s = state.lock().expect("broker");
            s.owned.clear();
            s.locks.forget_all();
            s.changed = true;
        }
    }
}

/// How a broker looks at a queue: whether it was chosen for it, and whether
/// its topic is transactional.
#[derive(Clone, Copy)]
struct Look {
    chosen: Chosen,
    transactional: bool,
}

/// Whether a broker is the one to own a queue.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Chosen {
    /// By the topic's broker list (others take it over when it stays unowned).
    Statically(bool),
    /// By the leader's assignments: true when assigned to this broker.
    ByLeader(bool),
    /// A leader decides, but its assignments could not be read now.
    Unknown,
}

/// One look at queue `q`: keep it, drop it, or take it.
#[allow(clippy::too_many_arguments)]
async fn look_at(
    env: &Env,
    c: &LedgerClient,
    config: &Config,
    state: &Shared,
    session: &Session,
    q: &QueueId,
    Look { chosen, transactional }: Look,
    memo: &mut Memo,
) {
    let held = state.lock().expect("broker").owned.get(q).map(|o| o.failed().is_some());
    match held {
        Some(false) if chosen == Chosen::ByLeader(false) => {
            // The leader moved it: give it up, so its new owner can take it.
            env.probe(Probe::LeaderQueueGivenUp);
            return give_up(state, session, q, memo).await;
        }
        Some(false) => return,
        // Fenced by another owner, or its storage failed: give it up.
        Some(true) => return give_up(state, session, q, memo).await,
        None if memo.releasing.contains(q) => {
            // An earlier release went unanswered: the lock may still be ours.
            if release(session, q).await {
                memo.releasing.remove(q);
            }
            return;
        }
        None => {}
    }
    let by_leader = chosen == Chosen::ByLeader(true);
    let chosen = match chosen {
        Chosen::Statically(chosen) => chosen,
        Chosen::ByLeader(true) => true,
        Chosen::ByLeader(false) | Chosen::Unknown => return,
    };
    if !chosen {
        match c.meta.get(&owner_lock(q)).await {
            Ok(None) => {
                let now = env.clock.mono();
                let since = *memo.unowned_since.entry(q.clone()).or_insert(now);
                if now.saturating_sub(since) < config.takeover_after {
                    return;
                }
            }
            // Ours already (a create that timed out but happened, or an
            // unlock that failed): take the queue up again.
            Ok(Some((_, stat))) if stat.owner == Some(session.id()) => {}
            Ok(Some(_)) => {
                memo.unowned_since.remove(q);
                return;
            }
            // No answer says nothing about the owner.
            Err(_) => return,
        }
    }
    if session.lock(&owner_lock(q)).await == Lock::NotOurs {
        return;
    }
    memo.unowned_since.remove(q);
    let opened = async {
        let ml = ManagedLedger::open(c, &log_name(q), config.ledger).await?;
        let tx = if transactional { Some(TxLogs::open(env, c, &log_name(q), config.ledger).await?) } else { None };
        Ok::<_, MlError>((ml, tx))
    };
    match opened.await {
        Ok((ml, tx)) => {
            if !chosen || (by_leader && ml.had_owner) {
                env.probe(Probe::BrokerTookOverQueue);
            }
            // Leases an earlier owner (or this broker's earlier incarnation)
            // granted are unknown here: none is granted until they lapsed.
            // A log nobody owned before has none.
            let hold =
                if ml.had_owner && !env.bug(Bug::OrderedLockOutlivesOwner) { ms(locks::TAKEOVER_HOLD) } else { 0 };
            let mut s = state.lock().expect("broker");
            s.owned.insert(q.clone(), Owned::new(env, ml, tx, session.clone()));
            s.locks.opened(q, ms(env.clock.mono()), hold);
            s.changed = true;
        }
        Err(_) => {
            if !release(session, q).await {
                memo.releasing.insert(q.clone());
            }
        }
    }
}

/// What one session's ownership rounds remember between looks at a queue.
#[derive(Default)]
struct Memo {
    /// When each queue was first seen unowned.
    unowned_since: BTreeMap<QueueId, Duration>,
    /// Queues given up whose owner lock may still be this session's (the
    /// release went unanswered): released again until it is certainly gone.
    releasing: BTreeSet<QueueId>,
}

/// Forgets queue `q` and releases its owner lock.
async fn give_up(state: &Shared, session: &Session, q: &QueueId, memo: &mut Memo) {
    {
        let mut s = state.lock().expect("broker");
        s.owned.remove(q);
        s.locks.forget(q);
        s.changed = true;
    }
    if !release(session, q).await {
        memo.releasing.insert(q.clone());
    }
}

/// Deletes `q`'s owner lock if `session` holds it. True when the lock is
/// certainly not this session's any more; false when the metadata service
/// did not answer (a lock left held would keep the queue from its next owner
/// for as long as this session lives).
async fn release(session: &Session, q: &QueueId) -> bool {
    session.unlock_certainly(&owner_lock(q)).await
}

/// Registers the owned queues with every NameServer every 30 s, soon after
/// ownership changed, and again within seconds at a NameServer that did not
/// acknowledge (it may have restarted and forgotten everything).
async fn register(env: Env, config: Config, state: Shared) {
    let (rpc, nameservers, observer) = (env.rpc(), &config.nameservers, config.registrations.as_ref());
    let random = env.random("broker-registration");
    let mut version = Version { epoch: random.range(0..u64::MAX), seq: 0 };
    // When each NameServer is due next.
    let mut due: Vec<Duration> = vec![Duration::ZERO; nameservers.len()];
    loop {
        let now = env.clock.mono();
        let (changed, queues) = {
            let mut s = state.lock().expect("broker");
            (std::mem::take(&mut s.changed), s.owned.keys().cloned().collect::<Vec<_>>())
        };
        for (ns, due) in nameservers.iter().zip(due.iter_mut()) {
            if !changed && now < *due {
                continue;
            }
            let token = observer.map(|o| o.0.start(ns, &queues));
            version.seq += 1;
            let req =
                nameserver::proto::Request::Register { broker: env.name.clone(), version, queues: queues.clone() };
            let answer = rpc.call::<NameServer>(ns, &req, NAMESERVER_TIMEOUT).await;
            if let (Some(o), Some(token)) = (observer, token) {
                o.0.end(token, answer.is_ok());
            }
            *due = now + if answer.is_ok() { REGISTER_EVERY } else { random.jitter(REGISTER_RETRY) };
        }
        env.sleep(Duration::from_secs(1)).await;
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
