//! Runs one seed in a child process of this executable (`mqsim exec`), so a
//! panic, an abort or an endless loop costs that seed only: the parent gets a
//! verdict whatever the child does, and kills it when the watchdog fires.
//!
//! The child reads a [`Job`] as one JSON line on stdin and writes two JSON
//! lines on stdout: the resolved configuration and schedule before it runs,
//! and the verdict after. The parent keeps the child's stdin open until the
//! child ends; when it closes (the parent died, say killed by a CI timeout),
//! the child exits rather than spin on without a watchdog.

use crate::case::{parse_bugs, Digest, Verdict};
use crate::page::Timeline;
use crate::BadInput;
use mqsim_scenarios::{Config, Outcome, RunSpec, Scenario, Stats};
use mqsim_sim::Schedule;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One run for a child to do.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Job {
    pub scenario: String,
    pub seed: u64,
    pub bugs: Vec<String>,
    pub config: Config,
    /// Drawn from the seed when absent.
    pub schedule: Option<Schedule>,
    pub outputs: Outputs,
}

/// Files the child writes from the run's history.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Outputs {
    pub history: Option<PathBuf>,
    pub timeline: Option<PathBuf>,
    pub openchaos: Option<PathBuf>,
    /// Write them only when the run did not pass.
    pub only_on_failure: bool,
    /// Keep the message trace even without a timeline, into the history file.
    #[serde(default)]
    pub trace: bool,
    /// The one thread (`ledger 34`) the timeline's focused view shows.
    #[serde(default)]
    pub follow: Option<String>,
}

impl Outputs {
    /// Whether the run must keep a message trace: a timeline draws it, and
    /// `--trace` asks for it. Campaigns (outputs only on failure) keep none:
    /// a failing seed runs again with its trace for its timeline.
    pub fn wants_trace(&self) -> bool {
        self.trace || (self.timeline.is_some() && !self.only_on_failure)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Message {
    Resolved { config: Config, schedule: Schedule },
    Done { verdict: Verdict, history: Option<Digest>, stats: Option<Box<Stats>>, output_error: Option<String> },
}

/// What the parent learns about one run.
pub struct Executed {
    pub config: Config,
    pub schedule: Schedule,
    pub verdict: Verdict,
    pub history: Option<Digest>,
    pub stats: Stats,
    /// Why an output file asked for was not written.
    pub output_error: Option<String>,
    /// What the child logged (with `RUST_LOG` set).
    pub stderr: String,
    pub wall: Duration,
}

/// Runs `job` in a child process; a child that has not finished after
/// `watchdog` of wall-clock time is killed and its seed reported as a hang.
pub fn execute(job: &Job, watchdog: Duration) -> Result<Executed, BadInput> {
    let started = Instant::now();
    let exe = std::env::current_exe().map_err(|e| BadInput(format!("cannot find this executable: {e}")))?;
    let mut child = Command::new(exe)
        .arg("exec")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BadInput(format!("cannot start a child process: {e}")))?;
    let job_json = serde_json::to_string(job).expect("job to json") + "\n";
    let mut stdin = child.stdin.take().expect("piped stdin");
    let _ = stdin.write_all(job_json.as_bytes());
    // Both pipes are drained on threads, so a chatty child never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (stdout, killed) = match rx.recv_timeout(watchdog) {
        Ok(text) => (text, false),
        Err(_) => {
            let _ = child.kill();
            (rx.recv().unwrap_or_default(), true)
        }
    };
    let status = child.wait().map_err(|e| BadInput(format!("lost a child process: {e}")))?;
    drop(stdin);
    let stderr = stderr.join().unwrap_or_default();

    let mut resolved = None;
    let mut done = None;
    for line in stdout.lines() {
        match serde_json::from_str::<Message>(line) {
            Ok(Message::Resolved { config, schedule }) => resolved = Some((config, schedule)),
            Ok(Message::Done { verdict, history, stats, output_error }) => {
                done = Some((verdict, history, stats, output_error))
            }
            Err(_) => {}
        }
    }
    let (config, schedule) = resolved.unwrap_or_else(|| (job.config.clone(), job.schedule.clone().unwrap_or_default()));
    let (verdict, history, stats, output_error) = match done {
        Some(done) => done,
        None if killed => {
            let reason =
                format!("no verdict after {} s of wall-clock time; the watchdog killed it", watchdog.as_secs());
            (Verdict::Hang { reason }, None, None, None)
        }
        None => {
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
            let message = format!("the run died ({status}): {last}");
            (Verdict::Panic { message }, None, None, None)
        }
    };
    let stats = stats.unwrap_or_default();
    Ok(Executed { config, schedule, verdict, history, stats: *stats, output_error, stderr, wall: started.elapsed() })
}

/// The first panic of the process, with its location.
static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Runs `spec` in this process; a panic (or madsim's end of a stuck
/// simulation) becomes the verdict instead of unwinding further.
pub fn run_caught(scenario: &dyn Scenario, spec: &RunSpec) -> Result<Outcome, Verdict> {
    catch(|| scenario.run(spec))
}

fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Verdict> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let mut first = PANIC.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none() {
                let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
                *first = Some(format!("{}{at}", panic_text(info.payload())));
            }
        }))
    });
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
        classify(message.unwrap_or_else(|| panic_text(payload.as_ref())))
    })
}

