//! What the transactional producers, the consumers and the checker node of
//! the `tx-*` scenarios do, and how their steps are recorded.

use super::{Plan, Timeline, CHECKER, GROUP, SERVER};
use crate::kit::{complete, patiently};
use crate::pubsub::workload::{read_queue, run_recorded, Work};
use mqsim_core::broker::tx::{self as broker_tx, HalfRecord, CHECK_CURSOR};
use mqsim_core::broker::{log_name, txn::Resolution};
use mqsim_core::consumer::client as consumer;
use mqsim_core::env::Env;
use mqsim_core::ledger::LedgerClient;
use mqsim_core::managed::{self, cursor, MlError};
use mqsim_core::message::{Message, QueueId};
use mqsim_core::producer::local_tx::TxState;
use mqsim_core::producer::transactional::{self, CheckObserver, TxProducer};
use mqsim_core::producer::SendOutcome;
use mqsim_sim::history::{Call, LocalState, Ret, TxHalf};
use mqsim_sim::World;
use std::sync::Arc;
use std::time::Duration;

/// The consumer group of the transactional topic (all tags).
pub const CONSUMER_GROUP: &str = "g-tx";
const TAGS: [&str; 2] = ["TagA", "TagB"];

/// Records each check-back a producer answers.
struct Checks {
    world: Arc<World>,
    node: String,
}

impl CheckObserver for Checks {
    fn checked(&self, from: &str, queue: &QueueId, half: u64, msg_id: &str, check: u32, answer: Resolution) {
        let call = Call::CheckBack {
            broker: from.to_string(),
            queue: queue.queue,
            half,
            msg_id: msg_id.to_string(),
            check,
            answer,
        };
        let op = self.world.history.invoke(&self.node, call);
        self.world.history.ok(&self.node, op, Ret::CheckBack);
    }
}

/// How a local transaction goes.
#[derive(Clone, Copy)]
enum Local {
    /// Decided at once: the end message carries the decision.
    Now(TxState),
    /// Still running when the end message goes (unknown); decided after a
    /// while, or never (the check-backs run out and the half is discarded).
    Later(Option<(TxState, Duration)>),
}

fn draw_local(env: &Env) -> Local {
    let random = env.random("tx-local");
    let decision = |r: u32| if r < 70 { TxState::Commit } else { TxState::Rollback };
    match random.range(0..100u32) {
        0..=59 => Local::Now(TxState::Commit),
        60..=79 => Local::Now(TxState::Rollback),
        80..=94 => Local::Later(Some((
            decision(random.range(0..100)),
            random.duration(Duration::from_secs(2), Duration::from_secs(20)),
        ))),
        _ => Local::Later(None),
    }
}

/// A transactional producer of the group: until `stop`, one transaction
/// at a time; then, at the final read, its whole local store.
pub async fn producer(env: Env, world: Arc<World>, plan: Plan, t: Timeline) {
    let checks = Arc::new(Checks { world: world.clone(), node: env.name.clone() });
    let p = loop {
        match TxProducer::start(&env, plan.nameservers(), GROUP, &plan.topic, checks.clone()).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::warn!("local transaction store unreadable: {e}");
                env.sleep(Duration::from_secs(1)).await;
            }
        }
    };
    // Transactions a crash left running are decided by this incarnation.
    for (tx, state) in p.states().await {
        if state == TxState::Running {
            if let Local::Later(Some((decision, after))) = draw_local(&env) {
                madsim::task::spawn(decide_later(env.clone(), world.clone(), p.clone(), tx, decision, after));
            }
        }
    }
    let random = env.random("tx-producer");
    let incarnation: u32 = random.range(0..u32::MAX);
    let mut n = 0u64;
    while world.elapsed() < t.producers_stop && plan.max_txs.is_none_or(|m| n < m) {
        n += 1;
        let msg_id = format!("{}.{incarnation:08x}.{n}", env.name);
        transaction(&env, &world, &plan, &p, msg_id).await;
        env.sleep(random.duration(Duration::from_millis(100), Duration::from_millis(400))).await;
    }
    let left = t.final_read.saturating_sub(world.elapsed());
    world.sleep_until(world.elapsed() + left).await;
    let op = world.history.invoke(&env.name, Call::LocalTxs);
    let txs = p.states().await.into_iter().map(|(msg_id, state)| LocalState { msg_id, state }).collect();
    world.history.ok(&env.name, op, Ret::LocalTxs { txs });
}

