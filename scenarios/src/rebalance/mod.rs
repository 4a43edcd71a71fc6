//! `rebalance`: one consumer group whose members join, leave and crash while
//! producers send; the application fails some messages and some always
//! (poison), so failed messages go to the group's retry topic with growing
//! delays and after the group's last allowed reconsume to its dead-letter
//! topic. Brokers crash and move queues meanwhile. The checker judges the
//! delivery guarantees (M1–M7) over the topic and the retry and dead-letter
//! topics, the retry accounting, and that a consumer stops consuming a
//! queue its rebalance gave up.

pub mod checker;
pub(crate) mod workload;

use crate::kit::{Faults, Knob, Role, Run, Script, Topology, OPS};
use crate::pubsub::checker::{self as pubsub_checker, Subscription};
use crate::pubsub::{self, Timeline, SERVER};
use crate::{Config, Ran, Violation};
use mqsim_core::broker::{self, Topic};
use mqsim_core::bugs::Bug;
use mqsim_core::consumer::retry::{dlq_topic, retry_topic, Policy};
use mqsim_core::nameserver::{BROKER_EXPIRY, SCAN_EVERY};
use mqsim_sim::{Fault, FaultAction, Schedule, World};
use rand::seq::SliceRandom;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

pub const CHECKER: &str = "checker-0";
pub const TOPIC: &str = "payments";
/// The one consumer group, subscribed to every tag.
pub const GROUP: &str = "g-pay";
/// Queues of the group's retry topic (RocketMQ's `retryQueueNums`) and of its dead-letter topic.
pub const RETRY_QUEUES: u32 = 1;
pub const DLQ_QUEUES: u32 = 1;
/// RocketMQ's delays shortened this much, so that 16 reconsumes (about
/// 4.8 hours) take 17 s and a poison message reaches the dead-letter topic
/// within the run.
pub const DELAY_DIVISOR: u32 = 1_000;
const FAULT_PHASE: Duration = Duration::from_secs(40);
const QUEUES: &str = "queues";
const BROKERS: &str = "brokers";
const CONSUMERS: &str = "consumers";
const MAX_RECONSUMES: &str = "max-reconsumes";

/// After the fault phase: producers stop at +10 s; consumers stay until
/// +70 s (the last poison message goes through up to 16 delayed reconsumes),
/// the checker reads at +72 s.
fn timeline(phase: Duration) -> Timeline {
    Timeline::after_secs(phase, [10, 70, 72, 85])
}

/// What one seed draws: the servers and topic as `pubsub` draws them, and the group.
#[derive(Clone, Debug)]
pub struct Plan {
    pub cluster: pubsub::Plan,
    pub consumers: usize,
    pub policy: Policy,
    /// Messages whose origin id hashes to 0 modulo this always fail.
    pub poison_one_in: u32,
    /// Any other try fails with probability 1 in this.
    pub fail_one_in: u32,
}

impl Plan {
    fn broker_config(&self) -> broker::Config {
        let mut config = self.cluster.broker_config();
        let brokers = config.topics[0].brokers.clone();
        for (name, queues) in [(retry_topic(GROUP), RETRY_QUEUES), (dlq_topic(GROUP), DLQ_QUEUES)] {
            config.topics.push(Topic { name, queues, brokers: brokers.clone(), transactional: false });
        }
        config
    }
}

pub struct Rebalance;

impl Script for Rebalance {
    type Plan = Plan;
    type Final = ();

