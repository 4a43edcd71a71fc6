//! The failure story: the message trace changes nothing in a run, and the
//! README's shrunk `recovery-reads-no-fence` case reads as its story, in the
//! focused view and in `mqsim explain`.

mod common;

use common::{mqsim, one_line_error};
use mqsim_core::bugs::{Bug, Bugs};
use mqsim_scenarios::{Config, RunSpec, Scenario};
use mqsim_sim::history::{to_jsonl, Body};
use serde_json::Value;

const CASE: &str = "tests/cases/ledger-fencing-21-recovery-reads-no-fence.json";

#[test]
fn a_trace_leaves_the_history_byte_identical_and_accounts_for_every_message() {
    // What the faults did to messages, over all runs: the trace must have seen each.
    // Seeds 2 and 3 of every scenario, and the README's case, whose drop rule surely drops.
    let (mut dropped, mut partitioned, mut duplicated, mut delayed) = (0, 0, 0, 0);
    let mut runs: Vec<(&dyn Scenario, RunSpec)> = Vec::new();
    for scenario in mqsim_scenarios::all() {
        runs.extend([2, 3].map(|seed| (*scenario, scenario.resolve(&RunSpec { seed, ..RunSpec::default() }))));
    }
    runs.push((mqsim_scenarios::find("ledger-fencing").unwrap(), case_spec(CASE)));
    for (scenario, spec) in runs {
        let plain = scenario.run(&spec);
        let traced = scenario.run(&RunSpec { trace: true, ..spec.clone() });
        let name = scenario.name();
        assert!(plain.trace.is_empty(), "{name}: a trace nobody asked for");
        assert_eq!(to_jsonl(&plain.history), to_jsonl(&traced.history), "{name}: the trace changed the history");
        assert_eq!(traced.trace.len() as u64, traced.stats.counters.messages_sent, "{name}: messages untraced");
        for (t, from, m) in &traced.trace {
            assert!(m.received.len() <= m.copies as usize, "{name}: more copies arrived than were sent: {m:?}");
            assert!(m.received.iter().all(|r| r >= t), "{name}: received before it was sent: {m:?}");
            assert!(!m.summary.is_empty() && !m.summary.starts_with("undecodable"), "{name}: {from} at {t}: {m:?}");
            if let Some(lost) = &m.lost {
                match lost.by.as_str() {
                    "drop rule" => dropped += 1,
                    "partition" | "partition in flight" => partitioned += 1,
                    _ => {}
                }
                if lost.by != "not received" {
                    assert!(lost.action.is_some(), "{name}: a fault lost it, but which? {m:?}");
                }
            }
            duplicated += usize::from(m.copies > 1);
            delayed += usize::from(m.delayed_ms > 0);
        }
        let merged = mqsim_sim::history::with_trace(&traced.history, traced.trace.clone());
        assert_eq!(merged.iter().filter(|r| matches!(r.body, Body::Message(_))).count(), traced.trace.len());
        assert!(merged.windows(2).all(|w| w[0].t <= w[1].t), "{name}: the merged history is out of time order");
    }
    assert!(
        dropped > 0 && partitioned > 0 && duplicated > 0 && delayed > 0,
        "{dropped} {partitioned} {duplicated} {delayed}"
    );
}

/// The run a case file records.
fn case_spec(path: &str) -> RunSpec {
    let case: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let bugs = case["bugs"].as_array().unwrap().iter().map(|b| Bug::from_name(b.as_str().unwrap()).unwrap());
    RunSpec {
        seed: case["seed"].as_u64().unwrap(),
        bugs: bugs.fold(Bugs::none(), Bugs::with),
        config: serde_json::from_value::<Config>(case["config"].clone()).unwrap(),
        schedule: Some(serde_json::from_value(case["schedule"].clone()).unwrap()),
        trace: false,
    }
}

#[test]
fn explain_tells_the_story_of_the_fence_that_never_arrived() {
    let (code, stdout, stderr) = mqsim(&["explain", CASE]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() < 40, "{} lines:\n{stdout}", lines.len());
    // In this order: the fence lost, the recovery read answered "no such
    // entry", the close, the late add taken, and the acknowledgement it breaks.
    let story = [
        "ReadLac ledger=34 fence=true — LOST (drop rule, fault action 1)",
        "Read ledger=34 entry=2 — answered Error NoSuchEntry",
        "Set state=Closed last_entry=1",
        "bookie-4     takes the late Add ledger=34 entry=2 from writer-0",
        "#911 add completes: ok entry=2",
    ];
    let mut at = 0;
    for step in story {
        let Some(i) = lines[at..].iter().position(|l| l.contains(step)) else {
            panic!("no line `{step}` after line {at}:\n{stdout}")
        };
        at += i + 1;
    }
    assert!(lines.last().unwrap().contains("breaks L1: ledger 34 closed at entry 1, but entry 2"), "{stdout}");
    one_line_error(&["explain", "tests/cases/no-such-case.json"], "no-such-case.json");
    one_line_error(&["explain", CASE, "--follow", "colour=red"], "ledger, key, msg or queue");
}

#[test]
fn the_focused_view_draws_the_story() {
    let dir = std::env::temp_dir().join(format!("mqsim-story-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("t.svg");
    let (code, stdout, _) = mqsim(&["replay", CASE, "--timeline", svg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    let overview = std::fs::read_to_string(&svg).unwrap();
    let focus = std::fs::read_to_string(dir.join("t.focus.svg")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(overview.contains("class=\"window\""), "the overview marks the window");
    // The fence to bookie-4, lost: an arrow ending in a cross.
    let lost = focus.split("<g class=\"msg lost").nth(1).expect("a lost message");
    let lost = &lost[..lost.find("</g>").unwrap()];
    assert!(lost.contains("recoverer-0 → bookie-4 Fence") && lost.contains("class=\"cross\""), "{lost}");
    for drawn in [
        "Error NoSuchEntry",                      // the recovery read's answer
        "Add ledger=34 entry=2 (delayed 141 ms)", // the late add
        "recovery closed",                        // the recovery's close
        "Set state=Closed last_entry=1",          // … written to the metadata service
        "class=\"op o-ok violation\"",            // the acknowledged add beyond the close
    ] {
        assert!(focus.contains(drawn), "the focused view lacks {drawn}");
    }
    assert!(focus.contains("FAIL L1") || focus.contains("L1: ledger 34 closed at entry 1"), "the violation's line");
}

#[test]
fn run_with_trace_writes_messages_into_the_history_file_and_nothing_else_changes() {
    let dir = std::env::temp_dir().join(format!("mqsim-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (plain, traced) = (dir.join("plain.jsonl"), dir.join("traced.jsonl"));
    let args = ["run", "--scenario", "pubsub", "--seed", "4", "--history"];
    let (code, out, _) = mqsim(&[&args[..], &[plain.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = mqsim(&[&args[..], &[traced.to_str().unwrap(), "--trace"]].concat());
    assert_eq!(code, 0, "{out}");
    let (plain, traced) = (std::fs::read_to_string(plain).unwrap(), std::fs::read_to_string(traced).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    let messages = traced.lines().filter(|l| l.contains("\"type\":\"message\"")).count();
    assert!(messages > 1000, "{messages} message records");
    let rest: Vec<&str> = traced.lines().filter(|l| !l.contains("\"type\":\"message\"")).collect();
    assert_eq!(rest, plain.lines().collect::<Vec<_>>(), "the trace changed the history");
    assert!(mqsim_sim::history::from_jsonl(&traced).is_ok(), "a traced history reads back");
}
