//! Named scenarios: topology + workload + nemesis profile + checkers.

pub mod ledger;
pub mod meta;
mod ops;

use mqsim_core::bugs::Bugs;
use mqsim_sim::{Record, Schedule};
use serde::Serialize;
use std::collections::BTreeMap;

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
