//! The leader broker's driver: every broker reports its load; the broker
//! holding the leader lock balances the queues over the live brokers every
//! [`BALANCE_EVERY`] with [`plan`], writing its assignments by
//! compare-and-set under its term. A thin async loop around [`balance`](super::balance).

use super::balance::{
    self, apply, load_key, may_act, plan, Assignments, Load, ASSIGNMENTS, BALANCE_EVERY, LEADER, LOADS,
};
use super::server::Config;
use crate::bugs::Bug;
use crate::env::Env;
use crate::message::QueueId;
use crate::meta::{Lock, MetaClient, MetaError, Session};
use crate::probe::Probe;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Sees what a broker does as leader, for a workload to record.
pub trait LeaderObserver: Send + Sync {
    /// It took the leader lock; `start` before it reads the lock's term.
    fn elect_start(&self) -> u64;
    /// `Ok(term)`; `Err(true)` the lock is not its own; `Err(false)` no answer.
    fn elect_end(&self, token: u64, term: Result<u64, bool>);
    /// It writes assignments with `moves` under `term`.
    fn assign_start(&self, term: u64, moves: &[balance::Move]) -> u64;
    /// `Ok(version)` written; `Err(true)` certainly not written; `Err(false)` unknown.
    fn assign_end(&self, token: u64, outcome: Result<u64, bool>);
}

/// Turns a broker into a candidate leader (see [`Config::balance`]).
#[derive(Clone)]
pub struct Balance {
    pub observer: Option<Arc<dyn LeaderObserver>>,
}

impl std::fmt::Debug for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Balance")
    }
}

/// Reports this broker's load and, while it holds the leader lock (and can
/// trust its session), balances. `load` says how many queues it owns now.
pub(super) async fn lead(env: Env, meta: MetaClient, config: Config, load: Arc<dyn Fn() -> Load + Send + Sync>) {
    let Some(balance) = config.balance.clone() else { return };
    let observer = balance.observer;
    let random = env.random("broker-leader");
    let queues: Vec<QueueId> =
        config.topics.iter().flat_map(|t| (0..t.queues).map(|q| QueueId::new(t.name.clone(), q))).collect();
    let zombie = env.bug(Bug::LeaderActsAfterLosingLock);
    loop {
        let session = Session::open(&env, &meta, config.session_timeout).await;
        let mut term: Option<u64> = None;
        let mut reported = false;
        // With the planted bug a leader never looks at its lock or session again.
        while !session.is_expired() || (zombie && term.is_some()) {
            reported = report(&session, &meta, &env.name, &load(), reported).await;
            if !(zombie && term.is_some()) {
                let lock = session.lock(LEADER).await;
                let trusted = env.clock.mono() < session.trusted_until();
                if lock == Lock::Taken {
                    // A lock created now is a new leadership, with a new term.
                    term = None;
                }
                if !matches!(lock, Lock::Taken | Lock::AlreadyOurs) || !trusted {
                    term = None;
                } else if term.is_none() {
                    term = elect(&meta, &session, observer.as_deref()).await;
                }
            }
            if let Some(t) = term {
                if !round(&env, &meta, &queues, t, zombie, observer.as_deref()).await {
                    // A newer leader wrote: step down, and leave the lock to it.
                    term = None;
                    session.unlock(LEADER).await;
                }
            }
            env.sleep(random.jitter(BALANCE_EVERY)).await;
        }
    }
}

/// Writes this broker's load report; true when its ephemeral key is this
/// session's. A key left by an earlier session of this broker (it vanishes
/// when that session expires) is replaced by one of this session.
async fn report(session: &Session, meta: &MetaClient, broker: &str, load: &Load, ours: bool) -> bool {
    let key = load_key(broker);
    let bytes = postcard::to_allocvec(load).expect("a load report serializes");
    if ours {
        return match meta.set(&key, bytes, None).await {
            Ok(_) => true,
            Err(e) => e != MetaError::NoNode,
        };
    }
    match session.create_ephemeral(&key, bytes).await {
        Ok(_) => true,
        Err(MetaError::NodeExists) => match meta.get(&key).await {
            Ok(Some((_, stat))) if stat.owner == Some(session.id()) => true,
            Ok(Some((_, stat))) => {
                let _ = meta.delete(&key, Some(stat.version)).await;
                false
            }
            _ => false,
        },
        Err(_) => false,
    }
}

/// The term of the leadership this session just took: the zxid that created the lock.
async fn elect(meta: &MetaClient, session: &Session, observer: Option<&dyn LeaderObserver>) -> Option<u64> {
    let token = observer.map(|o| o.elect_start());
    let read = meta.get(LEADER).await;
    let term = match &read {
        Ok(Some((_, stat))) if stat.owner == Some(session.id()) => Ok(stat.czxid),
        Ok(_) => Err(true),
        Err(_) => Err(false),
    };
    if let (Some(o), Some(token)) = (observer, token) {
        o.elect_end(token, term);
    }
    term.ok()
}

/// One balancing round of the leader of `term`. False when a newer leader's
/// assignments were read: this one must step down.
async fn round(
    env: &Env,
    meta: &MetaClient,
    queues: &[QueueId],
    term: u64,
    zombie: bool,
    observer: Option<&dyn LeaderObserver>,
) -> bool {
    let (read, version) = match meta.get(ASSIGNMENTS).await {
        Ok(Some((bytes, stat))) => match Assignments::decode(&bytes) {
            Some(a) => (a, Some(stat.version)),
            None => return true,
        },
        Ok(None) => (Assignments::default(), None),
        Err(_) => return true,
    };
    if !zombie && !may_act(term, &read) {
        env.probe(Probe::LeaderSteppedDown);
        return false;
    }
    let Ok(live) = meta.children(LOADS).await else { return true };
    let live: BTreeSet<String> = live.into_iter().collect();
    let moves = plan(queues, &live, &read.queues);
    if moves.is_empty() && read.term == term {
        return true;
    }
    for m in &moves {
        env.probe(match &m.from {
            None => Probe::LeaderAssignedNew,
            Some(b) if !live.contains(b) => Probe::LeaderMovedOffDead,
            Some(_) => Probe::LeaderShedLoad,
        });
    }
    let next = apply(&read, &moves, term).encode();
    let token = observer.map(|o| o.assign_start(term, &moves));
    let written = match version {
        None => meta.create(ASSIGNMENTS, next, None, false).await.map(|(_, stat)| stat),
        // Compare-and-set: a newer leader's write in between makes it fail
        // (the planted bug writes blindly).
        Some(v) => meta.set(ASSIGNMENTS, next, (!zombie).then_some(v)).await,
    };
    let outcome = match written {
        Ok(stat) => Ok(stat.version),
        Err(MetaError::BadVersion | MetaError::NodeExists) => {
            env.probe(Probe::LeaderLostRace);
            Err(true)
        }
        Err(MetaError::Timeout) => Err(false),
        Err(_) => Err(true),
    };
    if let (Some(o), Some(token)) = (observer, token) {
        o.assign_end(token, outcome);
    }
    true
}
