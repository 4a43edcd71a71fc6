//! `managed-ledger`: queue logs as managed ledgers. Owner nodes compete for
//! each log's ownership lock; the holder opens the log (recovering, and so
//! fencing, the previous owner's last ledger), appends, rolls over to new
//! ledgers, and moves every consumer group's durable cursor. The nemesis
//! crashes, pauses and partitions owners, bookies and the metadata service,
//! and pauses owners past their session timeout so they wake up as zombies.
//! After the faults the owners close their logs and a checker node reads
//! every log whole through the protocol.

mod checker;
mod workload;

use crate::kit::{Faults, Knob, Role, Run, Script, Topology, OPS};
use crate::{Config, Ran, Violation};
use mqsim_core::bugs::Bug;
use mqsim_core::env::Kind;
use mqsim_core::managed::Rollover;
use mqsim_core::{bookie, meta};
use mqsim_sim::{Fault, FaultAction, FaultKind, Schedule, World};
use rand::seq::SliceRandom;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

pub use checker::{check, Spec};

pub const SERVER: &str = "meta-0";
pub const CHECKER: &str = "checker-0";
/// The consumer groups whose cursors every owner moves.
pub const GROUPS: [&str; 2] = ["g0", "g1"];
const FAULT_PHASE: Duration = Duration::from_secs(40);
const LOGS: &str = "logs";
const OWNERS: &str = "owners";

/// After the fault phase the owners append 10 s more, then close their logs;
/// the checker reads at +16 s; the run ends at +30 s.
struct Timeline {
    stop: Duration,
    final_read: Duration,
    end: Duration,
}

impl Timeline {
    fn after(phase: Duration) -> Timeline {
        let at = |secs| phase + Duration::from_secs(secs);
        Timeline { stop: at(10), final_read: at(16), end: at(30) }
    }
}

/// What one seed draws.
#[derive(Clone, Debug)]
pub struct Plan {
    pub shape: (usize, usize, usize),
    pub bookies: usize,
    pub logs: usize,
    pub owners: usize,
    /// Appends an owner keeps in flight.
    pub window: usize,
    pub rollover: Rollover,
    pub session_timeout: Duration,
    /// Appends per owner and log.
    pub max_appends: u64,
}

pub struct ManagedLedgers;

impl Script for ManagedLedgers {
    type Plan = Plan;
    type Final = ();

