//! `scale-out`: brokers and bookies join while producers send and a consumer
//! group consumes; brokers crash and pause (the leader among them). Queues go
//! where the leader broker assigns them: it moves queues off dead brokers and
//! onto the new ones. New ledgers (after a rollover or a takeover) land on
//! the bookies registered then, so the new bookies take new data. The
//! checker judges the delivery guarantees (M1–M7), that no two leaders'
//! decisions interleave (L1), that new brokers took queues (L2), and, from
//! the metadata service's log on its disk, that new ledgers were placed on
//! the bookies registered when they were created (P1, [`placement`]).

pub mod checker;
pub mod placement;
pub(crate) mod workload;

use crate::kit::{Faults, Knob, Role, Run, Script, Topology, OPS};
use crate::pubsub::checker::{self as pubsub_checker, Subscription};
use crate::pubsub::{self, Timeline, SERVER};
use crate::{Config, Ran, Violation};
use mqsim_core::broker::leader::Balance;
use mqsim_core::bugs::Bug;
use mqsim_core::nameserver::{BROKER_EXPIRY, SCAN_EVERY};
use mqsim_core::{bookie, broker, meta, nameserver};
use mqsim_sim::{Fault, FaultAction, Schedule, World};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const CHECKER: &str = "checker-0";
pub const TOPIC: &str = "shipments";
pub const GROUP: &str = "g-ship";
/// The roles of the brokers and bookies that join during the run.
pub const NEW_BROKER: &str = "newbroker";
pub const NEW_BOOKIE: &str = "newbookie";
const FAULT_PHASE: Duration = Duration::from_secs(40);
const QUEUES: &str = "queues";
const BROKERS: &str = "brokers";
const NEW_BROKERS: &str = "new-brokers";
const NEW_BOOKIES: &str = "new-bookies";

/// After the fault phase: producers stop at +10 s; consumers catch up and
/// the leader settles until +45 s, the checker reads at +47 s.
fn timeline(phase: Duration) -> Timeline {
    Timeline::after_secs(phase, [10, 45, 47, 60])
}

/// What one seed draws.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The servers there from the start, and the topic.
    pub cluster: pubsub::Plan,
    pub consumers: usize,
    /// When each joining broker and bookie starts (from the run's start).
    pub broker_joins: Vec<Duration>,
    pub bookie_joins: Vec<Duration>,
}

pub struct ScaleOut;

impl Script for ScaleOut {
    type Plan = Plan;
    /// The metadata service's disk files at the end, for the placement checker.
    type Final = BTreeMap<String, Vec<u8>>;

