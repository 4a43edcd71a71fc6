//! What the clients of scenario `meta` do, and how each operation is recorded.

use super::{Timeline, SERVER, SESSION_TIMEOUT};
use futures::StreamExt;
use mqsim_core::env::Env;
use mqsim_core::meta::{MetaClient, MetaError, Observer, Reply, Request, Session};
use mqsim_sim::history::{Body, Call, OpId, Ret};
use mqsim_sim::World;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const KEYS: usize = 5;
/// The prefix of sequential keys; the service appends a 10-digit counter.
pub const SEQUENTIAL: &str = "/q/item-";

/// Records each request of a client as invoke, then ok / fail / info.
struct Recorder {
    node: String,
    world: Arc<World>,
}

impl Observer for Recorder {
    fn sent(&self, req: &Request) -> u64 {
        self.world.history.invoke(&self.node, call(req)).0
    }

    fn answered(&self, id: u64, req: &Request, result: &Result<(Reply, u64), MetaError>) {
        let (history, id) = (&self.world.history, OpId(id));
        match result {
            Ok((reply, zxid)) => match ret(req, reply, *zxid) {
                Some(ret) => history.ok(&self.node, id, ret),
                // An answer of the wrong kind is not one the client can use.
                None => history.info(&self.node, id, format!("unexpected answer {reply:?}")),
            },
            Err(MetaError::Timeout) => history.info(&self.node, id, MetaError::Timeout),
            Err(e) => history.fail(&self.node, id, e),
        }
    }
}

