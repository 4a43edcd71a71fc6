//! The command line: verdicts, exit codes, one-line errors on bad input.

mod common;

use common::{mqsim, one_line_error};

#[test]
fn bad_input_gets_one_line_and_exit_2() {
    one_line_error(&["run", "--scenario", "nosuch", "--seed", "1"], "unknown scenario 'nosuch'");
    one_line_error(&["run", "--scenario", "meta", "--seed", "abc"], "invalid value 'abc'");
    one_line_error(&["run", "--scenario", "meta", "--seed", "-3"], "error");
    one_line_error(&["run", "--scenario", "meta", "--seed", "18446744073709551616"], "invalid value");
    one_line_error(&["run", "--scenario", "meta", "--seed", "1", "--bug", "nosuch"], "unknown bug 'nosuch'");
    one_line_error(&["run", "--scenario", "meta", "--seed", "1", "--history", "/no/such/dir/h.jsonl"], "cannot write");
    one_line_error(&["frobnicate"], "error");
}

#[test]
fn a_run_prints_one_verdict_line_and_writes_identical_histories() {
    let dir = std::env::temp_dir().join(format!("mqsim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    for path in [&a, &b] {
        let (code, stdout, _) =
            mqsim(&["run", "--scenario", "meta", "--seed", "7", "--history", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{stdout}");
        assert_eq!(stdout.lines().count(), 1);
        assert!(stdout.starts_with("PASS meta seed=7 "), "{stdout}");
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_violation_exits_1_and_names_the_invariant() {
    let (code, stdout, _) = mqsim(&["run", "--scenario", "meta", "--seed", "2", "--bug", "meta-ack-before-fsync"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.starts_with("FAIL meta seed=2 bug=meta-ack-before-fsync K1: acknowledged write lost"), "{stdout}");
}

#[test]
fn list_names_scenarios_fault_kinds_and_bugs() {
    let (code, stdout, _) = mqsim(&["list"]);
    assert_eq!(code, 0);
    for needle in ["meta", "crash", "crash-at-fsync", "one-way", "disk-corrupt", "clock-drift", "meta-ack-before-fsync"]
    {
        assert!(stdout.contains(needle), "list lacks {needle}");
    }
    // Every coverage probe is listed.
    for probe in mqsim_core::probe::Probe::ALL {
        assert!(stdout.contains(probe.name()), "list lacks probe {}", probe.name());
    }
}

#[test]
fn a_run_prints_the_probes_it_reached_when_asked() {
    let (code, stdout, _) = mqsim(&["run", "--scenario", "ledger-fencing", "--seed", "3", "--probes"]);
    assert_eq!(code, 0, "{stdout}");
    let mut lines = stdout.lines();
    assert!(lines.next().unwrap().starts_with("PASS ledger-fencing seed=3 "), "{stdout}");
    let counted = lines.next().unwrap();
    assert!(counted.starts_with("probes reached: "), "{stdout}");
    assert!(stdout.contains("writer-ensemble-change"), "{stdout}");
}

#[test]
fn a_hunt_reports_which_seeds_catch_each_bug() {
    let dir = std::env::temp_dir().join(format!("mqsim-hunt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().unwrap();
    let args = ["hunt", "--bug", "meta-ack-before-fsync", "--seeds", "1..8", "--jobs", "2", "--out", out];
    let (code, stdout, stderr) = mqsim(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("meta-ack-before-fsync: "), "{stdout}");
    assert!(stdout.contains("first at meta seed 2"), "{stdout}");
    let table = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(table.contains("| `meta-ack-before-fsync` | meta | 8 |"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["format"], "mqsim-hunt/1");
    assert!(json["bugs"][0]["invariants"]["K1"].as_u64().unwrap() >= 1, "{json}");
    assert!(dir.join("meta-ack-before-fsync/summary.json").is_file());
    // A second hunt into the same directory would mix outputs; an unknown bug is bad input.
    one_line_error(&args, "already holds");
    one_line_error(&["hunt", "--bug", "nosuch", "--seeds", "1..2", "--out", out], "unknown bug 'nosuch'");
    std::fs::remove_dir_all(&dir).unwrap();
}
