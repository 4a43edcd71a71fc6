//! Transactional messages: producers of one group send halves, run local
//! transactions on their own disks and send end messages one-way; brokers
//! keep halves, op records and discarded halves per queue as managed ledgers
//! and check back on halves whose end message never came; consumers read
//! the real queues. The checker node reads every queue and its transaction
//! logs at the end, the producers their local stores.
//!
//! `tx-checkback` loses and delays end messages, partitions producers from
//! brokers, skews and drifts clocks and keeps a producer dead while the
//! others answer. `tx-crash` crashes producers (also at the fsync of a
//! decision: between half and end) and brokers (also between a commit's
//! real write and its op write) at every step of the protocol.

pub mod checker;
mod workload;

use crate::kit::{Faults, Knob, Role, Run, Script, Topology, OPS};
use crate::{Config, Ran, Violation};
use mqsim_core::broker::txn::CheckConfig;
use mqsim_core::broker::{self, Topic};
use mqsim_core::bugs::Bug;
use mqsim_core::env::Kind;
use mqsim_core::managed::{self, Rollover};
use mqsim_core::{bookie, meta, nameserver, producer};
use mqsim_sim::net::{Effect, FilterRule};
use mqsim_sim::{Fault, FaultAction, FaultKind, Schedule, World};
use rand::seq::SliceRandom;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

pub const SERVER: &str = "meta-0";
pub const CHECKER: &str = "checker-0";
pub const TOPIC: &str = "payments";
/// The producer group of every transactional producer.
pub const GROUP: &str = "pg-tx";
const FAULT_PHASE: Duration = Duration::from_secs(40);
const QUEUES: &str = "queues";
const BROKERS: &str = "brokers";
const PRODUCERS: &str = "producers";
/// Largest clock drift the nemesis draws (5 %), which the T6 checker allows for.
pub const MAX_DRIFT_PPM: i64 = 50_000;
/// The longest a local transaction stays undecided before it is decided (if it ever is).
const LONGEST_LOCAL: Duration = Duration::from_secs(20);

/// After the fault phase: producers stop at +5 s; then the slowest local
/// transaction decides, and the check service has time to check every half
/// to its maximum and discard it, and a queue left unowned to be taken over.
#[derive(Clone, Copy, Debug)]
pub struct Timeline {
    pub producers_stop: Duration,
    pub final_read: Duration,
    pub consumers_stop: Duration,
    pub end: Duration,
}

impl Timeline {
    fn of(phase: Duration, plan: &Plan) -> Timeline {
        let producers_stop = phase + Duration::from_secs(5);
        let checks =
            Duration::from_millis(plan.check.timeout_ms + (plan.check.max_checks as u64 + 3) * plan.check.interval_ms);
        let takeover = plan.session_timeout * 3;
        let final_read = producers_stop + LONGEST_LOCAL + checks + takeover;
        let consumers_stop = final_read + Duration::from_secs(10);
        Timeline { producers_stop, final_read, consumers_stop, end: consumers_stop + Duration::from_secs(5) }
    }
}

/// What one seed draws.
#[derive(Clone, Debug)]
pub struct Plan {
    pub topic: String,
    pub queues: u32,
    pub brokers: usize,
    pub bookies: usize,
    pub nameservers: usize,
    pub producers: usize,
    pub shape: (usize, usize, usize),
    pub session_timeout: Duration,
    pub rollover: Rollover,
    /// RocketMQ's timeout (6 s) with the interval and the maximum scaled
    /// down (from 30 s and 15), so that halves reach the maximum within a run.
    pub check: CheckConfig,
    pub max_txs: Option<u64>,
}

impl Plan {
    pub fn nameservers(&self) -> Vec<String> {
        (0..self.nameservers).map(|i| format!("ns-{i}")).collect()
    }

    fn broker_config(&self) -> broker::Config {
        broker::Config {
            meta_server: SERVER.into(),
            nameservers: self.nameservers(),
            topics: vec![Topic {
                name: self.topic.clone(),
                queues: self.queues,
                brokers: (0..self.brokers).map(|i| format!("broker-{i}")).collect(),
                transactional: true,
            }],
            ledger: managed::Config { e: self.shape.0, qw: self.shape.1, qa: self.shape.2, rollover: self.rollover },
            session_timeout: self.session_timeout,
            takeover_after: self.session_timeout * 2,
            registrations: None,
            check: self.check,
            balance: None,
        }
    }

