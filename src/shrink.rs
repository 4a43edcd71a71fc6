//! Shrinking a failing case: the smallest run found that still fails the same
//! way (same invariant, same panic, or a hang). Fewer fault actions first
//! (delta debugging: drop chunks, then single actions), then shorter fault
//! windows, then fewer clients, fewer operations and an earlier end; repeated
//! until nothing more can go. Every candidate runs in a child process.

use crate::case::{Case, Digest, ShrunkFrom, Verdict};
use crate::exec::{execute, Job, Outputs};
use crate::BadInput;
use mqsim_scenarios::Config;
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
            self.fewer_clients()?;
            self.fewer_ops()?;
            self.earlier_end()?;
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

    /// Removes the last client (`client-N`) and the faults that name it.
    fn fewer_clients(&mut self) -> Result<(), BadInput> {
        while let Some(n) = self.best.config.clients.filter(|n| *n > 1) {
            let gone = format!("client-{}", n - 1);
            let actions = self.best.actions.iter().filter(|a| !a.fault.nodes().contains(&gone.as_str())).cloned();
            let config = Config { clients: Some(n - 1), ..self.best.config.clone() };
            if !self.attempt(config, actions.collect())? {
                break;
            }
        }
        Ok(())
    }

    /// Halves the operations each client may do.
    fn fewer_ops(&mut self) -> Result<(), BadInput> {
        let clients = self.best.config.clients.unwrap_or(1).max(1) as u64;
        let mut limit = self.best.config.ops_per_client.unwrap_or(self.best.ops / clients);
        while limit > 1 {
            limit /= 2;
            let config = Config { ops_per_client: Some(limit), ..self.best.config.clone() };
            if !self.attempt(config, self.best.actions.clone())? {
                break;
            }
        }
        Ok(())
    }

    /// Ends the fault phase (and so the run) soon after the last fault.
    fn earlier_end(&mut self) -> Result<(), BadInput> {
        let Some(phase) = self.best.config.phase_ms else { return Ok(()) };
        let last = self.best.actions.iter().map(|a| a.at_ms.saturating_add(a.for_ms)).max().unwrap_or(0);
        let end = (last.div_ceil(1_000) * 1_000).max(1_000);
        if end < phase {
            let config = Config { phase_ms: Some(end), ..self.best.config.clone() };
            self.attempt(config, self.best.actions.clone())?;
        }
        Ok(())
    }
}
