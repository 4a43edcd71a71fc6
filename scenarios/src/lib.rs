//! Named scenarios: topology + workload + nemesis profile + checkers.

pub mod ledger;
pub mod meta;
mod ops;

use mqsim_core::bugs::Bugs;
use mqsim_sim::nemesis::Profile;
use mqsim_sim::{Record, Schedule};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// How to run one seed.
#[derive(Clone, Debug, Default)]
pub struct RunSpec {
    pub seed: u64,
    pub bugs: Bugs,
    /// The fault schedule to execute; drawn from the seed when `None`.
    pub schedule: Option<Schedule>,
}

/// An invariant that did not hold, named as in DESIGN.md or the README.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

/// Figures of one run, for the verdict line and reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub ops: u64,
    pub sim_ms: u64,
    pub faults: BTreeMap<String, u64>,
}

pub struct Outcome {
    pub violations: Vec<Violation>,
    pub history: Vec<Record>,
    pub schedule: Schedule,
    pub stats: Stats,
}

impl Outcome {
    /// An outcome with its figures counted from the history.
    pub fn new(violations: Vec<Violation>, history: Vec<Record>, schedule: Schedule, sim: Duration) -> Outcome {
        let stats = Stats {
            ops: history.iter().filter(|r| r.kind == mqsim_sim::history::Kind::Invoke).count() as u64,
            sim_ms: sim.as_millis() as u64,
            faults: schedule.kinds(),
        };
        Outcome { violations, history, schedule, stats }
    }
}

impl RunSpec {
    /// The schedule to run: the given one, or one drawn from the seed.
    pub fn schedule_for(&self, profile: &Profile) -> Schedule {
        self.schedule
            .clone()
            .unwrap_or_else(|| Schedule::generate(profile, &mut mqsim_sim::rng_for(self.seed, "nemesis")))
    }
}

pub trait Scenario: Sync {
    fn name(&self) -> &'static str;
    fn about(&self) -> &'static str;
    fn run(&self, spec: &RunSpec) -> Outcome;
}

pub fn all() -> &'static [&'static dyn Scenario] {
    &[&meta::Meta, &ledger::LedgerFencing, &ledger::LedgerRepair]
}

pub fn find(name: &str) -> Option<&'static dyn Scenario> {
    all().iter().copied().find(|s| s.name() == name)
}
