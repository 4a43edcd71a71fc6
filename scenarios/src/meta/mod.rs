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

use crate::kit::{Faults, Knob, Role, Run, Script, Topology};
use crate::{Config, Ran, Violation};
use mqsim_core::meta;
use mqsim_sim::{FaultAction, FaultKind, Schedule, World};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

pub use checker::check;

pub const SERVER: &str = "meta-0";
/// The node that reads the final state (the one node of role `checker`).
pub const CHECKER: &str = "checker-0";
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
#[derive(Clone, Debug)]
pub struct Plan {
    pub clients: usize,
}

/// How many client nodes a seed may have.
const CLIENTS: &str = "clients";

impl Script for Meta {
    type Plan = Plan;
    type Final = ();

    fn name(&self) -> &'static str {
        "meta"
    }

    fn about(&self) -> &'static str {
        "metadata service: creates, CAS, deletes, sessions and ephemeral keys under crashes, partitions, disk and clock faults"
    }

    fn default_phase(&self) -> Duration {
        FAULT_PHASE
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![Knob::count(CLIENTS, "client nodes", 1..=16)]
    }

    fn plan(&self, seed: u64, config: &mut Config) -> Plan {
        let drawn = mqsim_sim::rng_for(seed, "meta/plan").gen_range(3..=5);
        let clients = config.get(CLIENTS).unwrap_or(drawn);
        config.set(CLIENTS, clients);
        Plan { clients: clients as usize }
    }

    fn topology(&self, plan: &Plan) -> Topology {
        Topology::new(vec![
            Role::new("meta", 1).durable(),
            Role::new("client", plan.clients),
            Role::new("checker", 1).joining(),
        ])
    }

    fn faults(&self, _plan: &Plan) -> Faults {
        Faults {
            kinds: FaultKind::swarm(),
            message_kinds: meta::KINDS.to_vec(),
            // The service mirrors its log in two files: it survives one damaged copy.
            max_corruptions_per_node: 1,
            max_drift_ppm: MAX_DRIFT_PPM,
        }
    }

    /// A failing disk at a restart, for a quarter of the seeds: the service
    /// crashes and restarts while most reads of its disk return a flipped bit,
    /// so recovery may find every copy of its log damaged, three reads running,
    /// and refuse to serve until the next restart. Swarm draws (at most 20%
    /// flips, restarts anywhere) almost never line these up.
    fn aimed(&self, run: &Run<Plan>) -> Vec<FaultAction> {
        let mut rng = mqsim_sim::rng_for(run.seed, "meta/failing-disk");
        if !rng.gen_bool(0.25) {
            return Vec::new();
        }
        crate::kit::restart_on_flaky_disk(&mut rng, SERVER, run.phase, 600..=950, 3_000..=8_000)
    }

    fn start(w: &Arc<World>, run: &Run<Plan>) {
        let timeline = Timeline::after(run.phase);
        w.add_node(SERVER, meta::serve);
        for name in run.topology.names("client") {
            let (world, max_ops) = (w.clone(), run.max_ops());
            w.add_node(&name, move |env| workload::client(env, world.clone(), timeline, max_ops));
        }
    }

    async fn drive(w: Arc<World>, run: Run<Plan>) {
        let timeline = Timeline::after(run.phase);
        w.sleep_until(timeline.final_crash).await;
        w.crash(SERVER);
        w.sleep_until(timeline.final_restart).await;
        w.restart(SERVER);
        w.sleep_until(timeline.final_read).await;
        let world = w.clone();
        w.add_node(CHECKER, move |env| workload::final_reads(env, world.clone()));
        w.sleep_until(timeline.end).await;
    }

    fn end(run: &Run<Plan>) -> Duration {
        Timeline::after(run.phase).end
    }

    fn check(_run: &Run<Plan>, ran: &Ran, schedule: &Schedule, _fin: ()) -> Vec<Violation> {
        check(&ran.history, schedule)
    }

    fn bugs(&self) -> Vec<mqsim_core::bugs::Bug> {
        vec![mqsim_core::bugs::Bug::MetaAckBeforeFsync]
    }

    fn probes(&self) -> Vec<mqsim_core::probe::Probe> {
        crate::probes_of(&["meta", "wal", "rpc"])
    }
}
