//! `ordered`: producers send messages with sharding keys, each key's
//! messages one after another to the queue the key hashes to; ordered
//! consumers of one group lock each queue at its broker and process it one
//! message at a time, retrying a message that failed after 1 s. Consumers
//! come and go in shifts (the group rebalances around them), brokers crash,
//! pause past their sessions and move queues, and a consumer is cut off
//! from the metadata service while it holds locks. The checker judges the
//! delivery guarantees (M1–M7), each key's order (M2) and that no two
//! consumers processed one queue at once.

pub mod checker;
pub(crate) mod workload;

use crate::kit::{Faults, Knob, Role, Run, Script, Topology, OPS};
use crate::pubsub::checker::{self as pubsub_checker, Subscription};
use crate::pubsub::{self, Timeline, SERVER};
use crate::{Config, Ran, Violation};
use mqsim_core::bugs::Bug;
use mqsim_core::nameserver::{BROKER_EXPIRY, SCAN_EVERY};
use mqsim_sim::{Fault, FaultAction, Schedule, World};
use rand::seq::SliceRandom;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

pub const CHECKER: &str = "checker-0";
pub const TOPIC: &str = "ledger-events";
/// The one consumer group, subscribed to every tag.
pub const GROUP: &str = "g-ordered";
const FAULT_PHASE: Duration = Duration::from_secs(40);
const QUEUES: &str = "queues";
const BROKERS: &str = "brokers";
const CONSUMERS: &str = "consumers";

/// After the fault phase: producers stop at +10 s; consumers stay until +85 s
/// (a takeover late in the phase holds its queue's lock back for 40 s), the
/// checker reads at +87 s.
fn timeline(phase: Duration) -> Timeline {
    Timeline::after_secs(phase, [10, 85, 87, 100])
}

/// What one seed draws: the servers and topic as `pubsub` draws them, and
/// the ordered workload.
#[derive(Clone, Debug)]
pub struct Plan {
    pub cluster: pubsub::Plan,
    pub consumers: usize,
    /// Sharding keys per producer.
    pub keys: u32,
    /// Consumers come and go in shifts during the fault phase.
    pub churn: bool,
}

pub struct Ordered;

impl Script for Ordered {
    type Plan = Plan;
    type Final = ();

    fn name(&self) -> &'static str {
        "ordered"
    }

    fn about(&self) -> &'static str {
        "sharding keys and ordered consumers that lock queues at their brokers; consumers come and go, brokers fail over"
    }

    fn default_phase(&self) -> Duration {
        FAULT_PHASE
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![
            Knob::count(QUEUES, "queues of the topic", 1..=16),
            Knob::count(BROKERS, "broker nodes", 1..=6),
            Knob::count(CONSUMERS, "consumers of the group", 1..=6),
        ]
    }

    fn plan(&self, seed: u64, config: &mut Config) -> Plan {
        let mut rng = mqsim_sim::rng_for(seed, "ordered/plan");
        let queues = config.get(QUEUES).unwrap_or(rng.gen_range(3..=6));
        let brokers = config.get(BROKERS).unwrap_or(rng.gen_range(2..=3));
        let consumers = config.get(CONSUMERS).unwrap_or(rng.gen_range(2..=4));
        config.set(QUEUES, queues);
        config.set(BROKERS, brokers);
        config.set(CONSUMERS, consumers);
        let cluster = pubsub::Plan::draw(&mut rng, TOPIC, queues as u32, brokers as usize, config.get(OPS));
        Plan { cluster, consumers: consumers as usize, keys: rng.gen_range(3..=8), churn: rng.gen_bool(0.75) }
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
        pubsub::start_servers(w, &run.topology, run.plan.cluster.broker_config());
        for p in run.topology.names("producer") {
            let (world, plan) = (w.clone(), run.plan.clone());
            w.add_node(&p, move |env| {
                workload::producer(env, world.clone(), plan.clone(), t.producers_stop, plan.cluster.max_sends)
            });
        }
        let calm = run.phase;
        for c in run.topology.names("consumer") {
            let (world, plan) = (w.clone(), run.plan.clone());
            w.add_node(&c, move |env| workload::consumer(env, world.clone(), plan.clone(), calm, t.consumers_stop));
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
        let spec = pubsub_checker::Spec {
            subscriptions: vec![Subscription {
                group: GROUP.into(),
                topic: run.plan.cluster.topic.clone(),
                tags: vec!["*".into()],
            }],
            topics: vec![(run.plan.cluster.topic.clone(), run.plan.cluster.queues)],
            calm_from: run.phase.as_micros() as u64,
            broker_expiry: BROKER_EXPIRY.as_micros() as u64,
            scan_every: SCAN_EVERY.as_micros() as u64,
            max_message_delay: 20_000_000,
        };
        let mut violations = pubsub_checker::check(&ran.history, &spec).violations;
        violations.extend(checker::check(&ran.history, GROUP));
        violations
    }

    fn bugs(&self) -> Vec<Bug> {
        Bug::ALL.iter().copied().filter(|b| b.name().starts_with("ordered-")).collect()
    }

    fn probes(&self) -> Vec<mqsim_core::probe::Probe> {
        crate::probes_of(&["ordered", "broker", "producer", "consumer", "managed"])
    }
}

