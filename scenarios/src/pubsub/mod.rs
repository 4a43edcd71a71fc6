//! `pubsub`: producers send to a topic whose queues stateless brokers own
//! through the metadata service and store as managed ledgers on bookies; two
//! consumer groups with tag filters pull, process and commit. The nemesis
//! crashes and partitions brokers (moving ownership), bookies, NameServers
//! and the metadata service, skews clocks, and pauses a broker past its
//! session so it wakes up a zombie that still thinks it owns its queues.
//! After the faults, producers stop, consumers catch up, and a checker node
//! reads every queue and every group's committed offsets from storage.

pub mod checker;
pub(crate) mod workload;

use crate::kit::{Faults, Knob, Role, Run, Script, Topology, OPS};
use crate::{Config, Ran, Violation};
use checker::{Spec, Subscription};
use mqsim_core::broker::{self, Topic};
use mqsim_core::bugs::Bug;
use mqsim_core::env::Kind;
use mqsim_core::managed::{self, Rollover};
use mqsim_core::nameserver::{self, BROKER_EXPIRY, SCAN_EVERY};
use mqsim_core::{bookie, meta};
use mqsim_sim::{Fault, FaultAction, FaultKind, Schedule, World};
use rand::seq::SliceRandom;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

pub const SERVER: &str = "meta-0";
pub const CHECKER: &str = "checker-0";
pub const TOPIC: &str = "orders";
/// The consumer groups and the tags each subscribes to (none: all).
pub const GROUPS: [(&str, &[&str]); 2] = [("g-ab", &["TagA", "TagB"]), ("g-all", &[])];
const FAULT_PHASE: Duration = Duration::from_secs(40);
const QUEUES: &str = "queues";
const BROKERS: &str = "brokers";

/// After the fault phase: producers stop at +15 s, consumers catch up until
/// +60 s (three rebalances, two route refreshes), the checker reads at +62 s.
#[derive(Clone, Copy)]
pub(crate) struct Timeline {
    pub(crate) producers_stop: Duration,
    pub(crate) consumers_stop: Duration,
    pub(crate) final_read: Duration,
    pub(crate) end: Duration,
}

impl Timeline {
    fn after(phase: Duration) -> Timeline {
        Timeline::after_secs(phase, [15, 60, 62, 75])
    }

    /// Producers stop, consumers stop, the final read and the end, each
    /// this many seconds after the fault phase.
    pub(crate) fn after_secs(phase: Duration, [p, c, r, e]: [u64; 4]) -> Timeline {
        let at = |secs| phase + Duration::from_secs(secs);
        Timeline { producers_stop: at(p), consumers_stop: at(c), final_read: at(r), end: at(e) }
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
    pub shape: (usize, usize, usize),
    pub session_timeout: Duration,
    pub rollover: Rollover,
    pub max_sends: Option<u64>,
}

impl Plan {
    pub fn nameservers(&self) -> Vec<String> {
        (0..self.nameservers).map(|i| format!("ns-{i}")).collect()
    }

    /// The servers of a run with `queues` of `topic` on `brokers`, drawn in
    /// this order: ledger shape, bookies, NameServers, session timeout, rollover.
    pub(crate) fn draw(rng: &mut impl Rng, topic: &str, queues: u32, brokers: usize, max_sends: Option<u64>) -> Plan {
        let shape = *[(3, 2, 2), (3, 3, 2)].choose(rng).expect("shapes");
        Plan {
            topic: topic.into(),
            queues,
            brokers,
            bookies: rng.gen_range(4..=5),
            nameservers: rng.gen_range(1..=2),
            shape,
            session_timeout: Duration::from_millis(rng.gen_range(3_000..=8_000)),
            rollover: Rollover {
                max_entries: rng.gen_range(20..=200),
                max_bytes: 1 << 20,
                min_age: Duration::ZERO,
                max_age: Duration::from_secs(rng.gen_range(5..=30)),
            },
            max_sends,
        }
    }

    pub(crate) fn broker_config(&self) -> broker::Config {
        broker::Config {
            meta_server: SERVER.into(),
            nameservers: self.nameservers(),
            topics: vec![Topic {
                name: self.topic.clone(),
                queues: self.queues,
                brokers: (0..self.brokers).map(|i| format!("broker-{i}")).collect(),
                transactional: false,
            }],
            ledger: managed::Config { e: self.shape.0, qw: self.shape.1, qa: self.shape.2, rollover: self.rollover },
            session_timeout: self.session_timeout,
            takeover_after: self.session_timeout * 2,
            registrations: None,
            check: Default::default(),
            balance: None,
        }
    }
}

pub struct PubSub;

impl Script for PubSub {
    type Plan = Plan;
    type Final = ();

    fn name(&self) -> &'static str {
        "pubsub"
    }

