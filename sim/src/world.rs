//! The world of one run: madsim nodes with their disks and clocks, their
//! lifecycle (crash, restart, pause, resume), and the execution of a fault
//! schedule. Windowed faults are kept as a set in force; everything they
//! affect is recomputed from that set whenever it changes.

use crate::clock::SimClock;
use crate::disk::{DiskFaults, SimDisk};
use crate::history::{FaultRecord, History, Hit, NodeEvents};
use crate::nemesis::{Fault, FaultAction, Schedule};
use crate::net::{Block, Network, SimTransport};
use crate::rng_for;
use madsim::runtime::{Handle, Runtime};
use madsim::task::NodeId;
use madsim::time::Instant;
use mqsim_core::bugs::Bugs;
use mqsim_core::env::Env;
use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Up,
    Paused,
    Down,
}

struct Node {
    id: NodeId,
    ip: IpAddr,
    disk: Arc<SimDisk>,
    clock: Arc<SimClock>,
    incarnation: u64,
    status: Status,
}

pub struct World {
    pub seed: u64,
    pub bugs: Bugs,
    pub history: Arc<History>,
    pub network: Arc<Network>,
    start: Instant,
    handle: Handle,
    nodes: Mutex<BTreeMap<String, Node>>,
    /// Windowed faults in force, by action index.
    active: Mutex<BTreeMap<usize, Fault>>,
    /// Nodes the scenario itself took down; fault windows never bring them back.
    held_down: Mutex<BTreeSet<String>>,
    rng: Mutex<ChaCha8Rng>,
}

/// Simulated time after which a run counts as hung.
pub const TIME_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Runs `body` in a fresh simulation seeded with `seed` and returns its result.
pub fn run<T, F, Fut>(seed: u64, bugs: Bugs, body: F) -> T
where
    F: FnOnce(Arc<World>) -> Fut,
    Fut: Future<Output = T>,
{
    let mut runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    // A run that outlives every scenario's timeline is stuck: madsim panics.
    runtime.set_time_limit(TIME_LIMIT);
    runtime.block_on(async move { body(World::new(seed, bugs)).await })
}

