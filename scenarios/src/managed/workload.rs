//! What the owner candidates and the checker node of `managed-ledger` do.
//!
//! Every owner node runs one candidate per log: it takes the log's ownership
//! lock (an ephemeral key of its session), opens the log as its new owner,
//! appends and, for every consumer group, reads from the group's cursor and
//! commits it, until its session expires, the log fences it, or the run stops.

use super::{Plan, GROUPS, SERVER};
use crate::kit::{complete, patiently};
use mqsim_core::env::Env;
use mqsim_core::ledger::LedgerClient;
use mqsim_core::managed::{self, cursor, Config, ManagedLedger, MlError};
use mqsim_core::meta::Session;
use mqsim_core::probe::Probe;
use mqsim_sim::history::{Call, Ret, Segment};
use mqsim_sim::World;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub fn owner_lock(log: &str) -> String {
    format!("/owners/{log}")
}

/// One owner node: one session at a time, and under it a candidate per log,
/// until `stop`. When the session expires every candidate gives up its log,
/// and the node starts again with a new session.
pub async fn owner(env: Env, world: Arc<World>, plan: Plan, stop: Duration) {
    let c = LedgerClient::new(&env, SERVER);
    let random = env.random("ml-owner-session");
    // Each incarnation's values differ, so a value names its append.
    let incarnation: u32 = random.range(0..u32::MAX);
    let counters: Vec<Arc<AtomicU64>> = (0..plan.logs).map(|_| Arc::default()).collect();
    while world.elapsed() < stop {
        let Ok(session) = Session::try_open(&env, &c.meta, plan.session_timeout).await else {
            env.sleep(random.jitter(Duration::from_millis(500))).await;
            continue;
        };
        let candidates: Vec<_> = counters
            .iter()
            .enumerate()
            .map(|(i, counter)| {
                let (env, world, plan, c, session) =
                    (env.clone(), world.clone(), plan.clone(), c.clone(), session.clone());
                let counter = counter.clone();
                let log = format!("log-{i}");
                madsim::task::spawn(async move {
                    candidate(&env, &world, &plan, &c, &session, &log, stop, incarnation, &counter).await
                })
            })
            .collect();
        for t in candidates {
            let _ = t.await;
        }
        // Give ownership up (or what is left of it) and start afresh.
        let _ = session.close().await;
        env.sleep(random.duration(Duration::from_millis(200), Duration::from_millis(1_500))).await;
    }
}

/// Competes for `log` while the session lives: whenever it gets the lock, it serves.
#[allow(clippy::too_many_arguments)]
async fn candidate(
    env: &Env,
    world: &Arc<World>,
    plan: &Plan,
    c: &LedgerClient,
    session: &Session,
    log: &str,
    stop: Duration,
    incarnation: u32,
    counter: &AtomicU64,
) {
    let random = env.random("ml-candidate");
    while world.elapsed() < stop && !session.is_expired() {
        if session.lock(&owner_lock(log)).await.held() {
            serve(env, world, plan, c, session, log, stop, incarnation, counter).await;
            if !session.is_expired() {
                // Fenced or failed: let another owner have a turn.
                session.unlock(&owner_lock(log)).await;
            }
        }
        env.sleep(random.jitter(Duration::from_millis(2_000))).await;
    }
}

