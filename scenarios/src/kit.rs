//! The scenario kit: what every scenario shares, so that a scenario is one
//! folder (topology, workload, fault profile, checker) and a line in the
//! registry. A scenario implements [`Script`]; [`Kit`] turns it into a
//! [`Scenario`]: knobs and their validation, the seed's plan, the fault
//! schedule, the run skeleton, the nodes faults may name, timeline lanes.

use crate::{Config, Outcome, Ran, RunSpec, Scenario, Violation};
use mqsim_core::bugs::Bug;
use mqsim_core::env::{Env, Kind};
use mqsim_core::probe::Probe;
use mqsim_sim::history::{OpId, Ret};
use mqsim_sim::nemesis::{Profile, Signal};
use mqsim_sim::{world, FaultAction, FaultKind, Schedule, World};
use std::future::Future;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

/// A setting of a scenario that a case file may give and a shrinker may turn down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Knob {
    pub name: &'static str,
    pub about: &'static str,
    pub range: RangeInclusive<u64>,
    pub shrink: Shrink,
}

/// How a shrinker turns a knob down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shrink {
    /// One fewer at a time (a count of nodes: the faults naming a node that
    /// is gone go with it).
    Fewer,
    /// Halved at a time.
    Halve,
    /// The fault phase: ended soon after the last fault.
    EndAfterLastFault,
}

/// The length of the fault phase in milliseconds; everything after it moves with it.
pub const PHASE_MS: &str = "phase_ms";
/// The operations each workload node may do; unlimited when absent.
pub const OPS: &str = "ops_per_client";
/// Longest fault phase a configuration may ask for.
pub const MAX_PHASE_MS: u64 = 10 * 60 * 1000;

impl Knob {
    pub fn phase() -> Knob {
        let about = "length of the fault phase in milliseconds";
        Knob { name: PHASE_MS, about, range: 1_000..=MAX_PHASE_MS, shrink: Shrink::EndAfterLastFault }
    }

    pub fn ops() -> Knob {
        let about = "operations each workload node may do (unlimited when absent)";
        Knob { name: OPS, about, range: 1..=u64::MAX, shrink: Shrink::Halve }
    }

    /// A count of nodes of one role.
    pub fn count(name: &'static str, about: &'static str, range: RangeInclusive<u64>) -> Knob {
        Knob { name, about, range, shrink: Shrink::Fewer }
    }
}

/// One kind of node in a scenario: `count` nodes named `<role>-<i>`.
#[derive(Clone, Debug)]
pub struct Role {
    pub role: &'static str,
    pub count: usize,
    /// Keeps state on its disk: disk faults and crashes aimed at fsyncs strike it.
    pub durable: bool,
    /// The nemesis may strike it.
    pub target: bool,
    /// There from the start (fault actions may name it); otherwise it joins later.
    pub from_start: bool,
}

impl Role {
    /// `count` nodes there from the start that faults may strike.
    pub fn new(role: &'static str, count: usize) -> Role {
        Role { role, count, durable: false, target: true, from_start: true }
    }

    pub fn durable(self) -> Role {
        Role { durable: true, ..self }
    }

    /// Nodes that join during the run (faults do not name them).
    pub fn joining(self) -> Role {
        Role { from_start: false, target: false, ..self }
    }

    /// Nodes the nemesis leaves alone (a checker, say).
    pub fn spared(self) -> Role {
        Role { target: false, ..self }
    }

    pub fn names(&self) -> Vec<String> {
        (0..self.count).map(|i| format!("{}-{i}", self.role)).collect()
    }
}

/// The nodes of a run, by role, in the order timelines draw them.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    pub roles: Vec<Role>,
}

impl Topology {
    pub fn new(roles: Vec<Role>) -> Topology {
        Topology { roles }
    }

    /// The names of the nodes of `role`.
    pub fn names(&self, role: &str) -> Vec<String> {
        self.roles.iter().filter(|r| r.role == role).flat_map(Role::names).collect()
    }

    fn select(&self, keep: impl Fn(&Role) -> bool) -> Vec<String> {
        self.roles.iter().filter(|r| keep(r)).flat_map(Role::names).collect()
    }

    /// The nodes there from the start: those fault actions may name.
    pub fn nodes(&self) -> Vec<String> {
        self.select(|r| r.from_start)
    }

    /// Every node, joining ones included, in role order: the timeline's lanes.
    pub fn lanes(&self) -> Vec<String> {
        self.select(|_| true)
    }
}