    fn name(&self) -> &'static str {
        "rebalance"
    }

    fn about(&self) -> &'static str {
        "a consumer group whose members join, leave and crash; failed messages go through the retry topic to the dead-letter topic"
    }

    fn default_phase(&self) -> Duration {
        FAULT_PHASE
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![
            Knob::count(QUEUES, "queues of the topic", 1..=16),
            Knob::count(BROKERS, "broker nodes", 1..=6),
            Knob::count(CONSUMERS, "consumers of the group", 1..=8),
            Knob::count(MAX_RECONSUMES, "reconsumes before the dead-letter topic", 0..=16),
        ]
    }

    fn plan(&self, seed: u64, config: &mut Config) -> Plan {
        let mut rng = mqsim_sim::rng_for(seed, "rebalance/plan");
        let queues = config.get(QUEUES).unwrap_or(rng.gen_range(4..=8));
        let brokers = config.get(BROKERS).unwrap_or(rng.gen_range(2..=3));
        let consumers = config.get(CONSUMERS).unwrap_or(rng.gen_range(3..=5));
        let max = config.get(MAX_RECONSUMES).unwrap_or(*[1, 2, 3, 5, 16, 16].choose(&mut rng).expect("maxima"));
        for (knob, v) in [(QUEUES, queues), (BROKERS, brokers), (CONSUMERS, consumers), (MAX_RECONSUMES, max)] {
            config.set(knob, v);
        }
        let cluster = pubsub::Plan::draw(&mut rng, TOPIC, queues as u32, brokers as usize, config.get(OPS));
        Plan {
            cluster,
            consumers: consumers as usize,
            policy: Policy { max_reconsumes: max as u32, delay_divisor: DELAY_DIVISOR },
            poison_one_in: rng.gen_range(40..=100),
            fail_one_in: rng.gen_range(6..=12),
        }
    }

    fn topology(&self, plan: &Plan) -> Topology {
        Topology::new(vec![
            Role::new("meta", 1).durable(),
            Role::new("bookie", plan.cluster.bookies).durable(),
            Role::new("ns", plan.cluster.nameservers),
            Role::new("broker", plan.cluster.brokers),
            Role::new("producer", 2),
            Role::new("consumer", plan.consumers),
            Role::new("checker", 1).joining(),
        ])
    }

    fn faults(&self, _plan: &Plan) -> Faults {
        pubsub::messaging_faults()
    }

    fn aimed(&self, run: &Run<Plan>) -> Vec<FaultAction> {
        aimed(run)
    }

    fn start(w: &Arc<World>, run: &Run<Plan>) {
        let t = timeline(run.phase);
        pubsub::start_servers(w, &run.topology, run.plan.broker_config());
        for p in run.topology.names("producer") {
            let (world, plan) = (w.clone(), run.plan.clone());
            w.add_node(&p, move |env| {
                workload::producer(env, world.clone(), plan.clone(), t.producers_stop, plan.cluster.max_sends)
            });
        }
        let calm = run.phase;
        for (i, c) in run.topology.names("consumer").into_iter().enumerate() {
            let (world, plan) = (w.clone(), run.plan.clone());
            w.add_node(&c, move |env| workload::consumer(env, world.clone(), plan.clone(), i, calm, t.consumers_stop));
        }
    }

    async fn drive(w: Arc<World>, run: Run<Plan>) {
        let t = timeline(run.phase);
        w.sleep_until(t.final_read).await;
        let (world, plan) = (w.clone(), run.plan.clone());
        w.add_node(CHECKER, move |env| workload::final_reads(env, world.clone(), plan.clone()));
        w.sleep_until(t.end).await;
    }

    fn end(run: &Run<Plan>) -> Duration {
        timeline(run.phase).end
    }

    fn check(run: &Run<Plan>, ran: &Ran, _schedule: &Schedule, _fin: ()) -> Vec<Violation> {
        let topic = run.plan.cluster.topic.clone();
        let every = |topic: String| Subscription { group: GROUP.into(), topic, tags: vec!["*".into()] };
        let spec = pubsub_checker::Spec {
            subscriptions: vec![every(topic.clone()), every(retry_topic(GROUP))],
            topics: vec![
                (topic, run.plan.cluster.queues),
                (retry_topic(GROUP), RETRY_QUEUES),
                (dlq_topic(GROUP), DLQ_QUEUES),
            ],
            calm_from: run.phase.as_micros() as u64,
            broker_expiry: BROKER_EXPIRY.as_micros() as u64,
            scan_every: SCAN_EVERY.as_micros() as u64,
            max_message_delay: 20_000_000,
        };
        let mut violations = pubsub_checker::check(&ran.history, &spec).violations;
        let spec = checker::Spec { group: GROUP.into(), max_reconsumes: run.plan.policy.max_reconsumes };
        violations.extend(checker::check(&ran.history, &spec));
        violations
    }

    fn bugs(&self) -> Vec<Bug> {
        vec![Bug::DlqBeforeMaxRetries, Bug::RebalanceOverlap, Bug::ConsumerCommitBeforeProcess]
    }

    fn probes(&self) -> Vec<mqsim_core::probe::Probe> {
        crate::probes_of(&["retry", "broker", "producer", "consumer", "managed"])
    }
}

/// The faults a group's membership is about, each for some seeds: a
/// consumer crashing (a few times), a consumer frozen past its session (the
/// group rebalances its queues away and it wakes still holding them), a
/// consumer cut off from the metadata service, and a broker down long
/// enough for its queues, the retry queue among them, to be taken over.
fn aimed(run: &Run<Plan>) -> Vec<FaultAction> {
    let mut rng = mqsim_sim::rng_for(run.seed, "rebalance/aimed");
    let phase = run.phase.as_millis() as u64;
    let session = run.plan.cluster.session_timeout.as_millis() as u64;
    let consumers = run.topology.names("consumer");
    let brokers = run.topology.names("broker");
    let mut actions = Vec::new();
    let window = |rng: &mut rand_chacha::ChaCha8Rng, for_ms: u64| {
        (phase > for_ms + 2_000).then(|| (rng.gen_range(1_000..phase - for_ms), for_ms))
    };
    if rng.gen_bool(0.7) {
        for _ in 0..rng.gen_range(1..=3) {
            let node = consumers.choose(&mut rng).cloned().expect("consumers");
            let for_ms = rng.gen_range(500..=10_000);
            if let Some((at_ms, for_ms)) = window(&mut rng, for_ms) {
                actions.push(FaultAction { at_ms, for_ms, fault: Fault::Crash { node } });
            }
        }
    }
    if rng.gen_bool(0.5) {
        let node = consumers.choose(&mut rng).cloned().expect("consumers");
        let for_ms = session + rng.gen_range(2_000..=15_000);
        if let Some((at_ms, for_ms)) = window(&mut rng, for_ms) {
            actions.push(FaultAction { at_ms, for_ms, fault: Fault::Pause { node } });
        }
    }
    if rng.gen_bool(0.4) {
        let node = consumers.choose(&mut rng).cloned().expect("consumers");
        let for_ms = session * 2 + rng.gen_range(1_000..=20_000);
        if let Some((at_ms, for_ms)) = window(&mut rng, for_ms) {
            let fault = Fault::Partition { a: vec![node], b: vec![SERVER.to_string()] };
            actions.push(FaultAction { at_ms, for_ms, fault });
        }
    }
    if rng.gen_bool(0.5) {
        let node = brokers.choose(&mut rng).cloned().expect("brokers");
        let for_ms = session * 3 + rng.gen_range(2_000..=15_000);
        if let Some((at_ms, for_ms)) = window(&mut rng, for_ms) {
            actions.push(FaultAction { at_ms, for_ms, fault: Fault::Crash { node } });
        }
    }
    actions
}
