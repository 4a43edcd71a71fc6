//! Ledger scenarios on BookKeeper-style storage.
//!
//! `ledger-fencing`: a writer adds continuously (pipelined) and rolls over to new
//! ledgers; a recoverer opens the writer's newest ledger with recovery every few
//! seconds, fencing it, while the nemesis partitions, pauses and crashes the
//! writer, the recoverer and bookies. After the faults the writer closes its
//! ledger, the recoverer closes every ledger left open, and a checker node reads
//! the final metadata; bookie contents come from their durable journals.
//!
//! `ledger-repair`: a writer writes and closes ledgers while one bookie is lost
//! for good, another is down for 20-40 s, and new bookies join; bookies run
//! the auditor and the replication worker, which must give every entry Qw
//! copies again on registered bookies once the faults stop.

mod checker;
mod workload;

use crate::kit::{Faults, Role, Run, Script, Topology};
use crate::{Config, Ran, Violation};
use mqsim_core::bugs::Bug;
use mqsim_core::env::Kind;
use mqsim_core::{auditor, bookie, meta};
use mqsim_sim::nemesis::Signal;
use mqsim_sim::net::{Effect, FilterRule};
use mqsim_sim::{Fault, FaultAction, FaultKind, Schedule, World};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use checker::{check, Final};

pub const SERVER: &str = "meta-0";
/// The node that reads the final state (the one node of role `checker`).
pub const CHECKER: &str = "checker-0";
pub const WRITER: &str = "writer-0";
pub const RECOVERER: &str = "recoverer-0";
const FAULT_PHASE: Duration = Duration::from_secs(40);

/// `ledger-fencing` after its fault phase (40 s by default): the writer stops
/// 10 s later, the recoverer closes what is left for 20 s more, the checker
/// reads at +32 s and the run ends at +40 s.
struct Timeline {
    writer_stop: Duration,
    recover_until: Duration,
    final_read: Duration,
    end: Duration,
}