/// What a scenario's faults may be, beyond which nodes they strike.
#[derive(Clone, Debug)]
pub struct Faults {
    pub kinds: Vec<FaultKind>,
    /// Message kinds that per-kind rules pick from.
    pub message_kinds: Vec<Kind>,
    pub max_corruptions_per_node: u32,
    pub max_drift_ppm: i64,
}

/// Everything a run of one seed is: the seed's plan and the configuration.
#[derive(Clone, Debug)]
pub struct Run<P> {
    pub seed: u64,
    pub plan: P,
    pub topology: Topology,
    pub config: Config,
    /// The fault phase: when the faults stop.
    pub phase: Duration,
}

impl<P> Run<P> {
    /// The operation budget of each workload node.
    pub fn max_ops(&self) -> Option<u64> {
        self.config.get(OPS)
    }
}

/// A scenario, as the kit runs it.
pub trait Script: Sync + Send + 'static {
    /// What one seed draws (shapes, counts, timings), given the configuration.
    type Plan: Clone + Send + Sync + std::fmt::Debug + 'static;
    /// What the checker needs beyond the history (durable state read at the end).
    type Final: 'static;

    fn name(&self) -> &'static str;
    fn about(&self) -> &'static str;
    /// The fault phase when none is configured.
    fn default_phase(&self) -> Duration;
    /// Knobs beyond the fault phase and the operation budget.
    fn knobs(&self) -> Vec<Knob> {
        Vec::new()
    }
    /// The seed's plan; fills in every knob it draws.
    fn plan(&self, seed: u64, config: &mut Config) -> Self::Plan;
    fn topology(&self, plan: &Self::Plan) -> Topology;
    fn faults(&self, plan: &Self::Plan) -> Faults;
    /// Nodes of the topology the nemesis must leave alone in this plan.
    fn spared(&self, _plan: &Self::Plan) -> Vec<String> {
        Vec::new()
    }
    /// Fault actions aimed by the scenario, beyond the swarm's draws.
    fn aimed(&self, _run: &Run<Self::Plan>) -> Vec<FaultAction> {
        Vec::new()
    }
    /// Adds the nodes there from the start (before the nemesis starts).
    fn start(w: &Arc<World>, run: &Run<Self::Plan>);
    /// The rest of the run: joins, final reads, the end. Returns what the checker needs.
    fn drive(w: Arc<World>, run: Run<Self::Plan>) -> impl Future<Output = Self::Final>;
    /// When the run ends (simulated), for its figures.
    fn end(run: &Run<Self::Plan>) -> Duration;
    fn check(run: &Run<Self::Plan>, ran: &Ran, schedule: &Schedule, fin: Self::Final) -> Vec<Violation>;

    fn bugs(&self) -> Vec<Bug> {
        Vec::new()
    }
    fn signals(&self) -> Vec<(&'static str, Signal)> {
        Vec::new()
    }
    fn probes(&self) -> Vec<Probe> {
        Probe::ALL.to_vec()
    }
}

/// A [`Script`] made a [`Scenario`].
pub struct Kit<S>(pub S);

impl<S: Script> Kit<S> {
    /// The run `spec` describes, every knob filled in.
    fn run_of(&self, spec: &RunSpec) -> Run<S::Plan> {
        let mut config = spec.config.clone();
        let phase = config.get(PHASE_MS).map_or(self.0.default_phase(), Duration::from_millis);
        config.set(PHASE_MS, phase.as_millis() as u64);
        let plan = self.0.plan(spec.seed, &mut config);
        let topology = self.0.topology(&plan);
        Run { seed: spec.seed, plan, topology, config, phase }
    }

    fn profile(&self, run: &Run<S::Plan>) -> Profile {
        let spared = self.0.spared(&run.plan);
        let nodes = run.topology.nodes();
        let pick = |keep: fn(&Role) -> bool| -> Vec<String> {
            let chosen = run.topology.select(keep);
            chosen.into_iter().filter(|n| !spared.contains(n)).collect()
        };
        let faults = self.0.faults(&run.plan);
        Profile {
            targets: pick(|r| r.target && r.from_start),
            durable: pick(|r| r.durable && r.from_start),
            nodes,
            kinds: faults.kinds,
            message_kinds: faults.message_kinds,
            fault_phase_ms: run.phase.as_millis() as u64,
            max_corruptions_per_node: faults.max_corruptions_per_node,
            max_drift_ppm: faults.max_drift_ppm,
        }
    }