impl World {
    fn new(seed: u64, bugs: Bugs) -> Arc<World> {
        let start = madsim::time::Instant::now();
        Arc::new(World {
            seed,
            bugs,
            history: Arc::new(History::new(start)),
            network: Arc::new(Network::new(rng_for(seed, "network"))),
            start,
            handle: Handle::current(),
            nodes: Mutex::default(),
            active: Mutex::default(),
            held_down: Mutex::default(),
            rng: Mutex::new(rng_for(seed, "world")),
        })
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Node>> {
        self.nodes.lock().expect("world nodes")
    }

    /// Adds a node that runs `main` with a fresh environment at every (re)start.
    pub fn add_node<F, Fut>(self: &Arc<Self>, name: &str, main: F)
    where
        F: Fn(Env) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let index = self.nodes().len() as u32 + 1;
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, (index >> 8) as u8, index as u8));
        self.network.register(name, ip);
        let disk = Arc::new(SimDisk::new(rng_for(self.seed, &format!("disk/{name}"))));
        let clock = Arc::new(SimClock::new(self.start));
        let (world, main, node_name) = (self.clone(), Arc::new(main), name.to_string());
        let handle = self
            .handle
            .create_node()
            .name(name)
            .ip(ip)
            .init(move || {
                let (world, main, name) = (world.clone(), main.clone(), node_name.clone());
                async move {
                    let env = world.env_for(&name).await;
                    main(env).await
                }
            })
            .build();
        let node = Node { id: handle.id(), ip, disk, clock, incarnation: 0, status: Status::Up };
        self.nodes().insert(name.to_string(), node);
    }

    async fn env_for(&self, name: &str) -> Env {
        let (ip, disk, clock, rng_seed) = {
            let mut nodes = self.nodes();
            let n = nodes.get_mut(name).expect("known node");
            n.incarnation += 1;
            let seed = rng_for(self.seed, &format!("node/{name}/{}", n.incarnation)).next_u64();
            (n.ip, n.disk.clone(), n.clock.clone(), seed)
        };
        let net = SimTransport::bind(name, ip, self.network.clone()).await;
        let events = NodeEvents { node: name.to_string(), history: self.history.clone() };
        Env::new(name.to_string(), Arc::new(net), disk, clock, Arc::new(events), self.bugs, rng_seed)
    }

    /// Simulated time since the run began.
    pub fn elapsed(&self) -> Duration {
        madsim::time::Instant::now().duration_since(self.start)
    }

    pub async fn sleep_until(&self, since_start: Duration) {
        madsim::time::sleep_until(self.start + since_start).await;
    }

    pub fn disk(&self, node: &str) -> Arc<SimDisk> {
        self.nodes().get(node).expect("known node").disk.clone()
    }

    pub fn clock(&self, node: &str) -> Arc<SimClock> {
        self.nodes().get(node).expect("known node").clock.clone()
    }

    pub fn is_up(&self, node: &str) -> bool {
        self.nodes().get(node).is_some_and(|n| n.status == Status::Up)
    }

    /// Power loss: tasks die, unsynced disk data is lost as the seed decides.
    /// The node stays down, whatever the fault schedule does, until [`World::restart`].
    pub fn crash(&self, node: &str) {
        self.held_down.lock().expect("held down").insert(node.to_string());
        self.set_status(node, Status::Down);
    }

    /// Starts a crashed node again from what its disk kept.
    pub fn restart(&self, node: &str) {
        self.held_down.lock().expect("held down").remove(node);
        self.set_status(node, Status::Up);
    }

    pub fn pause(&self, node: &str) {
        self.set_status(node, Status::Paused);
    }

    pub fn resume(&self, node: &str) {
        self.set_status(node, Status::Up);
    }

    fn set_status(&self, name: &str, want: Status) {
        let (id, was, disk) = {
            let mut nodes = self.nodes();
            let n = nodes.get_mut(name).expect("known node");
            let was = std::mem::replace(&mut n.status, want);
            (n.id, was, n.disk.clone())
        };
        if was == want {
            return;
        }
        if want == Status::Down {
            // madsim drops the node's tasks and paused work; the disk loses what was never synced.
            self.handle.kill(id);
            let lost = disk.crash();
            self.history.fault(FaultRecord::Crash { target: name.to_string(), lost, during_fsync_of: None });
            return;
        }
        if was == Status::Down {
            self.handle.restart(id);
        } else if was == Status::Paused {
            self.handle.resume(id);
        }
        if want == Status::Paused {
            self.handle.pause(id);
        }
    }

    /// Executes `schedule` in the background, from the run's start.
    pub fn spawn_nemesis(self: &Arc<Self>, schedule: Schedule) {
        let world = self.clone();
        madsim::task::spawn(async move {
            let mut steps: Vec<(u64, bool, usize)> = Vec::new();
            for (i, a) in schedule.actions.iter().enumerate() {
                steps.push((a.at_ms, true, i));
                if a.for_ms > 0 {
                    steps.push((a.at_ms.saturating_add(a.for_ms), false, i));
                }
            }
            // Ends before starts at the same instant; ties in schedule order.
            steps.sort_by_key(|&(t, start, i)| (t, start, i));
            for (t, start, i) in steps {
                world.sleep_until(Duration::from_millis(t)).await;
                let action = &schedule.actions[i];
                if start {
                    world.start_fault(i, action);
                } else {
                    world.end_fault(i, action);
                }
            }
        });
    }

    fn start_fault(&self, i: usize, action: &FaultAction) {
        let mut hit = None;
        match &action.fault {
            Fault::DiskCorrupt { node } => {
                let at = self.disk(node).corrupt_at_rest(&mut self.rng.lock().expect("world rng"));
                hit = at.map(|(file, offset)| Hit { file, offset });
            }
            Fault::ClockJump { node, ms } => self.clock(node).jump(*ms),
            fault => {
                self.active.lock().expect("faults").insert(i, fault.clone());
            }
        }
        self.history.fault(FaultRecord::Start { action: i, for_ms: action.for_ms, fault: action.fault.clone(), hit });
        self.refresh();
    }

    fn end_fault(&self, i: usize, action: &FaultAction) {
        self.active.lock().expect("faults").remove(&i);
        self.history.fault(FaultRecord::End { action: i, fault: action.fault.clone() });
        self.refresh();
    }

    /// Brings partitions, message rules, disk and clock faults and node
    /// states in line with the faults in force.
    fn refresh(&self) {
        let active: Vec<Fault> = self.active.lock().expect("faults").values().cloned().collect();
        let all: BTreeSet<String> = self.nodes().keys().cloned().collect();
        let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
        let one = |n: &String| BTreeSet::from([n.clone()]);
        let mut blocks = Vec::new();
        let mut rules = Vec::new();
        let mut disks: BTreeMap<&str, DiskFaults> = BTreeMap::new();
        let mut skew: BTreeMap<&str, i64> = BTreeMap::new();
        let mut drift: BTreeMap<&str, i64> = BTreeMap::new();
        let mut status: BTreeMap<&str, Status> = BTreeMap::new();
        for f in &active {
            match f {
                Fault::Partition { a, b } => {
                    blocks.push(Block { from: set(a), to: set(b) });
                    blocks.push(Block { from: set(b), to: set(a) });
                }
                Fault::OneWay { from, to } => blocks.push(Block { from: set(from), to: set(to) }),
                Fault::Isolate { node } => {
                    blocks.push(Block { from: one(node), to: all.clone() });
                    blocks.push(Block { from: all.clone(), to: one(node) });
                }
                Fault::Filter { rule } => rules.push(rule.clone()),
                Fault::DiskReadFlips { node, per_mille } => {
                    let d = disks.entry(node).or_default();
                    d.read_flip_per_mille = d.read_flip_per_mille.max(*per_mille);
                }
                Fault::DiskErrors { node, per_mille } => {
                    let d = disks.entry(node).or_default();
                    d.io_error_per_mille = d.io_error_per_mille.max(*per_mille);
                }
                Fault::SlowFsync { node, ms } => {
                    let d = disks.entry(node).or_default();
                    d.slow_fsync = d.slow_fsync.max(Duration::from_millis(*ms));
                }
                Fault::ClockSkew { node, ms } => *skew.entry(node).or_default() += ms,
                Fault::ClockDrift { node, ppm } => *drift.entry(node).or_default() += ppm,
                Fault::Crash { node } => {
                    status.insert(node, Status::Down);
                }
                Fault::Pause { node } => {
                    status.entry(node).or_insert(Status::Paused);
                }
                Fault::DiskCorrupt { .. } | Fault::ClockJump { .. } => {}
            }
        }
        let held_down = self.held_down.lock().expect("held down").clone();
        for name in &held_down {
            status.insert(name, Status::Down);
        }
        self.network.set_faults(blocks, rules);
        for name in &all {
            let (disk, clock) = (self.disk(name), self.clock(name));
            disk.set_faults(disks.remove(name.as_str()).unwrap_or_default());
            clock.set_skew(skew.get(name.as_str()).copied().unwrap_or(0));
            clock.set_drift(drift.get(name.as_str()).copied().unwrap_or(0));
            self.set_status(name, status.get(name.as_str()).copied().unwrap_or(Status::Up));
        }
    }
}
