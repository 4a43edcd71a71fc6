//! What the producers, consumers and the checker node of `rebalance` do:
//! producers send tagged messages; consumers of one group join late, work
//! shifts and leave between them, each consuming the topic and the group's
//! retry topic; the application fails some tries and every try of a poison
//! message; the checker node reads every queue and the group's offsets.

use super::{Plan, DLQ_QUEUES, GROUP, RETRY_QUEUES};
use crate::kit::{complete, patiently};
use crate::pubsub::workload::{consumer_config, read_queue, run_recorded, TAGS};
use crate::pubsub::SERVER;
use mqsim_core::broker::log_name;
use mqsim_core::consumer::client::{self as consumer, Consumed, Handler};
use mqsim_core::consumer::retry::{dlq_topic, retry_topic};
use mqsim_core::env::Env;
use mqsim_core::ledger::LedgerClient;
use mqsim_core::managed::cursor;
use mqsim_core::message::{Message, QueueId, StoredMessage};
use mqsim_core::producer::{Producer, SendOutcome};
use mqsim_core::random::Random;
use mqsim_sim::history::{Call, Ret};
use mqsim_sim::World;
use std::sync::Arc;
use std::time::Duration;

/// How often a consumer lists its group and rebalances. RocketMQ rebalances
/// every 20 s and also at once when a broker tells it the group changed;
/// listing every 5 s stands in for that notice, so that members that come
/// and go every few seconds do not leave queues held twice for 20 s.
const REBALANCE_EVERY: Duration = Duration::from_secs(5);

/// Sends until `stop`, one message at a time, each recorded with its outcome.
pub async fn producer(env: Env, world: Arc<World>, plan: Plan, stop: Duration, max_sends: Option<u64>) {
    let producer = Producer::new(&env, plan.cluster.nameservers());
    let random = env.random("rebalance-producer");
    let incarnation: u32 = random.range(0..u32::MAX);
    let topic = plan.cluster.topic.clone();
    let mut n = 0u64;
    while world.elapsed() < stop && max_sends.is_none_or(|m| n < m) {
        n += 1;
        let msg_id = format!("{}.{incarnation:08x}.{n}", env.name);
        let tag = TAGS[random.range(0..TAGS.len())].to_string();
        let body = format!("body.{msg_id}");
        let call = Call::Send {
            topic: topic.clone(),
            tag: tag.clone(),
            keys: Vec::new(),
            shard: None,
            msg_id: msg_id.clone(),
            body: body.clone(),
            back: None,
        };
        let op = world.history.invoke(&env.name, call);
        let message =
            Message { msg_id, topic: topic.clone(), tag, keys: Vec::new(), body: body.into_bytes(), redelivery: None };
        match producer.send(message, None).await {
            SendOutcome::Ok { broker, queue, offset } => {
                world.history.ok(&env.name, op, Ret::Send { broker, queue: queue.queue, offset })
            }
            SendOutcome::Failed(e) => world.history.fail(&env.name, op, e),
            SendOutcome::Unknown(e) => world.history.info(&env.name, op, e),
        }
        env.sleep(random.duration(Duration::from_millis(60), Duration::from_millis(300))).await;
    }
}

/// Whether the message first sent as `origin` always fails: its id hashes to 0 modulo `one_in`.
pub fn poison(origin: &str, one_in: u32) -> bool {
    crc32c::crc32c(origin.as_bytes()).is_multiple_of(one_in.max(1))
}

/// The application: a message takes a few milliseconds; a poison message
/// always fails, any other try fails one time in `fail_one_in`.
struct Faulty {
    env: Env,
    random: Random,
    poison_one_in: u32,
    fail_one_in: u32,
}

impl Handler for Faulty {
    fn process(&self, msg: &StoredMessage) -> futures::future::BoxFuture<'static, Consumed> {
        let d = self.random.duration(Duration::from_millis(1), Duration::from_millis(8));
        let origin = msg.message.redelivery.as_ref().map_or(&msg.message.msg_id, |r| &r.origin);
        let failed = poison(origin, self.poison_one_in) || self.random.range(0..self.fail_one_in) == 0;
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

/// Consumer `index` of the group: all but the first two join some seconds
/// into the run; during the fault phase each works shifts and leaves the
/// group between them; from the calm phase on it stays until `stop`. Each
/// shift consumes the topic and the group's retry topic side by side.
pub async fn consumer(env: Env, world: Arc<World>, plan: Plan, index: usize, calm: Duration, stop: Duration) {
    let config = consumer::Config {
        rebalance_every: REBALANCE_EVERY,
        retry: Some(plan.policy),
        ..consumer_config(&plan.cluster, GROUP, Vec::new())
    };
    let retries = config.for_retries(RETRY_QUEUES);
    let shifts = env.random("rebalance-shifts");
    let work = Arc::new(Faulty {
        env: env.clone(),
        random: env.random("rebalance-processing"),
        poison_one_in: plan.poison_one_in,
        fail_one_in: plan.fail_one_in,
    });
    if index >= 2 && world.elapsed() < calm {
        env.sleep(shifts.duration(Duration::from_secs(2), Duration::from_secs(20))).await;
    }
    loop {
        let now = world.elapsed();
        if now >= stop {
            return;
        }
        let until = if now < calm {
            (now + shifts.duration(Duration::from_secs(5), Duration::from_secs(25))).min(stop)
        } else {
            stop
        };
        futures::join!(
            run_recorded(env.clone(), world.clone(), config.clone(), work.clone(), until),
            run_recorded(env.clone(), world.clone(), retries.clone(), work.clone(), until),
        );
        if world.elapsed() < calm {
            env.sleep(shifts.duration(Duration::from_secs(1), Duration::from_secs(8))).await;
        }
    }
}

/// The checker node: reads every queue of the topic, the retry and the
/// dead-letter topics whole from storage (closing the last owner's ledger
/// by recovery), and the group's durable committed offsets.
pub async fn final_reads(env: Env, world: Arc<World>, plan: Plan) {
    let c = LedgerClient::new(&env, SERVER);
    let topics = [
        (plan.cluster.topic.clone(), plan.cluster.queues, true),
        (retry_topic(GROUP), RETRY_QUEUES, true),
        (dlq_topic(GROUP), DLQ_QUEUES, false),
    ];
    for (topic, queues, consumed) in topics {
        for queue in 0..queues {
            read_queue(&env, &world, &c, &topic, queue, "rebalance-final").await;
            if !consumed {
                continue;
            }
            let log = log_name(&QueueId::new(topic.clone(), queue));
            let call = Call::FetchOffset { group: GROUP.into(), topic: topic.clone(), queue };
            let op = world.history.invoke(&env.name, call);
            let read = patiently(&env, "rebalance-final", || cursor::read(&c.meta, &log, GROUP)).await;
            complete(&env, &world, op, read, |offset| Ret::FetchOffset { offset });
        }
    }
}
