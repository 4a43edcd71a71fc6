//! Named scenarios: topology + workload + nemesis profile + checkers.

pub mod ledger;
pub mod meta;
pub mod ops;
pub mod selftest;

use mqsim_core::bugs::Bugs;
use mqsim_core::probe::Probe;
use mqsim_sim::nemesis::Profile;
use mqsim_sim::nemesis::Signal;
use mqsim_sim::{Fault, Record, Schedule};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How to run one seed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunSpec {
    pub seed: u64,
    pub bugs: Bugs,
    pub config: Config,
    /// The fault schedule to execute; drawn from the seed when `None`.
    pub schedule: Option<Schedule>,
}

/// The size of a run, as a shrinker turns it down. `None` is the scenario's
/// own choice (drawn from the seed or fixed); [`Scenario::resolve`] fills in
/// every knob the scenario has.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Client nodes (scenario `meta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<usize>,
    /// Each client (or writer) stops after this many operations; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_per_client: Option<u64>,
    /// Length of the fault phase in milliseconds; the calm phase, the final
    /// reads and the end of the run follow it at fixed gaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_ms: Option<u64>,
}

/// Not an invariant of the system: the history holds a record its checker
/// cannot read (a completion without an invocation, say). The run fails.
pub const UNREADABLE: &str = "unreadable-history";
/// Not an invariant of the system: the checker found nothing to judge (no
/// acknowledged operation of the kind it checks). The run fails.
pub const JUDGED_NOTHING: &str = "judged-nothing";

/// An invariant that did not hold, named as in DESIGN.md or the README.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
    /// The client operation (history id) the violation is about, when there is one.
    pub op: Option<u64>,
}

impl Violation {
    pub fn new(invariant: &'static str, detail: String) -> Violation {
        Violation { invariant, detail, op: None }
    }

    /// A violation about client operation `op`.
    pub fn at(invariant: &'static str, op: u64, detail: String) -> Violation {
        Violation { invariant, detail, op: Some(op) }
    }
}

/// Figures of one run, for the verdict line and reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub ops: u64,
    pub sim_ms: u64,
    pub faults: BTreeMap<String, u64>,
    /// Hits per coverage probe reached.
    #[serde(default)]
    pub probes: BTreeMap<String, u64>,
}

/// What a finished simulation leaves: its history and the probes it reached.
pub struct Ran {
    pub history: Vec<Record>,
    pub probes: BTreeMap<String, u64>,
}

impl Ran {
    pub fn of(world: &mqsim_sim::World) -> Ran {
        Ran { history: world.history.records(), probes: world.history.probe_counts() }
    }
}

pub struct Outcome {
    pub violations: Vec<Violation>,
    pub history: Vec<Record>,
    pub schedule: Schedule,
    pub stats: Stats,
}

impl Outcome {
    /// An outcome with its figures counted from the run.
    pub fn new(violations: Vec<Violation>, run: Ran, schedule: Schedule, sim: Duration) -> Outcome {
        let stats = Stats {
            ops: run.history.iter().filter(|r| r.kind() == mqsim_sim::history::Kind::Invoke).count() as u64,
            sim_ms: sim.as_millis() as u64,
            faults: schedule.kinds(),
            probes: run.probes,
        };
        Outcome { violations, history: run.history, schedule, stats }
    }
}

impl RunSpec {
    /// The schedule to run: the given one, or one drawn from the seed.
    pub fn schedule_for(&self, profile: &Profile) -> Schedule {
        self.schedule
            .clone()
            .unwrap_or_else(|| Schedule::generate(profile, &mut mqsim_sim::rng_for(self.seed, "nemesis")))
    }

    /// The fault phase: the configured length, or the scenario's default.
    pub fn phase(&self, default: Duration) -> Duration {
        self.config.phase_ms.map_or(default, Duration::from_millis)
    }
}

