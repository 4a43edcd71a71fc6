//! What the producers, consumers and the checker node of `pubsub` do, and
//! how their steps are recorded.

use super::{Plan, GROUPS, SERVER};
use crate::kit::{complete, patiently};
use mqsim_core::broker::log_name;
use mqsim_core::consumer::client::{self as consumer, Consumed, Handler, Observer, Step, StepResult};
use mqsim_core::env::Env;
use mqsim_core::ledger::LedgerClient;
use mqsim_core::managed::{self, cursor};
use mqsim_core::message::{self, Message, QueueId, StoredMessage};
use mqsim_core::producer::{Producer, SendOutcome};
use mqsim_sim::history::{Call, Found, OpId, Polled, Ret, Searched, SentBack, Stored};
use mqsim_sim::World;
use std::sync::Arc;
use std::time::Duration;

pub const TAGS: [&str; 3] = ["TagA", "TagB", "TagC"];

/// Sends until `stop`, one message at a time, each recorded with its outcome.
pub async fn producer(env: Env, world: Arc<World>, plan: Plan, stop: Duration, max_sends: Option<u64>) {
    let producer = Producer::new(&env, plan.nameservers());
    let random = env.random("pubsub-producer");
    let incarnation: u32 = random.range(0..u32::MAX);
    let mut n = 0u64;
    while world.elapsed() < stop && max_sends.is_none_or(|m| n < m) {
        n += 1;
        let msg_id = format!("{}.{incarnation:08x}.{n}", env.name);
        let tag = TAGS[random.range(0..TAGS.len())].to_string();
        let keys = vec![format!("k{}", n % 16)];
        let body = format!("body.{msg_id}");
        let call = Call::Send {
            topic: plan.topic.clone(),
            tag: tag.clone(),
            keys: keys.clone(),
            shard: None,
            msg_id: msg_id.clone(),
            body: body.clone(),
            back: None,
        };
        let op = world.history.invoke(&env.name, call);
        let message = Message {
            msg_id,
            topic: plan.topic.clone(),
            tag,
            keys: keys.clone(),
            body: body.into_bytes(),
            redelivery: None,
        };
        match producer.send(message, None).await {
            SendOutcome::Ok { broker, queue, offset } => {
                world.history.ok(&env.name, op, Ret::Send { broker, queue: queue.queue, offset })
            }
            SendOutcome::Failed(e) => world.history.fail(&env.name, op, e),
            SendOutcome::Unknown(e) => world.history.info(&env.name, op, e),
        }
        if random.range(0..QUERY_ONE_IN) == 0 {
            query_key(&env, &world, &producer, &plan.topic, &keys[0]).await;
        }
        env.sleep(random.duration(Duration::from_millis(60), Duration::from_millis(300))).await;
    }
}

/// A producer queries by key after about one send in this many.
const QUERY_ONE_IN: usize = 8;

/// Queries every broker of the routes for `key`, one recorded operation each.
async fn query_key(env: &Env, world: &World, producer: &Producer, topic: &str, key: &str) {
    let Some(routes) = producer.routes(topic).await else { return };
    let mut brokers: Vec<String> = routes.into_iter().map(|(broker, _)| broker).collect();
    brokers.dedup();
    for broker in brokers {
        let call = Call::QueryKey { broker: broker.clone(), topic: topic.to_string(), key: key.to_string() };
        let op = world.history.invoke(&env.name, call);
        let answer = producer.query_key_at(&broker, topic, key).await.map(|a| Ret::QueryKey {
            searched: a.searched.into_iter().map(|(queue, end)| Searched { queue, end }).collect(),
            found: a
                .found
                .into_iter()
                .map(|(queue, m)| Found { queue, offset: m.offset, msg_id: m.message.msg_id })
                .collect(),
        });
        match answer {
            Ok(ret) => world.history.ok(&env.name, op, ret),
            Err(e) => world.history.info(&env.name, op, e),
        }
    }
}

/// Records a consumer's steps as client operations.
struct Recorder {
    world: Arc<World>,
    node: String,
    group: String,
    topic: String,
}

impl Observer for Recorder {
    fn start(&self, step: &Step) -> u64 {
        let (group, topic) = (self.group.clone(), self.topic.clone());
        let call = match step {
            Step::Rebalance => Call::Rebalance { group, topic },
            Step::FetchOffset { queue } => Call::FetchOffset { group, topic, queue: *queue },
            Step::Poll { queue, offset } => Call::Poll { group, topic, queue: *queue, offset: *offset },
            Step::Process { queue, offset, msg_id } => {
                Call::Process { group, topic, queue: *queue, offset: *offset, msg_id: msg_id.clone() }
            }
            Step::Commit { queue, offset } => Call::Commit { group, topic, queue: *queue, offset: *offset },
            Step::Lock { queue } => Call::Lock { group, topic, queue: *queue },
            Step::Unlock { queue } => Call::Unlock { group, topic, queue: *queue },
            Step::SendBack { queue, offset, msg_id, copy } => Call::Send {
                topic: copy.topic.clone(),
                tag: copy.tag.clone(),
                keys: copy.keys.clone(),
                shard: None,
                msg_id: copy.msg_id.clone(),
                body: String::from_utf8_lossy(&copy.body).into_owned(),
                back: Some(SentBack { group, topic, queue: *queue, offset: *offset, msg_id: msg_id.clone() }),
            },
        };
        self.world.history.invoke(&self.node, call).0
    }

