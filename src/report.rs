//! Campaign reports: the summary (JSON with a stable schema, and Markdown),
//! JUnit XML for CI dashboards, and the merging of shard outputs.

use crate::case::Verdict;
use crate::BadInput;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "mqsim-summary/1";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub format: String,
    pub build: String,
    pub bugs: Vec<String>,
    /// The seed range, as given (`A..B`, both ends included).
    pub seeds: String,
    /// The shards this summary covers (`I/N`), or empty for a whole campaign.
    pub shards: Vec<String>,
    pub jobs: usize,
    /// Wall-clock time of the campaign (of the slowest shard, after a merge).
    pub wall_seconds: f64,
    pub scenarios: BTreeMap<String, ScenarioTotals>,
    /// Every run that did not pass, by scenario and seed.
    pub cases: Vec<CaseEntry>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioTotals {
    pub seeds: u64,
    pub passed: u64,
    /// Runs that broke an invariant, by invariant.
    pub failed: BTreeMap<String, u64>,
    pub panics: u64,
    pub hangs: u64,
    pub ops: u64,
    pub sim_seconds: f64,
    /// Wall-clock time of the runs themselves, summed over jobs.
    pub run_seconds: f64,
    /// Fault actions injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Messages, bytes and disk work, summed over the runs.
    #[serde(default)]
    pub counters: mqsim_sim::Counters,
    /// The largest peak resident memory of any one seed's run, in KiB.
    #[serde(default)]
    pub peak_rss_kib: u64,
    /// Seeds that reached each coverage probe.
    #[serde(default)]
    pub probes: BTreeMap<String, u64>,
    /// The probes this scenario can reach that no seed reached: holes in the
    /// workload or the nemesis.
    #[serde(default)]
    pub probes_unreached: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseEntry {
    pub scenario: String,
    pub seed: u64,
    pub verdict: Verdict,
    /// Paths relative to the report directory.
    pub case: String,
    pub timeline: Option<String>,
}

impl ScenarioTotals {
    pub fn add_run(&mut self, verdict: &Verdict, stats: &mqsim_scenarios::Stats, wall: f64) {
        self.seeds += 1;
        match verdict {
            Verdict::Pass => self.passed += 1,
            Verdict::Fail { invariant, .. } => *self.failed.entry(invariant.clone()).or_default() += 1,
            Verdict::Panic { .. } => self.panics += 1,
            Verdict::Hang { .. } => self.hangs += 1,
        }
        self.ops += stats.ops;
        self.sim_seconds += stats.sim_ms as f64 / 1000.0;
        self.run_seconds += wall;
        self.counters.add(&stats.counters);
        self.peak_rss_kib = self.peak_rss_kib.max(stats.peak_rss_kib);
        for (kind, n) in &stats.faults {
            *self.faults.entry(kind.clone()).or_default() += n;
        }
        for probe in stats.probes.keys() {
            *self.probes.entry(probe.clone()).or_default() += 1;
        }
    }

    /// Names the probes of `scenario` that no seed reached.
    fn note_unreached(&mut self, scenario: &str) {
        let expected = mqsim_scenarios::find(scenario).map(|s| s.probes()).unwrap_or_default();
        self.probes_unreached =
            expected.iter().map(|p| p.name().to_string()).filter(|n| !self.probes.contains_key(n)).collect();
    }

    fn merge(&mut self, other: &ScenarioTotals) {
        self.seeds += other.seeds;
        self.passed += other.passed;
        for (k, n) in &other.failed {
            *self.failed.entry(k.clone()).or_default() += n;
        }
        self.panics += other.panics;
        self.hangs += other.hangs;
        self.ops += other.ops;
        self.sim_seconds += other.sim_seconds;
        self.run_seconds += other.run_seconds;
        self.counters.add(&other.counters);
        self.peak_rss_kib = self.peak_rss_kib.max(other.peak_rss_kib);
        for (k, n) in &other.faults {
            *self.faults.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.probes {
            *self.probes.entry(k.clone()).or_default() += n;
        }
    }

    pub fn not_passed(&self) -> u64 {
        self.seeds.saturating_sub(self.passed)
    }

    /// Messages sent per wall second of one core.
    fn message_rate(&self) -> f64 {
        if self.run_seconds > 0.0 {
            self.counters.messages_sent as f64 / self.run_seconds
        } else {
            0.0
        }
    }

    /// Seeds per second of one core.
    fn rate(&self) -> f64 {
        if self.run_seconds > 0.0 {
            self.seeds as f64 / self.run_seconds
        } else {
            0.0
        }
    }
}

impl Summary {
    pub fn failures(&self) -> u64 {
        self.scenarios.values().map(ScenarioTotals::not_passed).sum()
    }

    pub fn seeds_run(&self) -> u64 {
        self.scenarios.values().map(|s| s.seeds).sum()
    }

    /// Writes summary.json, summary.md and junit.xml into `dir`.
    pub fn write(&mut self, dir: &Path) -> Result<(), BadInput> {
        for (name, totals) in self.scenarios.iter_mut() {
            totals.note_unreached(name);
        }
        let json = serde_json::to_string_pretty(self).expect("summary to json") + "\n";
        crate::write_atomically(&dir.join("summary.json"), &json)?;
        crate::write_atomically(&dir.join("summary.md"), &self.markdown())?;
        crate::write_atomically(&dir.join("junit.xml"), &self.junit())
    }

    pub fn load(dir: &Path) -> Result<Summary, BadInput> {
        crate::case::read_versioned(&dir.join("summary.json"), FORMAT, "campaign summary")
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let bugs = if self.bugs.is_empty() { "none".to_string() } else { self.bugs.join(", ") };
        let shards =
            if self.shards.is_empty() { String::new() } else { format!(", shards {}", self.shards.join(" + ")) };
        let seeds = self.seeds_run();
        let _ = writeln!(md, "# mqsim campaign\n");
        let _ = writeln!(md, "- seeds {}{shards}; planted bugs: {bugs}", self.seeds);
        let _ = writeln!(md, "- build: `{}`", self.build);
        let _ = writeln!(
            md,
            "- {seeds} runs, {} not passed, in {:.1} s of wall-clock time with {} jobs ({:.1} seeds/s)\n",
            self.failures(),
            self.wall_seconds,
            self.jobs,
            if self.wall_seconds > 0.0 { seeds as f64 / self.wall_seconds } else { 0.0 }
        );
        let _ = writeln!(
            md,
            "| scenario | seeds | passed | failed (by invariant) | panics | hangs | seeds/s per core | × real time | messages/s per core | peak memory of a seed |"
        );
        let _ = writeln!(md, "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|");
        for (name, s) in &self.scenarios {
            let failed: Vec<String> = s.failed.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            let failed = if failed.is_empty() { "0".to_string() } else { failed.join(", ") };
            let speed = if s.run_seconds > 0.0 { s.sim_seconds / s.run_seconds } else { 0.0 };
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {failed} | {} | {} | {:.1} | {speed:.0} | {:.0} | {:.0} MiB |",
                s.seeds,
                s.passed,
                s.panics,
                s.hangs,
                s.rate(),
                s.message_rate(),
                s.peak_rss_kib as f64 / 1024.0
            );
        }
        let _ = writeln!(md, "\n## Work done, summed over the seeds\n");
        let _ = writeln!(
            md,
            "| scenario | messages sent | delivered | dropped | duplicated | bytes sent | fsyncs | disk bytes |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for (name, s) in &self.scenarios {
            let c = &s.counters;
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {} | {} | {} |",
                c.messages_sent,
                c.messages_delivered,
                c.messages_dropped,
                c.messages_duplicated,
                c.bytes_sent,
                c.fsyncs,
                c.disk_bytes
            );
        }
        let _ = writeln!(md, "\n## Faults injected, by kind\n");
        let kinds: std::collections::BTreeSet<&String> =
            self.scenarios.values().flat_map(|s| s.faults.keys()).collect();
        let names: Vec<&String> = self.scenarios.keys().collect();
        let header: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
        let _ = writeln!(md, "| kind | {} |", header.join(" | "));
        let _ = writeln!(md, "|---|{}", "---:|".repeat(names.len()));
        for kind in kinds {
            let counts: Vec<String> =
                self.scenarios.values().map(|s| s.faults.get(kind).copied().unwrap_or(0).to_string()).collect();
            let _ = writeln!(md, "| {kind} | {} |", counts.join(" | "));
        }
        let _ = writeln!(md, "\n## Coverage probes: seeds that reached each\n");
        for (name, s) in &self.scenarios {
            let expected = s.probes.len() + s.probes_unreached.len();
            let _ = writeln!(md, "**{name}**: {} of {expected} probes reached.\n", s.probes.len());
            if !s.probes.is_empty() {
                let _ = writeln!(md, "| probe | seeds |\n|---|---:|");
                for (probe, n) in &s.probes {
                    let _ = writeln!(md, "| {probe} | {n} |");
                }
                let _ = writeln!(md);
            }
            if !s.probes_unreached.is_empty() {
                let _ = writeln!(md, "Reached by no seed: {}.\n", s.probes_unreached.join(", "));
            }
        }
        if !self.cases.is_empty() {
            let _ = writeln!(md, "\n## Runs that did not pass\n");
            for c in &self.cases {
                let timeline = c.timeline.as_ref().map(|t| format!(", [timeline]({t})")).unwrap_or_default();
                let _ = writeln!(
                    md,
                    "- **{} seed {}**: {} ([case]({}){timeline}; `mqsim replay {}`)",
                    c.scenario,
                    c.seed,
                    escape_md(&c.verdict.line()),
                    c.case,
                    c.case
                );
            }
        }
        md
    }

    /// One test suite per scenario: a test case for its passing seeds and one per seed that did not pass.
    fn junit(&self) -> String {
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let total: u64 = self.scenarios.values().map(|s| 1 + s.not_passed()).sum();
        let _ = writeln!(
            x,
            "<testsuites name=\"mqsim campaign\" tests=\"{total}\" failures=\"{}\" time=\"{:.3}\">",
            self.failures(),
            self.wall_seconds
        );
        for (name, s) in &self.scenarios {
            let _ = writeln!(
                x,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">",
                xml(name),
                1 + s.not_passed(),
                s.not_passed(),
                s.run_seconds
            );
            let _ = writeln!(
                x,
                "    <testcase classname=\"mqsim.{0}\" name=\"{0}: {1} of {2} seeds passed\"/>",
                xml(name),
                s.passed,
                s.seeds
            );
            for c in self.cases.iter().filter(|c| &c.scenario == name) {
                let _ = writeln!(
                    x,
                    "    <testcase classname=\"mqsim.{0}\" name=\"{0} seed {1}\">\n      <failure type=\"{2}\" message=\"{3}\">mqsim replay {4}</failure>\n    </testcase>",
                    xml(name),
                    c.seed,
                    xml(c.verdict.class()),
                    xml(&c.verdict.line()),
                    xml(&c.case)
                );
            }
            let _ = writeln!(x, "  </testsuite>");
        }
        x.push_str("</testsuites>\n");
        x
    }
}