    fn schedule(&self, spec: &RunSpec, run: &Run<S::Plan>) -> Schedule {
        spec.schedule.clone().unwrap_or_else(|| {
            let mut rng = mqsim_sim::rng_for(spec.seed, "nemesis");
            let mut drawn = Schedule::generate(&self.profile(run), &mut rng);
            drawn.actions.extend(self.0.aimed(run));
            drawn.actions.sort_by_key(|a| a.at_ms);
            drawn
        })
    }
}

impl<S: Script> Scenario for Kit<S> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn about(&self) -> &'static str {
        self.0.about()
    }

    fn knobs(&self) -> Vec<Knob> {
        let mut knobs = self.0.knobs();
        knobs.extend([Knob::ops(), Knob::phase()]);
        knobs
    }

    fn resolve(&self, spec: &RunSpec) -> RunSpec {
        let run = self.run_of(spec);
        let schedule = self.schedule(spec, &run);
        RunSpec { config: run.config, schedule: Some(schedule), ..spec.clone() }
    }

    fn nodes(&self, spec: &RunSpec) -> Vec<String> {
        self.run_of(spec).topology.nodes()
    }

    fn lanes(&self, spec: &RunSpec) -> Vec<String> {
        self.run_of(spec).topology.lanes()
    }

    fn run(&self, spec: &RunSpec) -> Outcome {
        let run = self.run_of(spec);
        let schedule = self.schedule(spec, &run);
        let (for_world, run_schedule) = (run.clone(), schedule.clone());
        let trace = spec.trace;
        let (ran, fin) = world::run(spec.seed, spec.bugs, |w| async move {
            if trace {
                w.trace_messages();
            }
            S::start(&w, &for_world);
            w.spawn_nemesis(run_schedule);
            let fin = S::drive(w.clone(), for_world).await;
            (Ran::of(&w), fin)
        });
        let violations = S::check(&run, &ran, &schedule, fin);
        Outcome::new(violations, ran, schedule, S::end(&run))
    }

    fn bugs(&self) -> Vec<Bug> {
        self.0.bugs()
    }

    fn signals(&self) -> Vec<(&'static str, Signal)> {
        self.0.signals()
    }

    fn probes(&self) -> Vec<Probe> {
        self.0.probes()
    }
}

/// A composite fault scenarios aim: `node` crashes and comes back while reads
/// of its disk flip bits (`per_mille` drawn from `flips`) for a window drawn
/// from `window_ms`, so its recovery reads damage that is not on the disk.
/// Swarm draws almost never line a restart up with a flaky disk.
pub fn restart_on_flaky_disk(
    rng: &mut rand_chacha::ChaCha8Rng,
    node: &str,
    phase: Duration,
    flips: RangeInclusive<u32>,
    window_ms: RangeInclusive<u64>,
) -> Vec<FaultAction> {
    use rand::Rng;
    let phase = phase.as_millis() as u64;
    let latest = phase.saturating_sub(window_ms.end() + 1_000);
    if latest <= 1_000 {
        return Vec::new();
    }
    let at_ms = rng.gen_range(1_000..latest);
    let for_ms = rng.gen_range(window_ms);
    let per_mille = rng.gen_range(flips);
    let down_ms = rng.gen_range(500..=2_000);
    vec![
        FaultAction { at_ms, for_ms, fault: mqsim_sim::Fault::DiskReadFlips { node: node.into(), per_mille } },
        FaultAction { at_ms: at_ms + 200, for_ms: down_ms, fault: mqsim_sim::Fault::Crash { node: node.into() } },
    ]
}

/// Retries `f` up to six times (a jittered 0.7 s apart) while it fails, as a
/// patient reader of the final state would.
pub async fn patiently<T, E, F, Fut>(env: &Env, purpose: &'static str, mut f: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut result = f().await;
    for _ in 0..6 {
        if result.is_ok() {
            break;
        }
        env.sleep(env.random(purpose).jitter(Duration::from_millis(700))).await;
        result = f().await;
    }
    result
}

/// Records the end of client operation `op` of `env`'s node: ok with `ret`,
/// or an unknown outcome.
pub fn complete<T, E: std::fmt::Debug>(
    env: &Env,
    world: &World,
    op: OpId,
    r: Result<T, E>,
    ret: impl FnOnce(T) -> Ret,
) {
    match r {
        Ok(v) => world.history.ok(&env.name, op, ret(v)),
        Err(e) => world.history.info(&env.name, op, e),
    }
}
