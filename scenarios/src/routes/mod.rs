//! `routes`: brokers own the queues of a topic and register with two
//! NameServers every 30 s while a client asks every NameServer for the routes.
//! One broker dies for good, another is cut off from the NameServers (for
//! some seeds longer than the 120 s expiry), NameServers crash and forget
//! everything, clocks skew. R1: a dead broker leaves every NameServer's
//! routes within 120 s and one scan; a broker whose registrations arrive is
//! never removed.

use crate::kit::{Faults, Knob, Role, Run, Script, Topology};
use crate::pubsub::checker::{check_routes_alone, Spec};
use crate::{Config, Ran, Violation};
use mqsim_core::broker::{self, RegistrationObserver, Registrations, Topic};
use mqsim_core::bugs::Bug;
use mqsim_core::env::{Env, Kind};
use mqsim_core::managed::{self, Rollover};
use mqsim_core::message::QueueId;
use mqsim_core::nameserver::{self, client, BROKER_EXPIRY, SCAN_EVERY};
use mqsim_core::{bookie, meta};
use mqsim_sim::history::{Call, OpId, QueueRef, Ret, Route};
use mqsim_sim::{Fault, FaultAction, FaultKind, Schedule, World};
use rand::seq::SliceRandom;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

const SERVER: &str = "meta-0";
const TOPIC: &str = "orders";
const FAULT_PHASE: Duration = Duration::from_secs(40);
/// Long enough after the fault phase for a broker dead at its end to expire.
const AFTER_PHASE: Duration = Duration::from_secs(150);
const BROKERS: &str = "brokers";

#[derive(Clone, Debug)]
pub struct Plan {
    brokers: usize,
    nameservers: usize,
    queues: u32,
    session_timeout: Duration,
    /// The broker that dies, and the one cut off from the NameServers.
    dead: String,
    cut: String,
}

impl Plan {
    fn nameservers(&self) -> Vec<String> {
        (0..self.nameservers).map(|i| format!("ns-{i}")).collect()
    }
}

/// Records a broker's registrations as client operations of that broker.
struct Recorder {
    world: Arc<World>,
    node: String,
}

impl RegistrationObserver for Recorder {
    fn start(&self, nameserver: &str, queues: &[QueueId]) -> u64 {
        let queues = queues.iter().map(|q| QueueRef { topic: q.topic.clone(), queue: q.queue }).collect();
        self.world.history.invoke(&self.node, Call::Register { nameserver: nameserver.into(), queues }).0
    }

    fn end(&self, token: u64, acknowledged: bool) {
        if acknowledged {
            self.world.history.ok(&self.node, OpId(token), Ret::Register);
        } else {
            self.world.history.info(&self.node, OpId(token), "no acknowledgement");
        }
    }
}

/// Asks every NameServer for the topic's routes every 1-3 s until `stop`.
async fn prober(env: Env, world: Arc<World>, nameservers: Vec<String>, stop: Duration) {
    let random = env.random("routes-prober");
    while world.elapsed() < stop {
        for (i, ns) in nameservers.iter().enumerate() {
            let op = world.history.invoke(&env.name, Call::Routes { nameserver: ns.clone(), topic: TOPIC.into() });
            // Only this NameServer: the answer is judged as its own.
            match client::routes(&env, std::slice::from_ref(ns), i, TOPIC).await {
                Some(routes) => {
                    let brokers = routes.into_iter().map(|(broker, queues)| Route { broker, queues }).collect();
                    world.history.ok(&env.name, op, Ret::Routes { brokers });
                }
                None => world.history.info(&env.name, op, "no answer"),
            }
        }
        env.sleep(random.duration(Duration::from_secs(1), Duration::from_secs(3))).await;
    }
}

pub struct Routes;

impl Script for Routes {
    type Plan = Plan;
    type Final = ();

