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
    let (code, stdout, _) = mqsim(&["run", "--scenario", "meta", "--seed", "8", "--bug", "meta-ack-before-fsync"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.starts_with("FAIL meta seed=8 bug=meta-ack-before-fsync K1: acknowledged write lost"), "{stdout}");
}

#[test]
fn list_names_scenarios_fault_kinds_and_bugs() {
    let (code, stdout, _) = mqsim(&["list"]);
    assert_eq!(code, 0);
    for needle in ["meta", "crash", "one-way", "disk-corrupt", "clock-drift", "meta-ack-before-fsync"] {
        assert!(stdout.contains(needle), "list lacks {needle}");
    }
}