    fn about(&self) -> &'static str {
        "producers and two tag-filtered consumer groups on stateless brokers over bookies; brokers crash, pause and move queues"
    }

    fn default_phase(&self) -> Duration {
        FAULT_PHASE
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![Knob::count(QUEUES, "queues of the topic", 1..=16), Knob::count(BROKERS, "broker nodes", 1..=6)]
    }

    fn plan(&self, seed: u64, config: &mut Config) -> Plan {
        let mut rng = mqsim_sim::rng_for(seed, "pubsub/plan");
        let queues = config.get(QUEUES).unwrap_or(rng.gen_range(4..=8));
        let brokers = config.get(BROKERS).unwrap_or(rng.gen_range(2..=3));
        config.set(QUEUES, queues);
        config.set(BROKERS, brokers);
        Plan::draw(&mut rng, TOPIC, queues as u32, brokers as usize, config.get(OPS))
    }

    fn topology(&self, plan: &Plan) -> Topology {
        Topology::new(vec![
            Role::new("meta", 1).durable(),
            Role::new("bookie", plan.bookies).durable(),
            Role::new("ns", plan.nameservers),
            Role::new("broker", plan.brokers),
            Role::new("producer", 2),
            Role::new("consumer", 2 * GROUPS.len()),
            Role::new("checker", 1).joining(),
        ])
    }

    fn faults(&self, _plan: &Plan) -> Faults {
        messaging_faults()
    }

    fn aimed(&self, run: &Run<Plan>) -> Vec<FaultAction> {
        zombie_broker(run)
    }

    fn start(w: &Arc<World>, run: &Run<Plan>) {
        let t = Timeline::after(run.phase);
        start_servers(w, &run.topology, run.plan.broker_config());
        for p in run.topology.names("producer") {
            let (world, plan) = (w.clone(), run.plan.clone());
            w.add_node(&p, move |env| {
                workload::producer(env, world.clone(), plan.clone(), t.producers_stop, plan.max_sends)
            });
        }
        for (i, c) in run.topology.names("consumer").into_iter().enumerate() {
            let (world, plan) = (w.clone(), run.plan.clone());
            let group = i % GROUPS.len();
            w.add_node(&c, move |env| workload::consumer(env, world.clone(), plan.clone(), group, t.consumers_stop));
        }
    }

    async fn drive(w: Arc<World>, run: Run<Plan>) {
        let t = Timeline::after(run.phase);
        w.sleep_until(t.final_read).await;
        let (world, plan) = (w.clone(), run.plan.clone());
        w.add_node(CHECKER, move |env| workload::final_reads(env, world.clone(), plan.clone()));
        w.sleep_until(t.end).await;
    }

    fn end(run: &Run<Plan>) -> Duration {
        Timeline::after(run.phase).end
    }

    fn check(run: &Run<Plan>, ran: &Ran, _schedule: &Schedule, _fin: ()) -> Vec<Violation> {
        let subscriptions = GROUPS
            .iter()
            .map(|(group, tags)| Subscription {
                group: group.to_string(),
                topic: run.plan.topic.clone(),
                tags: if tags.is_empty() { vec!["*".into()] } else { tags.iter().map(|t| t.to_string()).collect() },
            })
            .collect();
        let spec = Spec {
            subscriptions,
            topics: vec![(run.plan.topic.clone(), run.plan.queues)],
            calm_from: run.phase.as_micros() as u64,
            broker_expiry: BROKER_EXPIRY.as_micros() as u64,
            scan_every: SCAN_EVERY.as_micros() as u64,
            // Delay and reorder rules stack when their windows overlap.
            max_message_delay: 20_000_000,
        };
        checker::check(&ran.history, &spec).violations
    }

    fn bugs(&self) -> Vec<Bug> {
        vec![
            Bug::TakeoverWithoutFencing,
            Bug::BrokerAckBeforeQuorum,
            Bug::CacheServesPastLac,
            Bug::ConsumerCommitBeforeProcess,
            Bug::OffsetsInMemory,
            Bug::ProducerRetryNewId,
            Bug::IndexSkipsTakenOverLog,
        ]
    }

    fn probes(&self) -> Vec<mqsim_core::probe::Probe> {
        crate::probes_of(&["broker", "producer", "consumer", "managed", "key-index"])
    }
}

/// The swarm's faults but bit flips at rest, on the messages of bookies,
/// brokers, NameServers and the metadata service's reads, writes and heartbeats.
pub(crate) fn messaging_faults() -> Faults {
    let meta_kinds = [meta::kind::GET, meta::kind::SET, meta::kind::CREATE, meta::kind::HEARTBEAT];
    let kinds: Vec<Kind> =
        bookie::KINDS.iter().chain(broker::KINDS).chain(nameserver::KINDS).copied().chain(meta_kinds).collect();
    Faults {
        kinds: FaultKind::swarm().into_iter().filter(|k| *k != FaultKind::DiskCorrupt).collect(),
        message_kinds: kinds,
        max_corruptions_per_node: 0,
        max_drift_ppm: 50_000,
    }
}

/// Adds the servers of a messaging run: the metadata service (`meta-0`), and
/// the topology's bookies, NameServers and brokers (these with `config`).
pub(crate) fn start_servers(w: &Arc<World>, topology: &Topology, config: broker::Config) {
    w.add_node(SERVER, meta::serve);
    for b in topology.names("bookie") {
        w.add_node(&b, |env| bookie::serve(env, SERVER.to_string()));
    }
    for ns in topology.names("ns") {
        w.add_node(&ns, nameserver::serve);
    }
    for b in topology.names("broker") {
        let config = config.clone();
        w.add_node(&b, move |env| broker::serve(env, config.clone()));
    }
}

/// A zombie broker, for half the seeds: a broker freezes for longer than its
/// session timeout, others take its queues over, and when it wakes it still
/// serves them until their logs tell it it was fenced.
fn zombie_broker(run: &Run<Plan>) -> Vec<FaultAction> {
    let mut rng = mqsim_sim::rng_for(run.seed, "pubsub/zombie");
    let phase = run.phase.as_millis() as u64;
    let takeover = (run.plan.session_timeout * 3).as_millis() as u64;
    if phase < takeover + 8_000 || !rng.gen_bool(0.5) {
        return Vec::new();
    }
    let node = run.topology.names("broker").choose(&mut rng).cloned().expect("brokers");
    let for_ms = takeover + rng.gen_range(1_000..=5_000);
    let at_ms = rng.gen_range(1_000..phase - for_ms);
    vec![FaultAction { at_ms, for_ms, fault: Fault::Pause { node } }]
}