    fn draw(seed: u64, scenario: &str, config: &mut Config) -> Plan {
        let mut rng = mqsim_sim::rng_for(seed, &format!("{scenario}/plan"));
        let queues = config.get(QUEUES).unwrap_or(rng.gen_range(2..=4));
        let brokers = config.get(BROKERS).unwrap_or(rng.gen_range(2..=3));
        let producers = config.get(PRODUCERS).unwrap_or(rng.gen_range(2..=3));
        config.set(QUEUES, queues);
        config.set(BROKERS, brokers);
        config.set(PRODUCERS, producers);
        Plan {
            topic: TOPIC.into(),
            queues: queues as u32,
            brokers: brokers as usize,
            bookies: rng.gen_range(4..=5),
            nameservers: rng.gen_range(1..=2),
            producers: producers as usize,
            shape: *[(3, 2, 2), (3, 3, 2)].choose(&mut rng).expect("shapes"),
            session_timeout: Duration::from_millis(rng.gen_range(3_000..=6_000)),
            rollover: Rollover {
                max_entries: rng.gen_range(20..=200),
                max_bytes: 1 << 20,
                min_age: Duration::ZERO,
                max_age: Duration::from_secs(rng.gen_range(5..=30)),
            },
            check: CheckConfig {
                timeout_ms: 6_000,
                max_checks: rng.gen_range(3..=8),
                interval_ms: rng.gen_range(2_000..=5_000),
            },
            max_txs: config.get(OPS),
        }
    }
}

fn knobs() -> Vec<Knob> {
    vec![
        Knob::count(QUEUES, "queues of the transactional topic", 1..=8),
        Knob::count(BROKERS, "broker nodes", 1..=5),
        Knob::count(PRODUCERS, "transactional producers of the group", 1..=4),
    ]
}

fn topology(plan: &Plan) -> Topology {
    Topology::new(vec![
        Role::new("meta", 1).durable(),
        Role::new("bookie", plan.bookies).durable(),
        Role::new("ns", plan.nameservers),
        Role::new("broker", plan.brokers),
        Role::new("producer", plan.producers).durable(),
        Role::new("consumer", 2),
        Role::new("checker", 1).joining(),
    ])
}

fn message_kinds() -> Vec<Kind> {
    let meta_kinds = [meta::kind::GET, meta::kind::SET, meta::kind::CREATE, meta::kind::HEARTBEAT];
    bookie::KINDS
        .iter()
        .chain(broker::KINDS)
        .chain(nameserver::KINDS)
        .chain(producer::proto::KINDS)
        .copied()
        .chain(meta_kinds)
        .collect()
}

fn start(w: &Arc<World>, run: &Run<Plan>) {
    let t = Timeline::of(run.phase, &run.plan);
    crate::pubsub::start_servers(w, &run.topology, run.plan.broker_config());
    for p in run.topology.names("producer") {
        let (world, plan) = (w.clone(), run.plan.clone());
        w.add_node(&p, move |env| workload::producer(env, world.clone(), plan.clone(), t));
    }
    for c in run.topology.names("consumer") {
        let (world, plan) = (w.clone(), run.plan.clone());
        w.add_node(&c, move |env| workload::consumer(env, world.clone(), plan.clone(), t.consumers_stop));
    }
}

async fn drive(w: Arc<World>, run: Run<Plan>) {
    let t = Timeline::of(run.phase, &run.plan);
    w.sleep_until(t.final_read).await;
    let (world, plan) = (w.clone(), run.plan.clone());
    w.add_node(CHECKER, move |env| workload::final_reads(env, world.clone(), plan.clone()));
    w.sleep_until(t.end).await;
}

fn check(run: &Run<Plan>, ran: &Ran) -> Vec<Violation> {
    let spec = checker::Spec {
        topic: run.plan.topic.clone(),
        queues: run.plan.queues,
        check: run.plan.check,
        max_drift_ppm: MAX_DRIFT_PPM,
    };
    checker::check(&ran.history, &spec)
}

