//! Case files: one run described completely (scenario, seed, planted bugs,
//! build, configuration, fault schedule) with the verdict it reached, so that
//! it can be replayed, shrunk and read.

use crate::exec::{Job, Outputs};
use crate::BadInput;
use mqsim_core::bugs::{Bug, Bugs};
use mqsim_scenarios::{Config, RunSpec};
use mqsim_sim::{Record, Schedule};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::OnceLock;

pub const FORMAT: &str = "mqsim-case/1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub format: String,
    pub scenario: String,
    pub seed: u64,
    /// Planted bugs switched on, by name.
    #[serde(default)]
    pub bugs: Vec<String>,
    /// The build that recorded the verdict (see [`build_id`]).
    pub build: String,
    pub config: Config,
    /// The fault schedule that ran.
    pub schedule: Schedule,
    pub verdict: Verdict,
    /// What the run's history was; absent when it panicked or hung.
    pub history: Option<Digest>,
    /// Set on a shrunk case: how big the original was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shrunk_from: Option<ShrunkFrom>,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum Verdict {
    Pass,
    /// An invariant failed; the first violation, and how many there were.
    Fail {
        invariant: String,
        detail: String,
        op: Option<u64>,
        violations: usize,
    },
    /// A node or the harness panicked.
    Panic {
        message: String,
    },
    /// The run did not finish: past its simulated-time limit, deadlocked, or
    /// killed by the wall-clock watchdog.
    Hang {
        reason: String,
    },
}

impl Verdict {
    pub fn passed(&self) -> bool {
        *self == Verdict::Pass
    }

    /// What a report groups failures by: the invariant, "panic" or "hang".
    pub fn class(&self) -> &str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail { invariant, .. } => invariant,
            Verdict::Panic { .. } => "panic",
            Verdict::Hang { .. } => "hang",
        }
    }

    /// Whether `self` is the same failure as `original`, as a shrinker must
    /// keep it: the same invariant, the same panic message, or a hang.
    pub fn same_failure(&self, original: &Verdict) -> bool {
        match (self, original) {
            (Verdict::Fail { invariant: a, .. }, Verdict::Fail { invariant: b, .. }) => a == b,
            (Verdict::Panic { message: a }, Verdict::Panic { message: b }) => a == b,
            (Verdict::Hang { .. }, Verdict::Hang { .. }) => true,
            _ => false,
        }
    }

    /// The verdict line of a run called `title`: `FAIL <title> L1: …`.
    pub fn headline(&self, title: &str) -> String {
        match self.parts() {
            (word, None) => format!("{word} {title}"),
            (word, Some(rest)) => format!("{word} {title} {rest}"),
        }
    }

    /// Whether a replay that ended in `self` reproduces the `recorded` verdict:
    /// the same verdict, where any two hangs count as the same (how long the
    /// watchdog waited is not part of the run).
    pub fn reproduces(&self, recorded: &Verdict) -> bool {
        self == recorded || matches!((self, recorded), (Verdict::Hang { .. }, Verdict::Hang { .. }))
    }

    /// One line, as verdict lines print it.
    pub fn line(&self) -> String {
        match self.parts() {
            (word, None) => word.into(),
            (word, Some(rest)) => format!("{word} {rest}"),
        }
    }

    /// The verdict's first word and what it says after it.
    fn parts(&self) -> (&'static str, Option<String>) {
        match self {
            Verdict::Pass => ("PASS", None),
            Verdict::Fail { invariant, detail, violations, .. } => {
                let more = if *violations > 1 { format!(" (+{} more)", violations - 1) } else { String::new() };
                ("FAIL", Some(format!("{invariant}: {detail}{more}")))
            }
            Verdict::Panic { message } => ("PANIC", Some(message.clone())),
            Verdict::Hang { reason } => ("HANG", Some(reason.clone())),
        }
    }
}

/// A fingerprint of a history: equal digests mean byte-identical JSON Lines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    pub records: usize,
    pub crc32c: String,
}

