//! Campaigns: many seeds of one or every scenario, each in its own child
//! process, `jobs` at a time; a case file (and timeline) for every seed that
//! does not pass, and the reports at the end.

use crate::case::{build_id, Case};
use crate::exec::{execute, Job, Outputs};
use crate::report::{CaseEntry, Summary};
use crate::BadInput;
use indicatif::{ProgressBar, ProgressStyle};
use mqsim_scenarios::Scenario;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Most seeds one campaign runs per scenario (a typo like `1..1000000000` would
/// otherwise run for weeks).
const MAX_SEEDS: u64 = 10_000_000;

pub struct Campaign {
    pub scenarios: Vec<&'static dyn Scenario>,
    /// First and last seed, both included.
    pub seeds: (u64, u64),
    /// Shard `I/N`: this campaign runs the seeds whose offset from the first is I-1 modulo N.
    pub shard: Option<(u64, u64)>,
    pub bugs: Vec<String>,
    pub jobs: usize,
    pub out: PathBuf,
    pub watchdog: Duration,
    /// Print a line for every seed that does not pass (besides the progress).
    pub verbose: bool,
}

/// `A..B` (both ends included), `A..=B`, or a single seed.
pub fn parse_seeds(text: &str) -> Result<(u64, u64), BadInput> {
    let bad = || BadInput(format!("seeds must be A..B or a single seed, not '{text}'"));
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    let (first, last) = match text.split_once("..") {
        Some((a, b)) => (num(a)?, num(b.strip_prefix('=').unwrap_or(b))?),
        None => (num(text)?, num(text)?),
    };
    if last < first {
        return Err(BadInput(format!("the seed range {text} is empty")));
    }
    Ok((first, last))
}

/// `I/N` with 1 <= I <= N.
pub fn parse_shard(text: &str) -> Result<(u64, u64), BadInput> {
    let bad = || BadInput(format!("a shard is I/N with 1 <= I <= N, not '{text}'"));
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let (i, n) = (i.trim().parse::<u64>().map_err(|_| bad())?, n.trim().parse::<u64>().map_err(|_| bad())?);
    if i == 0 || n == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

struct Done {
    scenario: &'static str,
    seed: u64,
    result: Result<crate::exec::Executed, BadInput>,
}

impl Campaign {
    fn seeds(&self) -> impl Iterator<Item = u64> + '_ {
        let (first, last) = self.seeds;
        (first..=last).filter(move |s| self.shard.is_none_or(|(i, n)| (s - first) % n == i - 1))
    }

    fn seed_text(&self) -> String {
        format!("{}..{}", self.seeds.0, self.seeds.1)
    }

    pub fn run(&self) -> Result<Summary, BadInput> {
        let per_scenario = (self.seeds.1 - self.seeds.0).saturating_add(1) / self.shard.map_or(1, |(_, n)| n);
        if per_scenario > MAX_SEEDS {
            return Err(BadInput(format!("at most {MAX_SEEDS} seeds per scenario and shard; split the range")));
        }
        let work: Vec<(&'static dyn Scenario, u64)> =
            self.scenarios.iter().flat_map(|s| self.seeds().map(move |seed| (*s, seed))).collect();
        if work.is_empty() {
            let (i, n) = self.shard.unwrap_or((1, 1));
            return Err(BadInput(format!("shard {i}/{n} of seeds {} holds no seed", self.seed_text())));
        }
        let cases_dir = self.out.join("cases");
        std::fs::create_dir_all(&cases_dir)
            .map_err(|e| BadInput(format!("cannot create {}: {e}", cases_dir.display())))?;
        let mut summary = Summary {
            format: crate::report::FORMAT.into(),
            build: build_id().into(),
            bugs: self.bugs.clone(),
            seeds: self.seed_text(),
            shards: self.shard.map(|(i, n)| format!("{i}/{n}")).into_iter().collect(),
            jobs: self.jobs,
            ..Summary::default()
        };
        for s in &self.scenarios {
            summary.scenarios.entry(s.name().to_string()).or_default();
        }
        // One line per seed: its verdict, work and peak memory.
        let mut seeds: Vec<(&str, u64, String)> = Vec::new();
        let progress = Progress::new(work.len() as u64);
        let started = Instant::now();
        let next = AtomicUsize::new(0);
        let (tx, rx) = std::sync::mpsc::channel::<Done>();
        std::thread::scope(|scope| -> Result<(), BadInput> {
            for _ in 0..self.jobs.min(work.len()).max(1) {
                let (tx, next, work) = (tx.clone(), &next, &work);
                scope.spawn(move || {
                    while let Some(&(scenario, seed)) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let result = execute(&self.job(scenario.name(), seed), self.watchdog);
                        if tx.send(Done { scenario: scenario.name(), seed, result }).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            for done in rx {
                let ran = match done.result {
                    Ok(ran) => ran,
                    Err(e) => {
                        // Nothing more can run; stop the workers after their current seed.
                        next.store(work.len(), Ordering::Relaxed);
                        return Err(e);
                    }
                };
                seeds.push((done.scenario, done.seed, seed_line(done.scenario, done.seed, &ran)));
                let totals = summary.scenarios.entry(done.scenario.to_string()).or_default();
                totals.add_run(&ran.verdict, &ran.stats, ran.wall.as_secs_f64());
                if !ran.verdict.passed() {
                    let entry = self.write_case(done.scenario, done.seed, ran)?;
                    // Every seed of a campaign has the same bugs: the title leaves them out.
                    let title = crate::case::title(&entry.scenario, entry.seed, &[]);
                    let file = self.out.join(&entry.case);
                    let line = format!("{} -> {}", entry.verdict.headline(&title), file.display());
                    progress.failure(self.verbose.then_some(&line));
                    summary.cases.push(entry);
                }
                progress.step();
            }
            Ok(())
        })?;
        progress.finish();
        summary.wall_seconds = started.elapsed().as_secs_f64();
        summary.cases.sort_by(|a, b| (&a.scenario, a.seed).cmp(&(&b.scenario, b.seed)));
        summary.write(&self.out)?;
        seeds.sort();
        let lines: Vec<&str> = std::iter::once(SEEDS_HEADER).chain(seeds.iter().map(|(_, _, l)| l.as_str())).collect();
        crate::write_atomically(&self.out.join("seeds.csv"), &(lines.join("\n") + "\n"))?;
        Ok(summary)
    }

    fn job(&self, scenario: &str, seed: u64) -> Job {
        Job {
            scenario: scenario.to_string(),
            seed,
            bugs: self.bugs.clone(),
            outputs: Outputs {
                timeline: Some(self.out.join(timeline_file(scenario, seed))),
                only_on_failure: true,
                ..Outputs::default()
            },
            ..Job::default()
        }
    }

    fn write_case(&self, scenario: &str, seed: u64, ran: crate::exec::Executed) -> Result<CaseEntry, BadInput> {
        let case = Case::new(scenario, seed, self.bugs.clone(), ran.config, ran.schedule, ran.verdict, ran.history);
        let file = format!("cases/{scenario}-{seed}.json");
        case.save(&self.out.join(&file))?;
        let timeline = timeline_file(scenario, seed);
        // Only a run that reached a verdict has a history to draw.
        let drawn = matches!(case.verdict, crate::case::Verdict::Fail { .. }) && self.out.join(&timeline).exists();
        let timeline = drawn.then_some(timeline);
        Ok(CaseEntry { scenario: scenario.to_string(), seed, verdict: case.verdict, case: file, timeline })
    }
}

const SEEDS_HEADER: &str = "scenario,seed,verdict,ops,messages,sim_seconds,wall_seconds,peak_rss_kib";

/// A seed's line of `seeds.csv`.
fn seed_line(scenario: &str, seed: u64, ran: &crate::exec::Executed) -> String {
    let s = &ran.stats;
    let verdict = match &ran.verdict {
        crate::case::Verdict::Pass => "pass".to_string(),
        crate::case::Verdict::Fail { invariant, .. } => format!("fail:{invariant}"),
        crate::case::Verdict::Panic { .. } => "panic".to_string(),
        crate::case::Verdict::Hang { .. } => "hang".to_string(),
    };
    format!(
        "{scenario},{seed},{verdict},{},{},{:.3},{:.3},{}",
        s.ops,
        s.counters.messages_sent,
        s.sim_ms as f64 / 1000.0,
        ran.wall.as_secs_f64(),
        s.peak_rss_kib
    )
}

fn timeline_file(scenario: &str, seed: u64) -> String {
    format!("cases/{scenario}-{seed}.svg")
}

/// A progress bar on a terminal; plain lines otherwise (CI logs).
struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: AtomicUsize,
    failures: AtomicUsize,
    started: Instant,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template("{bar:40} {pos}/{len} seeds, {msg}, eta {eta}")
                .expect("progress template");
            bar.set_style(style);
            bar
        });
        Progress { bar, total, done: AtomicUsize::new(0), failures: AtomicUsize::new(0), started: Instant::now() }
    }

    /// Counts a seed that did not pass, and prints its line if given one.
    fn failure(&self, line: Option<&String>) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        match (&self.bar, line) {
            (Some(bar), Some(line)) => bar.println(line),
            (None, Some(line)) => println!("{line}"),
            (_, None) => {}
        }
    }

    fn step(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) as u64 + 1;
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let failures = self.failures.load(Ordering::Relaxed);
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("{failures} not passed, {rate:.1} seeds/s"));
                bar.inc(1);
            }
            None => {
                let every = (self.total / 10).max(1);
                if done.is_multiple_of(every) || done == self.total {
                    eprintln!("campaign: {done}/{} seeds, {failures} not passed, {rate:.1} seeds/s", self.total);
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
