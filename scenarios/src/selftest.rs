//! Scenario `selftest`: checks the testbed, not the system. Two nodes tick
//! (up to `ops_per_client` times) and record each tick as an operation while the nemesis crashes and pauses
//! them. Some seeds misbehave on purpose, so that campaigns, replay and
//! shrinking can be tested against every kind of failure:
//!
//! | seed % 10 | what happens                                             |
//! |-----------|----------------------------------------------------------|
//! | 3         | a node panics                                            |
//! | 4         | the harness panics after the run                         |
//! | 6         | the harness never finishes (simulated-time limit)        |
//! | 7         | a node spins without yielding (wall-clock watchdog)      |
//! | 8         | invariant S1 fails (a tick is reported lost)             |
//!
//! Every other seed passes. It is never part of `--scenario all`.

use crate::{Outcome, Ran, RunSpec, Scenario, Violation};
use mqsim_sim::history::{Body, Call, Ret};
use mqsim_sim::nemesis::Profile;
use mqsim_sim::{world, FaultKind};
use std::time::Duration;

const NODES: [&str; 2] = ["ticker-0", "ticker-1"];
const PHASE: Duration = Duration::from_secs(10);
const END: Duration = Duration::from_secs(15);

pub struct SelfTest;

fn profile() -> Profile {
    let nodes: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    Profile {
        targets: nodes.clone(),
        nodes,
        durable: Vec::new(),
        kinds: vec![FaultKind::Crash, FaultKind::Pause],
        message_kinds: Vec::new(),
        fault_phase_ms: PHASE.as_millis() as u64,
        max_corruptions_per_node: 0,
        max_drift_ppm: 0,
    }
}

impl Scenario for SelfTest {
    fn name(&self) -> &'static str {
        "selftest"
    }

    fn about(&self) -> &'static str {
        "testbed self-check: seeds ending in 3 panic in a node, 4 in the harness, 6 never end, 7 spin, 8 fail S1"
    }

    fn resolve(&self, spec: &RunSpec) -> RunSpec {
        RunSpec { schedule: Some(spec.schedule_for(&profile())), ..spec.clone() }
    }

    fn probes(&self) -> Vec<mqsim_core::probe::Probe> {
        Vec::new()
    }

    fn nodes(&self, _spec: &RunSpec) -> Vec<String> {
        profile().nodes
    }

    fn run(&self, spec: &RunSpec) -> Outcome {
        let spec = self.resolve(spec);
        let schedule = spec.schedule.clone().unwrap_or_default();
        let misbehaviour = spec.seed % 10;
        let (run_schedule, max_ticks) = (schedule.clone(), spec.config.ops_per_client.unwrap_or(u64::MAX));
        let ran = world::run(spec.seed, spec.bugs, |w| async move {
            for name in NODES {
                let world = w.clone();
                w.add_node(name, move |env| {
                    let world = world.clone();
                    async move {
                        for _ in 0..max_ticks {
                            let op = world.history.invoke(&env.name, Call::Tick);
                            env.sleep(Duration::from_millis(100)).await;
                            if env.name == NODES[1] && world.elapsed() > Duration::from_secs(5) {
                                match misbehaviour {
                                    3 => panic!("selftest: planted panic in {}", env.name),
                                    #[allow(clippy::empty_loop)]
                                    7 => loop {},
                                    _ => {}
                                }
                            }
                            world.history.ok(&env.name, op, Ret::Tick);
                        }
                    }
                });
            }
            w.spawn_nemesis(run_schedule);
            if misbehaviour == 6 {
                futures::future::pending::<()>().await;
            }
            w.sleep_until(END).await;
            Ran::of(&w)
        });
        if misbehaviour == 4 {
            panic!("selftest: planted panic in the harness");
        }
        let mut violations = Vec::new();
        if misbehaviour == 8 {
            let last_tick = ran.history.iter().filter_map(|r| match r.body {
                Body::Ok { id, .. } => Some(id),
                _ => None,
            });
            let last_tick = last_tick.max();
            let detail = "planted: the last tick is reported lost".to_string();
            violations.push(match last_tick {
                Some(op) => Violation::at("S1", op, detail),
                None => Violation::new("S1", detail),
            });
        }
        Outcome::new(violations, ran, schedule, END)
    }
}