impl Timeline {
    fn after(phase: Duration) -> Timeline {
        let at = |secs| phase + Duration::from_secs(secs);
        Timeline { writer_stop: at(10), recover_until: at(30), final_read: at(32), end: at(40) }
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// Ensemble shapes (E, Qw, Qa) a seed draws from.
pub const SHAPES: &[(usize, usize, usize)] = &[(3, 3, 2), (3, 2, 2), (5, 3, 2), (4, 4, 3)];

/// What one seed draws.
#[derive(Clone, Debug)]
pub struct Plan {
    pub shape: (usize, usize, usize),
    pub bookies: usize,
    /// How many adds the writer keeps in flight.
    pub window: usize,
}

impl Plan {
    fn draw(seed: u64) -> Plan {
        let mut rng = mqsim_sim::rng_for(seed, "ledger/plan");
        let shape = *SHAPES.choose(&mut rng).expect("shapes");
        Plan { shape, bookies: shape.0 + 2, window: rng.gen_range(1..=4) }
    }
}

/// The nodes of both ledger scenarios: the metadata service, bookies, the
/// writer and the recoverer from the start, then `joining` new bookies and
/// the checker.
fn topology(plan: &Plan, joining: usize) -> Topology {
    Topology::new(vec![
        Role::new("meta", 1).durable(),
        Role::new("bookie", plan.bookies).durable(),
        Role::new("bookie-new", joining).joining(),
        Role::new("writer", 1),
        Role::new("recoverer", 1),
        Role::new("checker", 1).joining(),
    ])
}

/// The kinds of message the nemesis's rules pick from: the bookies' and the metadata's.
fn message_kinds() -> Vec<Kind> {
    let meta_kinds =
        [meta::kind::GET, meta::kind::SET, meta::kind::CREATE, meta::kind::CHILDREN, meta::kind::HEARTBEAT];
    bookie::KINDS.iter().copied().chain(meta_kinds).collect()
}

fn faults() -> Faults {
    Faults {
        // Bookies keep one journal copy; at-rest damage is for the repair work to come.
        kinds: FaultKind::swarm().into_iter().filter(|k| *k != FaultKind::DiskCorrupt).collect(),
        message_kinds: message_kinds(),
        max_corruptions_per_node: 0,
        max_drift_ppm: 50_000,
    }
}

/// What each bookie's journal would hold after a crash now, straight from its disk.
fn durable_journals(w: &World, bookies: Vec<String>) -> BTreeMap<String, Vec<u8>> {
    bookies
        .into_iter()
        .map(|b| {
            let journal = w.disk(&b).durable_snapshot().remove(bookie::JOURNAL_FILE).unwrap_or_default();
            (b, journal)
        })
        .collect()
}

/// Adds the writer and the recoverer, which work until `stop` and `recover_until`.
fn add_clients(w: &Arc<World>, run: &Run<Plan>, stop: Duration, recover_until: Duration) {
    let (world, plan, max_ops) = (w.clone(), run.plan.clone(), run.max_ops());
    w.add_node(WRITER, move |env| workload::writer(env, world.clone(), plan.clone(), stop, max_ops));
    let world = w.clone();
    w.add_node(RECOVERER, move |env| workload::recoverer(env, world.clone(), stop, recover_until));
}

/// Adds the checker node, which reads every ledger through the protocol.
fn add_checker(w: &Arc<World>) {
    let world = w.clone();
    w.add_node(CHECKER, move |env| workload::final_reads(env, world.clone()));
}

const RECOVERER_SIGNALS: [(&str, Signal); 2] = [(RECOVERER, Signal::RecoverNow), (RECOVERER, Signal::FenceEarly)];

/// A lagging bookie, as one composite fault: the recovery's fence request to it
/// is lost while the writer's adds to it arrive late. Swarm draws rarely pair
/// these two rules, yet together they are how a bookie that never saw the
/// fence can later take an add (the window non-fencing recovery reads open).
fn lagging_bookie(run: &Run<Plan>) -> Vec<FaultAction> {
    let mut rng = mqsim_sim::rng_for(run.seed, "ledger/lagging-bookie");
    let phase = run.phase.as_millis() as u64;
    if !rng.gen_bool(0.5) {
        return Vec::new();
    }
    let bookie = run.topology.names("bookie").choose(&mut rng).cloned().expect("bookies");
    if phase < 6_000 {
        return Vec::new();
    }
    let at_ms = rng.gen_range(1_000..phase - 5_000);
    let for_ms = rng.gen_range(3_000..=15_000).min(phase - at_ms);
    let rule = |kind: Kind, from: Option<&str>, effect| Fault::Filter {
        rule: FilterRule {
            from: from.map(str::to_string),
            to: Some(bookie.clone()),
            kind: Some(kind),
            reply: Some(false),
            effect,
        },
    };
    vec![
        FaultAction { at_ms, for_ms, fault: rule(bookie::kind::FENCE, None, Effect::Drop { percent: 100 }) },
        FaultAction {
            at_ms,
            for_ms,
            fault: rule(bookie::kind::ADD, Some(WRITER), Effect::Delay { ms: rng.gen_range(100..900) }),
        },
    ]
}

/// Aimed workload faults, each drawn for half the seeds (swarm-style), and a
/// flaky restart for a quarter:
/// - a zombie writer: the writer freezes while the recoverer fences and
///   recovers its ledger at once; when it wakes it goes on adding;
/// - early fencing: every ledger created in the window is recovered as soon as
///   it appears, within its first entries (often before they reach every bookie).
fn aimed(run: &Run<Plan>) -> Vec<FaultAction> {
    let mut rng = mqsim_sim::rng_for(run.seed, "ledger/aimed");
    let phase = run.phase.as_millis() as u64;
    let mut actions = Vec::new();
    if phase < 6_000 {
        return actions;
    }
    if rng.gen_bool(0.5) {
        for _ in 0..rng.gen_range(1..=3) {
            let at_ms = rng.gen_range(1_000..phase - 4_000);
            let for_ms = rng.gen_range(1_500..=6_000).min(phase - at_ms);
            actions.push(FaultAction { at_ms, for_ms, fault: Fault::Pause { node: WRITER.into() } });
            let signal = Fault::Signal { node: RECOVERER.into(), signal: Signal::RecoverNow };
            actions.push(FaultAction { at_ms: at_ms + 100, for_ms: for_ms - 100, fault: signal });
        }
    }
    if rng.gen_bool(0.5) {
        for _ in 0..rng.gen_range(1..=2) {
            let at_ms = rng.gen_range(0..phase - 3_000);
            let for_ms = rng.gen_range(3_000..=12_000).min(phase - at_ms);
            let signal = Fault::Signal { node: RECOVERER.into(), signal: Signal::FenceEarly };
            actions.push(FaultAction { at_ms, for_ms, fault: signal });
        }
    }
    actions.extend(flaky_restart(run));
    actions
}

/// A bookie restarting on a flaky disk, for a quarter of the seeds: it crashes
/// and comes back while many reads of its disk return a flipped bit, so its
/// journal reads as damaged and it must look again (a flip on read is not
/// damage at rest) before it serves. Its own draws, so the others stay as they were.
fn flaky_restart(run: &Run<Plan>) -> Vec<FaultAction> {
    let mut rng = mqsim_sim::rng_for(run.seed, "ledger/flaky-restart");
    if !rng.gen_bool(0.25) {
        return Vec::new();
    }
    let node = run.topology.names("bookie").choose(&mut rng).cloned().expect("bookies");
    crate::kit::restart_on_flaky_disk(&mut rng, &node, run.phase, 300..=600, 3_000..=6_000)
}

pub struct LedgerFencing;

impl Script for LedgerFencing {
    type Plan = Plan;
    /// The bookies' durable journals.
    type Final = BTreeMap<String, Vec<u8>>;

    fn name(&self) -> &'static str {
        "ledger-fencing"
    }

    fn about(&self) -> &'static str {
        "a writer adds continuously while a recoverer fences and recovers its ledgers; bookies crash and restart"
    }

