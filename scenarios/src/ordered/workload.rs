//! What the producers, consumers and the checker node of `ordered` do:
//! producers send each sharding key's messages one after another, consumers
//! of one group come and go in shifts and fail some messages, and the
//! checker node reads every queue and the group's offsets at the end.

use super::{Plan, GROUP};
use crate::kit::{complete, patiently};
use crate::pubsub::workload::{read_queue, run_recorded, TAGS};
use crate::pubsub::SERVER;
use mqsim_core::broker::log_name;
use mqsim_core::consumer::client::{self as consumer, Consumed, Handler};
use mqsim_core::env::Env;
use mqsim_core::ledger::LedgerClient;
use mqsim_core::managed::cursor;
use mqsim_core::message::{Message, QueueId, StoredMessage};
use mqsim_core::producer::select::Shard;
use mqsim_core::producer::{Producer, SendOutcome};
use mqsim_core::random::Random;
use mqsim_sim::history::{Call, Ret};
use mqsim_sim::World;
use std::sync::Arc;
use std::time::Duration;

/// The sharding keys of producer `node`: its own, so that one producer sends
/// all of a key's messages, one at a time.
pub fn keys_of(node: &str, keys: u32) -> Vec<String> {
    (0..keys).map(|k| format!("{node}/k{k}")).collect()
}

/// Sends until `stop`: each message to the queue its sharding key hashes
/// to, the next only after the last one's outcome is known.
pub async fn producer(env: Env, world: Arc<World>, plan: Plan, stop: Duration, max_sends: Option<u64>) {
    let producer = Producer::new(&env, plan.cluster.nameservers());
    let random = env.random("ordered-producer");
    let incarnation: u32 = random.range(0..u32::MAX);
    let keys = keys_of(&env.name, plan.keys);
    let mut n = 0u64;
    while world.elapsed() < stop && max_sends.is_none_or(|m| n < m) {
        n += 1;
        let msg_id = format!("{}.{incarnation:08x}.{n}", env.name);
        let tag = TAGS[random.range(0..TAGS.len())].to_string();
        let shard = keys[random.range(0..keys.len())].clone();
        let body = format!("body.{msg_id}");
        let call = Call::Send {
            topic: plan.cluster.topic.clone(),
            tag: tag.clone(),
            keys: vec![shard.clone()],
            shard: Some(shard.clone()),
            msg_id: msg_id.clone(),
            body: body.clone(),
            back: None,
        };
        let op = world.history.invoke(&env.name, call);
        let message = Message {
            msg_id,
            topic: plan.cluster.topic.clone(),
            tag,
            keys: vec![shard.clone()],
            body: body.into_bytes(),
            redelivery: None,
        };
        match producer.send(message, Some(Shard { key: &shard, queues: plan.cluster.queues })).await {
            SendOutcome::Ok { broker, queue, offset } => {
                world.history.ok(&env.name, op, Ret::Send { broker, queue: queue.queue, offset })
            }
            SendOutcome::Failed(e) => world.history.fail(&env.name, op, e),
            SendOutcome::Unknown(e) => world.history.info(&env.name, op, e),
        }
        env.sleep(random.duration(Duration::from_millis(40), Duration::from_millis(200))).await;
    }
}

/// The application of an ordered consumer: a message takes a few
/// milliseconds, and one try in `fail_one_in` fails (to be tried again).
struct Flaky {
    env: Env,
    random: Random,
    fail_one_in: usize,
}

impl Handler for Flaky {
    fn process(&self, _msg: &StoredMessage) -> futures::future::BoxFuture<'static, Consumed> {
        let d = self.random.duration(Duration::from_millis(1), Duration::from_millis(8));
        let failed = self.random.range(0..self.fail_one_in) == 0;
        let sleep = self.env.sleep(d);
        Box::pin(async move {
            sleep.await;
            if failed {
                Consumed::Later
            } else {
                Consumed::Done
            }
        })
    }
}

/// An ordered consumer of the group that comes and goes: during the fault
/// phase it works shifts and leaves the group between them; from the calm
/// phase on it stays until `stop`.
pub async fn consumer(env: Env, world: Arc<World>, plan: Plan, calm: Duration, stop: Duration) {
    let config = consumer::Config {
        group: GROUP.to_string(),
        topic: plan.cluster.topic.clone(),
        queues: plan.cluster.queues,
        tags: Vec::new(),
        nameservers: plan.cluster.nameservers(),
        meta_server: SERVER.to_string(),
        session_timeout: plan.cluster.session_timeout,
        rebalance_every: Duration::from_secs(20),
        pull_batch: 16,
        ordered: true,
        retry: None,
    };
    let shifts = env.random("ordered-shifts");
    let work = Arc::new(Flaky { env: env.clone(), random: env.random("ordered-processing"), fail_one_in: 10 });
    loop {
        let now = world.elapsed();
        if now >= stop {
            return;
        }
        let until = if now < calm && plan.churn {
            (now + shifts.duration(Duration::from_secs(8), Duration::from_secs(30))).min(stop)
        } else {
            stop
        };
        run_recorded(env.clone(), world.clone(), config.clone(), work.clone(), until).await;
        if world.elapsed() < calm && plan.churn {
            env.sleep(shifts.duration(Duration::from_secs(1), Duration::from_secs(8))).await;
        }
    }
}

/// The checker node: reads every queue whole from storage (closing the last
/// owner's ledger by recovery) and the group's durable committed offsets.
pub async fn final_reads(env: Env, world: Arc<World>, plan: Plan) {
    let c = LedgerClient::new(&env, SERVER);
    for queue in 0..plan.cluster.queues {
        read_queue(&env, &world, &c, &plan.cluster.topic, queue, "ordered-final").await;
        let log = log_name(&QueueId::new(plan.cluster.topic.clone(), queue));
        let call = Call::FetchOffset { group: GROUP.into(), topic: plan.cluster.topic.clone(), queue };
        let op = world.history.invoke(&env.name, call);
        let read = patiently(&env, "ordered-final", || cursor::read(&c.meta, &log, GROUP)).await;
        complete(&env, &world, op, read, |offset| Ret::FetchOffset { offset });
    }
}
