//! What the writer, the recoverer and the checker node of the ledger scenarios do.

use super::{Plan, SERVER};
use futures::channel::mpsc;
use futures::stream::StreamExt;
use mqsim_core::bookie::{self, BookieError, Entry, EntryId, LedgerId};
use mqsim_core::env::Env;
use mqsim_core::ledger::{self, LedgerClient, LedgerError, LedgerMeta, State};
use mqsim_sim::history::{Body, Call, OpId, Ret};
use mqsim_sim::nemesis::Signal;
use mqsim_sim::World;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Requests the checker node keeps in flight at once.
const PARALLEL_READS: usize = 32;
/// The entry id of the adds that probe whether a bookie still holds a fence:
/// far beyond any entry a writer reaches, so it never meets a real one.
const PROBE_ENTRY: EntryId = 1 << 40;

/// Records the end of `op`: ok with `ret`, a definite failure, or unknown.
fn complete<T>(env: &Env, world: &World, op: OpId, result: Result<T, LedgerError>, ret: impl FnOnce(T) -> Ret) {
    match result {
        Ok(v) => world.history.ok(&env.name, op, ret(v)),
        // Nothing happened: the ledger does not exist or was closed already.
        Err(e @ (LedgerError::NoSuchLedger | LedgerError::AlreadyClosed(_))) => world.history.fail(&env.name, op, e),
        Err(e) => world.history.info(&env.name, op, e),
    }
}

/// Creates ledgers and adds to them, `plan.window` adds in flight, rolling
/// over to a new ledger after a while or when fenced, until `stop` or until
/// `max_adds` adds were sent. Each add is recorded by the writer's callback
/// the moment the writer decides it, so the history holds the writer's own
/// order of acknowledgements, whatever order the workload looks at them in.
pub async fn writer(env: Env, world: Arc<World>, plan: Plan, stop: Duration, max_adds: Option<u64>) {
    let c = LedgerClient::new(&env, SERVER);
    let (e, qw, qa) = plan.shape;
    let mut counter = 0u64;
    let random = env.random("ledger-workload");
    let incarnation: u32 = random.range(0..u32::MAX);
    let budget_left = |counter: u64| max_adds.is_none_or(|max| counter < max);
    while world.elapsed() < stop && budget_left(counter) {
        let op = world.history.invoke(&env.name, Call::CreateLedger { e, qw, qa });
        let created = c.create(e, qw, qa).await;
        let ledger = created.as_ref().map(|w| w.ledger).map_err(Clone::clone);
        complete(&env, &world, op, ledger, |ledger| Ret::CreateLedger { ledger });
        let Ok(writer) = created else {
            env.sleep(random.jitter(Duration::from_millis(300))).await;
            continue;
        };
        let ledger = writer.ledger;
        let target = random.range(20..150);
        let (mut sent, mut inflight, mut failed) = (0, 0, false);
        let (done_tx, mut done_rx) = mpsc::unbounded::<bool>();
        loop {
            while !failed && inflight < plan.window && sent < target && world.elapsed() < stop && budget_left(counter) {
                counter += 1;
                sent += 1;
                inflight += 1;
                let value = format!("{}.{incarnation:08x}.{counter}", env.name);
                let op = world.history.invoke(&env.name, Call::Add { ledger, value: value.clone() });
                let (world, node, done) = (world.clone(), env.name.clone(), done_tx.clone());
                writer.add_then(value.into_bytes(), move |result| {
                    match &result {
                        Ok(entry) => world.history.ok(&node, op, Ret::Add { entry: *entry }),
                        // Even a failed add may have reached Qa bookies and be recovered.
                        Err(err) => world.history.info(&node, op, err),
                    }
                    let _ = done.unbounded_send(result.is_ok());
                });
            }
            if inflight == 0 {
                break;
            }
            let Some(ok) = done_rx.next().await else { break };
            inflight -= 1;
            failed |= !ok;
            env.sleep(random.duration(Duration::from_millis(5), Duration::from_millis(40))).await;
        }
        if !failed {
            let op = world.history.invoke(&env.name, Call::Close { ledger });
            let closed = writer.close().await;
            complete(&env, &world, op, closed, |last_entry| Ret::Close { last_entry });
        }
    }
}

