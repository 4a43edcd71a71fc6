//! The world of one run: madsim nodes with their disks and clocks, their
//! lifecycle (crash, restart, pause, resume), and the execution of a fault
//! schedule. Windowed faults are kept as a set in force; everything they
//! affect is recomputed from that set whenever it changes.

use crate::clock::SimClock;
use crate::disk::{DiskFaults, SimDisk};
use crate::history::{FaultRecord, History, Hit, NodeEvents};
use crate::nemesis::{Fault, FaultAction, Schedule, Signal};
use crate::net::{Block, Network, SimTransport};
use crate::rng_for;
use futures::channel::mpsc;
use futures::StreamExt;
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
    /// Aimed crashes that fired: action index -> the file whose sync it cut short.
    fired: Mutex<BTreeMap<usize, String>>,
    /// Aimed crashes reported by disks, for the aimer task to carry out.
    aimed: mpsc::UnboundedSender<(String, usize, String)>,
    /// Workload signals in force, per node, with their action index.
    signals: Mutex<BTreeMap<String, Vec<(usize, Signal)>>>,
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
        let (aimed, mut crashes) = mpsc::unbounded();
        let world = Arc::new(World {
            seed,
            bugs,
            history: Arc::new(History::new(start)),
            network: Arc::new(Network::new(seed)),
            start,
            handle: Handle::current(),
            nodes: Mutex::default(),
            active: Mutex::default(),
            held_down: Mutex::default(),
            fired: Mutex::default(),
            aimed,
            signals: Mutex::default(),
            rng: Mutex::new(rng_for(seed, "world")),
        });
        // Carries out crashes aimed at an fsync. A disk reports them from
        // inside its node's task, which must not kill itself mid-poll.
        let weak = Arc::downgrade(&world);
        madsim::task::spawn(async move {
            while let Some((node, action, file)) = crashes.next().await {
                let Some(world) = weak.upgrade() else { return };
                world.crash_at_fsync(&node, action, file);
            }
        });
        world
    }

    /// Keeps a trace of every message from now on (see [`crate::trace`]).
    pub fn trace_messages(&self) {
        self.network.trace(self.start);
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
        let (aimed, node) = (self.aimed.clone(), name.to_string());
        let on_aimed_crash = Box::new(move |action, file| {
            let _ = aimed.unbounded_send((node.clone(), action, file));
        });
        let disk = Arc::new(SimDisk::new(rng_for(self.seed, &format!("disk/{name}")), on_aimed_crash));
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

    /// What the run did so far: messages, bytes, syncs.
    pub fn counters(&self) -> crate::Counters {
        let net = self.network.stats();
        let mut c = crate::Counters {
            messages_sent: net.sent,
            bytes_sent: net.bytes,
            messages_delivered: net.delivered,
            messages_dropped: net.dropped + net.blocked,
            messages_duplicated: net.duplicated,
            ..Default::default()
        };
        for node in self.nodes().values() {
            let (fsyncs, bytes) = node.disk.work();
            c.fsyncs += fsyncs;
            c.disk_bytes += bytes;
        }
        c
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

    /// The workload signals in force for `node`, with the index of their action.
    pub fn signals(&self, node: &str) -> Vec<(usize, Signal)> {
        self.signals.lock().expect("signals").get(node).cloned().unwrap_or_default()
    }

    /// A sync of `file` on `node` met the crash action `action` aims at it: the
    /// node loses power now and stays down until the window ends (or comes
    /// back at once if the window is already over: its sync never returns).
    fn crash_at_fsync(&self, node: &str, action: usize, file: String) {
        if self.fired.lock().expect("fired").contains_key(&action) {
            return;
        }
        self.fired.lock().expect("fired").insert(action, file.clone());
        self.kill(node, Some(file));
        // Down while the window holds; back at once if it is already over.
        self.refresh();
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
            self.power_off(name, id, &disk, None);
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

    /// Takes `name` down now (an aimed crash), recording what its disk lost.
    fn kill(&self, name: &str, during_fsync_of: Option<String>) {
        let (id, disk) = {
            let mut nodes = self.nodes();
            let n = nodes.get_mut(name).expect("known node");
            if n.status == Status::Down {
                return;
            }
            n.status = Status::Down;
            (n.id, n.disk.clone())
        };
        self.power_off(name, id, &disk, during_fsync_of);
    }

    /// madsim drops the node's tasks and paused work; the disk loses what was never synced.
    fn power_off(&self, name: &str, id: NodeId, disk: &SimDisk, during_fsync_of: Option<String>) {
        self.handle.kill(id);
        let lost = disk.crash();
        self.history.fault(FaultRecord::Crash { target: name.to_string(), lost, during_fsync_of });
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
        self.fired.lock().expect("fired").remove(&i);
        self.history.fault(FaultRecord::End { action: i, fault: action.fault.clone() });
        self.refresh();
    }

    /// Brings partitions, message rules, disk and clock faults and node
    /// states in line with the faults in force.
    fn refresh(&self) {
        let active: Vec<(usize, Fault)> = self.active.lock().expect("faults").clone().into_iter().collect();
        let fired = self.fired.lock().expect("fired").clone();
        let mut signals: BTreeMap<String, Vec<(usize, Signal)>> = BTreeMap::new();
        let all: BTreeSet<String> = self.nodes().keys().cloned().collect();
        let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
        let one = |n: &String| BTreeSet::from([n.clone()]);
        let mut blocks = Vec::new();
        let mut rules = Vec::new();
        let mut disks: BTreeMap<&str, DiskFaults> = BTreeMap::new();
        let mut skew: BTreeMap<&str, i64> = BTreeMap::new();
        let mut drift: BTreeMap<&str, i64> = BTreeMap::new();
        let mut status: BTreeMap<&str, Status> = BTreeMap::new();
        for (i, f) in &active {
            match f {
                Fault::Partition { a, b } => {
                    blocks.push(Block { from: set(a), to: set(b), action: *i });
                    blocks.push(Block { from: set(b), to: set(a), action: *i });
                }
                Fault::OneWay { from, to } => blocks.push(Block { from: set(from), to: set(to), action: *i }),
                Fault::Isolate { node } => {
                    blocks.push(Block { from: one(node), to: all.clone(), action: *i });
                    blocks.push(Block { from: all.clone(), to: one(node), action: *i });
                }
                Fault::Filter { rule } => rules.push((*i, rule.clone())),
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
                Fault::CrashAtFsync { node } if fired.contains_key(i) => {
                    status.insert(node, Status::Down);
                }
                Fault::CrashAtFsync { node } => disks.entry(node).or_default().crash_at_fsync = Some(*i),
                Fault::Signal { node, signal } => signals.entry(node.clone()).or_default().push((*i, *signal)),
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
        *self.signals.lock().expect("signals") = signals;
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
