//! The metadata service node: group commit of requests onto a mirrored log,
//! session expiry on the node's monotonic clock, recovery from disk.

use super::proto::{Meta, MetaError, Reply, Request, Response, SessionId};
use super::store::{Store, Txn};
use crate::bugs::Bug;
use crate::env::{Env, Event};
use crate::probe::Probe;
use crate::rpc::{self, Incoming, Rpc};
use crate::wal::{Wal, WalError};
use futures::future::{select, Either};
use std::collections::BTreeMap;
use std::time::Duration;

/// The log's name on the node's disk; it is kept in two mirrored files.
pub const LOG_NAME: &str = "meta.log";
const LOG_COPIES: usize = 2;
/// How often sessions are checked for expiry.
const TICK: Duration = Duration::from_millis(200);
const DISK_RETRY: Duration = Duration::from_millis(100);

/// The transactions a restart would recover from the node's disk files
/// (name → bytes), in zxid order; `Err` says what cannot be read.
pub fn recorded(files: &BTreeMap<String, Vec<u8>>) -> Result<Vec<(u64, Txn)>, String> {
    let copies: Vec<Vec<u8>> =
        (0..LOG_COPIES).map(|i| files.get(&format!("{LOG_NAME}.{i}")).cloned().unwrap_or_default()).collect();
    let found = crate::wal::parse(&copies).map_err(|e| format!("the metadata log: {e}"))?;
    let decode = |(i, bytes): (usize, &Vec<u8>)| match postcard::from_bytes::<(u64, Txn)>(bytes) {
        Ok((zxid, txn)) if zxid == i as u64 + 1 => Ok((zxid, txn)),
        _ => Err(format!("record {i} of the metadata log is not its transaction {}", i + 1)),
    };
    found.records.iter().enumerate().map(decode).collect()
}

/// Runs the metadata service until the node is killed.
pub async fn serve(env: Env) {
    let (rpc, mut requests) = Rpc::serve::<Meta>(&env);
    let mut node = Node::recover(&env).await;
    let mut next_tick = env.clock.mono() + TICK;
    loop {
        let wait = next_tick.saturating_sub(env.clock.mono());
        let mut batch = Vec::new();
        match select(Box::pin(rpc::next_request(&mut requests)), env.sleep(wait)).await {
            Either::Left((Some(first), _)) => batch.push(first),
            Either::Left((None, _)) => return,
            Either::Right(_) => {}
        }
        rpc::drain_ready(&mut requests, &mut batch);
        if !batch.is_empty() {
            node.handle(&env, &rpc, batch).await;
        }
        if env.clock.mono() >= next_tick {
            node.expire_sessions(&env).await;
            next_tick = env.clock.mono() + TICK;
        }
    }
}

enum Node {
    Serving(Box<Service>),
    /// A record failed its checksum in every copy: serving would risk
    /// answering from state that lost acknowledged writes.
    Refusing,
}

struct Service {
    store: Store,
    wal: Wal,
    /// Expiry deadline of each live session, on the monotonic clock.
    deadlines: BTreeMap<SessionId, Duration>,
    /// Whether recovery found sequence counters in the log.
    counters_recovered: bool,
}

impl Node {
    async fn recover(env: &Env) -> Node {
        loop {
            match Wal::open(env.disk.clone(), LOG_NAME, LOG_COPIES).await {
                Ok((wal, found)) => {
                    let mut store = Store::default();
                    for (i, bytes) in found.records.iter().enumerate() {
                        match postcard::from_bytes::<(u64, Txn)>(bytes) {
                            Ok((zxid, txn)) if zxid == store.zxid + 1 => {
                                store.apply(txn);
                            }
                            _ => {
                                env.events.event(Event::RefusesCorruptState { record: i as u64 });
                                return Node::Refusing;
                            }
                        }
                    }
                    for p in found.probes() {
                        env.probe(p);
                    }
                    if !store.sessions.is_empty() {
                        env.probe(Probe::MetaRecoveredSessions);
                    }
                    env.events.event(Event::Recovered {
                        records: found.records.len() as u64,
                        zxid: store.zxid,
                        repaired: found.repaired,
                        dropped_tail_bytes: found.dropped_tail_bytes,
                    });
                    // Like ZooKeeper, a restarted service gives every session a full timeout.
                    let now = env.clock.mono();
                    let deadlines = store.sessions.iter().map(|(s, t)| (*s, now + Duration::from_millis(*t))).collect();
                    let counters_recovered = store.has_sequence_counters();
                    return Node::Serving(Box::new(Service { store, wal, deadlines, counters_recovered }));
                }
                Err(WalError::Corrupt { seq }) => {
                    env.probe(Probe::MetaRefusesCorrupt);
                    env.events.event(Event::RefusesCorruptState { record: seq });
                    return Node::Refusing;
                }
                Err(WalError::Disk(_)) => env.sleep(DISK_RETRY).await,
            }
        }
    }

