//! `mqsim`: list scenarios, fault kinds and planted bugs; run one seed.

use clap::{Parser, Subcommand};
use mqsim_core::bugs::{Bug, Bugs};
use mqsim_scenarios::{RunSpec, Scenario};
use mqsim_sim::FaultKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
        /// Write the history of the run as JSON Lines.
        #[arg(long)]
        history: Option<PathBuf>,
        /// Print the fault schedule before the verdict.
        #[arg(long)]
        show_schedule: bool,
    },
}

/// Bad input: one line on stderr, exit 2.
struct BadInput(String);

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
        Command::Run { scenario, seed, bug, history, show_schedule } => {
            run(&scenario, seed, bug.as_deref(), history.as_deref(), show_schedule)
        }
    };
    result.unwrap_or_else(|BadInput(msg)| {
        eprintln!("error: {msg}");
        ExitCode::from(2)
    })
}

fn list() {
    println!("scenarios:");
    for s in mqsim_scenarios::all() {
        println!("  {:<22} {}", s.name(), s.about());
    }
    println!("fault kinds:");
    for k in FaultKind::ALL {
        println!("  {:<22} {}", k.name(), k.describe());
    }
    println!("planted bugs:");
    for b in Bug::ALL {
        println!("  {:<22} {}", b.name(), b.describe());
    }
}

fn scenario(name: &str) -> Result<&'static dyn Scenario, BadInput> {
    mqsim_scenarios::find(name).ok_or_else(|| {
        let known: Vec<&str> = mqsim_scenarios::all().iter().map(|s| s.name()).collect();
        BadInput(format!("unknown scenario '{name}' (known: {})", known.join(", ")))
    })
}

fn bugs(name: Option<&str>) -> Result<Bugs, BadInput> {
    let Some(name) = name else { return Ok(Bugs::none()) };
    let bug = Bug::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
        BadInput(format!("unknown bug '{name}' (known: {})", known.join(", ")))
    })?;
    Ok(Bugs::none().with(bug))
}

fn run(name: &str, seed: u64, bug: Option<&str>, history: Option<&Path>, show: bool) -> Result<ExitCode, BadInput> {
    let scenario = scenario(name)?;
    let spec = RunSpec { seed, bugs: bugs(bug)?, schedule: None };
    if let Some(path) = history {
        check_writable(path)?;
    }
    let wall = std::time::Instant::now();
    let outcome = scenario.run(&spec);
    let wall = wall.elapsed().as_secs_f64();
    if let Some(path) = history {
        write_atomically(path, &mqsim_sim::history::to_jsonl(&outcome.history))?;
    }
    if show {
        for a in &outcome.schedule.actions {
            println!("  {a}");
        }
    }
    let s = &outcome.stats;
    let faults: u64 = s.faults.values().sum();
    let figures = format!("ops={} faults={faults} sim={}s wall={wall:.2}s", s.ops, s.sim_ms / 1000);
    let bug = bug.map(|b| format!(" bug={b}")).unwrap_or_default();
    match outcome.violations.first() {
        None => {
            println!("PASS {name} seed={seed}{bug} {figures}");
            Ok(ExitCode::SUCCESS)
        }
        Some(v) => {
            let more = match outcome.violations.len() {
                1 => String::new(),
                n => format!(" (+{} more)", n - 1),
            };
            println!("FAIL {name} seed={seed}{bug} {}: {}{more}", v.invariant, v.detail);
            Ok(ExitCode::from(1))
        }
    }
}

/// Fails early, before a long run, when the history file cannot be written.
fn check_writable(path: &Path) -> Result<(), BadInput> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(BadInput(format!("cannot write {}: no directory {}", path.display(), dir.display())));
    }
    Ok(())
}

/// Writes beside the target and renames, so a failure never leaves half a file.
fn write_atomically(path: &Path, text: &str) -> Result<(), BadInput> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| BadInput(format!("cannot write {}: {e}", path.display())))
}
