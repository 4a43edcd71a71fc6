//! Running the `mqsim` binary from integration tests.

use std::process::Command;

/// Runs `mqsim` with `args`: exit code, stdout, stderr.
pub fn mqsim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mqsim")).args(args).output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

/// Bad input: exit 2, nothing on stdout, one line on stderr containing `expect`, no panic.
pub fn one_line_error(args: &[&str], expect: &str) {
    let (code, stdout, stderr) = mqsim(args);
    assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
    assert!(stdout.is_empty(), "{args:?} printed {stdout}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: not one line: {stderr}");
    assert!(stderr.contains(expect), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
