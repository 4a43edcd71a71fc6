//! `mqsim`: list scenarios, fault kinds and planted bugs; run one seed; run
//! campaigns; replay and shrink case files; merge shard reports.

mod campaign;

/// Simulations allocate many small, short-lived objects (messages, futures,
/// timers); mimalloc handles that faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
mod case;
mod exec;
mod explain;
mod hunt;
mod openchaos;
mod page;
mod report;
mod shrink;
mod spacetime;
mod story;
mod timeline;

use case::{Case, Verdict};
use clap::{Parser, Subcommand};
use mqsim_core::bugs::Bug;
use mqsim_core::probe::Probe;
use mqsim_scenarios::{RunSpec, Scenario};
use mqsim_sim::FaultKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "mqsim", about = "Deterministic simulation testbed for a replicated message queue")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List scenarios, fault kinds and planted bugs.
    List,
    /// Run one seed of a scenario and print its verdict.
    Run {
        #[arg(long)]
        scenario: String,
        #[arg(long)]
        seed: u64,
        /// Switch on a planted bug (see `mqsim list`).
        #[arg(long)]
        bug: Option<String>,
        #[command(flatten)]
        outputs: OutputArgs,
        /// Print the fault schedule before the verdict.
        #[arg(long)]
        show_schedule: bool,
        /// Print the coverage probes the run reached after the verdict.
        #[arg(long)]
        probes: bool,
        /// Write the run as a case file (to replay or shrink it).
        #[arg(long)]
        case: Option<PathBuf>,
    },
    /// Run many seeds, each in its own process, and write reports and case files.
    Campaign {
        /// A scenario, or `all`.
        #[arg(long)]
        scenario: String,
        /// Seeds A..B, both included (or one seed).
        #[arg(long)]
        seeds: String,
        /// Seeds run at a time (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Run only shard I of N (every N-th seed), to split a campaign between machines.
        #[arg(long)]
        shard: Option<String>,
        #[arg(long)]
        bug: Option<String>,
        /// Directory for the reports and case files.
        #[arg(long)]
        out: PathBuf,
        /// Wall-clock seconds after which a seed is killed and reported as a hang.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Run a campaign per planted bug, over the scenarios meant to catch it, and
    /// report which seeds catch it.
    Hunt {
        /// A planted bug, or `all`.
        #[arg(long)]
        bug: String,
        /// Seeds A..B, both included (or one seed).
        #[arg(long)]
        seeds: String,
        #[arg(long)]
        jobs: Option<usize>,
        /// Directory for the table and each bug's campaign.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Run a case file again and compare the verdict and the history.
    Replay {
        case: PathBuf,
        #[command(flatten)]
        outputs: OutputArgs,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Tell the story of a case: the failure window as numbered lines (time,
    /// node, what happened), ending with the invariant it breaks.
    Explain {
        case: PathBuf,
        /// Follow this thread instead of the violation's own: `ledger=34`, `key=k7`, `msg=<id>`, `queue=<topic>/<n>`.
        #[arg(long)]
        follow: Option<String>,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Minimize a failing case while the same invariant keeps failing.
    Shrink {
        case: PathBuf,
        /// Where to write the shrunk case (default: beside it, `.shrunk.json`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// At most this many candidate runs.
        #[arg(long, default_value_t = 400)]
        max_runs: usize,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Reports of campaigns.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Run one job given as JSON on stdin (how campaigns run each seed).
    #[command(hide = true)]
    Exec,
}

/// Files written from a run's history.
#[derive(clap::Args)]
struct OutputArgs {
    /// Write the history of the run as JSON Lines.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Write a timeline of the run (SVG).
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Write the client operations in OpenMessaging-Chaos history format.
    #[arg(long)]
    export_openchaos: Option<PathBuf>,
    /// Record every message of the run into the history file (a timeline always draws them).
    #[arg(long)]
    trace: bool,
    /// Show only what concerns one thread in the timeline's focused view:
    /// `ledger=34`, `key=k7`, `msg=<id>` or `queue=<topic>/<n>`.
    #[arg(long)]
    follow: Option<String>,
}

impl OutputArgs {
    /// The outputs, once each can be written.
    fn checked(self) -> Result<exec::Outputs, BadInput> {
        for path in [&self.history, &self.timeline, &self.export_openchaos].into_iter().flatten() {
            check_writable(path)?;
        }
        let follow = self.follow.as_deref().map(story::parse_thread).transpose().map_err(BadInput)?;
        let OutputArgs { history, timeline, export_openchaos, trace, .. } = self;
        Ok(exec::Outputs { history, timeline, openchaos: export_openchaos, only_on_failure: false, trace, follow })
    }
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Merge the output directories of campaign shards into one.
    Merge {
        dirs: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

/// Bad input: one line on stderr, exit 2.
pub struct BadInput(pub String);

fn main() -> ExitCode {
    mqsim_sim::log::init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.render().to_string();
            eprintln!("{}", text.lines().next().unwrap_or("error: bad arguments"));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::List => {
            list();
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { scenario, seed, bug, outputs, show_schedule, probes, case } => {
            run(&scenario, seed, bug, outputs, RunShows { schedule: show_schedule, probes }, case.as_deref())
        }
        Command::Campaign { scenario, seeds, jobs, shard, bug, out, timeout } => {
            campaign(&scenario, &seeds, jobs, shard.as_deref(), bug, out, timeout)
        }
        Command::Hunt { bug, seeds, jobs, out, timeout } => hunt(&bug, &seeds, jobs, &out, timeout),
        Command::Replay { case, outputs, timeout } => replay(&case, outputs, timeout),
        Command::Explain { case, follow, timeout } => {
            secs(timeout).and_then(|t| explain::command(&case, follow.as_deref(), t))
        }
        Command::Shrink { case, out, max_runs, timeout } => shrink(&case, out, max_runs, timeout),
        Command::Report { command: ReportCommand::Merge { dirs, out } } => merge(&dirs, &out),
        Command::Exec => return exec::child_main(),
    };
    result.unwrap_or_else(|BadInput(msg)| {
        eprintln!("error: {msg}");
        ExitCode::from(2)
    })
}

fn list() {
    use std::fmt::Write as _;
    let mut out = String::from("scenarios:\n");
    for s in mqsim_scenarios::all() {
        let _ = writeln!(out, "  {:<22} {}", s.name(), s.about());
        for k in s.knobs() {
            let range = match *k.range.end() {
                u64::MAX => format!("at least {}", k.range.start()),
                end => format!("{} to {end}", k.range.start()),
            };
            let _ = writeln!(out, "    knob {:<17} {} ({range})", k.name, k.about);
        }
    }
    let kinds: Vec<&str> = mqsim_core::protocols::kinds().map(|k| k.name()).collect();
    let _ = writeln!(out, "message kinds (for fault rules):\n  {}", kinds.join(", "));
    let _ = writeln!(out, "fault kinds:");
    for k in FaultKind::ALL {
        let _ = writeln!(out, "  {:<22} {}", k.name(), k.describe());
    }
    let _ = writeln!(out, "planted bugs:");
    for b in Bug::ALL {
        let _ = writeln!(out, "  {:<22} {}", b.name(), b.describe());
    }
    let _ = writeln!(out, "coverage probes:");
    for p in Probe::ALL {
        let _ = writeln!(out, "  {:<34} {}", p.name(), p.describe());
    }
    // A reader that stops early (`mqsim list | head`) is not an error.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
}

/// What `run` prints besides the verdict.
struct RunShows {
    schedule: bool,
    probes: bool,
}

fn scenario(name: &str) -> Result<&'static dyn Scenario, BadInput> {
    mqsim_scenarios::find(name).ok_or_else(|| {
        let known: Vec<&str> = mqsim_scenarios::all().iter().map(|s| s.name()).collect();
        BadInput(format!("unknown scenario '{name}' (known: {}, all)", known.join(", ")))
    })
}

fn bug_list(bug: Option<String>) -> Result<Vec<String>, BadInput> {
    let bugs: Vec<String> = bug.into_iter().collect();
    case::parse_bugs(&bugs)?;
    Ok(bugs)
}

fn run(
    name: &str,
    seed: u64,
    bug: Option<String>,
    outputs: OutputArgs,
    show: RunShows,
    case_path: Option<&Path>,
) -> Result<ExitCode, BadInput> {
    let scenario = scenario(name)?;
    let bugs = bug_list(bug)?;
    let outputs = outputs.checked()?;
    if let Some(path) = case_path {
        check_writable(path)?;
    }
    let trace = outputs.wants_trace();
    let spec = scenario.resolve(&RunSpec { seed, bugs: case::parse_bugs(&bugs)?, trace, ..RunSpec::default() });
    let schedule = spec.schedule.clone().unwrap_or_default();
    if show.schedule {
        for a in &schedule.actions {
            println!("  {a}");
        }
    }
    let wall = std::time::Instant::now();
    let (outcome, verdict) = match exec::run_caught(scenario, &spec) {
        Ok(outcome) => {
            let verdict = exec::verdict_of(&outcome);
            (Some(outcome), verdict)
        }
        Err(verdict) => (None, verdict),
    };
    let wall = wall.elapsed().as_secs_f64();
    if let Some(outcome) = &outcome {
        exec::write_outputs(&outputs, name, &spec, outcome, &verdict)?;
    }
    if let Some(path) = case_path {
        let history = outcome.as_ref().map(|o| case::Digest::of(&o.history));
        Case::new(name, seed, bugs.clone(), spec.config.clone(), schedule, verdict.clone(), history).save(path)?;
    }
    let s = outcome.map(|o| o.stats).unwrap_or_default();
    let faults: u64 = s.faults.values().sum();
    let msgs = s.counters.messages_sent;
    let rate = if wall > 0.0 { msgs as f64 / wall } else { 0.0 };
    let figures =
        format!("ops={} msgs={msgs} faults={faults} sim={}s wall={wall:.2}s ({rate:.0} msg/s)", s.ops, s.sim_ms / 1000);
    let title = case::title(name, seed, &bugs);
    match verdict {
        Verdict::Pass => println!("PASS {title} {figures}"),
        _ => println!("{}", verdict.headline(&title)),
    }
    if show.probes {
        let expected = scenario.probes();
        println!("probes reached: {} of the {} this scenario can reach", s.probes.len(), expected.len());
        for (name, hits) in &s.probes {
            println!("  {name:<34} {hits}");
        }
        let unreached: Vec<&str> = expected.iter().map(|p| p.name()).filter(|n| !s.probes.contains_key(*n)).collect();
        if !unreached.is_empty() {
            println!("not reached: {}", unreached.join(", "));
        }
    }
    Ok(if verdict.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn campaign(
    name: &str,
    seeds: &str,
    jobs: Option<usize>,
    shard: Option<&str>,
    bug: Option<String>,
    out: PathBuf,
    timeout: u64,
) -> Result<ExitCode, BadInput> {
    let scenarios = match name {
        "all" => mqsim_scenarios::all().to_vec(),
        _ => vec![scenario(name)?],
    };
    let seeds = campaign::parse_seeds(seeds)?;
    let shard = shard.map(campaign::parse_shard).transpose()?;
    let jobs = job_count(jobs)?;
    fresh_output(&out)?;
    let bugs = bug_list(bug)?;
    let campaign =
        campaign::Campaign { scenarios, seeds, shard, bugs, jobs, out, watchdog: secs(timeout)?, verbose: true };
    let summary = campaign.run()?;
    for (name, s) in &summary.scenarios {
        let failed: Vec<String> = s.failed.iter().map(|(k, n)| format!("{k}={n}")).collect();
        println!(
            "{name}: {} seeds, {} passed, failed [{}], {} panics, {} hangs",
            s.seeds,
            s.passed,
            failed.join(" "),
            s.panics,
            s.hangs
        );
    }
    println!(
        "campaign: {} seeds in {:.1}s with {} jobs ({:.1} seeds/s); reports in {}",
        summary.seeds_run(),
        summary.wall_seconds,
        summary.jobs,
        summary.seeds_run() as f64 / summary.wall_seconds.max(1e-9),
        campaign.out.display()
    );
    Ok(if summary.failures() == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `--jobs`, or one per core.
fn job_count(jobs: Option<usize>) -> Result<usize, BadInput> {
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if jobs == 0 {
        return Err(BadInput("--jobs must be at least 1".into()));
    }
    Ok(jobs)
}

/// An output directory that holds no campaign or hunt yet: never mix two
/// runs' case files, nor overwrite a report.
fn fresh_output(out: &Path) -> Result<(), BadInput> {
    if out.exists() && !out.is_dir() {
        return Err(BadInput(format!("{} exists and is not a directory", out.display())));
    }
    if out.join("summary.json").exists() || std::fs::read_dir(out.join("cases")).is_ok_and(|mut d| d.next().is_some()) {
        return Err(BadInput(format!("{} already holds campaign output; choose another --out", out.display())));
    }
    Ok(())
}

fn hunt(bug: &str, seeds: &str, jobs: Option<usize>, out: &Path, timeout: u64) -> Result<ExitCode, BadInput> {
    let bugs = match bug {
        "all" => Bug::ALL.to_vec(),
        name => case::parse_bugs(&[name.to_string()])?.list(),
    };
    let seeds = campaign::parse_seeds(seeds)?;
    let jobs = job_count(jobs)?;
    fresh_output(out)?;
    if bugs.iter().any(|b| out.join(b.name()).exists()) {
        return Err(BadInput(format!("{} already holds hunt output; choose another --out", out.display())));
    }
    let hunt = hunt::hunt(&bugs, seeds, jobs, out, secs(timeout)?)?;
    println!(
        "hunt: {} bugs, {} escaped, in {:.1}s with {jobs} jobs; table in {}",
        hunt.bugs.len(),
        hunt.escaped(),
        hunt.wall_seconds,
        out.join("summary.md").display()
    );
    Ok(if hunt.escaped() == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn secs(timeout: u64) -> Result<Duration, BadInput> {
    if timeout == 0 {
        return Err(BadInput("--timeout must be at least 1 second".into()));
    }
    Ok(Duration::from_secs(timeout))
}

fn replay(path: &Path, outputs: OutputArgs, timeout: u64) -> Result<ExitCode, BadInput> {
    let case = Case::load(path)?;
    let outputs = outputs.checked()?;
    println!("replaying {} with {} fault actions", case.title(), case.schedule.actions.len());
    if case.build != case::build_id() {
        println!("note: recorded by build `{}`; this is `{}`: the verdict may differ", case.build, case::build_id());
    }
    let job = case.job(outputs);
    let ran = exec::execute(&job, secs(timeout)?)?;
    if std::env::var_os("RUST_LOG").is_some() {
        eprint!("{}", ran.stderr);
    }
    if let Some(e) = &ran.output_error {
        return Err(BadInput(e.clone()));
    }
    println!("recorded: {}", case.verdict.line());
    println!("replayed: {}", ran.verdict.line());
    let same_verdict = ran.verdict.reproduces(&case.verdict);
    let same_history = ran.history == case.history;
    let history = match &ran.history {
        Some(d) => format!("{} records, crc32c {}", d.records, d.crc32c),
        None => "no history".into(),
    };
    if same_verdict && same_history {
        println!("REPRODUCED: same verdict, same history ({history})");
        Ok(ExitCode::SUCCESS)
    } else {
        let what = match (same_verdict, same_history) {
            (false, false) => "the verdict and the history differ",
            (false, true) => "the verdict differs",
            _ => "the verdict is the same but the history differs",
        };
        println!("DIFFERENT: {what} (now {history})");
        Ok(ExitCode::from(1))
    }
}

fn shrink(path: &Path, out: Option<PathBuf>, max_runs: usize, timeout: u64) -> Result<ExitCode, BadInput> {
    let case = Case::load(path)?;
    if max_runs == 0 {
        return Err(BadInput("--max-runs must be at least 1".into()));
    }
    if case.verdict.passed() {
        return Err(BadInput(format!("{} passed; only a failing case can be shrunk", path.display())));
    }
    let out = out.unwrap_or_else(|| {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("case");
        path.with_file_name(format!("{stem}.shrunk.json"))
    });
    check_writable(&out)?;
    println!("shrinking {}: {}", case.title(), case.verdict.line());
    let before = (case.schedule.actions.len(), case.config.clone());
    let shrunk = shrink::Shrinker::new(case, secs(timeout)?, max_runs)?.run()?;
    shrunk.save(&out)?;
    let runs = shrunk.shrunk_from.as_ref().map_or(0, |s| s.runs);
    println!(
        "{} fault actions -> {}, config {} -> {} ({runs} runs)",
        before.0,
        shrunk.schedule.actions.len(),
        serde_json::to_string(&before.1).unwrap_or_default(),
        serde_json::to_string(&shrunk.config).unwrap_or_default()
    );
    for a in &shrunk.schedule.actions {
        println!("  {a}");
    }
    println!("{}", shrunk.verdict.line());
    println!("wrote {} (mqsim replay {})", out.display(), out.display());
    Ok(ExitCode::SUCCESS)
}

fn merge(dirs: &[PathBuf], out: &Path) -> Result<ExitCode, BadInput> {
    if dirs.is_empty() {
        return Err(BadInput("report merge needs the directories of the shards".into()));
    }
    let (summary, missing) = report::merge(dirs, out)?;
    if !missing.is_empty() {
        println!("note: shards {} are missing; the totals cover the others only", missing.join(", "));
    }
    println!(
        "merged {} shards: {} seeds, {} not passed; reports in {}",
        dirs.len(),
        summary.seeds_run(),
        summary.failures(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Fails early, before a long run, when a file cannot be written.
fn check_writable(path: &Path) -> Result<(), BadInput> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(BadInput(format!("cannot write {}: no directory {}", path.display(), dir.display())));
    }
    if path.is_dir() {
        return Err(BadInput(format!("cannot write {}: it is a directory", path.display())));
    }
    Ok(())
}

/// Writes beside the target and renames, so a failure never leaves half a file.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), BadInput> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, path)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        BadInput(format!("cannot write {}: {e}", path.display()))
    })
}