    /// Executes a batch, makes its writes durable with one fsync, then answers.
    async fn handle(&mut self, env: &Env, rpc: &Rpc, batch: Vec<Incoming<Meta>>) {
        let Node::Serving(svc) = self else {
            for inc in &batch {
                rpc.reply(inc, &response(0, Err(MetaError::Corrupt))).await;
            }
            return;
        };
        let mut results = Vec::with_capacity(batch.len());
        let mut disk_ok = true;
        for inc in &batch {
            let result = match svc.execute(env, &inc.req) {
                Ok(r) => r,
                Err(()) => {
                    disk_ok = false;
                    break;
                }
            };
            results.push(result);
        }
        let ack_first = env.bug(Bug::MetaAckBeforeFsync);
        if disk_ok && ack_first {
            answer(rpc, &batch, &results, svc.store.zxid).await;
        }
        if disk_ok && svc.wal.has_unsynced() {
            disk_ok = svc.wal.sync().await.is_ok();
        }
        if disk_ok && !ack_first {
            answer(rpc, &batch, &results, svc.store.zxid).await;
        }
        if !disk_ok {
            env.probe(Probe::MetaWriteFailed);
            env.events.event(Event::DiskFailed { op: "write".into() });
            self.reset(env).await;
            if !ack_first {
                let zxid = self.zxid();
                for inc in &batch {
                    rpc.reply(inc, &response(zxid, Err(MetaError::Unavailable))).await;
                }
            }
        }
    }

    async fn expire_sessions(&mut self, env: &Env) {
        let Node::Serving(svc) = self else { return };
        let now = env.clock.mono();
        let expired: Vec<SessionId> = svc.deadlines.iter().filter(|(_, d)| **d <= now).map(|(s, _)| *s).collect();
        if expired.is_empty() {
            return;
        }
        let mut ok = true;
        for id in &expired {
            // Recorded when decided: a crash may still lose (or, from one
            // mirror copy, keep) the unsynced expiry.
            env.probe(Probe::MetaSessionExpired);
            env.events.event(Event::SessionExpired { session: *id });
            svc.deadlines.remove(id);
            ok = ok && svc.commit(Txn::CloseSession { id: *id }).is_ok();
        }
        ok = ok && svc.wal.sync().await.is_ok();
        if !ok {
            env.events.event(Event::DiskFailed { op: "expire".into() });
            env.probe(Probe::MetaExpiryRolledBack);
            env.events.event(Event::ExpiryRolledBack { sessions: expired });
            self.reset(env).await;
        }
    }

    /// After a failed write or sync: cut the log back to its synced prefix and
    /// rebuild from disk, exactly as a restart would.
    async fn reset(&mut self, env: &Env) {
        if let Node::Serving(svc) = self {
            while svc.wal.rollback().is_err() {
                env.sleep(DISK_RETRY).await;
            }
        }
        *self = Node::recover(env).await;
    }

    fn zxid(&self) -> u64 {
        match self {
            Node::Serving(svc) => svc.store.zxid,
            Node::Refusing => 0,
        }
    }
}

impl Service {
    /// Runs one request against the store; `Err(())` when the log write failed.
    fn execute(&mut self, env: &Env, req: &Request) -> Result<Result<Reply, MetaError>, ()> {
        if let Some(answer) = self.store.read(req) {
            return Ok(answer);
        }
        if let Request::Heartbeat { session } = req {
            let Some(timeout) = self.store.sessions.get(session) else {
                return Ok(Err(MetaError::SessionExpired));
            };
            self.deadlines.insert(*session, env.clock.mono() + Duration::from_millis(*timeout));
            return Ok(Ok(Reply::Done));
        }
        match self.store.prepare(req) {
            Ok(txn) => {
                if self.counters_recovered && matches!(txn, Txn::Create { sequential: true, .. }) {
                    env.probe(Probe::MetaSequentialAfterRestart);
                }
                if let Txn::OpenSession { id, timeout_ms } = &txn {
                    self.deadlines.insert(*id, env.clock.mono() + Duration::from_millis(*timeout_ms));
                }
                if let Txn::CloseSession { id } = &txn {
                    self.deadlines.remove(id);
                }
                self.commit(txn).map(Ok)
            }
            Err(e) => {
                match (e, req) {
                    (MetaError::BadVersion, _) => env.probe(Probe::MetaStaleVersionRefused),
                    (MetaError::SessionExpired, Request::Create { .. }) => env.probe(Probe::MetaEphemeralOnDeadSession),
                    _ => {}
                }
                Ok(Err(e))
            }
        }
    }

    /// Appends the transaction to the log and applies it (durable after sync).
    fn commit(&mut self, txn: Txn) -> Result<Reply, ()> {
        let record = postcard::to_allocvec(&(self.store.zxid + 1, &txn)).expect("encode txn");
        self.wal.append(&record).map_err(|_| ())?;
        Ok(self.store.apply(txn))
    }
}

fn response(zxid: u64, result: Result<Reply, MetaError>) -> Response {
    Response { zxid, result }
}

async fn answer(rpc: &Rpc, batch: &[Incoming<Meta>], results: &[Result<Reply, MetaError>], zxid: u64) {
    for (inc, result) in batch.iter().zip(results) {
        rpc.reply(inc, &response(zxid, result.clone())).await;
    }
}