    fn default_phase(&self) -> Duration {
        FAULT_PHASE
    }

    fn plan(&self, seed: u64, _config: &mut Config) -> Plan {
        Plan::draw(seed)
    }

    fn topology(&self, plan: &Plan) -> Topology {
        topology(plan, 0)
    }

    fn faults(&self, _plan: &Plan) -> Faults {
        faults()
    }

    fn aimed(&self, run: &Run<Plan>) -> Vec<FaultAction> {
        let mut actions = lagging_bookie(run);
        actions.extend(aimed(run));
        actions
    }

    fn start(w: &Arc<World>, run: &Run<Plan>) {
        let t = Timeline::after(run.phase);
        w.add_node(SERVER, meta::serve);
        for b in run.topology.names("bookie") {
            w.add_node(&b, |env| bookie::serve(env, SERVER.to_string()));
        }
        add_clients(w, run, t.writer_stop, t.recover_until);
    }

    async fn drive(w: Arc<World>, run: Run<Plan>) -> Self::Final {
        let t = Timeline::after(run.phase);
        w.sleep_until(t.final_read).await;
        add_checker(&w);
        w.sleep_until(t.end).await;
        durable_journals(&w, run.topology.names("bookie"))
    }

    fn end(run: &Run<Plan>) -> Duration {
        Timeline::after(run.phase).end
    }

    fn check(run: &Run<Plan>, ran: &Ran, _schedule: &Schedule, journals: Self::Final) -> Vec<Violation> {
        let fin = Final::from_journals(&journals, None, false, micros(run.phase), micros(Self::end(run)));
        check(&ran.history, &fin)
    }

    fn probes(&self) -> Vec<mqsim_core::probe::Probe> {
        crate::probes_of(&["meta", "wal", "rpc", "bookie", "writer", "recovery"])
    }

    fn signals(&self) -> Vec<(&'static str, Signal)> {
        RECOVERER_SIGNALS.to_vec()
    }

    fn bugs(&self) -> Vec<Bug> {
        vec![
            Bug::BookieAckBeforeFsync,
            Bug::RecoveryReadsNoFence,
            Bug::RecoveryStartAtLac,
            Bug::WriterIgnoresFenced,
            Bug::FenceOneResponse,
        ]
    }
}

/// After the fault phase the writer stops (+5 s) and the recoverer closes what
/// is left (+20 s); the repair itself needs the fixed time below, whatever the phase.
const REPAIR_WRITERS_STOP_AFTER: Duration = Duration::from_secs(5);
const REPAIR_RECOVER_AFTER: Duration = Duration::from_secs(20);
const REPAIR_FINAL_READ: Duration = Duration::from_secs(170);
const REPAIR_END: Duration = Duration::from_secs(180);
/// When the new bookies join.
const JOINING: [Duration; 2] = [Duration::from_secs(12), Duration::from_secs(28)];

pub struct LedgerRepair;

/// What `ledger-repair` draws: the ledger plan, and the bookies it loses.
#[derive(Clone, Debug)]
pub struct RepairPlan {
    ledger: Plan,
    /// One bookie lost for good, another for a long while, and when.
    lost: Vec<(String, Duration)>,
    /// The bookie that returns, and when.
    back: (String, Duration),
}

impl RepairPlan {
    fn draw(seed: u64) -> RepairPlan {
        let ledger = Plan::draw(seed);
        let mut rng = mqsim_sim::rng_for(seed, "ledger-repair/losses");
        // Storage survives Qw-1 losses at once, not more.
        let names: Vec<String> = topology(&ledger, 0).names("bookie").choose_multiple(&mut rng, 2).cloned().collect();
        let at = |rng: &mut rand_chacha::ChaCha8Rng| Duration::from_millis(rng.gen_range(5_000..35_000));
        let lost_at = at(&mut rng);
        let away_at = at(&mut rng);
        let away_for = Duration::from_millis(rng.gen_range(20_000..40_000));
        let lost = vec![(names[0].clone(), lost_at), (names[1].clone(), away_at)];
        let back = (names[1].clone(), away_at + away_for);
        RepairPlan { ledger, lost, back }
    }
}

