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

use crate::{Config, Outcome, Ran, RunSpec, Scenario};
use mqsim_core::bugs::Bug;
use mqsim_core::env::Kind;
use mqsim_core::{auditor, bookie, meta};
use mqsim_sim::nemesis::Profile;
use mqsim_sim::nemesis::Signal;
use mqsim_sim::net::{Effect, FilterRule};
use mqsim_sim::{world, Fault, FaultAction, FaultKind, Schedule};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;
use std::time::Duration;

pub use checker::{check, Final};

pub const SERVER: &str = "meta-0";
pub const CHECKER: &str = "checker";
pub const WRITER: &str = "writer-0";
pub const RECOVERER: &str = "recoverer-0";
const FAULT_PHASE: Duration = Duration::from_secs(40);

/// `ledger-fencing` after its fault phase (40 s by default): the writer stops
/// 10 s later, the recoverer closes what is left for 20 s more, the checker
/// reads at +32 s and the run ends at +40 s.
struct Timeline {
    /// When the faults stop.
    calm: Duration,
    writer_stop: Duration,
    recover_until: Duration,
    final_read: Duration,
    end: Duration,
}

impl Timeline {
    fn after(phase: Duration) -> Timeline {
        let at = |secs| phase + Duration::from_secs(secs);
        Timeline { calm: phase, writer_stop: at(10), recover_until: at(30), final_read: at(32), end: at(40) }
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// The knobs both ledger scenarios have: the fault phase and the writer's operation budget.
fn resolve_ledger(spec: &RunSpec, schedule: Schedule) -> RunSpec {
    let config = Config { phase_ms: Some(spec.phase(FAULT_PHASE).as_millis() as u64), ..spec.config.clone() };
    RunSpec { config, schedule: Some(schedule), ..spec.clone() }
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

    fn bookie_names(&self) -> Vec<String> {
        (0..self.bookies).map(|i| format!("bookie-{i}")).collect()
    }
}

/// The kinds of message the nemesis's rules pick from: the bookies' and the metadata's.
fn message_kinds() -> Vec<Kind> {
    let meta_kinds =
        [meta::kind::GET, meta::kind::SET, meta::kind::CREATE, meta::kind::CHILDREN, meta::kind::HEARTBEAT];
    bookie::KINDS.iter().copied().chain(meta_kinds).collect()
}

fn profile(plan: &Plan) -> Profile {
    let mut targets = plan.bookie_names();
    targets.extend([WRITER.to_string(), RECOVERER.to_string(), SERVER.to_string()]);
    let mut durable = plan.bookie_names();
    durable.push(SERVER.to_string());
    Profile {
        nodes: targets.clone(),
        targets,
        durable,
        // Bookies keep one journal copy; at-rest damage is for the repair work to come.
        kinds: FaultKind::swarm().into_iter().filter(|k| *k != FaultKind::DiskCorrupt).collect(),
        message_kinds: message_kinds(),
        fault_phase_ms: FAULT_PHASE.as_millis() as u64,
        max_corruptions_per_node: 0,
        max_drift_ppm: 50_000,
    }
}

pub struct LedgerFencing;

/// What each bookie's journal would hold after a crash now, straight from its disk.
fn durable_journals(w: &mqsim_sim::World, bookies: Vec<String>) -> BTreeMap<String, Vec<u8>> {
    bookies
        .into_iter()
        .map(|b| {
            let journal = w.disk(&b).durable_snapshot().remove(bookie::JOURNAL_FILE).unwrap_or_default();
            (b, journal)
        })
        .collect()
}

/// A lagging bookie, as one composite fault: the recovery's fence request to it
/// is lost while the writer's adds to it arrive late. Swarm draws rarely pair
/// these two rules, yet together they are how a bookie that never saw the
/// fence can later take an add (the window non-fencing recovery reads open).
fn lagging_bookie(plan: &Plan, seed: u64) -> Vec<FaultAction> {
    let mut rng = mqsim_sim::rng_for(seed, "ledger/lagging-bookie");
    if !rng.gen_bool(0.5) {
        return Vec::new();
    }
    let bookie = plan.bookie_names().choose(&mut rng).cloned().expect("bookies");
    let at_ms = rng.gen_range(1_000..FAULT_PHASE.as_millis() as u64 - 5_000);
    let for_ms = rng.gen_range(3_000..=15_000).min(FAULT_PHASE.as_millis() as u64 - at_ms);
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

/// Aimed workload faults, each drawn for half the seeds (swarm-style):
/// - a zombie writer: the writer freezes while the recoverer fences and
///   recovers its ledger at once; when it wakes it goes on adding;
/// - early fencing: every ledger created in the window is recovered as soon as
///   it appears, within its first entries (often before they reach every bookie).
fn aimed(seed: u64) -> Vec<FaultAction> {
    let mut rng = mqsim_sim::rng_for(seed, "ledger/aimed");
    let phase = FAULT_PHASE.as_millis() as u64;
    let mut actions = Vec::new();
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
    actions
}

impl Scenario for LedgerFencing {
    fn name(&self) -> &'static str {
        "ledger-fencing"
    }

    fn about(&self) -> &'static str {
        "a writer adds continuously while a recoverer fences and recovers its ledgers; bookies crash and restart"
    }

    fn resolve(&self, spec: &RunSpec) -> RunSpec {
        let plan = Plan::draw(spec.seed);
        let schedule = spec.schedule.clone().unwrap_or_else(|| {
            let mut drawn = spec.schedule_for(&profile(&plan));
            drawn.actions.extend(lagging_bookie(&plan, spec.seed));
            drawn.actions.extend(aimed(spec.seed));
            drawn.actions.sort_by_key(|a| a.at_ms);
            drawn
        });
        resolve_ledger(spec, schedule)
    }

    fn nodes(&self, spec: &RunSpec) -> Vec<String> {
        profile(&Plan::draw(spec.seed)).nodes
    }

    fn probes(&self) -> Vec<mqsim_core::probe::Probe> {
        crate::probes_of(&["meta", "wal", "rpc", "bookie", "writer", "recovery"])
    }

    fn signals(&self) -> Vec<(&'static str, Signal)> {
        vec![(RECOVERER, Signal::RecoverNow), (RECOVERER, Signal::FenceEarly)]
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

    fn run(&self, spec: &RunSpec) -> Outcome {
        let spec = self.resolve(spec);
        let plan = Plan::draw(spec.seed);
        let schedule = spec.schedule.clone().unwrap_or_default();
        let t = Timeline::after(spec.phase(FAULT_PHASE));
        let (run_schedule, run_plan, max_ops) = (schedule.clone(), plan.clone(), spec.config.ops_per_client);
        let (ran, bookies) = world::run(spec.seed, spec.bugs, |w| async move {
            w.add_node(SERVER, meta::serve);
            for b in run_plan.bookie_names() {
                w.add_node(&b, |env| bookie::serve(env, SERVER.to_string()));
            }
            let (world, plan) = (w.clone(), run_plan.clone());
            w.add_node(WRITER, move |env| workload::writer(env, world.clone(), plan.clone(), t.writer_stop, max_ops));
            let world = w.clone();
            w.add_node(RECOVERER, move |env| workload::recoverer(env, world.clone(), t.writer_stop, t.recover_until));
            w.spawn_nemesis(run_schedule);
            w.sleep_until(t.final_read).await;
            let world = w.clone();
            w.add_node(CHECKER, move |env| workload::final_reads(env, world.clone()));
            w.sleep_until(t.end).await;
            (Ran::of(&w), durable_journals(&w, run_plan.bookie_names()))
        });
        let fin = Final::from_journals(&bookies, None, false, micros(t.calm), micros(t.end));
        let violations = check(&ran.history, &fin);
        Outcome::new(violations, ran, schedule, t.end)
    }
}

/// After the fault phase the writer stops (+5 s) and the recoverer closes what
/// is left (+20 s); the repair itself needs the fixed time below, whatever the phase.
const REPAIR_WRITERS_STOP_AFTER: Duration = Duration::from_secs(5);
const REPAIR_RECOVER_AFTER: Duration = Duration::from_secs(20);
const REPAIR_FINAL_READ: Duration = Duration::from_secs(170);
const REPAIR_END: Duration = Duration::from_secs(180);
/// Bookies that join while the run goes on, and when.
const JOINING: &[(&str, Duration)] =
    &[("bookie-new-0", Duration::from_secs(12)), ("bookie-new-1", Duration::from_secs(28))];

pub struct LedgerRepair;

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

impl Scenario for LedgerRepair {
    fn name(&self) -> &'static str {
        "ledger-repair"
    }

    fn about(&self) -> &'static str {
        "bookies are lost for good and new ones join while ledgers are written; the auditor must restore Qw copies"
    }