    fn name(&self) -> &'static str {
        "scale-out"
    }

    fn about(&self) -> &'static str {
        "brokers and bookies join while traffic flows; a leader broker assigns queues and moves them off dead brokers and onto new ones, and new ledgers land on the new bookies"
    }

    fn default_phase(&self) -> Duration {
        FAULT_PHASE
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![
            Knob::count(QUEUES, "queues of the topic", 1..=16),
            Knob::count(BROKERS, "brokers from the start", 1..=6),
            Knob::count(NEW_BROKERS, "brokers that join", 0..=4),
            Knob::count(NEW_BOOKIES, "bookies that join", 0..=4),
        ]
    }

    fn plan(&self, seed: u64, config: &mut Config) -> Plan {
        let mut rng = mqsim_sim::rng_for(seed, "scale-out/plan");
        let queues = config.get(QUEUES).unwrap_or(rng.gen_range(6..=10));
        let brokers = config.get(BROKERS).unwrap_or(rng.gen_range(2..=3));
        let new_brokers = config.get(NEW_BROKERS).unwrap_or(rng.gen_range(1..=2));
        let new_bookies = config.get(NEW_BOOKIES).unwrap_or(rng.gen_range(1..=2));
        for (knob, v) in [(QUEUES, queues), (BROKERS, brokers), (NEW_BROKERS, new_brokers), (NEW_BOOKIES, new_bookies)]
        {
            config.set(knob, v);
        }
        let cluster = pubsub::Plan::draw(&mut rng, TOPIC, queues as u32, brokers as usize, config.get(OPS));
        let phase = config.get(crate::kit::PHASE_MS).unwrap_or(FAULT_PHASE.as_millis() as u64).max(4_000);
        let mut joins = |n: u64, until: u64| -> Vec<Duration> {
            let mut v: Vec<Duration> = (0..n).map(|_| Duration::from_millis(rng.gen_range(2_000..until))).collect();
            v.sort();
            v
        };
        let broker_joins = joins(new_brokers, phase - 1_000);
        // Bookies join in the first half, so that many ledgers are placed after.
        let bookie_joins = joins(new_bookies, (phase / 2).max(2_001));
        let mut cluster = cluster;
        // Rollovers every second or few, so that the logs place many new
        // ledgers after each bookie joins: the placement checker's evidence.
        cluster.rollover.max_entries = rng.gen_range(30..=120);
        cluster.rollover.max_age = Duration::from_millis(rng.gen_range(500..=1_500));
        Plan { cluster, consumers: 2, broker_joins, bookie_joins }
    }

    fn topology(&self, plan: &Plan) -> Topology {
        Topology::new(vec![
            Role::new("meta", 1).durable(),
            Role::new("bookie", plan.cluster.bookies).durable(),
            Role::new(NEW_BOOKIE, plan.bookie_joins.len()).joining(),
            Role::new("ns", plan.cluster.nameservers),
            Role::new("broker", plan.cluster.brokers),
            Role::new(NEW_BROKER, plan.broker_joins.len()).joining(),
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
        w.add_node(SERVER, meta::serve);
        for b in run.topology.names("bookie") {
            w.add_node(&b, |env| bookie::serve(env, SERVER.to_string()));
        }
        for ns in run.topology.names("ns") {
            w.add_node(&ns, nameserver::serve);
        }
        for b in run.topology.names("broker") {
            add_broker(w, &run.plan, &b);
        }
        for p in run.topology.names("producer") {
            let (world, plan) = (w.clone(), run.plan.cluster.clone());
            w.add_node(&p, move |env| {
                pubsub::workload::producer(env, world.clone(), plan.clone(), t.producers_stop, plan.max_sends)
            });
        }
        for c in run.topology.names("consumer") {
            let (world, plan) = (w.clone(), run.plan.cluster.clone());
            w.add_node(&c, move |env| workload::consumer(env, world.clone(), plan.clone(), t.consumers_stop));
        }
    }

    async fn drive(w: Arc<World>, run: Run<Plan>) -> Self::Final {
        let t = timeline(run.phase);
        let mut joins: Vec<(Duration, String, bool)> = Vec::new();
        for (at, b) in run.plan.broker_joins.iter().zip(run.topology.names(NEW_BROKER)) {
            joins.push((*at, b, true));
        }
        for (at, b) in run.plan.bookie_joins.iter().zip(run.topology.names(NEW_BOOKIE)) {
            joins.push((*at, b, false));
        }
        joins.sort();
        for (at, node, is_broker) in joins {
            w.sleep_until(at).await;
            if is_broker {
                add_broker(&w, &run.plan, &node);
            } else {
                w.add_node(&node, |env| bookie::serve(env, SERVER.to_string()));
            }
        }
        w.sleep_until(t.final_read).await;
        let (world, plan) = (w.clone(), run.plan.cluster.clone());
        w.add_node(CHECKER, move |env| workload::final_reads(env, world.clone(), plan.clone()));
        w.sleep_until(t.end).await;
        w.disk(SERVER).durable_snapshot()
    }

    fn end(run: &Run<Plan>) -> Duration {
        timeline(run.phase).end
    }

    fn check(run: &Run<Plan>, ran: &Ran, _schedule: &Schedule, meta_disk: Self::Final) -> Vec<Violation> {
        let topic = run.plan.cluster.topic.clone();
        let spec = pubsub_checker::Spec {
            subscriptions: vec![Subscription { group: GROUP.into(), topic: topic.clone(), tags: vec!["*".into()] }],
            topics: vec![(topic, run.plan.cluster.queues)],
            calm_from: run.phase.as_micros() as u64,
            broker_expiry: BROKER_EXPIRY.as_micros() as u64,
            scan_every: SCAN_EVERY.as_micros() as u64,
            max_message_delay: 20_000_000,
        };
        let mut violations = pubsub_checker::check(&ran.history, &spec).violations;
        let new_brokers = run.topology.names(NEW_BROKER);
        let brokers = run.plan.cluster.brokers + new_brokers.len();
        let spec = checker::Spec { new_brokers, brokers, queues: run.plan.cluster.queues };
        violations.extend(checker::check(&ran.history, &spec));
        violations.extend(placement::check(&meta_disk));
        violations
    }

    fn bugs(&self) -> Vec<Bug> {
        vec![Bug::LeaderActsAfterLosingLock, Bug::RolloverOnOldBookies, Bug::TakeoverWithoutFencing]
    }

    fn probes(&self) -> Vec<mqsim_core::probe::Probe> {
        crate::probes_of(&["leader", "broker", "managed"])
    }
}

/// Adds broker `name`, a candidate leader whose leader actions are recorded.
fn add_broker(w: &Arc<World>, plan: &Plan, name: &str) {
    let recorder = Arc::new(workload::LeaderRecorder { world: w.clone(), node: name.to_string() });
    let config = broker::Config { balance: Some(Balance { observer: Some(recorder) }), ..plan.cluster.broker_config() };
    w.add_node(name, move |env| broker::serve(env, config.clone()));
}

/// The faults scaling is about, each for some seeds: a broker down long
/// enough for the leader to move its queues off (it comes back and takes
/// load again), and brokers frozen past their sessions one after another, so
/// that a leader wakes up after another broker took the lead.
fn aimed(run: &Run<Plan>) -> Vec<FaultAction> {
    let mut rng = mqsim_sim::rng_for(run.seed, "scale-out/aimed");
    let phase = run.phase.as_millis() as u64;
    let session = run.plan.cluster.session_timeout.as_millis() as u64;
    let brokers = run.topology.names("broker");
    let mut actions = Vec::new();
    let window = |rng: &mut rand_chacha::ChaCha8Rng, for_ms: u64| {
        (phase > for_ms + 2_000).then(|| (rng.gen_range(1_000..phase - for_ms), for_ms))
    };
    if rng.gen_bool(0.6) {
        let node = brokers.choose(&mut rng).cloned().expect("brokers");
        let for_ms = session + rng.gen_range(8_000..=20_000);
        if let Some((at_ms, for_ms)) = window(&mut rng, for_ms) {
            actions.push(FaultAction { at_ms, for_ms, fault: Fault::Crash { node } });
        }
    }
    if rng.gen_bool(0.7) {
        for node in brokers.iter().take(2) {
            let for_ms = session + rng.gen_range(2_000..=12_000);
            if let Some((at_ms, for_ms)) = window(&mut rng, for_ms) {
                actions.push(FaultAction { at_ms, for_ms, fault: Fault::Pause { node: node.clone() } });
            }
        }
    }
    actions
}
