//! The nemesis: a fault schedule drawn from the seed with swarm testing (each
//! seed picks which fault kinds are on and how often they strike). The schedule
//! is an explicit list of timed actions, so it can be printed, saved, replayed
//! and shrunk; the world executes it.

use crate::net::{Effect, FilterRule};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One fault. Windowed faults hold for the action's `for_ms`; `DiskCorrupt` and
/// `ClockJump` are instantaneous.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Power loss; the node restarts from its disk when the window ends.
    Crash {
        node: String,
    },
    /// Power loss aimed at the node's next fsync in the window: after the
    /// write, before the sync returns. The node restarts when the window ends.
    CrashAtFsync {
        node: String,
    },
    /// While the window holds, the named node's workload takes an aimed step
    /// (see [`Signal`]), for windows the other faults reach only by chance.
    Signal {
        node: String,
        signal: Signal,
    },
    /// The node freezes; it resumes when the window ends.
    Pause {
        node: String,
    },
    /// Symmetric partition between two sets of nodes.
    Partition {
        a: Vec<String>,
        b: Vec<String>,
    },
    /// Messages from `from` to `to` are lost; the other direction works.
    OneWay {
        from: Vec<String>,
        to: Vec<String>,
    },
    /// The node can neither send nor receive.
    Isolate {
        node: String,
    },
    /// A per-kind message rule: drop, delay, duplicate or reorder.
    Filter {
        rule: FilterRule,
    },
    /// One bit flips at rest somewhere on the node's disk.
    DiskCorrupt {
        node: String,
    },
    /// Reads return a flipped bit with this chance (thousandths).
    DiskReadFlips {
        node: String,
        per_mille: u32,
    },
    /// Disk operations fail with this chance (thousandths).
    DiskErrors {
        node: String,
        per_mille: u32,
    },
    SlowFsync {
        node: String,
        ms: u64,
    },
    ClockSkew {
        node: String,
        ms: i64,
    },
    ClockDrift {
        node: String,
        ppm: i64,
    },
    ClockJump {
        node: String,
        ms: i64,
    },
}

impl Fault {
    /// Whether the fault holds for a window (the others happen at an instant).
    pub fn windowed(&self) -> bool {
        !matches!(self, Fault::DiskCorrupt { .. } | Fault::ClockJump { .. })
    }

    /// The nodes the fault names.
    pub fn nodes(&self) -> Vec<&str> {
        match self {
            Fault::Crash { node }
            | Fault::CrashAtFsync { node }
            | Fault::Signal { node, .. }
            | Fault::Pause { node }
            | Fault::Isolate { node }
            | Fault::DiskCorrupt { node }
            | Fault::DiskReadFlips { node, .. }
            | Fault::DiskErrors { node, .. }
            | Fault::SlowFsync { node, .. }
            | Fault::ClockSkew { node, .. }
            | Fault::ClockDrift { node, .. }
            | Fault::ClockJump { node, .. } => vec![node.as_str()],
            Fault::Partition { a, b } => a.iter().chain(b).map(String::as_str).collect(),
            Fault::OneWay { from, to } => from.iter().chain(to).map(String::as_str).collect(),
            Fault::Filter { rule } => rule.from.iter().chain(&rule.to).map(String::as_str).collect(),
        }
    }
}

/// An aimed step a scenario's workload takes when signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    /// Recover the writer's newest open ledger now (with the writer paused:
    /// a zombie writer that wakes up after its ledger was fenced).
    RecoverNow,
    /// Recover every new ledger as soon as it appears, within its first entries.
    FenceEarly,
}

/// A fault and its window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultAction {
    /// Start, in simulated milliseconds since the run began.
    pub at_ms: u64,
    /// How long it holds (0 for instantaneous faults).
    pub for_ms: u64,
    #[serde(flatten)]
    pub fault: Fault,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub actions: Vec<FaultAction>,
}

/// The kinds of fault a profile can enable, as users name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    Crash,
    CrashAtFsync,
    Pause,
    Partition,
    OneWay,
    Isolate,
    Drop,
    Delay,
    Duplicate,
    Reorder,
    DiskCorrupt,
    DiskReadFlips,
    DiskErrors,
    SlowFsync,
    ClockSkew,
    ClockDrift,
    ClockJump,
    Signal,
}

