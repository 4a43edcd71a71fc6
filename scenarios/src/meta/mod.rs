//! Scenario `meta`: clients create, compare-and-set, delete, list and hold
//! sessions with ephemeral keys against the metadata service while the nemesis
//! crashes, pauses and partitions nodes and breaks their disks and clocks.
//!
//! Timeline (with the default 40 s fault phase): faults for 40 s; a calm
//! phase; at 55 s the service crashes once more (losing whatever it never
//! synced) and restarts; clients stop at 62 s; at 78 s, when every session has
//! had time to expire, a checker node reads the final state through the
//! protocol; the run ends at 90 s. A shorter phase moves everything after it.

mod checker;
mod workload;

use crate::{Config, Outcome, Ran, RunSpec, Scenario};
use mqsim_core::meta;
use mqsim_sim::nemesis::Profile;
use mqsim_sim::{world, FaultKind};
use rand::Rng;
use std::time::Duration;

pub use checker::check;

pub const SERVER: &str = "meta-0";
pub const CHECKER: &str = "checker";
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
pub const FAULT_PHASE: Duration = Duration::from_secs(40);
/// The largest clock drift the nemesis may give a node (5%).
pub const MAX_DRIFT_PPM: i64 = 50_000;

/// When things happen after the fault phase.
#[derive(Clone, Copy, Debug)]
pub struct Timeline {
    pub phase: Duration,
    final_crash: Duration,
    final_restart: Duration,
    pub clients_stop: Duration,
    final_read: Duration,
    end: Duration,
}

impl Timeline {
    fn after(phase: Duration) -> Timeline {
        let at = |secs| phase + Duration::from_secs(secs);
        Timeline {
            phase,
            final_crash: at(15),
            final_restart: at(16),
            clients_stop: at(22),
            final_read: at(38),
            end: at(50),
        }
    }
}
pub struct Meta;

/// The parameters one seed draws for the scenario.
pub struct Plan {
    pub clients: usize,
}

impl Plan {
    fn draw(seed: u64, config: &Config) -> Plan {
        let drawn = mqsim_sim::rng_for(seed, "meta/plan").gen_range(3..=5);
        Plan { clients: config.clients.unwrap_or(drawn) }
    }

    fn client_names(&self) -> Vec<String> {
        (0..self.clients).map(|i| format!("client-{i}")).collect()
    }
}

pub fn profile(plan: &Plan) -> Profile {
    let mut nodes = vec![SERVER.to_string()];
    nodes.extend(plan.client_names());
    Profile {
        targets: nodes.clone(),
        nodes,
        durable: vec![SERVER.to_string()],
        kinds: FaultKind::swarm(),
        message_kinds: meta::KINDS.to_vec(),
        fault_phase_ms: FAULT_PHASE.as_millis() as u64,
        // The service mirrors its log in two files: it survives one damaged copy.
        max_corruptions_per_node: 1,
        max_drift_ppm: MAX_DRIFT_PPM,
    }
}

impl Scenario for Meta {
    fn name(&self) -> &'static str {
        "meta"
    }

    fn about(&self) -> &'static str {
        "metadata service: creates, CAS, deletes, sessions and ephemeral keys under crashes, partitions, disk and clock faults"
    }

    fn resolve(&self, spec: &RunSpec) -> RunSpec {
        let plan = Plan::draw(spec.seed, &spec.config);
        let config = Config {
            clients: Some(plan.clients),
            phase_ms: Some(spec.phase(FAULT_PHASE).as_millis() as u64),
            ..spec.config.clone()
        };
        RunSpec { config, schedule: Some(spec.schedule_for(&profile(&plan))), ..spec.clone() }
    }

    fn bugs(&self) -> Vec<mqsim_core::bugs::Bug> {
        vec![mqsim_core::bugs::Bug::MetaAckBeforeFsync]
    }

    fn probes(&self) -> Vec<mqsim_core::probe::Probe> {
        crate::probes_of(&["meta", "wal", "rpc"])
    }

    fn nodes(&self, spec: &RunSpec) -> Vec<String> {
        profile(&Plan::draw(spec.seed, &spec.config)).nodes
    }

    fn run(&self, spec: &RunSpec) -> Outcome {
        let spec = self.resolve(spec);
        let plan = Plan::draw(spec.seed, &spec.config);
        let schedule = spec.schedule.clone().unwrap_or_default();
        let timeline = Timeline::after(spec.phase(FAULT_PHASE));
        let (run_schedule, max_ops) = (schedule.clone(), spec.config.ops_per_client);
        let ran = world::run(spec.seed, spec.bugs, |w| async move {
            w.add_node(SERVER, meta::serve);
            for name in plan.client_names() {
                let world = w.clone();
                w.add_node(&name, move |env| workload::client(env, world.clone(), timeline, max_ops));
            }
            w.spawn_nemesis(run_schedule);
            w.sleep_until(timeline.final_crash).await;
            w.crash(SERVER);
            w.sleep_until(timeline.final_restart).await;
            w.restart(SERVER);
            w.sleep_until(timeline.final_read).await;
            let world = w.clone();
            w.add_node(CHECKER, move |env| workload::final_reads(env, world.clone()));
            w.sleep_until(timeline.end).await;
            Ran::of(&w)
        });
        let violations = check(&ran.history, &schedule);
        Outcome::new(violations, ran, schedule, timeline.end)
    }
}