/// A metadata client whose every request goes into the history.
fn recorded(env: &Env, world: &Arc<World>) -> MetaClient {
    let recorder = Recorder { node: env.name.clone(), world: world.clone() };
    MetaClient::new(env, SERVER, REQUEST_TIMEOUT).observed(Arc::new(recorder))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn call(req: &Request) -> Call {
    match req.clone() {
        Request::OpenSession { timeout_ms } => Call::OpenSession { timeout_ms },
        Request::Heartbeat { session } => Call::Heartbeat { session },
        Request::CloseSession { session } => Call::CloseSession { session },
        Request::Create { path, value, ephemeral, sequential } => {
            Call::Create { key: path, value: text(&value), session: ephemeral, sequential }
        }
        Request::Get { path } => Call::Get { key: path },
        Request::Children { path } => Call::Children { key: path },
        Request::Set { path, value, version } => Call::Set { key: path, value: text(&value), version },
        Request::Delete { path, version } => Call::Delete { key: path, version },
    }
}

/// The result of `req` answered by `reply`; `None` when the reply does not answer it.
fn ret(req: &Request, reply: &Reply, zxid: u64) -> Option<Ret> {
    Some(match (req, reply.clone()) {
        (Request::OpenSession { .. }, Reply::Session(session)) => Ret::OpenSession { session, zxid },
        (Request::Heartbeat { .. }, Reply::Done) => Ret::Heartbeat { zxid },
        (Request::CloseSession { .. }, Reply::Done) => Ret::CloseSession { zxid },
        (Request::Create { .. }, Reply::Created { path, stat }) => Ret::Create { path, stat, zxid },
        (Request::Get { .. }, Reply::Value(v)) => {
            let (value, stat) = v.map(|(v, s)| (text(&v), s)).unzip();
            Ret::Get { value, stat, zxid }
        }
        (Request::Set { .. }, Reply::Stat(stat)) => Ret::Set { stat, zxid },
        (Request::Delete { .. }, Reply::Done) => Ret::Delete { zxid },
        (Request::Children { .. }, Reply::Children(children)) => Ret::Children { children, zxid },
        _ => return None,
    })
}

/// A client node: one session at a time (kept alive by its keepalive task,
/// sometimes abandoned or closed on purpose) and a stream of random
/// operations, until the timeline stops clients or `max_ops` operations are done.
pub async fn client(env: Env, world: Arc<World>, timeline: Timeline, max_ops: Option<u64>) {
    let stop = timeline.clients_stop;
    let meta = recorded(&env, &world);
    let random = env.random("meta-workload");
    let mut session: Option<Session> = None;
    // Values are unique across the run, so a read names the write it saw.
    let incarnation: u32 = random.range(0..u32::MAX);
    let mut counter = 0u64;
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut done = 0u64;
    while world.elapsed() < stop && max_ops.is_none_or(|max| done < max) {
        done += 1;
        env.sleep(random.duration(Duration::from_millis(10), Duration::from_millis(80))).await;
        session.take_if(|s| s.is_expired());
        let Some(s) = session.as_ref().map(Session::id) else {
            session = Session::try_open(&env, &meta, SESSION_TIMEOUT).await.ok();
            continue;
        };
        counter += 1;
        let value = format!("{}.{incarnation:08x}.{counter}", env.name).into_bytes();
        let key = format!("/k/{}", random.range(0..KEYS));
        let known = versions.get(&key).copied();
        let cas = random.chance(0.6);
        let roll = random.range(0..100);
        let req = match roll {
            0..=21 => Request::Get { path: key.clone() },
            22..=39 => Request::Set { path: key.clone(), value, version: known.filter(|_| cas) },
            40..=49 => Request::Create { path: key.clone(), value, ephemeral: None, sequential: false },
            50..=55 => Request::Delete { path: key.clone(), version: known.filter(|_| cas) },
            56..=60 => Request::Children { path: "/k".into() },
            61..=70 => {
                // Named by incarnation too: a restarted client starts counting again.
                let path = format!("/e/{}-{incarnation:08x}-{counter}", env.name);
                Request::Create { path, value, ephemeral: Some(s), sequential: false }
            }
            71..=82 => Request::Children { path: "/e".into() },
            83..=88 => Request::Create { path: SEQUENTIAL.into(), value, ephemeral: None, sequential: true },
            89..=91 => Request::Children { path: "/q".into() },
            92..=95 if world.elapsed() < timeline.phase => {
                // Abandon the session: its keepalives stop and it must expire.
                session = None;
                continue;
            }
            92..=95 => Request::Get { path: key.clone() },
            _ => {
                // Closed or not, the client is done with it.
                let _ = session.take().expect("a session").close().await;
                continue;
            }
        };
        let on_key = call(&req).key() == Some(key.as_str());
        match meta.request(req).await {
            Ok((Reply::Value(Some((_, stat))) | Reply::Stat(stat) | Reply::Created { stat, .. }, _)) if on_key => {
                versions.insert(key, stat.version);
            }
            Ok((Reply::Value(None), _)) | Err(MetaError::NoNode) if on_key => {
                versions.remove(&key);
            }
            Err(MetaError::SessionExpired) => session = None,
            _ => {}
        }
    }
}

/// The checker node: lists every directory and reads every regular and
/// sequential key the run touched, through the protocol, many at a time
/// (retrying while the service recovers); ephemeral keys are judged by the
/// listing of `/e`. Then one more sequential create, which must succeed and
/// continue the counter. A `final_reads` operation spans them all.
pub async fn final_reads(env: Env, world: Arc<World>) {
    let meta = recorded(&env, &world);
    let all = world.history.invoke(&env.name, Call::FinalReads);
    let mut keys = BTreeSet::new();
    for r in world.history.records() {
        let key = match &r.body {
            Body::Invoke { call, .. } => call.key(),
            Body::Ok { ret: Ret::Create { path, .. }, .. } => Some(path.as_str()),
            _ => None,
        };
        if let Some(k) = key.filter(|k| k.starts_with("/k/") || (k.starts_with("/q/") && *k != SEQUENTIAL)) {
            keys.insert(k.to_string());
        }
    }
    let dirs = ["/k", "/e", "/q"].map(|d| Request::Children { path: d.to_string() });
    let gets = keys.into_iter().map(|k| Request::Get { path: k });
    let reads = dirs.into_iter().chain(gets).map(|req| {
        let (env, meta) = (&env, &meta);
        async move {
            for _attempt in 0..5 {
                if meta.request(req.clone()).await.is_ok() {
                    return;
                }
                env.sleep(env.random("meta-reader").jitter(Duration::from_millis(500))).await;
            }
        }
    });
    futures::stream::iter(reads).buffer_unordered(32).collect::<Vec<()>>().await;
    let value = format!("{}.final", env.name).into_bytes();
    let last = Request::Create { path: SEQUENTIAL.into(), value, ephemeral: None, sequential: true };
    for _attempt in 0..5 {
        match meta.request(last.clone()).await {
            Err(MetaError::Timeout | MetaError::Unavailable) => {
                env.sleep(env.random("meta-reader").jitter(Duration::from_millis(500))).await
            }
            _ => break,
        }
    }
    world.history.ok(&env.name, all, Ret::FinalReads);
}
