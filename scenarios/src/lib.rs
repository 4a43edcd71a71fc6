//! Named scenarios: topology + workload + nemesis profile + checkers.

pub mod kit;
pub mod ledger;
pub mod managed;
pub mod meta;
pub mod ops;
pub mod ordered;
pub mod pubsub;
pub mod rebalance;
pub mod routes;
pub mod scale_out;
pub mod selftest;
pub mod tx;

use mqsim_core::bugs::Bugs;
use mqsim_core::probe::Probe;
use mqsim_sim::nemesis::Signal;
use mqsim_sim::trace::Message;
use mqsim_sim::{Fault, Record, Schedule};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

pub use kit::Knob;

/// How to run one seed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunSpec {
    pub seed: u64,
    pub bugs: Bugs,
    pub config: Config,
    /// The fault schedule to execute; drawn from the seed when `None`.
    pub schedule: Option<Schedule>,
    /// Keep a trace of every message (for timelines and `explain`); the
    /// history is the same either way.
    pub trace: bool,
}

/// The size of a run, as a shrinker turns it down: the scenario's knobs
/// (see [`kit::Knob`]) by name. An absent knob is the scenario's own choice
/// (drawn from the seed or fixed); [`Scenario::resolve`] fills in every one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Config(pub BTreeMap<String, u64>);

impl Config {
    pub fn get(&self, knob: &str) -> Option<u64> {
        self.0.get(knob).copied()
    }

    pub fn set(&mut self, knob: &str, value: u64) {
        self.0.insert(knob.to_string(), value);
    }

    /// This configuration with `knob` set to `value`.
    pub fn with(&self, knob: &str, value: u64) -> Config {
        let mut c = self.clone();
        c.set(knob, value);
        c
    }
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
    /// Messages, bytes and disk work of the run.
    #[serde(default)]
    pub counters: mqsim_sim::Counters,
    /// Peak resident memory of the process that ran it, in KiB (set by the runner).
    #[serde(default)]
    pub peak_rss_kib: u64,
}

/// What a finished simulation leaves: its history and the probes it reached.
pub struct Ran {
    pub history: Vec<Record>,
    pub probes: BTreeMap<String, u64>,
    pub counters: mqsim_sim::Counters,
    /// The message trace, when the run kept one: (send time, sender, message).
    pub trace: Vec<(u64, String, Message)>,
}

impl Ran {
    pub fn of(world: &mqsim_sim::World) -> Ran {
        Ran {
            history: world.history.take(),
            probes: world.history.probe_counts(),
            counters: world.counters(),
            trace: world.network.take_trace(),
        }
    }
}

pub struct Outcome {
    pub violations: Vec<Violation>,
    pub history: Vec<Record>,
    pub schedule: Schedule,
    pub stats: Stats,
    /// The message trace, when the run kept one (see [`RunSpec::trace`]).
    pub trace: Vec<(u64, String, Message)>,
}

impl Outcome {
    /// An outcome with its figures counted from the run.
    pub fn new(violations: Vec<Violation>, run: Ran, schedule: Schedule, sim: Duration) -> Outcome {
        let stats = Stats {
            ops: run.history.iter().filter(|r| r.kind() == mqsim_sim::history::Kind::Invoke).count() as u64,
            sim_ms: sim.as_millis() as u64,
            faults: schedule.kinds(),
            probes: run.probes,
            counters: run.counters,
            peak_rss_kib: 0,
        };
        Outcome { violations, history: run.history, schedule, stats, trace: run.trace }
    }
}

pub trait Scenario: Sync {
    fn name(&self) -> &'static str;
    fn about(&self) -> &'static str;
    /// The settings a case file may give, and how a shrinker turns each down.
    fn knobs(&self) -> Vec<Knob>;
    /// The spec with everything the seed would draw made explicit: every
    /// configuration knob and the fault schedule. Running the result is the
    /// same run as running `spec`.
    fn resolve(&self, spec: &RunSpec) -> RunSpec;
    /// The nodes a fault action may name in a run of `spec` (those there from the start).
    fn nodes(&self, spec: &RunSpec) -> Vec<String>;
    /// Every node of a run of `spec`, in the order a timeline draws them.
    fn lanes(&self, spec: &RunSpec) -> Vec<String>;
    fn run(&self, spec: &RunSpec) -> Outcome;
    /// The planted bugs this scenario is meant to catch (`mqsim hunt` runs each
    /// bug over the scenarios that name it).
    fn bugs(&self) -> Vec<mqsim_core::bugs::Bug>;
    /// The workload signals this scenario's nodes answer to.
    fn signals(&self) -> Vec<(&'static str, Signal)>;
    /// The coverage probes this scenario's nodes can reach: those of the
    /// components it runs. A campaign reports the ones no seed reached.
    fn probes(&self) -> Vec<Probe>;
}

/// The probes of the components named by their prefixes (`meta`, `bookie`, …).
pub fn probes_of(components: &[&str]) -> Vec<Probe> {
    Probe::ALL.iter().copied().filter(|p| components.iter().any(|c| p.name().starts_with(&format!("{c}-")))).collect()
}

/// Whether `spec` (say, read from a case file) is a run `scenario` can do:
/// knobs it has, within bounds, and faults naming its nodes within the run.
pub fn validate(scenario: &dyn Scenario, spec: &RunSpec) -> Result<(), String> {
    let name = scenario.name();
    let knobs = scenario.knobs();
    for (knob, value) in &spec.config.0 {
        let Some(k) = knobs.iter().find(|k| k.name == knob) else {
            let known: Vec<&str> = knobs.iter().map(|k| k.name).collect();
            return Err(format!("scenario {name} has no knob '{knob}' (knobs: {})", known.join(", ")));
        };
        if !k.range.contains(value) {
            return Err(format!("{knob} must be {} to {}, not {value}", k.range.start(), k.range.end()));
        }
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
    &[
        &kit::Kit(meta::Meta),
        &kit::Kit(ledger::LedgerFencing),
        &kit::Kit(ledger::LedgerRepair),
        &kit::Kit(managed::ManagedLedgers),
        &kit::Kit(pubsub::PubSub),
        &kit::Kit(ordered::Ordered),
        &kit::Kit(rebalance::Rebalance),
        &kit::Kit(scale_out::ScaleOut),
        &kit::Kit(routes::Routes),
        &kit::Kit(tx::Tx::Checkback),
        &kit::Kit(tx::Tx::Crash),
    ]
}

/// Scenarios that test the testbed itself (they fail on purpose).
pub fn testbed_checks() -> &'static [&'static dyn Scenario] {
    &[&kit::Kit(selftest::SelfTest)]
}

pub fn find(name: &str) -> Option<&'static dyn Scenario> {
    all().iter().chain(testbed_checks()).copied().find(|s| s.name() == name)
}