impl Digest {
    pub fn of(history: &[Record]) -> Digest {
        let jsonl = mqsim_sim::history::to_jsonl(history);
        Digest { records: history.len(), crc32c: format!("{:08x}", crc32c::crc32c(jsonl.as_bytes())) }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShrunkFrom {
    pub actions: usize,
    pub config: Config,
    /// Candidate runs the shrinker tried.
    pub runs: usize,
}

/// This executable: version and a checksum of its bytes, so a replay can tell
/// whether the code that recorded a case is the code replaying it.
pub fn build_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let sum = std::env::current_exe()
            .and_then(std::fs::read)
            .map(|bytes| format!("{:08x}", crc32c::crc32c(&bytes)))
            .unwrap_or_else(|_| "unknown".into());
        format!("mqsim {} exe-crc32c {sum}", env!("CARGO_PKG_VERSION"))
    })
}

/// Planted bugs by name; an unknown name is bad input.
pub fn parse_bugs(names: &[String]) -> Result<Bugs, BadInput> {
    names.iter().try_fold(Bugs::none(), |bugs, name| {
        let bug = Bug::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
            BadInput(format!("unknown bug '{name}' (known: {})", known.join(", ")))
        })?;
        Ok(bugs.with(bug))
    })
}

pub fn bug_names(bugs: Bugs) -> Vec<String> {
    bugs.list().into_iter().map(|b| b.name().to_string()).collect()
}

/// How a run is named in verdict lines, reports and timelines.
pub fn title(scenario: &str, seed: u64, bugs: &[String]) -> String {
    let bugs = if bugs.is_empty() { String::new() } else { format!(" bug={}", bugs.join(",")) };
    format!("{scenario} seed={seed}{bugs}")
}

/// Reads a JSON file whose `format` field must be `format`; every problem is
/// one line of bad input naming the file and what it should have been.
pub fn read_versioned<T: serde::de::DeserializeOwned>(path: &Path, format: &str, what: &str) -> Result<T, BadInput> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| BadInput(format!("cannot read {shown}: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| BadInput(format!("{shown} is not a {what}: {e}")))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(f) if f == format => {}
        Some(other) => return Err(BadInput(format!("{shown}: format '{other}' is not {format}"))),
        None => return Err(BadInput(format!("{shown} is not a {what}: no \"format\": \"{format}\""))),
    }
    serde_json::from_value(value).map_err(|e| BadInput(format!("{shown} is not a valid {what}: {e}")))
}

impl Case {
    /// A case recorded by this build.
    pub fn new(
        scenario: &str,
        seed: u64,
        bugs: Vec<String>,
        config: Config,
        schedule: Schedule,
        verdict: Verdict,
        history: Option<Digest>,
    ) -> Case {
        Case {
            format: FORMAT.into(),
            scenario: scenario.to_string(),
            seed,
            bugs,
            build: build_id().into(),
            config,
            schedule,
            verdict,
            history,
            shrunk_from: None,
        }
    }

    /// Reads and checks a case file; every problem is one line of bad input.
    pub fn load(path: &Path) -> Result<Case, BadInput> {
        let case: Case = read_versioned(path, FORMAT, "case file")?;
        let shown = path.display();
        let Some(scenario) = mqsim_scenarios::find(&case.scenario) else {
            return Err(BadInput(format!("{shown}: unknown scenario '{}'", case.scenario)));
        };
        let spec = case.spec()?;
        mqsim_scenarios::validate(scenario, &spec).map_err(|e| BadInput(format!("{shown}: {e}")))?;
        Ok(case)
    }

    /// The run this case records (without a message trace).
    pub fn spec(&self) -> Result<RunSpec, BadInput> {
        Ok(RunSpec {
            seed: self.seed,
            bugs: parse_bugs(&self.bugs)?,
            config: self.config.clone(),
            schedule: Some(self.schedule.clone()),
            trace: false,
        })
    }

    /// Writes the case as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<(), BadInput> {
        let text = serde_json::to_string_pretty(self).expect("case to json") + "\n";
        crate::write_atomically(path, &text)
    }

    pub fn title(&self) -> String {
        title(&self.scenario, self.seed, &self.bugs)
    }

    /// The job that runs this case again, writing `outputs`.
    pub fn job(&self, outputs: Outputs) -> Job {
        Job {
            scenario: self.scenario.clone(),
            seed: self.seed,
            bugs: self.bugs.clone(),
            config: self.config.clone(),
            schedule: Some(self.schedule.clone()),
            outputs,
        }
    }
}