/// Owns `log`: opens it, appends and moves every group's cursor until the
/// session expires, the log fails, or `stop`, when it closes the log.
#[allow(clippy::too_many_arguments)]
async fn serve(
    env: &Env,
    world: &Arc<World>,
    plan: &Plan,
    c: &LedgerClient,
    session: &Session,
    log: &str,
    stop: Duration,
    incarnation: u32,
    counter: &AtomicU64,
) {
    let random = env.random("ml-owner");
    let config = Config { e: plan.shape.0, qw: plan.shape.1, qa: plan.shape.2, rollover: plan.rollover };
    let op = world.history.invoke(&env.name, Call::OpenLog { log: log.into() });
    let opened = ManagedLedger::open(c, log, config).await;
    let result = opened.as_ref().map(|ml| (ml.end(), ml.opened)).map_err(Clone::clone);
    complete(env, world, op, result, |(end, ledger)| Ret::OpenLog { end, ledger });
    let Ok(ml) = opened else { return };
    let mut cursors: Vec<Option<u64>> = vec![None; GROUPS.len()];
    let inflight = Arc::new(AtomicUsize::new(0));
    while world.elapsed() < stop && !session.is_expired() && ml.failed().is_none() {
        while inflight.load(Ordering::Relaxed) < plan.window && counter.load(Ordering::Relaxed) < plan.max_appends {
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            let value = format!("{}.{log}.{incarnation:08x}.{n}", env.name);
            let op = world.history.invoke(&env.name, Call::Append { log: log.into(), value: value.clone() });
            let (world, node, inflight) = (world.clone(), env.name.clone(), inflight.clone());
            inflight.fetch_add(1, Ordering::Relaxed);
            ml.append_then(value.into_bytes(), move |result| {
                match result {
                    Ok(offset) => world.history.ok(&node, op, Ret::Append { offset }),
                    Err(e) => world.history.info(&node, op, e),
                }
                inflight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        for (group, at) in GROUPS.iter().zip(cursors.iter_mut()) {
            consume(env, world, &ml, log, group, at, random.chance(0.15)).await;
        }
        env.sleep(random.duration(Duration::from_millis(50), Duration::from_millis(200))).await;
    }
    if world.elapsed() >= stop {
        // Let the appends in flight end, then hand the log over closed.
        let _ = ml.close().await;
    } else if session.is_expired() {
        env.probe(Probe::SessionExpiredHoldingLock);
    }
}

/// Entries a consumer reads per step, at most.
const READS_PER_STEP: u64 = 3;

/// One step of `group`'s consumer: learn its cursor, read the next entries
/// that are durable, and now and then commit the cursor past what was read.
async fn consume(
    env: &Env,
    world: &World,
    ml: &ManagedLedger,
    log: &str,
    group: &str,
    at: &mut Option<u64>,
    commit: bool,
) {
    let Some(next) = *at else {
        let op = world.history.invoke(&env.name, Call::ReadCursor { log: log.into(), group: group.into() });
        let read = ml.read_cursor(group).await;
        *at = read.as_ref().ok().copied();
        complete(env, world, op, read, |offset| Ret::ReadCursor { offset });
        return;
    };
    for offset in next..(next + READS_PER_STEP).min(ml.end()) {
        let op = world.history.invoke(&env.name, Call::ReadLog { log: log.into(), group: group.into(), offset });
        let read = ml.read(offset).await.map(|v| String::from_utf8_lossy(&v).into_owned());
        let ok = read.is_ok();
        complete(env, world, op, read, |value| Ret::ReadLog { value });
        if !ok {
            break;
        }
        *at = Some(offset + 1);
    }
    if commit {
        let offset = at.expect("cursor known");
        let op = world.history.invoke(&env.name, Call::CommitCursor { log: log.into(), group: group.into(), offset });
        let done = ml.commit_cursor(group, offset).await;
        complete(env, world, op, done, |()| Ret::CommitCursor);
    }
}

/// The checker node: for every log, closes its open ledger by recovery (the
/// owners are gone), reads every entry of every ledger in the list through
/// the protocol, and reads every group's cursor.
pub async fn final_reads(env: Env, world: Arc<World>, logs: usize) {
    let c = LedgerClient::new(&env, SERVER);
    for i in 0..logs {
        let log = format!("log-{i}");
        let op = world.history.invoke(&env.name, Call::FinalLog { log: log.clone() });
        let read = patiently(&env, "ml-final", || read_whole(&c, &log)).await;
        complete(&env, &world, op, read, |(segments, values)| Ret::FinalLog { segments, values });
        for group in GROUPS {
            let op = world.history.invoke(&env.name, Call::ReadCursor { log: log.clone(), group: group.to_string() });
            let read = patiently(&env, "ml-final", || cursor::read(&c.meta, &log, group)).await;
            complete(&env, &world, op, read, |offset| Ret::ReadCursor { offset });
        }
    }
}

/// Every value of `log` in offset order, with its ledgers.
async fn read_whole(c: &LedgerClient, log: &str) -> Result<(Vec<Segment>, Vec<String>), MlError> {
    let (segments, payloads) = managed::read_whole(c, log).await?;
    let segments = segments.into_iter().map(|(ledger, first, entries)| Segment { ledger, first, entries }).collect();
    Ok((segments, payloads.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect()))
}
