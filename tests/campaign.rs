//! Campaigns, case files, replay, shrinking, shard merging and reports,
//! through the command line as CI and researchers use them.

mod common;

use common::{mqsim, one_line_error};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mqsim-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The `selftest` scenario plants a node panic (seed 3), a harness panic (4),
/// a simulated-time hang (6), a wall-clock spin (7) and a violation (8).
#[test]
fn panics_and_hangs_are_failures_and_the_campaign_goes_on() {
    let dir = scratch("selftest");
    let (code, stdout, stderr) = mqsim(&[
        "campaign",
        "--scenario",
        "selftest",
        "--seeds",
        "1..10",
        "--jobs",
        "2",
        "--timeout",
        "5",
        "--out",
        s(&dir),
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let summary = json(&dir.join("summary.json"));
    let t = &summary["scenarios"]["selftest"];
    assert_eq!((t["seeds"].as_u64(), t["passed"].as_u64()), (Some(10), Some(5)), "{t}");
    assert_eq!((t["panics"].as_u64(), t["hangs"].as_u64(), t["failed"]["S1"].as_u64()), (Some(2), Some(2), Some(1)));
    let outcome = |seed: u64| json(&dir.join(format!("cases/selftest-{seed}.json")))["verdict"]["outcome"].clone();
    assert_eq!(outcome(3), "panic");
    assert_eq!(outcome(4), "panic");
    assert_eq!(outcome(6), "hang");
    assert_eq!(outcome(7), "hang");
    assert_eq!(outcome(8), "fail");
    let case3 = json(&dir.join("cases/selftest-3.json"));
    assert!(case3["verdict"]["message"].as_str().unwrap().contains("planted panic in ticker-1"), "{case3}");
    for f in ["summary.md", "summary.json", "junit.xml", "cases/selftest-8.svg"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<failure").count(), 5, "{junit}");
    assert!(junit.contains("name=\"selftest seed 7\""), "{junit}");
    // `run` reports a panic as a verdict too.
    let (code, stdout, stderr) = mqsim(&["run", "--scenario", "selftest", "--seed", "3"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.starts_with("PANIC selftest seed=3 selftest: planted panic in ticker-1"), "{stdout}");
    // A panic replays as the same panic.
    let (code, stdout, _) = mqsim(&["replay", s(&dir.join("cases/selftest-3.json"))]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("REPRODUCED"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Case files of a planted storage bug replay to the same verdict and a
/// byte-identical history; a shrunk case keeps the invariant with fewer faults.
#[test]
fn cases_replay_exactly_and_shrink() {
    let dir = scratch("fencing");
    let (code, stdout, _) = mqsim(&[
        "campaign",
        "--scenario",
        "ledger-fencing",
        "--seeds",
        "19..23",
        "--bug",
        "recovery-reads-no-fence",
        "--out",
        s(&dir),
    ]);
    assert_eq!(code, 1, "{stdout}");
    let case = dir.join("cases/ledger-fencing-21.json");
    let recorded = json(&case);
    assert_eq!(recorded["verdict"]["invariant"], "L1", "{recorded}");
    assert!(dir.join("cases/ledger-fencing-21.svg").is_file());

    let (replayed, fresh) = (dir.join("replayed.jsonl"), dir.join("fresh.jsonl"));
    let (code, stdout, _) = mqsim(&["replay", s(&case), "--history", s(&replayed)]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("REPRODUCED: same verdict, same history"), "{stdout}");
    let args = ["run", "--scenario", "ledger-fencing", "--seed", "21", "--bug", "recovery-reads-no-fence"];
    let (code, _, _) = mqsim(&[&args[..], &["--history", s(&fresh)]].concat());
    assert_eq!(code, 1);
    assert_eq!(std::fs::read(&replayed).unwrap(), std::fs::read(&fresh).unwrap());

    let shrunk = dir.join("shrunk.json");
    let (code, stdout, stderr) = mqsim(&["shrink", s(&case), "--out", s(&shrunk)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let small = json(&shrunk);
    let actions = |c: &Value| c["schedule"]["actions"].as_array().unwrap().len();
    assert!(actions(&small) < actions(&recorded), "{stdout}");
    assert_eq!(small["verdict"]["invariant"], "L1");
    assert_eq!(small["shrunk_from"]["actions"].as_u64(), Some(actions(&recorded) as u64));
    let (code, stdout, _) = mqsim(&["replay", s(&shrunk)]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("REPRODUCED"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Totals without timings and memory, which differ from run to run.
fn totals(summary: &Value) -> Value {
    let mut scenarios = summary["scenarios"].clone();
    for (_, t) in scenarios.as_object_mut().unwrap() {
        let t = t.as_object_mut().unwrap();
        t.remove("run_seconds");
        t.remove("peak_rss_kib");
    }
    serde_json::json!({ "scenarios": scenarios, "cases": summary["cases"] })
}

#[test]
fn two_shards_merged_give_the_totals_of_one_campaign() {
    let dir = scratch("shards");
    let run = |out: &str, shard: Option<&str>| {
        let mut args = vec!["campaign", "--scenario", "meta", "--seeds", "1..16", "--bug", "meta-ack-before-fsync"];
        args.extend(["--jobs", "2", "--out", out]);
        if let Some(shard) = shard {
            args.extend(["--shard", shard]);
        }
        let (code, stdout, stderr) = mqsim(&args);
        assert!(code == 0 || code == 1, "{stdout}{stderr}");
    };
    let (whole, a, b, merged) = (dir.join("whole"), dir.join("a"), dir.join("b"), dir.join("merged"));
    run(s(&whole), None);
    run(s(&a), Some("1/2"));
    run(s(&b), Some("2/2"));
    let (code, stdout, stderr) = mqsim(&["report", "merge", s(&a), s(&b), "--out", s(&merged)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (whole_summary, merged_summary) = (json(&whole.join("summary.json")), json(&merged.join("summary.json")));
    assert_eq!(totals(&merged_summary), totals(&whole_summary));
    assert!(whole_summary["scenarios"]["meta"]["failed"]["K1"].as_u64().unwrap() > 0, "{whole_summary}");
    assert_eq!(merged_summary["shards"], serde_json::json!(["1/2", "2/2"]));
    for c in merged_summary["cases"].as_array().unwrap() {
        assert!(merged.join(c["case"].as_str().unwrap()).is_file(), "{c}");
    }
    let a_summary = std::fs::read(a.join("summary.json")).unwrap();
    one_line_error(&["report", "merge", s(&a), s(&a), "--out", s(&dir.join("twice"))], "given twice");
    one_line_error(&["report", "merge", s(&a), s(&b), "--out", s(&a)], "is one of the shards");
    one_line_error(&["report", "merge", s(&whole), s(&a), "--out", s(&dir.join("mixed"))], "not a shard");
    assert_eq!(std::fs::read(a.join("summary.json")).unwrap(), a_summary, "a failed merge changed a shard");
    let (code, stdout, _) = mqsim(&["report", "merge", s(&a), "--out", s(&dir.join("half"))]);
    assert_eq!(code, 0);
    assert!(stdout.contains("shards 2/2 are missing"), "{stdout}");
    // A campaign never writes over another one's output.
    let again = ["campaign", "--scenario", "meta", "--seeds", "1", "--out", s(&whole)];
    one_line_error(&again, "already holds campaign output");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_campaign_and_case_input_gets_one_line_and_exit_2() {
    let dir = scratch("bad");
    let out = dir.join("out");
    let campaign = |seeds: &str, extra: &[&str]| {
        let mut args = vec!["campaign", "--scenario", "meta", "--seeds", seeds, "--out", s(&out)];
        args.extend(extra);
        args.into_iter().map(String::from).collect::<Vec<String>>()
    };
    let call = |args: Vec<String>, expect: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        one_line_error(&args, expect);
    };
    call(campaign("10..3", &[]), "the seed range 10..3 is empty");
    call(campaign("1..x", &[]), "seeds must be A..B");
    call(campaign("1..10", &["--shard", "3/2"]), "a shard is I/N");
    call(campaign("1..10", &["--shard", "0/2"]), "a shard is I/N");
    call(campaign("1..10", &["--jobs", "0"]), "--jobs must be at least 1");
    call(campaign("1..10", &["--bug", "nosuch"]), "unknown bug 'nosuch'");
    one_line_error(&["campaign", "--scenario", "nosuch", "--seeds", "1", "--out", s(&out)], "unknown scenario");

    // A real case file, then broken copies of it.
    let good = dir.join("good.json");
    let (code, _, _) =
        mqsim(&["run", "--scenario", "meta", "--seed", "2", "--bug", "meta-ack-before-fsync", "--case", s(&good)]);
    assert_eq!(code, 1);
    let text = std::fs::read_to_string(&good).unwrap();
    let broken = |name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        path
    };
    let truncated = broken("truncated.json", &text[..text.len() / 2]);
    let not_json = broken("garbage.json", "this is not json");
    let other = broken("other.json", r#"{"format": "something-else/3"}"#);
    let wrong_field = broken("field.json", &text.replace("\"seed\"", "\"sed\""));
    let bad_scenario = broken("scenario.json", &text.replace("\"scenario\": \"meta\"", "\"scenario\": \"nosuch\""));
    for command in ["replay", "shrink"] {
        one_line_error(&[command, s(&truncated)], "is not a case file");
        one_line_error(&[command, s(&not_json)], "is not a case file");
        one_line_error(&[command, s(&other)], "is not mqsim-case/1");
        one_line_error(&[command, s(&wrong_field)], "is not a valid case file");
        one_line_error(&[command, s(&bad_scenario)], "unknown scenario 'nosuch'");
        one_line_error(&[command, s(&dir.join("missing.json"))], "cannot read");
    }
    // Well-formed JSON that describes no possible run.
    let unknown_node = broken("node.json", &text.replacen("\"node\": \"", "\"node\": \"nosuch-", 1));
    let no_such_knob = broken("knob.json", &text.replace("\"clients\": ", "\"cliens\": "));
    let zero_clients = broken("zero.json", &{
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v["config"]["clients"] = 0.into();
        v.to_string()
    });
    let with_action = |name: &str, action: Value| {
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v["schedule"]["actions"].as_array_mut().unwrap().push(action);
        broken(name, &v.to_string())
    };
    let zero_window =
        with_action("window.json", serde_json::json!({"at_ms": 1000, "for_ms": 0, "kind": "crash", "node": "meta-0"}));
    let signal =
        serde_json::json!({"at_ms": 1000, "for_ms": 500, "kind": "signal", "node": "meta-0", "signal": "recover-now"});
    let unanswered = with_action("signal.json", signal.clone());
    let mut nosuch = signal;
    nosuch["signal"] = "nosuch".into();
    let unknown_signal = with_action("nosuch-signal.json", nosuch);
    let rule = serde_json::json!({"kind": "Fenc", "effect": "drop", "percent": 100});
    let unknown_kind =
        with_action("kind.json", serde_json::json!({"at_ms": 1000, "for_ms": 500, "kind": "filter", "rule": rule}));
    one_line_error(&["replay", s(&unknown_kind)], "unknown message kind 'Fenc' (known: OpenSession, ");
    one_line_error(&["replay", s(&zero_window)], "needs a window");
    one_line_error(&["replay", s(&unanswered)], "does not answer the signal");
    one_line_error(&["replay", s(&unknown_signal)], "is not a valid case file");
    one_line_error(&["replay", s(&unknown_node)], "not a node of meta");
    one_line_error(&["replay", s(&no_such_knob)], "scenario meta has no knob 'cliens' (knobs: clients, ");
    one_line_error(&["replay", s(&zero_clients)], "clients must be 1 to");
    one_line_error(&["replay", s(&good), "--history", s(&dir)], "is a directory");
    one_line_error(&["shrink", s(&good), "--max-runs", "0"], "--max-runs must be at least 1");
    call(campaign("5", &["--shard", "2/2"]), "holds no seed");
    call(campaign("0..18446744073709551615", &[]), "at most");

    // Nothing was lost: the good case is intact and still replays.
    assert_eq!(std::fs::read_to_string(&good).unwrap(), text);
    let (code, stdout, _) = mqsim(&["replay", s(&good)]);
    assert_eq!(code, 0, "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_exports_its_client_operations_for_openmessaging_chaos() {
    let dir = scratch("openchaos");
    let file = dir.join("history.txt");
    let (code, stdout, _) =
        mqsim(&["run", "--scenario", "ledger-fencing", "--seed", "3", "--export-openchaos", s(&file)]);
    assert_eq!(code, 0, "{stdout}");
    let text = std::fs::read_to_string(&file).unwrap();
    let requests = text.lines().filter(|l| l.split('\t').nth(2) == Some("REQUEST")).count();
    let responses: Vec<&str> = text.lines().filter(|l| l.split('\t').nth(2) == Some("RESPONSE")).collect();
    assert!(requests > 100, "{requests} requests");
    assert_eq!(requests, responses.len());
    let op = |l: &&str| l.split('\t').nth(1).map(str::to_string);
    assert!(responses.iter().all(|l| l.split('\t').count() == 10));
    // Adds are enqueues; the final reads of entries are dequeues of the same values.
    for kind in ["enqueue", "dequeue"] {
        assert!(responses.iter().any(|l| op(l).as_deref() == Some(kind) && l.split('\t').nth(3) == Some("SUCCESS")));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