    fn end(&self, token: u64, result: &StepResult) {
        let op = OpId(token);
        let ret = match result {
            StepResult::Rebalanced { queues } => Ret::Rebalance { queues: queues.clone() },
            StepResult::Offset(offset) => Ret::FetchOffset { offset: *offset },
            StepResult::Polled { msgs, next } => Ret::Poll {
                msgs: msgs
                    .iter()
                    .map(|(offset, msg_id, tag)| Polled { offset: *offset, msg_id: msg_id.clone(), tag: tag.clone() })
                    .collect(),
                next: *next,
            },
            StepResult::Processed => Ret::Process,
            StepResult::Committed => Ret::Commit,
            StepResult::Locked => Ret::Lock,
            StepResult::Unlocked => Ret::Unlock,
            StepResult::SentBack { broker, queue, offset } => {
                Ret::Send { broker: broker.clone(), queue: *queue, offset: *offset }
            }
            StepResult::Failed(e) => return self.world.history.fail(&self.node, op, e),
            StepResult::Unknown(e) => return self.world.history.info(&self.node, op, e),
        };
        self.world.history.ok(&self.node, op, ret);
    }
}

/// The application: processing a message takes a few milliseconds.
pub(crate) struct Work {
    pub(crate) env: Env,
}

impl Handler for Work {
    fn process(&self, _msg: &StoredMessage) -> futures::future::BoxFuture<'static, Consumed> {
        let d = self.env.random("pubsub-processing").duration(Duration::from_millis(1), Duration::from_millis(8));
        let sleep = self.env.sleep(d);
        Box::pin(async move {
            sleep.await;
            Consumed::Done
        })
    }
}

/// A consumer of `group` for `tags` (none: all) of `plan`'s topic, as the
/// messaging scenarios run it: rebalancing every 20 s, 16 messages a pull.
pub(crate) fn consumer_config(plan: &Plan, group: &str, tags: Vec<String>) -> consumer::Config {
    consumer::Config {
        group: group.to_string(),
        topic: plan.topic.clone(),
        queues: plan.queues,
        tags,
        nameservers: plan.nameservers(),
        meta_server: SERVER.to_string(),
        session_timeout: plan.session_timeout,
        rebalance_every: Duration::from_secs(20),
        pull_batch: 16,
        ordered: false,
        retry: None,
    }
}

/// A consumer of group `GROUPS[group]`, until `stop`.
pub async fn consumer(env: Env, world: Arc<World>, plan: Plan, group: usize, stop: Duration) {
    let (name, tags) = GROUPS[group];
    let config = consumer_config(&plan, name, tags.iter().map(|t| t.to_string()).collect());
    let work = Arc::new(Work { env: env.clone() });
    run_recorded(env, world, config, work, stop).await;
}

/// Runs a consumer with `config` and the application `handler` until
/// `stop`, its steps recorded as client operations.
pub(crate) async fn run_recorded(
    env: Env,
    world: Arc<World>,
    config: consumer::Config,
    handler: Arc<dyn Handler>,
    stop: Duration,
) {
    let recorder = Recorder {
        world: world.clone(),
        node: env.name.clone(),
        group: config.group.clone(),
        topic: config.topic.clone(),
    };
    let until = move || world.elapsed() >= stop;
    consumer::run(env, config, Arc::new(recorder), handler, until).await;
}

/// The checker node's read of `topic`'s queue `queue` whole from storage
/// (closing the last owner's ledger by recovery), recorded as `read_queue`.
pub(crate) async fn read_queue(
    env: &Env,
    world: &World,
    c: &LedgerClient,
    topic: &str,
    queue: u32,
    purpose: &'static str,
) {
    let log = log_name(&QueueId::new(topic, queue));
    let op = world.history.invoke(&env.name, Call::ReadQueue { topic: topic.to_string(), queue });
    let read = patiently(env, purpose, || managed::read_whole(c, &log)).await;
    let read = read.map_err(|e| e.to_string()).and_then(|(_, payloads)| stored(&payloads));
    complete(env, world, op, read, |msgs| Ret::ReadQueue { msgs });
}

/// The checker node: reads every queue whole from storage (closing the last
/// owner's ledger by recovery), and every group's durable committed offset.
pub async fn final_reads(env: Env, world: Arc<World>, plan: Plan) {
    let c = LedgerClient::new(&env, SERVER);
    for queue in 0..plan.queues {
        read_queue(&env, &world, &c, &plan.topic, queue, "pubsub-final").await;
        let log = log_name(&QueueId::new(plan.topic.clone(), queue));
        for (group, _) in GROUPS {
            let call = Call::FetchOffset { group: group.into(), topic: plan.topic.clone(), queue };
            let op = world.history.invoke(&env.name, call);
            let read = patiently(&env, "pubsub-final", || cursor::read(&c.meta, &log, group)).await;
            complete(&env, &world, op, read, |offset| Ret::FetchOffset { offset });
        }
    }
}

/// A queue's entries as messages; an entry that is not one makes the read fail.
fn stored(payloads: &[Vec<u8>]) -> Result<Vec<Stored>, String> {
    payloads
        .iter()
        .enumerate()
        .map(|(offset, p)| {
            let m = message::decode(p).ok_or(format!("offset {offset} holds no message"))?;
            Ok(Stored {
                offset: offset as u64,
                msg_id: m.msg_id,
                tag: m.tag,
                body: String::from_utf8_lossy(&m.body).into_owned(),
            })
        })
        .collect()
}