    fn resolve(&self, spec: &RunSpec) -> RunSpec {
        let (_, prof) = repair_losses(spec.seed);
        let schedule = spec.schedule.clone().unwrap_or_else(|| {
            let mut drawn = spec.schedule_for(&prof);
            drawn.actions.extend(aimed(spec.seed));
            drawn.actions.sort_by_key(|a| a.at_ms);
            drawn
        });
        resolve_ledger(spec, schedule)
    }

    fn nodes(&self, spec: &RunSpec) -> Vec<String> {
        profile(&Plan::draw(spec.seed)).nodes
    }

    fn probes(&self) -> Vec<mqsim_core::probe::Probe> {
        mqsim_core::probe::Probe::ALL.to_vec()
    }

    fn signals(&self) -> Vec<(&'static str, Signal)> {
        vec![(RECOVERER, Signal::RecoverNow), (RECOVERER, Signal::FenceEarly)]
    }

    fn bugs(&self) -> Vec<Bug> {
        vec![Bug::AuditorMarksBeforeCopy]
    }

    fn run(&self, spec: &RunSpec) -> Outcome {
        let spec = self.resolve(spec);
        let plan = Plan::draw(spec.seed);
        let (Losses { lost, back }, _) = repair_losses(spec.seed);
        let schedule = spec.schedule.clone().unwrap_or_default();
        let phase = spec.phase(FAULT_PHASE);
        let (writers_stop, recover_until) = (phase + REPAIR_WRITERS_STOP_AFTER, phase + REPAIR_RECOVER_AFTER);
        let (run_schedule, run_plan, max_ops) = (schedule.clone(), plan.clone(), spec.config.ops_per_client);
        let (ran, journals) = world::run(spec.seed, spec.bugs, |w| async move {
            w.add_node(SERVER, meta::serve);
            for b in run_plan.bookie_names() {
                w.add_node(&b, bookie_with_autorecovery);
            }
            let (world, plan) = (w.clone(), run_plan.clone());
            w.add_node(WRITER, move |env| workload::writer(env, world.clone(), plan.clone(), writers_stop, max_ops));
            let world = w.clone();
            w.add_node(RECOVERER, move |env| workload::recoverer(env, world.clone(), writers_stop, recover_until));
            w.spawn_nemesis(run_schedule);
            // Losses, returns and arrivals, in time order.
            let mut changes: Vec<(Duration, &str, Change)> =
                lost.iter().map(|(b, t)| (*t, b.as_str(), Change::Crash)).collect();
            changes.push((back.1, back.0.as_str(), Change::Restart));
            changes.extend(JOINING.iter().map(|(b, t)| (*t, *b, Change::Join)));
            changes.sort_by_key(|c| c.0);
            for (t, b, change) in changes {
                w.sleep_until(t).await;
                match change {
                    Change::Crash => w.crash(b),
                    Change::Restart => w.restart(b),
                    Change::Join => w.add_node(b, bookie_with_autorecovery),
                }
            }
            w.sleep_until(REPAIR_FINAL_READ).await;
            let world = w.clone();
            w.add_node(CHECKER, move |env| workload::final_reads(env, world.clone()));
            w.sleep_until(REPAIR_END).await;
            let mut names = run_plan.bookie_names();
            names.extend(JOINING.iter().map(|(b, _)| b.to_string()));
            (Ran::of(&w), durable_journals(&w, names))
        });
        let registered = checker::registered_at_end(&ran.history);
        let fin = Final::from_journals(&journals, Some(registered), true, micros(phase), micros(REPAIR_END));
        let violations = check(&ran.history, &fin);
        Outcome::new(violations, ran, schedule, REPAIR_END)
    }
}