/// Reads a ledger's metadata, recorded.
async fn read_meta(env: &Env, world: &World, c: &LedgerClient, ledger: LedgerId) -> Option<LedgerMeta> {
    let op = world.history.invoke(&env.name, Call::ReadMeta { ledger });
    let result = c.read_meta(ledger).await;
    let meta = result.as_ref().ok().map(|(m, _)| m.clone());
    complete(env, world, op, result, |(meta, version)| Ret::ReadMeta { version, meta });
    meta
}

/// Opens `ledger` with recovery, recorded as two operations: the fence, then
/// the rest of the recovery. True once it is closed.
async fn recover(env: &Env, world: &World, c: &LedgerClient, ledger: LedgerId) -> bool {
    let op = world.history.invoke(&env.name, Call::Fence { ledger });
    let fenced = ledger::fence(c, ledger).await;
    let already_closed = matches!(fenced, Err(LedgerError::AlreadyClosed(_)));
    let (fenced, result) = match fenced {
        Ok(f) => {
            let seen = (f.lac, f.bookies.clone());
            (Some(f), Ok(seen))
        }
        Err(e) => (None, Err(e)),
    };
    complete(env, world, op, result, |(lac, bookies)| Ret::Fence { lac, bookies });
    let Some(fenced) = fenced else { return already_closed };
    let op = world.history.invoke(&env.name, Call::Recover { ledger });
    let result = fenced.recover(c).await;
    let closed = result.is_ok();
    complete(env, world, op, result, |last_entry| Ret::Recover { last_entry });
    closed
}

/// Recovers the newest ledger, if it is open.
async fn recover_newest(env: &Env, world: &World, c: &LedgerClient) {
    let Ok(ledgers) = c.ledgers().await else { return };
    if let Some(&newest) = ledgers.iter().max() {
        if read_meta(env, world, c, newest).await.is_some_and(|m| m.state != State::Closed) {
            recover(env, world, c, newest).await;
        }
    }
}

/// Recovers the writer's newest ledger every few seconds until `calm`, and
/// when signalled: at once once per `recover-now` window, and every new
/// ledger as soon as it appears during a `fence-early` window. Then closes
/// every ledger still open, until `until`.
pub async fn recoverer(env: Env, world: Arc<World>, calm: Duration, until: Duration) {
    let c = LedgerClient::new(&env, SERVER);
    let random = env.random("ledger-recoverer");
    let every = || random.duration(Duration::from_secs(3), Duration::from_secs(10));
    let mut next = world.elapsed() + every();
    let mut served = BTreeSet::new();
    // During a fence-early window: the newest ledger when it began.
    let mut early_from: Option<Option<LedgerId>> = None;
    while world.elapsed() < calm {
        let signals = world.signals(&env.name);
        if let Some(&(action, _)) = signals.iter().find(|(a, s)| *s == Signal::RecoverNow && !served.contains(a)) {
            served.insert(action);
            recover_newest(&env, &world, &c).await;
        } else if signals.iter().any(|(_, s)| *s == Signal::FenceEarly) {
            if let Ok(ledgers) = c.ledgers().await {
                let newest = ledgers.iter().max().copied();
                match early_from {
                    None => early_from = Some(newest),
                    Some(from) if newest > from => {
                        early_from = Some(newest);
                        recover_newest(&env, &world, &c).await;
                    }
                    Some(_) => {}
                }
            }
            env.sleep(Duration::from_millis(20)).await;
            continue;
        } else if world.elapsed() >= next {
            recover_newest(&env, &world, &c).await;
            next = world.elapsed() + every();
        }
        early_from = None;
        env.sleep(Duration::from_millis(100)).await;
    }
    // The writer has stopped: anything still open was abandoned.
    env.sleep(Duration::from_secs(1)).await;
    while world.elapsed() < until {
        // A listing that failed says nothing about what is open: look again.
        let Ok(ledgers) = c.ledgers().await else {
            env.sleep(random.jitter(Duration::from_secs(1))).await;
            continue;
        };
        let mut open = 0;
        for ledger in ledgers {
            if !read_meta(&env, &world, &c, ledger).await.is_some_and(|m| m.state == State::Closed) {
                open += 1;
                recover(&env, &world, &c, ledger).await;
            }
        }
        if open == 0 {
            return;
        }
        env.sleep(random.jitter(Duration::from_secs(1))).await;
    }
}

/// Retries `f` a few times while it fails, as a patient reader would.
async fn patiently<T, F, Fut>(env: &Env, mut f: F) -> Result<T, LedgerError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, LedgerError>>,
{
    let mut result = f().await;
    for _ in 0..4 {
        if result.is_ok() {
            break;
        }
        env.sleep(env.random("ledger-reader").jitter(Duration::from_millis(500))).await;
        result = f().await;
    }
    result
}

