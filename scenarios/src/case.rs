//! Case files: a failing run, self-described (scenario, seed, planted bug,
//! build, the fault schedule that ran, the invariant that failed and where),
//! so that it can be replayed exactly and shrunk.

use crate::{find, Outcome, RunSpec, Violation};
use mqsim_core::bugs::{Bug, Bugs};
use mqsim_sim::Schedule;
use serde::{Deserialize, Serialize};

/// The format version written in every case file.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub mqsim_case: u32,
    pub scenario: String,
    pub seed: u64,
    pub bug: Option<String>,
    /// The build that found it; a replay on another build says so.
    pub build: String,
    pub schedule: Schedule,
    pub invariant: String,
    pub detail: String,
    /// CRC32C of the JSON Lines history, to tell an identical replay.
    pub history_crc32c: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0} is not a case file: {1}")]
    Malformed(String, serde_json::Error),
    #[error("{0} has case format {1}, this build reads format {FORMAT}")]
    Format(String, u32),
    #[error("{0} names an unknown scenario '{1}'")]
    Scenario(String, String),
    #[error("{0} names an unknown bug '{1}'")]
    Bug(String, String),
}

/// The CRC32C of a history as JSON Lines.
pub fn history_crc(outcome: &Outcome) -> u32 {
    crc32c::crc32c(mqsim_sim::history::to_jsonl(&outcome.history).as_bytes())
}

impl Case {
    /// The case of a failed run.
    pub fn of(scenario: &str, spec: &RunSpec, bug: Option<&str>, outcome: &Outcome, build: &str) -> Option<Case> {
        let v = outcome.violations.first()?;
        Some(Case {
            mqsim_case: FORMAT,
            scenario: scenario.to_string(),
            seed: spec.seed,
            bug: bug.map(str::to_string),
            build: build.to_string(),
            schedule: outcome.schedule.clone(),
            invariant: v.invariant.to_string(),
            detail: v.detail.clone(),
            history_crc32c: history_crc(outcome),
        })
    }

    pub fn load(path: &str) -> Result<Case, CaseError> {
        let text = std::fs::read_to_string(path).map_err(|e| CaseError::Read(path.to_string(), e))?;
        let case: Case = serde_json::from_str(&text).map_err(|e| CaseError::Malformed(path.to_string(), e))?;
        if case.mqsim_case != FORMAT {
            return Err(CaseError::Format(path.to_string(), case.mqsim_case));
        }
        if find(&case.scenario).is_none() {
            return Err(CaseError::Scenario(path.to_string(), case.scenario.clone()));
        }
        if let Some(b) = &case.bug {
            if Bug::from_name(b).is_none() {
                return Err(CaseError::Bug(path.to_string(), b.clone()));
            }
        }
        Ok(case)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("case to json")
    }

    pub fn spec(&self) -> RunSpec {
        let bugs = self.bug.as_deref().and_then(Bug::from_name).map_or(Bugs::none(), |b| Bugs::none().with(b));
        RunSpec { seed: self.seed, bugs, schedule: Some(self.schedule.clone()) }
    }

    /// Runs the case again with its own schedule.
    pub fn run(&self) -> Outcome {
        find(&self.scenario).expect("checked at load").run(&self.spec())
    }

    /// Does `outcome` fail the same invariant as this case?
    pub fn same_failure(&self, outcome: &Outcome) -> bool {
        outcome.violations.first().is_some_and(|v: &Violation| v.invariant == self.invariant)
    }
}
