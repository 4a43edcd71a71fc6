//! The failure story: the message trace changes nothing in a run, and the
//! README's shrunk `recovery-reads-no-fence` case reads as its story, in the
//! focused view and in `mqsim explain`.

mod common;

use common::{mqsim, one_line_error};
use mqsim_scenarios::RunSpec;
use mqsim_sim::history::{to_jsonl, Body};

const CASE: &str = "tests/cases/ledger-fencing-21-recovery-reads-no-fence.json";

#[test]
fn a_trace_leaves_the_history_byte_identical_and_accounts_for_every_message() {
    for scenario in mqsim_scenarios::all() {
        let spec = scenario.resolve(&RunSpec { seed: 2, ..RunSpec::default() });
        let plain = scenario.run(&spec);
        let traced = scenario.run(&RunSpec { trace: true, ..spec.clone() });
        let name = scenario.name();
        assert!(plain.trace.is_empty(), "{name}: a trace nobody asked for");
        assert_eq!(to_jsonl(&plain.history), to_jsonl(&traced.history), "{name}: the trace changed the history");
        assert_eq!(traced.trace.len() as u64, traced.stats.counters.messages_sent, "{name}: messages untraced");
        for (t, from, m) in &traced.trace {
            let fates = m.received.len() + usize::from(m.lost.is_some());
            assert!(fates >= 1, "{name}: a message from {from} at {t} neither arrived nor was lost: {m:?}");
            assert!(m.received.iter().all(|r| r >= t), "{name}: received before it was sent: {m:?}");
        }
        let merged = mqsim_sim::history::with_trace(&traced.history, traced.trace.clone());
        assert_eq!(merged.iter().filter(|r| matches!(r.body, Body::Message(_))).count(), traced.trace.len());
        assert!(merged.windows(2).all(|w| w[0].t <= w[1].t), "{name}: the merged history is out of time order");
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