/// The checker node: lists the registered bookies and the ledgers, reads
/// every ledger's metadata and every entry of every closed ledger through the
/// protocol, and sends every bookie that acknowledged a fence a normal add to
/// that ledger, which it must refuse.
pub async fn final_reads(env: Env, world: Arc<World>) {
    let c = LedgerClient::new(&env, SERVER);
    let op = world.history.invoke(&env.name, Call::ListBookies);
    let bookies = patiently(&env, || c.registered_bookies()).await;
    complete(&env, &world, op, bookies, |bookies| Ret::ListBookies { bookies });
    let op = world.history.invoke(&env.name, Call::ListLedgers);
    let ledgers = patiently(&env, || c.ledgers()).await;
    complete(&env, &world, op, ledgers.clone(), |ledgers| Ret::ListLedgers { ledgers });
    let mut closed = Vec::new();
    for ledger in ledgers.unwrap_or_default() {
        let op = world.history.invoke(&env.name, Call::ReadMeta { ledger });
        let meta = patiently(&env, || c.read_meta(ledger)).await;
        if let Some((m, _)) = meta.as_ref().ok().filter(|(m, _)| m.state == State::Closed) {
            closed.push((ledger, m.clone()));
        }
        complete(&env, &world, op, meta, |(meta, version)| Ret::ReadMeta { version, meta });
    }
    // Every entry of every closed ledger: a batch read per bookie, then one
    // by one (patiently) what the batches did not return.
    let reads = closed.iter().map(|(ledger, meta)| {
        let (env, world, c, ledger) = (&env, &world, &c, *ledger);
        async move {
            let ops: Vec<(EntryId, OpId)> = (0..=meta.last_entry)
                .map(|entry| (entry, world.history.invoke(&env.name, Call::ReadEntry { ledger, entry })))
                .collect();
            let mut batch = c.read_all(meta, ledger).await;
            for (entry, op) in ops {
                let read = match batch.remove(&entry) {
                    Some(e) => Ok(e),
                    None => patiently(env, || c.read_entry(meta, ledger, entry)).await,
                };
                let value = read.map(|e| String::from_utf8_lossy(&e.payload).into_owned());
                complete(env, world, op, value, |value| Ret::ReadEntry { value });
            }
        }
    });
    futures::stream::iter(reads).buffer_unordered(PARALLEL_READS).collect::<Vec<()>>().await;
    let probes: BTreeSet<(LedgerId, String)> = fence_acks(&world);
    let probes = probes.into_iter().map(|(ledger, bookie)| {
        let (env, world, c) = (&env, &world, &c);
        async move { probe_fence(env, world, c, ledger, bookie).await }
    });
    futures::stream::iter(probes).buffer_unordered(PARALLEL_READS).collect::<Vec<()>>().await;
}

/// Every (ledger, bookie) whose fence some recovery saw acknowledged.
fn fence_acks(world: &World) -> BTreeSet<(LedgerId, String)> {
    world.history.scan(|records| {
        let mut fences: BTreeMap<u64, LedgerId> = BTreeMap::new();
        let mut acks = BTreeSet::new();
        for r in records {
            match &r.body {
                Body::Invoke { id, call: Call::Fence { ledger } } => {
                    fences.insert(*id, *ledger);
                }
                Body::Ok { id, ret: Ret::Fence { bookies, .. } } => {
                    if let Some(&ledger) = fences.get(id) {
                        acks.extend(bookies.iter().map(|b| (ledger, b.clone())));
                    }
                }
                _ => {}
            }
        }
        acks
    })
}

/// A normal add of a junk entry straight to `bookie`: refused as fenced, or not.
async fn probe_fence(env: &Env, world: &World, c: &LedgerClient, ledger: LedgerId, bookie: String) {
    let op = world.history.invoke(&env.name, Call::ProbeFence { ledger, bookie: bookie.clone() });
    let entry = Entry::new(ledger, PROBE_ENTRY, -1, b"fence probe".to_vec());
    let result = match c.call(&bookie, bookie::Request::Add { entry, recovery: false }).await {
        Ok(bookie::Response::Added) => Ok(false),
        Err(BookieError::Fenced) => Ok(true),
        _ => Err(LedgerError::Unreadable),
    };
    complete(env, world, op, result, |refused| Ret::ProbeFence { refused });
}