/// The faults ordered consumption is about, each for some seeds: a broker
/// frozen past its session (a zombie that still has its queues open when it
/// wakes), a broker down long enough for its queues to be taken over,
/// brokers restarting quickly a few times, a consumer frozen past its
/// session while a broker restarts, and a consumer cut off from the
/// metadata service while it holds locks (the group rebalances around it).
fn aimed(run: &Run<Plan>) -> Vec<FaultAction> {
    let mut rng = mqsim_sim::rng_for(run.seed, "ordered/aimed");
    let phase = run.phase.as_millis() as u64;
    let takeover = (run.plan.cluster.session_timeout * 3).as_millis() as u64;
    let brokers = run.topology.names("broker");
    let mut actions = Vec::new();
    let window = |rng: &mut rand_chacha::ChaCha8Rng, for_ms: u64| {
        (phase > for_ms + 2_000).then(|| (rng.gen_range(1_000..phase - for_ms), for_ms))
    };
    if rng.gen_bool(0.5) {
        let node = brokers.choose(&mut rng).cloned().expect("brokers");
        let for_ms = takeover + rng.gen_range(1_000..=5_000);
        if let Some((at_ms, for_ms)) = window(&mut rng, for_ms) {
            actions.push(FaultAction { at_ms, for_ms, fault: Fault::Pause { node } });
        }
    }
    if rng.gen_bool(0.5) {
        let node = brokers.choose(&mut rng).cloned().expect("brokers");
        let for_ms = takeover + rng.gen_range(2_000..=15_000);
        if let Some((at_ms, for_ms)) = window(&mut rng, for_ms) {
            actions.push(FaultAction { at_ms, for_ms, fault: Fault::Crash { node } });
        }
    }
    // Quick restarts: the broker comes back with an empty lock table and
    // opens its queues again while consumers come and go.
    if rng.gen_bool(0.6) {
        for _ in 0..rng.gen_range(2..=5) {
            let node = brokers.choose(&mut rng).cloned().expect("brokers");
            let for_ms = rng.gen_range(300..=3_000);
            if let Some((at_ms, for_ms)) = window(&mut rng, for_ms) {
                actions.push(FaultAction { at_ms, for_ms, fault: Fault::Crash { node } });
            }
        }
    }
    // A consumer frozen past its session but not past its leases: the group
    // rebalances its queues away while it sleeps, and a broker restarts
    // meanwhile. When it wakes it still trusts its leases.
    if rng.gen_bool(0.5) {
        let node = run.topology.names("consumer").choose(&mut rng).cloned().expect("consumers");
        let for_ms = run.plan.cluster.session_timeout.as_millis() as u64 + rng.gen_range(2_000..=15_000);
        if let Some((at_ms, for_ms)) = window(&mut rng, for_ms) {
            actions.push(FaultAction { at_ms, for_ms, fault: Fault::Pause { node } });
            let broker = brokers.choose(&mut rng).cloned().expect("brokers");
            let restart_at = at_ms + rng.gen_range(0..for_ms);
            actions.push(FaultAction {
                at_ms: restart_at,
                for_ms: rng.gen_range(300..=3_000),
                fault: Fault::Crash { node: broker },
            });
        }
    }
    if rng.gen_bool(0.4) {
        let node = run.topology.names("consumer").choose(&mut rng).cloned().expect("consumers");
        let for_ms = (run.plan.cluster.session_timeout * 2).as_millis() as u64 + rng.gen_range(1_000..=20_000);
        if let Some((at_ms, for_ms)) = window(&mut rng, for_ms) {
            let fault = Fault::Partition { a: vec![node], b: vec![SERVER.to_string()] };
            actions.push(FaultAction { at_ms, for_ms, fault });
        }
    }
    actions
}
