//! What the writer, the recoverer and the checker node of the ledger scenarios do.

use super::{Plan, SERVER};
use mqsim_core::env::Env;
use mqsim_core::ledger::{self, LedgerClient, LedgerError, State};
use mqsim_sim::history::{Kind, OpId};
use mqsim_sim::World;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

fn error(e: &LedgerError) -> Value {
    json!({ "error": format!("{e:?}") })
}

/// Creates ledgers and adds to them, `plan.window` adds in flight, rolling
/// over to a new ledger after a while or when fenced, until `stop` or until
/// `max_adds` adds were sent.
pub async fn writer(env: Env, world: Arc<World>, plan: Plan, stop: Duration, max_adds: Option<u64>) {
    let c = LedgerClient::new(&env, SERVER);
    let (e, qw, qa) = plan.shape;
    let mut counter = 0u64;
    let incarnation = env.rng(|r| r.gen::<u32>());
    let budget_left = |counter: u64| max_adds.is_none_or(|max| counter < max);
    while world.elapsed() < stop && budget_left(counter) {
        let op = world.history.invoke(&env.name, "create", json!({ "e": e, "qw": qw, "qa": qa }));
        let writer = match c.create(e, qw, qa).await {
            Ok(w) => {
                world.history.complete(&env.name, op, "create", Kind::Ok, json!({ "ledger": w.ledger }));
                w
            }
            Err(err) => {
                world.history.complete(&env.name, op, "create", Kind::Info, error(&err));
                env.sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let ledger = writer.ledger;
        let target = env.rng(|r| r.gen_range(20..150));
        let (mut sent, mut failed) = (0, false);
        let mut inflight: VecDeque<(OpId, _)> = VecDeque::new();
        loop {
            while !failed
                && inflight.len() < plan.window
                && sent < target
                && world.elapsed() < stop
                && budget_left(counter)
            {
                counter += 1;
                sent += 1;
                let value = format!("{}.{incarnation:08x}.{counter}", env.name);
                let op = world.history.invoke(&env.name, "add", json!({ "ledger": ledger, "value": value }));
                inflight.push_back((op, Box::pin(writer.add(value.into_bytes()))));
            }
            let Some((op, add)) = inflight.pop_front() else { break };
            match add.await {
                Ok(entry) => {
                    world.history.complete(&env.name, op, "add", Kind::Ok, json!({ "ledger": ledger, "entry": entry }))
                }
                // Even a failed add may have reached Qa bookies and be recovered.
                Err(err) => {
                    failed = true;
                    world.history.complete(&env.name, op, "add", Kind::Info, error(&err));
                }
            }
            env.sleep(env.random_duration(Duration::from_millis(2), Duration::from_millis(20))).await;
        }
        if !failed {
            let op = world.history.invoke(&env.name, "close", json!({ "ledger": ledger }));
            match writer.close().await {
                Ok(last) => world.history.complete(&env.name, op, "close", Kind::Ok, json!({ "last_entry": last })),
                Err(err) => world.history.complete(&env.name, op, "close", Kind::Info, error(&err)),
            }
        }
    }
}

async fn recover(env: &Env, world: &World, c: &LedgerClient, ledger: u64) -> bool {
    let op = world.history.invoke(&env.name, "recover", json!({ "ledger": ledger }));
    match ledger::recover(c, ledger).await {
        Ok(last) => {
            world.history.complete(&env.name, op, "recover", Kind::Ok, json!({ "last_entry": last }));
            true
        }
        Err(err) => {
            world.history.complete(&env.name, op, "recover", Kind::Info, error(&err));
            false
        }
    }
}

/// Recovers the writer's newest ledger every few seconds until `calm`; then
/// closes every ledger still open, until `until`.
pub async fn recoverer(env: Env, world: Arc<World>, calm: Duration, until: Duration) {
    let c = LedgerClient::new(&env, SERVER);
    while world.elapsed() < calm {
        env.sleep(env.random_duration(Duration::from_secs(3), Duration::from_secs(10))).await;
        let Ok(ledgers) = c.ledgers().await else { continue };
        if let Some(&newest) = ledgers.iter().max() {
            if matches!(c.read_meta(newest).await, Ok((m, _)) if m.state != State::Closed) {
                recover(&env, &world, &c, newest).await;
            }
        }
    }
    // The writer has stopped: anything still open was abandoned.
    env.sleep(Duration::from_secs(1)).await;
    while world.elapsed() < until {
        let mut open = 0;
        for ledger in c.ledgers().await.unwrap_or_default() {
            if !matches!(c.read_meta(ledger).await, Ok((m, _)) if m.state == State::Closed) {
                open += 1;
                recover(&env, &world, &c, ledger).await;
            }
        }
        if open == 0 {
            return;
        }
        env.sleep(Duration::from_secs(1)).await;
    }
}

/// The checker node: lists the registered bookies and reads every ledger's
/// metadata through the protocol.
pub async fn final_reads(env: Env, world: Arc<World>) {
    let c = LedgerClient::new(&env, SERVER);
    let op = world.history.invoke(&env.name, "list_bookies", json!({}));
    match c.registered_bookies().await {
        Ok(b) => world.history.complete(&env.name, op, "list_bookies", Kind::Ok, json!({ "bookies": b })),
        Err(err) => world.history.complete(&env.name, op, "list_bookies", Kind::Fail, error(&err)),
    }
    let mut ledgers = None;
    for _ in 0..5 {
        if let Ok(l) = c.ledgers().await {
            ledgers = Some(l);
            break;
        }
        env.sleep(Duration::from_millis(500)).await;
    }
    let op = world.history.invoke(&env.name, "list_ledgers", json!({}));
    let Some(ledgers) = ledgers else {
        world.history.complete(&env.name, op, "list_ledgers", Kind::Fail, json!({ "error": "unavailable" }));
        return;
    };
    world.history.complete(&env.name, op, "list_ledgers", Kind::Ok, json!({ "ledgers": ledgers }));
    for ledger in ledgers {
        let op = world.history.invoke(&env.name, "read_meta", json!({ "ledger": ledger }));
        let mut result = Err(LedgerError::Meta);
        for _ in 0..5 {
            result = c.read_meta(ledger).await;
            if result.is_ok() {
                break;
            }
            env.sleep(Duration::from_millis(500)).await;
        }
        match result {
            Ok((m, _)) => {
                let meta = json!({
                    "ledger": ledger, "state": format!("{:?}", m.state), "last_entry": m.last_entry,
                    "qw": m.qw, "qa": m.qa, "ensembles": m.ensembles,
                });
                world.history.complete(&env.name, op, "read_meta", Kind::Ok, meta)
            }
            Err(err) => world.history.complete(&env.name, op, "read_meta", Kind::Fail, error(&err)),
        }
    }
}
