//! Case files: one run described completely (scenario, seed, planted bugs,
//! build, configuration, fault schedule) with the verdict it reached, so that
//! it can be replayed, shrunk and read.

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
        let line = self.line();
        match line.split_once(' ') {
            Some((word, rest)) => format!("{word} {title} {rest}"),
            None => format!("{line} {title}"),
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
        match self {
            Verdict::Pass => "PASS".into(),
            Verdict::Fail { invariant, detail, violations, .. } => {
                let more = if *violations > 1 { format!(" (+{} more)", violations - 1) } else { String::new() };
                format!("FAIL {invariant}: {detail}{more}")
            }
            Verdict::Panic { message } => format!("PANIC {message}"),
            Verdict::Hang { reason } => format!("HANG {reason}"),
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

impl Case {
    /// Reads and checks a case file; every problem is one line of bad input.
    pub fn load(path: &Path) -> Result<Case, BadInput> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| BadInput(format!("cannot read {shown}: {e}")))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| BadInput(format!("{shown} is not a case file: {e}")))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            Some(other) => return Err(BadInput(format!("{shown}: case format '{other}' is not {FORMAT}"))),
            None => return Err(BadInput(format!("{shown} is not a case file: no \"format\": \"{FORMAT}\""))),
        }
        let case: Case =
            serde_json::from_value(value).map_err(|e| BadInput(format!("{shown} is not a valid case file: {e}")))?;
        let Some(scenario) = mqsim_scenarios::find(&case.scenario) else {
            return Err(BadInput(format!("{shown}: unknown scenario '{}'", case.scenario)));
        };
        let spec = RunSpec {
            seed: case.seed,
            bugs: parse_bugs(&case.bugs)?,
            config: case.config.clone(),
            schedule: Some(case.schedule.clone()),
        };
        mqsim_scenarios::validate(scenario, &spec).map_err(|e| BadInput(format!("{shown}: {e}")))?;
        Ok(case)
    }

    /// Writes the case as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<(), BadInput> {
        let text = serde_json::to_string_pretty(self).expect("case to json") + "\n";
        crate::write_atomically(path, &text)
    }

    /// How the case is named in reports and on the command line.
    pub fn title(&self) -> String {
        let bugs = if self.bugs.is_empty() { String::new() } else { format!(" bug={}", self.bugs.join(",")) };
        format!("{} seed={}{bugs}", self.scenario, self.seed)
    }
}