impl FaultKind {
    pub const ALL: &'static [FaultKind] = &[
        FaultKind::Crash,
        FaultKind::CrashAtFsync,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::Isolate,
        FaultKind::Drop,
        FaultKind::Delay,
        FaultKind::Duplicate,
        FaultKind::Reorder,
        FaultKind::DiskCorrupt,
        FaultKind::DiskReadFlips,
        FaultKind::DiskErrors,
        FaultKind::SlowFsync,
        FaultKind::ClockSkew,
        FaultKind::ClockDrift,
        FaultKind::ClockJump,
        FaultKind::Signal,
    ];

    /// The kinds swarm testing draws on its own; signals are aimed by scenarios.
    pub fn swarm() -> Vec<FaultKind> {
        FaultKind::ALL.iter().copied().filter(|k| *k != FaultKind::Signal).collect()
    }

    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }

    pub fn describe(self) -> &'static str {
        match self {
            FaultKind::Crash => "power loss of a node, restart from its disk after the window",
            FaultKind::CrashAtFsync => "power loss at a node's next fsync (after the write, before the sync returns)",
            FaultKind::Signal => "an aimed workload step: recover now (zombie writer), fence new ledgers early",
            FaultKind::Pause => "freeze a node, resume after the window",
            FaultKind::Partition => "symmetric partition between two sets of nodes",
            FaultKind::OneWay => "one-way partition: messages one way are lost",
            FaultKind::Isolate => "cut one node off from everyone",
            FaultKind::Drop => "drop a share of messages matching (from, to, kind)",
            FaultKind::Delay => "delay messages matching (from, to, kind)",
            FaultKind::Duplicate => "duplicate a share of messages matching (from, to, kind)",
            FaultKind::Reorder => "random extra delay per message, so they overtake each other",
            FaultKind::DiskCorrupt => "flip one bit at rest on a node's disk",
            FaultKind::DiskReadFlips => "reads return a flipped bit with some chance",
            FaultKind::DiskErrors => "disk operations fail with some chance",
            FaultKind::SlowFsync => "fsync takes much longer",
            FaultKind::ClockSkew => "offset a node's wall clock",
            FaultKind::ClockDrift => "a node's clocks run fast or slow",
            FaultKind::ClockJump => "a node's wall clock steps forward or back",
        }
    }

    pub fn of(fault: &Fault) -> FaultKind {
        match fault {
            Fault::Crash { .. } => FaultKind::Crash,
            Fault::CrashAtFsync { .. } => FaultKind::CrashAtFsync,
            Fault::Signal { .. } => FaultKind::Signal,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::Partition { .. } => FaultKind::Partition,
            Fault::OneWay { .. } => FaultKind::OneWay,
            Fault::Isolate { .. } => FaultKind::Isolate,
            Fault::Filter { rule } => match rule.effect {
                Effect::Drop { .. } => FaultKind::Drop,
                Effect::Delay { .. } => FaultKind::Delay,
                Effect::Duplicate { .. } => FaultKind::Duplicate,
                Effect::Reorder { .. } => FaultKind::Reorder,
            },
            Fault::DiskCorrupt { .. } => FaultKind::DiskCorrupt,
            Fault::DiskReadFlips { .. } => FaultKind::DiskReadFlips,
            Fault::DiskErrors { .. } => FaultKind::DiskErrors,
            Fault::SlowFsync { .. } => FaultKind::SlowFsync,
            Fault::ClockSkew { .. } => FaultKind::ClockSkew,
            Fault::ClockDrift { .. } => FaultKind::ClockDrift,
            Fault::ClockJump { .. } => FaultKind::ClockJump,
        }
    }
}

/// What a scenario allows the nemesis to do.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Every node, for partitions.
    pub nodes: Vec<String>,
    /// Nodes that may crash, pause or suffer clock faults.
    pub targets: Vec<String>,
    /// Nodes whose disks hold state: disk faults and crashes aimed at an fsync
    /// strike these only (elsewhere they would do nothing).
    pub durable: Vec<String>,
    pub kinds: Vec<FaultKind>,
    /// Message kinds that per-kind rules pick from.
    pub message_kinds: Vec<mqsim_core::env::Kind>,
    /// Faults start and end within this many milliseconds.
    pub fault_phase_ms: u64,
    /// At most this many at-rest corruptions per node (a storage layer with
    /// N copies survives N-1).
    pub max_corruptions_per_node: u32,
    /// Largest clock drift, in parts per million.
    pub max_drift_ppm: i64,
}

impl Schedule {
    /// Draws a schedule: first which kinds are on and how often faults come
    /// (some seeds are calm, some storms), then the faults themselves.
    pub fn generate(profile: &Profile, rng: &mut ChaCha8Rng) -> Schedule {
        let kinds: Vec<FaultKind> = profile.kinds.iter().copied().filter(|_| rng.gen_bool(0.5)).collect();
        let mut actions = Vec::new();
        if kinds.is_empty() {
            return Schedule { actions };
        }
        let mean_gap_ms = *[800u64, 2_500, 6_000].choose(rng).expect("non-empty");
        let mut corruptions = std::collections::BTreeMap::<String, u32>::new();
        let mut t = 0u64;
        loop {
            t += rng.gen_range(mean_gap_ms / 4..=mean_gap_ms * 2);
            if t >= profile.fault_phase_ms {
                break;
            }
            let kind = *kinds.choose(rng).expect("non-empty");
            let Some(fault) = draw(profile, kind, rng) else { continue };
            if let Fault::DiskCorrupt { node } = &fault {
                let n = corruptions.entry(node.clone()).or_default();
                if *n >= profile.max_corruptions_per_node {
                    continue;
                }
                *n += 1;
            }
            let for_ms = if fault.windowed() { rng.gen_range(300..=12_000).min(profile.fault_phase_ms - t) } else { 0 };
            actions.push(FaultAction { at_ms: t, for_ms, fault });
        }
        Schedule { actions }
    }