/// The planted bugs of transactions (named `tx-…`).
fn tx_bugs() -> Vec<Bug> {
    Bug::ALL.iter().copied().filter(|b| b.name().starts_with("tx-")).collect()
}

fn tx_probes() -> Vec<mqsim_core::probe::Probe> {
    crate::probes_of(&["tx", "broker", "producer", "consumer"])
}

/// A window of `at_ms..at_ms + for_ms` inside the fault phase, of length drawn from `len_ms`.
fn window(rng: &mut impl Rng, phase_ms: u64, len_ms: std::ops::RangeInclusive<u64>) -> Option<(u64, u64)> {
    let for_ms = rng.gen_range(len_ms);
    (phase_ms > for_ms + 2_000).then(|| (rng.gen_range(1_000..phase_ms - for_ms), for_ms))
}

/// The swarm's faults but bit flips at rest.
fn checkback_faults() -> Faults {
    Faults {
        kinds: FaultKind::swarm().into_iter().filter(|k| *k != FaultKind::DiskCorrupt).collect(),
        message_kinds: message_kinds(),
        max_corruptions_per_node: 0,
        max_drift_ppm: MAX_DRIFT_PPM,
    }
}

/// The faults this scenario is about, each for some seeds: end messages
/// (or check answers) lost, duplicated or held back past a check-back; a producer
/// cut off from the brokers, or dead, while check-backs come; producer
/// and broker clocks skewed far apart.
fn checkback_aimed(run: &Run<Plan>) -> Vec<FaultAction> {
    let mut rng = mqsim_sim::rng_for(run.seed, "tx-checkback/aimed");
    let phase = run.phase.as_millis() as u64;
    let producers = run.topology.names("producer");
    let brokers = run.topology.names("broker");
    let mut actions = Vec::new();
    for kind in [broker::proto::kind::END_TX, broker::proto::kind::CHECK_ANSWER] {
        if rng.gen_bool(0.5) {
            let effect = match rng.gen_range(0..3) {
                0 => Effect::Drop { percent: rng.gen_range(30..=100) },
                1 => Effect::Delay { ms: rng.gen_range(6_000..=20_000) },
                _ => Effect::Duplicate { percent: rng.gen_range(30..=100) },
            };
            let from = rng.gen_bool(0.5).then(|| producers.choose(&mut rng).cloned()).flatten();
            if let Some((at_ms, for_ms)) = window(&mut rng, phase, 5_000..=25_000) {
                let rule = FilterRule { from, to: None, kind: Some(kind), reply: None, effect };
                actions.push(FaultAction { at_ms, for_ms, fault: Fault::Filter { rule } });
            }
        }
    }
    if rng.gen_bool(0.4) {
        let node = producers.choose(&mut rng).cloned().expect("producers");
        if let Some((at_ms, for_ms)) = window(&mut rng, phase, 5_000..=20_000) {
            let fault = Fault::Partition { a: vec![node], b: brokers.clone() };
            actions.push(FaultAction { at_ms, for_ms, fault });
        }
    }
    if rng.gen_bool(0.4) && producers.len() > 1 {
        // Dead until the faults end: another producer of the group answers.
        let node = producers.choose(&mut rng).cloned().expect("producers");
        let at_ms = rng.gen_range(1_000..phase / 2);
        actions.push(FaultAction { at_ms, for_ms: phase - at_ms, fault: Fault::Crash { node } });
    }
    for node in producers.iter().chain(&brokers) {
        if rng.gen_bool(0.3) {
            let fault = Fault::ClockSkew { node: node.clone(), ms: rng.gen_range(-60_000..=60_000) };
            actions.push(FaultAction { at_ms: rng.gen_range(0..phase / 2), for_ms: phase / 2, fault });
        }
    }
    actions
}

/// Crashes and what makes their timing vary.
fn crash_faults() -> Faults {
    let kinds = [
        FaultKind::Crash,
        FaultKind::CrashAtFsync,
        FaultKind::Pause,
        FaultKind::Drop,
        FaultKind::Delay,
        FaultKind::Duplicate,
        FaultKind::SlowFsync,
        FaultKind::ClockDrift,
    ];
    Faults {
        kinds: kinds.to_vec(),
        message_kinds: message_kinds(),
        max_corruptions_per_node: 0,
        max_drift_ppm: MAX_DRIFT_PPM,
    }
}