    fn name(&self) -> &'static str {
        "managed-ledger"
    }

    fn about(&self) -> &'static str {
        "owners of queue logs change under faults while one at a time appends, rolls ledgers over and moves cursors"
    }

    fn default_phase(&self) -> Duration {
        FAULT_PHASE
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![Knob::count(LOGS, "logs (queues)", 1..=8), Knob::count(OWNERS, "owner nodes", 1..=6)]
    }

    fn plan(&self, seed: u64, config: &mut Config) -> Plan {
        let mut rng = mqsim_sim::rng_for(seed, "managed/plan");
        let shape = *crate::ledger::SHAPES.choose(&mut rng).expect("shapes");
        let logs = config.get(LOGS).unwrap_or(rng.gen_range(1..=3));
        let owners = config.get(OWNERS).unwrap_or(rng.gen_range(2..=3));
        config.set(LOGS, logs);
        config.set(OWNERS, owners);
        let rollover = Rollover {
            max_entries: rng.gen_range(10..=80),
            max_bytes: 1 << 20,
            min_age: Duration::ZERO,
            max_age: Duration::from_millis(rng.gen_range(3_000..=15_000)),
        };
        Plan {
            shape,
            bookies: shape.0 + 2,
            logs: logs as usize,
            owners: owners as usize,
            window: rng.gen_range(1..=4),
            rollover,
            session_timeout: Duration::from_millis(rng.gen_range(2_000..=6_000)),
            max_appends: config.get(OPS).unwrap_or(u64::MAX),
        }
    }

    fn topology(&self, plan: &Plan) -> Topology {
        Topology::new(vec![
            Role::new("meta", 1).durable(),
            Role::new("bookie", plan.bookies).durable(),
            Role::new("owner", plan.owners),
            Role::new("checker", 1).joining(),
        ])
    }

    fn faults(&self, _plan: &Plan) -> Faults {
        let meta_kinds =
            [meta::kind::GET, meta::kind::SET, meta::kind::CREATE, meta::kind::HEARTBEAT, meta::kind::DELETE];
        Faults {
            kinds: FaultKind::swarm().into_iter().filter(|k| *k != FaultKind::DiskCorrupt).collect(),
            message_kinds: bookie::KINDS.iter().copied().chain(meta_kinds).collect::<Vec<Kind>>(),
            max_corruptions_per_node: 0,
            max_drift_ppm: 50_000,
        }
    }

    fn aimed(&self, run: &Run<Plan>) -> Vec<FaultAction> {
        let mut actions = zombie_owners(run);
        let mut rng = mqsim_sim::rng_for(run.seed, "managed/flaky-restart");
        if rng.gen_bool(0.25) {
            let node = run.topology.names("bookie").choose(&mut rng).cloned().expect("bookies");
            actions.extend(crate::kit::restart_on_flaky_disk(&mut rng, &node, run.phase, 300..=600, 3_000..=6_000));
        }
        actions
    }

    fn start(w: &Arc<World>, run: &Run<Plan>) {
        let t = Timeline::after(run.phase);
        w.add_node(SERVER, meta::serve);
        for b in run.topology.names("bookie") {
            w.add_node(&b, |env| bookie::serve(env, SERVER.to_string()));
        }
        for o in run.topology.names("owner") {
            let (world, plan) = (w.clone(), run.plan.clone());
            w.add_node(&o, move |env| workload::owner(env, world.clone(), plan.clone(), t.stop));
        }
    }

    async fn drive(w: Arc<World>, run: Run<Plan>) {
        let t = Timeline::after(run.phase);
        w.sleep_until(t.final_read).await;
        let (world, logs) = (w.clone(), run.plan.logs);
        w.add_node(CHECKER, move |env| workload::final_reads(env, world.clone(), logs));
        w.sleep_until(t.end).await;
    }

    fn end(run: &Run<Plan>) -> Duration {
        Timeline::after(run.phase).end
    }

    fn check(run: &Run<Plan>, ran: &Ran, _schedule: &Schedule, _fin: ()) -> Vec<Violation> {
        let spec = Spec {
            logs: (0..run.plan.logs).map(|i| format!("log-{i}")).collect(),
            groups: GROUPS.iter().map(|g| g.to_string()).collect(),
            calm_from: run.phase.as_micros() as u64,
            checker: CHECKER.into(),
        };
        check(&ran.history, &spec)
    }

    fn bugs(&self) -> Vec<Bug> {
        vec![Bug::TakeoverWithoutFencing]
    }

    fn probes(&self) -> Vec<mqsim_core::probe::Probe> {
        crate::probes_of(&["managed", "writer", "recovery", "session"])
    }
}

/// Zombie owners, for half the seeds: an owner freezes for longer than its
/// session timeout, so another owner takes its logs over; when it wakes it
/// goes on appending until the log tells it it was fenced.
fn zombie_owners(run: &Run<Plan>) -> Vec<FaultAction> {
    let mut rng = mqsim_sim::rng_for(run.seed, "managed/zombie");
    let phase = run.phase.as_millis() as u64;
    let timeout = run.plan.session_timeout.as_millis() as u64;
    if phase < timeout + 8_000 || !rng.gen_bool(0.5) {
        return Vec::new();
    }
    let owners = run.topology.names("owner");
    (0..rng.gen_range(1..=3))
        .map(|_| {
            let node = owners.choose(&mut rng).cloned().expect("owners");
            let for_ms = timeout + rng.gen_range(1_000..=4_000);
            let at_ms = rng.gen_range(1_000..phase - for_ms);
            FaultAction { at_ms, for_ms, fault: Fault::Pause { node } }
        })
        .collect()
}
