//! `mqsim hunt`: do the checkers and fault profiles catch this class of
//! mistake? A campaign per planted bug, with that bug switched on, over the
//! scenarios meant to catch it; per bug, the first failing seed, the share of
//! seeds that fail and the invariants that fired. A bug no seed catches is an
//! escape, and the hunt fails.

use crate::campaign::Campaign;
use crate::case::{build_id, Verdict};
use crate::BadInput;
use mqsim_core::bugs::Bug;
use mqsim_scenarios::{JUDGED_NOTHING, UNREADABLE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const FORMAT: &str = "mqsim-hunt/1";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hunt {
    pub format: String,
    pub build: String,
    /// The seed range, as given (both ends included).
    pub seeds: String,
    pub jobs: usize,
    pub wall_seconds: f64,
    pub bugs: Vec<Caught>,
}

/// How one planted bug fared.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caught {
    pub bug: String,
    pub about: String,
    pub scenarios: Vec<String>,
    pub seeds: u64,
    /// Seeds on which an invariant of the system failed (not a panic, a hang,
    /// an unreadable history or a checker that judged nothing).
    pub caught: u64,
    /// The lowest of those seeds and its scenario.
    pub first: Option<(String, u64)>,
    /// Seeds that did not pass, by invariant (or panic, hang).
    pub invariants: BTreeMap<String, u64>,
    /// This bug's campaign output, relative to the hunt's directory.
    pub campaign: String,
}

impl Caught {
    fn share(&self) -> f64 {
        if self.seeds == 0 {
            0.0
        } else {
            100.0 * self.caught as f64 / self.seeds as f64
        }
    }

    /// One line, as the hunt prints it.
    pub fn line(&self) -> String {
        let fired: Vec<String> = self.invariants.iter().map(|(k, n)| format!("{k}={n}")).collect();
        match &self.first {
            Some((scenario, seed)) => format!(
                "{}: {} of {} seeds fail ({:.1}%), first at {scenario} seed {seed}; {}",
                self.bug,
                self.caught,
                self.seeds,
                self.share(),
                fired.join(" ")
            ),
            None => {
                format!("{}: ESCAPED: none of {} seeds of {} fails", self.bug, self.seeds, self.scenarios.join(", "))
            }
        }
    }
}

/// Hunts each of `bugs` over `seeds`, writing every bug's campaign under
/// `out/<bug>/` and the table to `out/summary.{md,json}`.
pub fn hunt(bugs: &[Bug], seeds: (u64, u64), jobs: usize, out: &Path, watchdog: Duration) -> Result<Hunt, BadInput> {
    let started = Instant::now();
    let scenarios_of =
        |bug: &Bug| -> Vec<_> { mqsim_scenarios::all().iter().copied().filter(|s| s.bugs().contains(bug)).collect() };
    if let Some(bug) = bugs.iter().find(|b| scenarios_of(b).is_empty()) {
        return Err(BadInput(format!("no scenario is meant to catch {}", bug.name())));
    }
    let mut rows = Vec::new();
    for bug in bugs {
        let scenarios = scenarios_of(bug);
        let dir = PathBuf::from(bug.name());
        let campaign = Campaign {
            scenarios: scenarios.clone(),
            seeds,
            shard: None,
            bugs: vec![bug.name().to_string()],
            jobs,
            out: out.join(&dir),
            watchdog,
            verbose: false,
        };
        let summary = campaign.run()?;
        let mut invariants = BTreeMap::new();
        for totals in summary.scenarios.values() {
            for (k, n) in &totals.failed {
                *invariants.entry(k.clone()).or_default() += n;
            }
            for (k, n) in [("panic", totals.panics), ("hang", totals.hangs)] {
                if n > 0 {
                    *invariants.entry(k.to_string()).or_default() += n;
                }
            }
        }
        let caught: Vec<_> = summary.cases.iter().filter(|c| catches(&c.verdict)).collect();
        let first = caught.iter().min_by_key(|c| (c.seed, c.scenario.clone())).map(|c| (c.scenario.clone(), c.seed));
        let row = Caught {
            bug: bug.name().into(),
            about: bug.describe().into(),
            scenarios: scenarios.iter().map(|s| s.name().to_string()).collect(),
            seeds: summary.seeds_run(),
            caught: caught.len() as u64,
            first,
            invariants,
            campaign: dir.display().to_string(),
        };
        println!("{}", row.line());
        rows.push(row);
    }
    let hunt = Hunt {
        format: FORMAT.into(),
        build: build_id().into(),
        seeds: format!("{}..{}", seeds.0, seeds.1),
        jobs,
        wall_seconds: started.elapsed().as_secs_f64(),
        bugs: rows,
    };
    let json = serde_json::to_string_pretty(&hunt).expect("hunt to json") + "\n";
    crate::write_atomically(&out.join("summary.json"), &json)?;
    crate::write_atomically(&out.join("summary.md"), &hunt.markdown())?;
    Ok(hunt)
}

/// Whether a verdict shows the planted bug: an invariant of the system failed.
fn catches(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Fail { invariant, .. } if invariant != UNREADABLE && invariant != JUDGED_NOTHING)
}

impl Hunt {
    pub fn escaped(&self) -> usize {
        self.bugs.iter().filter(|b| b.first.is_none()).count()
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# mqsim hunt\n");
        let _ = writeln!(md, "- seeds {} per scenario; build `{}`", self.seeds, self.build);
        let _ = writeln!(md, "- {:.1} s of wall-clock time with {} jobs\n", self.wall_seconds, self.jobs);
        let _ = writeln!(md, "| bug | scenarios | seeds | caught | first failing seed | invariants fired |");
        let _ = writeln!(md, "|---|---|---:|---:|---|---|");
        for b in &self.bugs {
            let first = b.first.as_ref().map_or("**escaped**".to_string(), |(s, seed)| format!("{s} {seed}"));
            let fired: Vec<String> = b.invariants.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} ({:.1}%) | {first} | {} |",
                b.bug,
                b.scenarios.join(", "),
                b.seeds,
                b.caught,
                b.share(),
                fired.join(", ")
            );
        }
        md
    }
}
