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

use crate::kit::{Faults, Role, Run, Script, Topology};
use crate::{Config, Ran, Violation};
use mqsim_sim::history::{Body, Call, Ret};
use mqsim_sim::{FaultKind, Schedule, World};
use std::sync::Arc;
use std::time::Duration;

const PHASE: Duration = Duration::from_secs(10);
/// The run ends this long after the fault phase.
const AFTER: Duration = Duration::from_secs(5);

pub struct SelfTest;

/// What a seed does wrong on purpose: its last digit.
#[derive(Clone, Debug)]
pub struct Misbehaviour(u64);

impl Script for SelfTest {
    type Plan = Misbehaviour;
    type Final = ();

    fn name(&self) -> &'static str {
        "selftest"
    }

    fn about(&self) -> &'static str {
        "testbed self-check: seeds ending in 3 panic in a node, 4 in the harness, 6 never end, 7 spin, 8 fail S1"
    }

    fn default_phase(&self) -> Duration {
        PHASE
    }

    fn plan(&self, seed: u64, _config: &mut Config) -> Misbehaviour {
        Misbehaviour(seed % 10)
    }

    fn topology(&self, _plan: &Misbehaviour) -> Topology {
        Topology::new(vec![Role::new("ticker", 2)])
    }

    fn faults(&self, _plan: &Misbehaviour) -> Faults {
        Faults {
            kinds: vec![FaultKind::Crash, FaultKind::Pause],
            message_kinds: Vec::new(),
            max_corruptions_per_node: 0,
            max_drift_ppm: 0,
        }
    }

    fn start(w: &Arc<World>, run: &Run<Misbehaviour>) {
        let (misbehaviour, max_ticks) = (run.plan.0, run.max_ops().unwrap_or(u64::MAX));
        let tickers = run.topology.names("ticker");
        let misbehaving = tickers[1].clone();
        for name in tickers {
            let (world, misbehaving) = (w.clone(), misbehaving.clone());
            w.add_node(&name, move |env| {
                let (world, misbehaving) = (world.clone(), misbehaving.clone());
                async move {
                    for _ in 0..max_ticks {
                        let op = world.history.invoke(&env.name, Call::Tick);
                        env.sleep(Duration::from_millis(100)).await;
                        if env.name == misbehaving && world.elapsed() > Duration::from_secs(5) {
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
    }

    async fn drive(w: Arc<World>, run: Run<Misbehaviour>) {
        if run.plan.0 == 6 {
            futures::future::pending::<()>().await;
        }
        w.sleep_until(Self::end(&run)).await;
    }

    fn end(run: &Run<Misbehaviour>) -> Duration {
        run.phase + AFTER
    }

    fn check(run: &Run<Misbehaviour>, ran: &Ran, _schedule: &Schedule, _fin: ()) -> Vec<Violation> {
        match run.plan.0 {
            4 => panic!("selftest: planted panic in the harness"),
            8 => {
                let last_tick = ran.history.iter().filter_map(|r| match r.body {
                    Body::Ok { id, .. } => Some(id),
                    _ => None,
                });
                let detail = "planted: the last tick is reported lost".to_string();
                vec![match last_tick.max() {
                    Some(op) => Violation::at("S1", op, detail),
                    None => Violation::new("S1", detail),
                }]
            }
            _ => Vec::new(),
        }
    }

    fn probes(&self) -> Vec<mqsim_core::probe::Probe> {
        Vec::new()
    }
}