enum Change {
    Crash,
    Restart,
    Join,
}

/// A bookie node with autorecovery: the bookie, plus the auditor and worker.
async fn bookie_with_autorecovery(env: mqsim_core::env::Env) {
    madsim::task::spawn(auditor::run(env.clone(), SERVER.to_string()));
    bookie::serve(env, SERVER.to_string()).await
}

impl Script for LedgerRepair {
    type Plan = RepairPlan;
    /// The bookies' durable journals.
    type Final = BTreeMap<String, Vec<u8>>;

    fn name(&self) -> &'static str {
        "ledger-repair"
    }

    fn about(&self) -> &'static str {
        "bookies are lost for good and new ones join while ledgers are written; the auditor must restore Qw copies"
    }

    fn default_phase(&self) -> Duration {
        FAULT_PHASE
    }

    fn plan(&self, seed: u64, _config: &mut Config) -> RepairPlan {
        RepairPlan::draw(seed)
    }

    fn topology(&self, plan: &RepairPlan) -> Topology {
        topology(&plan.ledger, JOINING.len())
    }

    fn faults(&self, _plan: &RepairPlan) -> Faults {
        faults()
    }

    /// The nemesis spares the lost bookies: their loss is the scenario's.
    fn spared(&self, plan: &RepairPlan) -> Vec<String> {
        plan.lost.iter().map(|(b, _)| b.clone()).collect()
    }

    fn aimed(&self, run: &Run<RepairPlan>) -> Vec<FaultAction> {
        let run = Run { plan: run.plan.ledger.clone(), ..run_of_ledger(run) };
        aimed(&run)
    }

    fn start(w: &Arc<World>, run: &Run<RepairPlan>) {
        w.add_node(SERVER, meta::serve);
        for b in run.topology.names("bookie") {
            w.add_node(&b, bookie_with_autorecovery);
        }
        let stop = run.phase + REPAIR_WRITERS_STOP_AFTER;
        add_clients(w, &run_of_ledger(run), stop, run.phase + REPAIR_RECOVER_AFTER);
    }

    async fn drive(w: Arc<World>, run: Run<RepairPlan>) -> Self::Final {
        let RepairPlan { lost, back, .. } = &run.plan;
        // Losses, returns and arrivals, in time order.
        let mut changes: Vec<(Duration, String, Change)> =
            lost.iter().map(|(b, t)| (*t, b.clone(), Change::Crash)).collect();
        changes.push((back.1, back.0.clone(), Change::Restart));
        changes.extend(JOINING.iter().zip(run.topology.names("bookie-new")).map(|(t, b)| (*t, b, Change::Join)));
        changes.sort_by_key(|c| c.0);
        for (t, b, change) in changes {
            w.sleep_until(t).await;
            match change {
                Change::Crash => w.crash(&b),
                Change::Restart => w.restart(&b),
                Change::Join => w.add_node(&b, bookie_with_autorecovery),
            }
        }
        w.sleep_until(REPAIR_FINAL_READ).await;
        add_checker(&w);
        w.sleep_until(REPAIR_END).await;
        let mut names = run.topology.names("bookie");
        names.extend(run.topology.names("bookie-new"));
        durable_journals(&w, names)
    }

    fn end(_run: &Run<RepairPlan>) -> Duration {
        REPAIR_END
    }

    fn probes(&self) -> Vec<mqsim_core::probe::Probe> {
        crate::probes_of(&["meta", "wal", "rpc", "bookie", "writer", "recovery", "auditor", "replication"])
    }

    fn check(run: &Run<RepairPlan>, ran: &Ran, _schedule: &Schedule, journals: Self::Final) -> Vec<Violation> {
        let registered = checker::registered_at_end(&ran.history);
        let fin = Final::from_journals(&journals, Some(registered), true, micros(run.phase), micros(REPAIR_END));
        check(&ran.history, &fin)
    }

    fn signals(&self) -> Vec<(&'static str, Signal)> {
        RECOVERER_SIGNALS.to_vec()
    }

    fn bugs(&self) -> Vec<Bug> {
        vec![Bug::AuditorMarksBeforeCopy]
    }
}

/// A repair run seen as a ledger run (the writer's and recoverer's view).
fn run_of_ledger(run: &Run<RepairPlan>) -> Run<Plan> {
    Run {
        seed: run.seed,
        plan: run.plan.ledger.clone(),
        topology: run.topology.clone(),
        config: run.config.clone(),
        phase: run.phase,
    }
}
