//! What the clients of scenario `meta` do, and how each operation is recorded.

use super::{Timeline, SERVER, SESSION_TIMEOUT};
use futures::StreamExt;
use mqsim_core::env::Env;
use mqsim_core::meta::{MetaClient, MetaError, Reply, Request, SessionId};
use mqsim_sim::history::Kind;
use mqsim_sim::World;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);
const KEYS: usize = 5;

/// Sends `req`, recording it as invoke then ok / fail / info.
async fn record(env: &Env, world: &World, meta: &MetaClient, op: &str, req: Request) -> Result<Reply, MetaError> {
    let id = world.history.invoke(&env.name, op, args(&req));
    let result = meta.request(req).await;
    let (kind, data) = match &result {
        Ok((reply, zxid)) => {
            let mut data = reply_json(reply);
            data["zxid"] = json!(zxid);
            (Kind::Ok, data)
        }
        Err(MetaError::Timeout) => (Kind::Info, json!({ "error": "timeout" })),
        Err(e) => (Kind::Fail, json!({ "error": format!("{e:?}") })),
    };
    world.history.complete(&env.name, id, op, kind, data);
    result.map(|(reply, _)| reply)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn args(req: &Request) -> Value {
    match req {
        Request::OpenSession { timeout_ms } => json!({ "timeout_ms": timeout_ms }),
        Request::Heartbeat { session } | Request::CloseSession { session } => json!({ "session": session }),
        Request::Create { path, value, ephemeral, sequential } => {
            json!({ "key": path, "value": text(value), "session": ephemeral, "sequential": sequential })
        }
        Request::Get { path } | Request::Children { path } => json!({ "key": path }),
        Request::Set { path, value, version } => json!({ "key": path, "value": text(value), "version": version }),
        Request::Delete { path, version } => json!({ "key": path, "version": version }),
    }
}

fn reply_json(reply: &Reply) -> Value {
    match reply {
        Reply::Session(id) => json!({ "session": id }),
        Reply::Done => json!({}),
        Reply::Created { path, stat } => json!({ "path": path, "stat": stat }),
        Reply::Value(Some((v, stat))) => json!({ "found": true, "value": text(v), "stat": stat }),
        Reply::Value(None) => json!({ "found": false }),
        Reply::Stat(stat) => json!({ "stat": stat }),
        Reply::Children(names) => json!({ "children": names }),
    }
}

/// A client node: one session at a time (kept alive by heartbeats, sometimes
/// abandoned or closed on purpose) and a stream of random operations, until
/// the timeline stops clients or `max_ops` operations are done.
pub async fn client(env: Env, world: Arc<World>, timeline: Timeline, max_ops: Option<u64>) {
    let stop = timeline.clients_stop;
    let meta = MetaClient::new(&env, SERVER, REQUEST_TIMEOUT);
    let session: Arc<Mutex<Option<SessionId>>> = Arc::default();
    madsim::task::spawn(heartbeats(env.clone(), world.clone(), meta.clone(), session.clone(), stop));
    // Values are unique across the run, so a read names the write it saw.
    let incarnation = env.rng(|r| r.gen::<u32>());
    let mut counter = 0u64;
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut done = 0u64;
    while world.elapsed() < stop && max_ops.is_none_or(|max| done < max) {
        done += 1;
        env.sleep(env.random_duration(Duration::from_millis(10), Duration::from_millis(80))).await;
        let current = *session.lock().expect("session");
        let Some(s) = current else {
            let req = Request::OpenSession { timeout_ms: SESSION_TIMEOUT.as_millis() as u64 };
            if let Ok(Reply::Session(id)) = record(&env, &world, &meta, "open_session", req).await {
                *session.lock().expect("session") = Some(id);
            }
            continue;
        };
        counter += 1;
        let value = format!("{}.{incarnation:08x}.{counter}", env.name).into_bytes();
        let key = format!("/k/{}", env.rng(|r| r.gen_range(0..KEYS)));
        let known = versions.get(&key).copied();
        let cas = env.rng(|r| r.gen_bool(0.6));
        let roll = env.rng(|r| r.gen_range(0..100));
        let (op, req) = match roll {
            0..=21 => ("get", Request::Get { path: key.clone() }),
            22..=39 => ("set", Request::Set { path: key.clone(), value, version: known.filter(|_| cas) }),
            40..=49 => ("create", Request::Create { path: key.clone(), value, ephemeral: None, sequential: false }),
            50..=55 => ("delete", Request::Delete { path: key.clone(), version: known.filter(|_| cas) }),
            56..=60 => ("children", Request::Children { path: "/k".into() }),
            61..=70 => {
                let path = format!("/e/{}-{counter}", env.name);
                ("create", Request::Create { path, value, ephemeral: Some(s), sequential: false })
            }
            71..=82 => ("children", Request::Children { path: "/e".into() }),
            83..=88 => {
                let path = "/q/item-".to_string();
                ("create", Request::Create { path, value, ephemeral: None, sequential: true })
            }
            89..=91 => ("children", Request::Children { path: "/q".into() }),
            92..=95 if world.elapsed() < timeline.phase => {
                // Abandon the session: it stops heartbeating and must expire.
                *session.lock().expect("session") = None;
                continue;
            }
            92..=95 => ("get", Request::Get { path: key.clone() }),
            _ => {
                let res = record(&env, &world, &meta, "close_session", Request::CloseSession { session: s }).await;
                if matches!(res, Ok(_) | Err(MetaError::SessionExpired)) {
                    session.lock().expect("session").take_if(|cur| *cur == s);
                }
                continue;
            }
        };
        let on_key = args(&req)["key"] == key.as_str();
        match record(&env, &world, &meta, op, req).await {
            Ok(Reply::Value(Some((_, stat)))) | Ok(Reply::Stat(stat)) | Ok(Reply::Created { stat, .. }) if on_key => {
                versions.insert(key, stat.version);
            }
            Ok(Reply::Value(None)) | Err(MetaError::NoNode) if on_key => {
                versions.remove(&key);
            }
            Err(MetaError::SessionExpired) => {
                session.lock().expect("session").take_if(|cur| *cur == s);
            }
            _ => {}
        }
    }
}

/// Keeps the client's current session alive until `stop`.
async fn heartbeats(
    env: Env,
    world: Arc<World>,
    meta: MetaClient,
    session: Arc<Mutex<Option<SessionId>>>,
    stop: Duration,
) {
    while world.elapsed() < stop {
        env.sleep(HEARTBEAT_EVERY).await;
        let Some(s) = *session.lock().expect("session") else { continue };
        if let Err(MetaError::SessionExpired) =
            record(&env, &world, &meta, "heartbeat", Request::Heartbeat { session: s }).await
        {
            session.lock().expect("session").take_if(|cur| *cur == s);
        }
    }
}

/// The checker node: lists every directory and reads every regular and
/// sequential key the run touched, through the protocol, many at a time
/// (retrying while the service recovers); ephemeral keys are judged by the
/// listing of `/e`. A last `final_reads` operation marks that all were done.
pub async fn final_reads(env: Env, world: Arc<World>) {
    let meta = MetaClient::new(&env, SERVER, REQUEST_TIMEOUT);
    let all = world.history.invoke(&env.name, "final_reads", json!({}));
    let mut keys = BTreeSet::new();
    for r in world.history.records() {
        if let Some(k) = r.str("path").or(r.str("key")) {
            if k.starts_with("/k/") || (k.starts_with("/q/") && !k.ends_with("item-")) {
                keys.insert(k.to_string());
            }
        }
    }
    let dirs = ["/k", "/e", "/q"].map(|d| ("children", Request::Children { path: d.to_string() }));
    let gets = keys.into_iter().map(|k| ("get", Request::Get { path: k }));
    let reads = dirs.into_iter().chain(gets).map(|(op, req)| {
        let (env, world, meta) = (&env, &world, &meta);
        async move {
            for _attempt in 0..5 {
                if record(env, world, meta, op, req.clone()).await.is_ok() {
                    return;
                }
                env.sleep(Duration::from_millis(500)).await;
            }
        }
    });
    futures::stream::iter(reads).buffer_unordered(32).collect::<Vec<()>>().await;
    world.history.complete(&env.name, all, "final_reads", Kind::Ok, json!({}));
}