    /// Counts of actions per fault kind.
    pub fn kinds(&self) -> std::collections::BTreeMap<String, u64> {
        let mut m = std::collections::BTreeMap::new();
        for a in &self.actions {
            *m.entry(FaultKind::of(&a.fault).name()).or_default() += 1;
        }
        m
    }
}

fn draw(p: &Profile, kind: FaultKind, rng: &mut ChaCha8Rng) -> Option<Fault> {
    let on_disk = matches!(
        kind,
        FaultKind::CrashAtFsync
            | FaultKind::DiskCorrupt
            | FaultKind::DiskReadFlips
            | FaultKind::DiskErrors
            | FaultKind::SlowFsync
    );
    let node = if on_disk { p.durable.choose(rng)?.clone() } else { p.targets.choose(rng)?.clone() };
    let any = |rng: &mut ChaCha8Rng| p.nodes.choose(rng).cloned();
    Some(match kind {
        FaultKind::Crash => Fault::Crash { node },
        FaultKind::CrashAtFsync => Fault::CrashAtFsync { node },
        FaultKind::Signal => return None,
        FaultKind::Pause => Fault::Pause { node },
        FaultKind::Isolate => Fault::Isolate { node },
        FaultKind::Partition | FaultKind::OneWay => {
            let mut nodes = p.nodes.clone();
            nodes.shuffle(rng);
            let cut = rng.gen_range(1..nodes.len().max(2));
            let (a, b) = nodes.split_at(cut.min(nodes.len()));
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            a.sort();
            b.sort();
            if kind == FaultKind::Partition {
                Fault::Partition { a, b }
            } else {
                Fault::OneWay { from: a, to: b }
            }
        }
        FaultKind::Drop | FaultKind::Delay | FaultKind::Duplicate | FaultKind::Reorder => {
            let effect = match kind {
                FaultKind::Drop => Effect::Drop { percent: rng.gen_range(10..=100) },
                FaultKind::Delay => Effect::Delay { ms: rng.gen_range(20..=2_000) },
                FaultKind::Duplicate => Effect::Duplicate { percent: rng.gen_range(10..=100) },
                _ => Effect::Reorder { max_ms: rng.gen_range(10..=500) },
            };
            let from = rng.gen_bool(0.5).then(|| any(rng)).flatten();
            let to = rng.gen_bool(0.5).then(|| any(rng)).flatten();
            let kind = rng.gen_bool(0.7).then(|| p.message_kinds.choose(rng).copied()).flatten();
            let reply = rng.gen_bool(0.3).then(|| rng.gen_bool(0.5));
            Fault::Filter { rule: FilterRule { from, to, kind, reply, effect } }
        }
        FaultKind::DiskCorrupt => Fault::DiskCorrupt { node },
        FaultKind::DiskReadFlips => Fault::DiskReadFlips { node, per_mille: rng.gen_range(5..=200) },
        FaultKind::DiskErrors => Fault::DiskErrors { node, per_mille: rng.gen_range(5..=100) },
        FaultKind::SlowFsync => Fault::SlowFsync { node, ms: rng.gen_range(20..=800) },
        FaultKind::ClockSkew => Fault::ClockSkew { node, ms: rng.gen_range(-60_000..=60_000) },
        FaultKind::ClockDrift => {
            let ppm = rng.gen_range(1_000..=p.max_drift_ppm.max(1_000));
            Fault::ClockDrift { node, ppm: if rng.gen_bool(0.5) { ppm } else { -ppm } }
        }
        FaultKind::ClockJump => Fault::ClockJump { node, ms: rng.gen_range(-30_000..=30_000) },
    })
}

impl fmt::Display for FaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |ms: u64| format!("{}.{:03}s", ms / 1000, ms % 1000);
        let what = serde_json::to_string(&self.fault).unwrap_or_default();
        if self.for_ms == 0 {
            write!(f, "at {:>9}              {what}", secs(self.at_ms))
        } else {
            write!(f, "at {:>9} for {:>8}  {what}", secs(self.at_ms), secs(self.for_ms))
        }
    }
}