/// One transaction: begin it durably, send the half, run the local
/// transaction, send the end message.
async fn transaction(env: &Env, world: &Arc<World>, plan: &Plan, p: &TxProducer, msg_id: String) {
    if p.record(&msg_id, TxState::Running).await.is_err() {
        return;
    }
    let tag = TAGS[env.random("tx-producer").range(0..TAGS.len())].to_string();
    let body = format!("body.{msg_id}");
    let call = Call::SendHalf {
        group: GROUP.into(),
        topic: plan.topic.clone(),
        tag: tag.clone(),
        msg_id: msg_id.clone(),
        body: body.clone(),
    };
    let op = world.history.invoke(&env.name, call);
    let message = Message {
        msg_id: msg_id.clone(),
        topic: plan.topic.clone(),
        tag,
        keys: vec![],
        body: body.into_bytes(),
        redelivery: None,
    };
    let (broker, queue, half) = match p.producer.send_half(message, GROUP).await {
        SendOutcome::Ok { broker, queue, offset } => {
            world.history.ok(&env.name, op, Ret::SendHalf { broker: broker.clone(), queue: queue.queue, offset });
            (broker, queue, offset)
        }
        failed => {
            match failed {
                SendOutcome::Failed(e) => world.history.fail(&env.name, op, e),
                SendOutcome::Unknown(e) => world.history.info(&env.name, op, e),
                SendOutcome::Ok { .. } => unreachable!("matched above"),
            }
            // No half to end: a half that was stored after all is rolled back by its check-back.
            decide(env, world, p, &msg_id, TxState::Rollback).await;
            return;
        }
    };
    let word = match draw_local(env) {
        Local::Now(decision) => match decide(env, world, p, &msg_id, decision).await {
            Some(state) => transactional::word(Some(state)),
            None => Resolution::Unknown,
        },
        Local::Later(later) => {
            if let Some((decision, after)) = later {
                let (env, world, p, tx) = (env.clone(), world.clone(), p.clone(), msg_id.clone());
                madsim::task::spawn(decide_later(env, world, p, tx, decision, after));
            }
            Resolution::Unknown
        }
    };
    let call = Call::EndTx { msg_id: msg_id.clone(), broker: broker.clone(), queue: queue.queue, half, word };
    let op = world.history.invoke(&env.name, call);
    p.end(&broker, &queue, half, &msg_id, word).await;
    world.history.ok(&env.name, op, Ret::EndTx);
}

/// Records `decision` durably; the transaction's state now, `None` if the write failed.
async fn decide(env: &Env, world: &World, p: &TxProducer, msg_id: &str, decision: TxState) -> Option<TxState> {
    let op = world.history.invoke(&env.name, Call::Decide { msg_id: msg_id.to_string(), state: decision });
    let r = p.record(msg_id, decision).await;
    let state = r.as_ref().ok().copied();
    complete(env, world, op, r, |state| Ret::Decide { state });
    state
}

async fn decide_later(env: Env, world: Arc<World>, p: TxProducer, tx: String, decision: TxState, after: Duration) {
    env.sleep(after).await;
    decide(&env, &world, &p, &tx, decision).await;
}

/// A consumer of the group, until `stop`.
pub async fn consumer(env: Env, world: Arc<World>, plan: Plan, stop: Duration) {
    let config = consumer::Config {
        group: CONSUMER_GROUP.to_string(),
        topic: plan.topic.clone(),
        queues: plan.queues,
        tags: vec![],
        nameservers: plan.nameservers(),
        meta_server: SERVER.to_string(),
        session_timeout: plan.session_timeout,
        rebalance_every: Duration::from_secs(20),
        pull_batch: 16,
        ordered: false,
        retry: None,
    };
    let work = Arc::new(Work { env: env.clone() });
    run_recorded(env, world, config, work, stop).await;
}

/// The checker node: reads every queue whole from storage, and its half, op
/// and discard logs with the check service's offsets (closing the last
/// owner's ledgers by recovery).
pub async fn final_reads(env: Env, world: Arc<World>, plan: Plan) {
    let c = LedgerClient::new(&env, SERVER);
    for queue in 0..plan.queues {
        read_queue(&env, &world, &c, &plan.topic, queue, "tx-final").await;
        let log = log_name(&QueueId::new(plan.topic.clone(), queue));
        let op = world.history.invoke(CHECKER, Call::ReadTxLogs { topic: plan.topic.clone(), queue });
        let read = patiently(&env, "tx-final", || tx_logs(&c, &log)).await;
        complete(&env, &world, op, read.map_err(|e| e.to_string()), |r| r);
    }
}

/// A queue's transaction logs and the check service's offsets, as a result.
async fn tx_logs(c: &LedgerClient, log: &str) -> Result<Ret, String> {
    let halves = |name: String| async move {
        let (_, payloads) = managed::read_whole(c, &name).await.map_err(|e| e.to_string())?;
        payloads
            .iter()
            .enumerate()
            .map(|(offset, p)| {
                let h = HalfRecord::decode(p).ok_or(format!("{name} offset {offset} holds no half"))?;
                let offset = offset as u64;
                Ok(TxHalf { offset, origin: h.origin.unwrap_or(offset), msg_id: h.message.msg_id, checks: h.checks })
            })
            .collect::<Result<Vec<TxHalf>, String>>()
    };
    let (half_log, op_log) = (broker_tx::half_log(log), broker_tx::op_log(log));
    let half = halves(half_log.clone()).await?;
    let discards = halves(broker_tx::discard_log(log)).await?;
    let (_, payloads) = managed::read_whole(c, &op_log).await.map_err(|e| e.to_string())?;
    let ops = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| broker_tx::decode_op(p).ok_or(format!("{op_log} offset {i} holds no op record")))
        .collect::<Result<Vec<u64>, String>>()?;
    let offset = |l: String| async move { cursor::read(&c.meta, &l, CHECK_CURSOR).await };
    let check_offset = offset(half_log).await.map_err(|e: MlError| e.to_string())?;
    let op_offset = offset(op_log).await.map_err(|e: MlError| e.to_string())?;
    Ok(Ret::ReadTxLogs { halves: half, ops, discards, check_offset, op_offset })
}