/// `mqsim exec`: the child's side. Exit 0 on a verdict (whatever it is), 2 on a bad job.
pub fn child_main() -> ExitCode {
    let mut input = String::new();
    let job: Job = match std::io::stdin().read_line(&mut input).map(|_| serde_json::from_str(&input)) {
        Ok(Ok(job)) => job,
        Ok(Err(e)) => return bad(&format!("not a job: {e}")),
        Err(e) => return bad(&format!("cannot read the job: {e}")),
    };
    std::thread::spawn(|| {
        // Nothing more comes on stdin; it ends when the parent is gone.
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(3);
    });
    let Some(scenario) = mqsim_scenarios::find(&job.scenario) else {
        return bad(&format!("unknown scenario '{}'", job.scenario));
    };
    let bugs = match parse_bugs(&job.bugs) {
        Ok(bugs) => bugs,
        Err(BadInput(msg)) => return bad(&msg),
    };
    let spec = RunSpec {
        seed: job.seed,
        bugs,
        config: job.config.clone(),
        schedule: job.schedule.clone(),
        trace: job.outputs.wants_trace(),
    };
    let spec = match catch(|| scenario.resolve(&spec)) {
        Ok(spec) => spec,
        Err(verdict) => {
            say(&Message::Done { verdict, history: None, stats: None, output_error: None });
            return ExitCode::SUCCESS;
        }
    };
    let schedule = spec.schedule.clone().unwrap_or_default();
    say(&Message::Resolved { config: spec.config.clone(), schedule });
    let done = match run_caught(scenario, &spec) {
        Ok(outcome) => {
            let verdict = verdict_of(&outcome);
            let mut output_error = None;
            if !(job.outputs.only_on_failure && verdict.passed()) {
                // The same run again, with its message trace, for the timeline
                // (a campaign keeps none). It must be the same run, byte for byte.
                let again = (job.outputs.timeline.is_some() && !spec.trace)
                    .then(|| run_caught(scenario, &RunSpec { trace: true, ..spec.clone() }).ok())
                    .flatten();
                let same = again.as_ref().filter(|a| a.history == outcome.history);
                if again.is_some() && same.is_none() {
                    output_error = Some("the run with its message trace had another history".into());
                }
                let drawn = same.unwrap_or(&outcome);
                // Rendering is not the run: its failure is reported apart from the verdict.
                match catch(|| write_outputs(&job.outputs, &job.scenario, &spec, drawn, &verdict)) {
                    Ok(Ok(())) => {}
                    Ok(Err(BadInput(msg))) => output_error = Some(msg),
                    Err(v) => output_error = Some(format!("writing the outputs failed: {}", v.line())),
                }
            }
            let history = Some(Digest::of(&outcome.history));
            let stats = Stats { peak_rss_kib: mqsim_sim::counters::peak_rss_kib(), ..outcome.stats };
            Message::Done { verdict, history, stats: Some(Box::new(stats)), output_error }
        }
        Err(verdict) => Message::Done { verdict, history: None, stats: None, output_error: None },
    };
    say(&done);
    ExitCode::SUCCESS
}

/// Writes the history, the timeline and the OpenMessaging-Chaos export a run was asked for.
pub fn write_outputs(
    outputs: &Outputs,
    scenario: &str,
    spec: &RunSpec,
    outcome: &Outcome,
    verdict: &Verdict,
) -> Result<(), BadInput> {
    // The history as recorded, with the message trace merged in when the run kept one.
    let traced;
    let records = if outcome.trace.is_empty() {
        &outcome.history
    } else {
        traced = mqsim_sim::history::with_trace(&outcome.history, outcome.trace.clone());
        &traced
    };
    if let Some(path) = &outputs.history {
        crate::write_atomically(path, &mqsim_sim::history::to_jsonl(records))?;
    }
    if let Some(path) = &outputs.timeline {
        let title = crate::case::title(scenario, spec.seed, &crate::case::bug_names(spec.bugs));
        let line = verdict.line();
        let violating_op = match verdict {
            Verdict::Fail { op, .. } => *op,
            _ => None,
        };
        let lanes = mqsim_scenarios::find(scenario).map(|s| s.lanes(spec)).unwrap_or_default();
        let timeline = Timeline {
            title: &title,
            verdict: &line,
            records,
            lanes: &lanes,
            end_us: outcome.stats.sim_ms * 1000,
            violating_op,
            follow: outputs.follow.as_deref(),
        };
        for (path, text) in crate::page::files(path, &timeline) {
            crate::write_atomically(&path, &text)?;
        }
    }
    if let Some(path) = &outputs.openchaos {
        let text = crate::openchaos::export(&outcome.history).map_err(BadInput)?;
        crate::write_atomically(path, &text)?;
    }
    Ok(())
}

pub fn verdict_of(outcome: &Outcome) -> Verdict {
    match outcome.violations.first() {
        None => Verdict::Pass,
        Some(v) => Verdict::Fail {
            invariant: v.invariant.to_string(),
            detail: v.detail.clone(),
            op: v.op,
            violations: outcome.violations.len(),
        },
    }
}

/// madsim ends a stuck simulation with a panic; those are hangs, not crashes.
fn classify(message: String) -> Verdict {
    if message.starts_with("time limit exceeded") {
        let limit = mqsim_sim::world::TIME_LIMIT.as_secs();
        Verdict::Hang { reason: format!("simulated time passed the {limit} s limit") }
    } else if message.starts_with("no events, all tasks will block forever") {
        Verdict::Hang { reason: "deadlock: every task waits and no timer is set".into() }
    } else {
        Verdict::Panic { message }
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".into())
}

fn say(message: &Message) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string(message).expect("message to json"));
    let _ = out.flush();
}

fn bad(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}