pub trait Scenario: Sync {
    fn name(&self) -> &'static str;
    fn about(&self) -> &'static str;
    /// The spec with everything the seed would draw made explicit: every
    /// configuration knob and the fault schedule. Running the result is the
    /// same run as running `spec`.
    fn resolve(&self, spec: &RunSpec) -> RunSpec;
    /// The nodes a fault action may name in a run of `spec` (those there from the start).
    fn nodes(&self, spec: &RunSpec) -> Vec<String>;
    fn run(&self, spec: &RunSpec) -> Outcome;
    /// The planted bugs this scenario is meant to catch (`mqsim hunt` runs each
    /// bug over the scenarios that name it).
    fn bugs(&self) -> Vec<mqsim_core::bugs::Bug> {
        Vec::new()
    }
    /// The workload signals this scenario's nodes answer to.
    fn signals(&self) -> Vec<(&'static str, Signal)> {
        Vec::new()
    }
    /// The coverage probes this scenario's nodes can reach: those of the
    /// components it runs. A campaign reports the ones no seed reached.
    fn probes(&self) -> Vec<Probe> {
        Probe::ALL.to_vec()
    }
}

/// The probes of the components named by their prefixes (`meta`, `bookie`, …).
pub fn probes_of(components: &[&str]) -> Vec<Probe> {
    Probe::ALL.iter().copied().filter(|p| components.iter().any(|c| p.name().starts_with(&format!("{c}-")))).collect()
}

/// Most clients a configuration may ask for.
pub const MAX_CLIENTS: usize = 16;
/// Longest fault phase a configuration may ask for.
pub const MAX_PHASE_MS: u64 = 10 * 60 * 1000;

/// Whether `spec` (say, read from a case file) is a run `scenario` can do:
/// knobs it has, within bounds, and faults naming its nodes within the run.
pub fn validate(scenario: &dyn Scenario, spec: &RunSpec) -> Result<(), String> {
    let name = scenario.name();
    let has = scenario.resolve(&RunSpec { seed: spec.seed, ..RunSpec::default() }).config;
    let c = &spec.config;
    if let Some(n) = c.clients {
        if has.clients.is_none() {
            return Err(format!("scenario {name} has no clients setting"));
        }
        if !(1..=MAX_CLIENTS).contains(&n) {
            return Err(format!("clients must be 1 to {MAX_CLIENTS}, not {n}"));
        }
    }
    if let Some(ms) = c.phase_ms {
        if has.phase_ms.is_none() {
            return Err(format!("scenario {name} has no phase_ms setting"));
        }
        if !(1_000..=MAX_PHASE_MS).contains(&ms) {
            return Err(format!("phase_ms must be 1000 to {MAX_PHASE_MS}, not {ms}"));
        }
    }
    if c.ops_per_client == Some(0) {
        return Err("ops_per_client must be at least 1".into());
    }
    let nodes = scenario.nodes(&scenario.resolve(spec));
    let limit_ms = mqsim_sim::world::TIME_LIMIT.as_millis() as u64;
    for (i, a) in spec.schedule.iter().flat_map(|s| s.actions.iter()).enumerate() {
        if let Some(unknown) = a.fault.nodes().into_iter().find(|n| !nodes.iter().any(|k| k == n)) {
            return Err(format!("fault action {i} names '{unknown}', not a node of {name} ({})", nodes.join(", ")));
        }
        if a.at_ms.checked_add(a.for_ms).is_none_or(|end| end > limit_ms) {
            return Err(format!("fault action {i} ends after the {} s limit of a run", limit_ms / 1000));
        }
        if a.fault.windowed() && a.for_ms == 0 {
            return Err(format!("fault action {i} needs a window (for_ms of at least 1)"));
        }
        if let Fault::Signal { node, signal } = &a.fault {
            if !scenario.signals().iter().any(|(n, s)| n == node && s == signal) {
                return Err(format!("fault action {i}: {node} of {name} does not answer the signal {signal:?}"));
            }
        }
    }
    Ok(())
}

/// The scenarios that test the system; campaigns over `all` run these.
pub fn all() -> &'static [&'static dyn Scenario] {
    &[&meta::Meta, &ledger::LedgerFencing, &ledger::LedgerRepair]
}

/// Scenarios that test the testbed itself (they fail on purpose).
pub fn testbed_checks() -> &'static [&'static dyn Scenario] {
    &[&selftest::SelfTest]
}

pub fn find(name: &str) -> Option<&'static dyn Scenario> {
    all().iter().chain(testbed_checks()).copied().find(|s| s.name() == name)
}
