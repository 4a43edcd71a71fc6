//! Shrinking a failing case: the smallest run found that still fails the same
//! way (same invariant, same panic, or a hang). Fewer fault actions first
//! (delta debugging: drop chunks, then single actions), then shorter fault
//! windows, then each of the scenario's knobs turned down as it says (fewer
//! nodes of a role, fewer operations, an earlier end); repeated until nothing
//! more can go. The shrinker knows no node names: a scenario's topology does. Every candidate runs in a child process.

use crate::case::{Case, Digest, ShrunkFrom, Verdict};
use crate::exec::{execute, Job, Outputs};
use crate::BadInput;
use mqsim_scenarios::kit::Shrink;
use mqsim_scenarios::{Config, Knob, RunSpec, Scenario};
use mqsim_sim::{FaultAction, Schedule};
use std::time::Duration;

/// Fault windows are not shortened below this.
const MIN_WINDOW_MS: u64 = 100;

pub struct Shrinker {
    original: Case,
    watchdog: Duration,
    max_runs: usize,
    runs: usize,
    best: Best,
}

/// The smallest failing run so far.
struct Best {
    config: Config,
    actions: Vec<FaultAction>,
    verdict: Verdict,
    history: Option<Digest>,
    ops: u64,
}

impl Shrinker {
    /// Checks that the case fails here before shrinking it.
    pub fn new(case: Case, watchdog: Duration, max_runs: usize) -> Result<Shrinker, BadInput> {
        let mut s = Shrinker {
            best: Best {
                config: case.config.clone(),
                actions: case.schedule.actions.clone(),
                verdict: case.verdict.clone(),
                history: case.history.clone(),
                ops: 0,
            },
            original: case,
            watchdog,
            max_runs,
            runs: 0,
        };
        let (config, actions) = (s.best.config.clone(), s.best.actions.clone());
        if !s.attempt(config, actions)? {
            return Err(BadInput(format!(
                "{} does not fail the same way with this build; nothing to shrink",
                s.original.title()
            )));
        }
        Ok(s)
    }

    /// Runs one candidate; keeps it when it fails the same way.
    fn attempt(&mut self, config: Config, actions: Vec<FaultAction>) -> Result<bool, BadInput> {
        if self.runs >= self.max_runs {
            return Ok(false);
        }
        self.runs += 1;
        let schedule = Schedule { actions: actions.clone() };
        let job = Job { config: config.clone(), schedule: Some(schedule), ..self.original.job(Outputs::default()) };
        let ran = execute(&job, self.watchdog)?;
        if !ran.verdict.same_failure(&self.original.verdict) {
            return Ok(false);
        }
        self.best = Best { config, actions, verdict: ran.verdict, history: ran.history, ops: ran.stats.ops };
        Ok(true)
    }

    /// Shrinks until no step makes progress or the run budget is spent.
    pub fn run(mut self) -> Result<Case, BadInput> {
        loop {
            let before = (self.best.actions.clone(), self.best.config.clone());
            self.drop_actions()?;
            self.shorten_windows()?;
            self.smaller_knobs()?;
            if (self.best.actions == before.0 && self.best.config == before.1) || self.runs >= self.max_runs {
                break;
            }
        }
        let original = &self.original;
        let schedule = Schedule { actions: self.best.actions };
        let (config, verdict, history) = (self.best.config, self.best.verdict, self.best.history);
        let shrunk =
            Case::new(&original.scenario, original.seed, original.bugs.clone(), config, schedule, verdict, history);
        let shrunk_from =
            ShrunkFrom { actions: original.schedule.actions.len(), config: original.config.clone(), runs: self.runs };
        Ok(Case { shrunk_from: Some(shrunk_from), ..shrunk })
    }

    /// Delta debugging over the actions: drop halves, quarters, … single ones.
    fn drop_actions(&mut self) -> Result<(), BadInput> {
        let mut chunk = self.best.actions.len().div_ceil(2).max(1);
        while !self.best.actions.is_empty() {
            let mut start = 0;
            while start < self.best.actions.len() {
                let mut fewer = self.best.actions.clone();
                fewer.drain(start..(start + chunk).min(fewer.len()));
                if !self.attempt(self.best.config.clone(), fewer)? {
                    start += chunk;
                }
            }
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
        Ok(())
    }

    /// Halves each fault window while the failure stays.
    fn shorten_windows(&mut self) -> Result<(), BadInput> {
        for i in 0..self.best.actions.len() {
            while self.best.actions[i].for_ms / 2 >= MIN_WINDOW_MS {
                let mut shorter = self.best.actions.clone();
                shorter[i].for_ms /= 2;
                if !self.attempt(self.best.config.clone(), shorter)? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Turns down each of the scenario's knobs, the way the knob says.
    fn smaller_knobs(&mut self) -> Result<(), BadInput> {
        let scenario = mqsim_scenarios::find(&self.original.scenario)
            .ok_or_else(|| BadInput(format!("unknown scenario '{}'", self.original.scenario)))?;
        for knob in scenario.knobs() {
            match knob.shrink {
                Shrink::Fewer => self.fewer(scenario, &knob)?,
                Shrink::Halve => self.halve(&knob)?,
                Shrink::EndAfterLastFault => self.earlier_end(&knob)?,
            }
        }
        Ok(())
    }

    /// One node fewer at a time; the faults that name a node no longer there go too.
    fn fewer(&mut self, scenario: &dyn Scenario, knob: &Knob) -> Result<(), BadInput> {
        while let Some(n) = self.best.config.get(knob.name).filter(|n| n > knob.range.start()) {
            let config = self.best.config.with(knob.name, n - 1);
            let spec = RunSpec { seed: self.original.seed, config: config.clone(), ..RunSpec::default() };
            let nodes = scenario.nodes(&spec);
            let there = |a: &&FaultAction| a.fault.nodes().iter().all(|n| nodes.iter().any(|k| k == n));
            let actions = self.best.actions.iter().filter(there).cloned().collect();
            if !self.attempt(config, actions)? {
                break;
            }
        }
        Ok(())
    }

    /// Halves the knob (from the run's operation count when it is unset).
    fn halve(&mut self, knob: &Knob) -> Result<(), BadInput> {
        let floor = *knob.range.start();
        let mut value = self.best.config.get(knob.name).unwrap_or(self.best.ops.max(floor));
        while value > floor {
            value = (value / 2).max(floor);
            let config = self.best.config.with(knob.name, value);
            if !self.attempt(config, self.best.actions.clone())? {
                break;
            }
        }
        Ok(())
    }

    /// Ends the fault phase (and so the run) soon after the last fault.
    fn earlier_end(&mut self, knob: &Knob) -> Result<(), BadInput> {
        let Some(phase) = self.best.config.get(knob.name) else { return Ok(()) };
        let last = self.best.actions.iter().map(|a| a.at_ms.saturating_add(a.for_ms)).max().unwrap_or(0);
        let end = (last.div_ceil(1_000) * 1_000).max(*knob.range.start());
        if end < phase {
            self.attempt(self.best.config.with(knob.name, end), self.best.actions.clone())?;
        }
        Ok(())
    }
}