/// Crashes at the steps of the protocol: producers at the fsync of a
/// decision (after the half, before the end message) and at random;
/// brokers in bursts while ends and check passes run (a commit between
/// its real write and its op write, a pass between its puts and its offsets).
fn crash_aimed(run: &Run<Plan>) -> Vec<FaultAction> {
    let mut rng = mqsim_sim::rng_for(run.seed, "tx-crash/aimed");
    let phase = run.phase.as_millis() as u64;
    let mut actions = Vec::new();
    for node in run.topology.names("producer") {
        for _ in 0..rng.gen_range(0..=3) {
            let fault = if rng.gen_bool(0.6) {
                Fault::CrashAtFsync { node: node.clone() }
            } else {
                Fault::Crash { node: node.clone() }
            };
            if let Some((at_ms, for_ms)) = window(&mut rng, phase, 300..=8_000) {
                actions.push(FaultAction { at_ms, for_ms, fault });
            }
        }
    }
    if rng.gen_bool(0.3) {
        // Check answers held back past the next pass: some arrive after the half was discarded.
        let effect = Effect::Delay { ms: rng.gen_range(3_000..=10_000) };
        let rule =
            FilterRule { from: None, to: None, kind: Some(broker::proto::kind::CHECK_ANSWER), reply: None, effect };
        if let Some((at_ms, for_ms)) = window(&mut rng, phase, 5_000..=20_000) {
            actions.push(FaultAction { at_ms, for_ms, fault: Fault::Filter { rule } });
        }
    }
    for node in run.topology.names("broker") {
        for _ in 0..rng.gen_range(1..=4) {
            if let Some((at_ms, for_ms)) = window(&mut rng, phase, 200..=6_000) {
                actions.push(FaultAction { at_ms, for_ms, fault: Fault::Crash { node: node.clone() } });
            }
        }
    }
    actions
}

/// The two transaction scenarios: one system and workload, two fault profiles.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tx {
    /// `tx-checkback`: lost, delayed and duplicated end messages, partitions, skewed clocks, dead producers.
    Checkback,
    /// `tx-crash`: producer and broker crashes at every step of the protocol.
    Crash,
}

impl Script for Tx {
    type Plan = Plan;
    type Final = ();

    fn name(&self) -> &'static str {
        match self {
            Tx::Checkback => "tx-checkback",
            Tx::Crash => "tx-crash",
        }
    }

    fn about(&self) -> &'static str {
        match self {
            Tx::Checkback => "transactional producers and broker check-back; end messages lost, delayed and duplicated, producers cut off or dead, clocks skewed",
            Tx::Crash => "transactional producers and brokers crash at every step: between half and end, between a commit's two writes, mid check pass",
        }
    }

    fn default_phase(&self) -> Duration {
        FAULT_PHASE
    }

    fn knobs(&self) -> Vec<Knob> {
        knobs()
    }

    fn plan(&self, seed: u64, config: &mut Config) -> Plan {
        Plan::draw(seed, self.name(), config)
    }

    fn topology(&self, plan: &Plan) -> Topology {
        topology(plan)
    }

    fn faults(&self, _plan: &Plan) -> Faults {
        match self {
            Tx::Checkback => checkback_faults(),
            Tx::Crash => crash_faults(),
        }
    }

    fn aimed(&self, run: &Run<Plan>) -> Vec<FaultAction> {
        match self {
            Tx::Checkback => checkback_aimed(run),
            Tx::Crash => crash_aimed(run),
        }
    }

    fn start(w: &Arc<World>, run: &Run<Plan>) {
        start(w, run)
    }

    async fn drive(w: Arc<World>, run: Run<Plan>) {
        drive(w, run).await
    }

    fn end(run: &Run<Plan>) -> Duration {
        Timeline::of(run.phase, &run.plan).end
    }

    fn check(run: &Run<Plan>, ran: &Ran, _schedule: &Schedule, _fin: ()) -> Vec<Violation> {
        check(run, ran)
    }

    fn bugs(&self) -> Vec<Bug> {
        tx_bugs()
    }

    fn probes(&self) -> Vec<mqsim_core::probe::Probe> {
        tx_probes()
    }
}