/// The bookies `ledger-repair` loses: one for good, one for a long while.
struct Losses {
    lost: Vec<(String, Duration)>,
    back: (String, Duration),
}

/// Draws the seed's losses, and the nemesis profile that spares the lost bookies.
fn repair_losses(seed: u64) -> (Losses, Profile) {
    let plan = Plan::draw(seed);
    let mut rng = mqsim_sim::rng_for(seed, "ledger-repair/losses");
    // One bookie is lost for good; another is down for a long time and then
    // returns. Storage survives Qw-1 losses at once, not more.
    let names: Vec<String> = plan.bookie_names().choose_multiple(&mut rng, 2).cloned().collect();
    let at = |rng: &mut rand_chacha::ChaCha8Rng| Duration::from_millis(rng.gen_range(5_000..35_000));
    let lost_at = at(&mut rng);
    let away_at = at(&mut rng);
    let away_for = Duration::from_millis(rng.gen_range(20_000..40_000));
    let lost: Vec<(String, Duration)> = vec![(names[0].clone(), lost_at), (names[1].clone(), away_at)];
    let back = (names[1].clone(), away_at + away_for);
    let mut prof = profile(&plan);
    prof.targets.retain(|t| !lost.iter().any(|(b, _)| b == t));
    prof.durable.retain(|t| !lost.iter().any(|(b, _)| b == t));
    (Losses { lost, back }, prof)
}