/// Merges the outputs of shards of one campaign into `out`: totals are
/// summed, case files and timelines copied. Every shard is checked before
/// anything is written. Returns the merged summary and the shards missing.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<(Summary, Vec<String>), BadInput> {
    let out_real = out.canonicalize().ok();
    let mut shards: Vec<(PathBuf, Summary)> = Vec::new();
    for dir in dirs {
        if out_real.is_some() && dir.canonicalize().ok() == out_real {
            return Err(BadInput(format!("--out {} is one of the shards; merge into a new directory", out.display())));
        }
        shards.push((dir.clone(), Summary::load(dir)?));
    }
    let Some((_, first)) = shards.first() else { return Err(BadInput("nothing to merge".into())) };
    let campaign = |s: &Summary| {
        (s.build.clone(), s.bugs.clone(), s.seeds.clone(), s.scenarios.keys().cloned().collect::<Vec<_>>())
    };
    let mut split = None;
    let mut taken: Vec<u64> = Vec::new();
    for (dir, s) in &shards {
        if campaign(s) != campaign(first) {
            return Err(BadInput(format!(
                "{} is a shard of another campaign (build, bugs, seeds or scenarios differ)",
                dir.display()
            )));
        }
        if s.shards.is_empty() {
            return Err(BadInput(format!("{} holds a whole campaign, not a shard", dir.display())));
        }
        for text in &s.shards {
            let (i, n) = crate::campaign::parse_shard(text)?;
            if *split.get_or_insert(n) != n {
                return Err(BadInput(format!(
                    "{} splits the campaign {n} ways, the others another way",
                    dir.display()
                )));
            }
            if taken.contains(&i) {
                return Err(BadInput(format!("shard {text} is given twice ({})", dir.display())));
            }
            taken.push(i);
        }
    }
    let n = split.unwrap_or(1);
    let missing: Vec<String> = (1..=n).filter(|i| !taken.contains(i)).map(|i| format!("{i}/{n}")).collect();

    std::fs::create_dir_all(out.join("cases"))
        .map_err(|e| BadInput(format!("cannot create {}: {e}", out.display())))?;
    let mut merged = Summary { shards: Vec::new(), cases: Vec::new(), wall_seconds: 0.0, jobs: 0, ..first.clone() };
    for t in merged.scenarios.values_mut() {
        *t = ScenarioTotals::default();
    }
    for (dir, s) in &shards {
        for c in &s.cases {
            for file in std::iter::once(&c.case).chain(&c.timeline) {
                let from = dir.join(file);
                std::fs::copy(&from, out.join(file))
                    .map_err(|e| BadInput(format!("cannot copy {}: {e}", from.display())))?;
            }
        }
        merged.shards.extend(s.shards.iter().cloned());
        merged.jobs = merged.jobs.max(s.jobs);
        merged.wall_seconds = merged.wall_seconds.max(s.wall_seconds);
        for (name, t) in &s.scenarios {
            merged.scenarios.entry(name.clone()).or_default().merge(t);
        }
        merged.cases.extend(s.cases.iter().cloned());
    }
    merged.shards.sort();
    merged.cases.sort_by(|a, b| (&a.scenario, a.seed).cmp(&(&b.scenario, b.seed)));
    merged.write(out)?;
    Ok((merged, missing))
}

/// Escaped for XML; control characters XML forbids become spaces.
fn xml(s: &str) -> String {
    let s: String = s.chars().map(|c| if c.is_control() && !matches!(c, '\t' | '\n') { ' ' } else { c }).collect();
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn escape_md(s: &str) -> String {
    s.replace('|', "\\|").replace('*', "\\*").replace('_', "\\_")
}