    fn name(&self) -> &'static str {
        "routes"
    }

    fn about(&self) -> &'static str {
        "brokers register with NameServers while one dies and one is cut off; routes must drop the dead and keep the live"
    }

    fn default_phase(&self) -> Duration {
        FAULT_PHASE
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![Knob::count(BROKERS, "broker nodes", 2..=6)]
    }

    fn plan(&self, seed: u64, config: &mut Config) -> Plan {
        let mut rng = mqsim_sim::rng_for(seed, "routes/plan");
        let brokers = config.get(BROKERS).unwrap_or(rng.gen_range(3..=4));
        config.set(BROKERS, brokers);
        let mut names: Vec<String> = (0..brokers).map(|i| format!("broker-{i}")).collect();
        names.shuffle(&mut rng);
        Plan {
            dead: names[0].clone(),
            cut: names[1].clone(),
            brokers: brokers as usize,
            nameservers: 2,
            queues: rng.gen_range(4..=8),
            session_timeout: Duration::from_millis(rng.gen_range(3_000..=8_000)),
        }
    }

    fn topology(&self, plan: &Plan) -> Topology {
        Topology::new(vec![
            Role::new("meta", 1).durable(),
            Role::new("bookie", 3).durable(),
            Role::new("ns", plan.nameservers),
            Role::new("broker", plan.brokers),
            Role::new("client", 1),
        ])
    }

    fn faults(&self, _plan: &Plan) -> Faults {
        let kinds: Vec<Kind> =
            nameserver::KINDS.iter().copied().chain([meta::kind::HEARTBEAT, meta::kind::GET]).collect();
        Faults {
            kinds: FaultKind::swarm().into_iter().filter(|k| *k != FaultKind::DiskCorrupt).collect(),
            message_kinds: kinds,
            max_corruptions_per_node: 0,
            max_drift_ppm: 50_000,
        }
    }

    /// The brokers the scenario kills and cuts off are its own.
    fn spared(&self, plan: &Plan) -> Vec<String> {
        vec![plan.dead.clone(), plan.cut.clone()]
    }

    fn aimed(&self, run: &Run<Plan>) -> Vec<FaultAction> {
        let mut rng = mqsim_sim::rng_for(run.seed, "routes/aimed");
        let phase = run.phase.as_millis() as u64;
        let end = Self::end(run).as_millis() as u64;
        let brokers = [run.plan.dead.clone(), run.plan.cut.clone()];
        let nameservers = run.topology.names("ns");
        let mut actions = Vec::new();
        if phase >= 10_000 {
            // A death: crashed until the end of the run.
            let at_ms = rng.gen_range(5_000..phase - 5_000);
            actions.push(FaultAction { at_ms, for_ms: end - at_ms, fault: Fault::Crash { node: brokers[0].clone() } });
            // A cut from the NameServers: shorter than the expiry, or (a third of the seeds) longer.
            let long = rng.gen_bool(1.0 / 3.0);
            let for_ms = if long { rng.gen_range(130_000..=145_000) } else { rng.gen_range(5_000..=60_000) };
            let at_ms = rng.gen_range(1_000..phase - 5_000);
            let fault = Fault::Partition { a: vec![brokers[1].clone()], b: nameservers };
            actions.push(FaultAction { at_ms, for_ms: for_ms.min(end - at_ms - 1_000), fault });
        }
        actions
    }

    fn start(w: &Arc<World>, run: &Run<Plan>) {
        let stop = Self::end(run) - Duration::from_secs(2);
        w.add_node(SERVER, meta::serve);
        for b in run.topology.names("bookie") {
            w.add_node(&b, |env| bookie::serve(env, SERVER.to_string()));
        }
        for ns in run.topology.names("ns") {
            w.add_node(&ns, nameserver::serve);
        }
        let plan = run.plan.clone();
        for b in run.topology.names("broker") {
            let config = broker::Config {
                meta_server: SERVER.into(),
                nameservers: plan.nameservers(),
                topics: vec![Topic {
                    name: TOPIC.into(),
                    queues: plan.queues,
                    brokers: run.topology.names("broker"),
                    transactional: false,
                }],
                ledger: managed::Config { e: 3, qw: 2, qa: 2, rollover: Rollover::default() },
                session_timeout: plan.session_timeout,
                takeover_after: plan.session_timeout * 2,
                registrations: Some(Registrations(Arc::new(Recorder { world: w.clone(), node: b.clone() }))),
                check: Default::default(),
                balance: None,
            };
            w.add_node(&b, move |env| broker::serve(env, config.clone()));
        }
        let (world, nameservers) = (w.clone(), plan.nameservers());
        w.add_node("client-0", move |env| prober(env, world.clone(), nameservers.clone(), stop));
    }

    async fn drive(w: Arc<World>, run: Run<Plan>) {
        w.sleep_until(Self::end(&run)).await;
    }

    fn end(run: &Run<Plan>) -> Duration {
        run.phase + AFTER_PHASE
    }

    fn check(run: &Run<Plan>, ran: &Ran, _schedule: &Schedule, _fin: ()) -> Vec<Violation> {
        let spec = Spec {
            subscriptions: Vec::new(),
            topics: vec![(TOPIC.into(), run.plan.queues)],
            calm_from: run.phase.as_micros() as u64,
            broker_expiry: BROKER_EXPIRY.as_micros() as u64,
            scan_every: SCAN_EVERY.as_micros() as u64,
            // Delay and reorder rules stack when their windows overlap.
            max_message_delay: 20_000_000,
        };
        check_routes_alone(&ran.history, &spec)
    }

    fn bugs(&self) -> Vec<Bug> {
        vec![Bug::NameserverNeverExpires]
    }

    fn probes(&self) -> Vec<mqsim_core::probe::Probe> {
        crate::probes_of(&["nameserver", "broker"])
    }
}
