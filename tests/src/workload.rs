//! Processes the tests run.

use std::process::{Child, Command, Stdio};

pub const PYTHON: &str = "/usr/bin/python3";

/// Starts `python3 -c script` with piped stdin and stdout.
pub fn python(script: &str) -> Child {
    Command::new(PYTHON)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs")
}

/// Waits for a child and asserts it succeeded.
pub fn finish(mut child: Child, what: &str) {
    let status = child.wait().expect("wait");
    assert!(status.success(), "{what} failed: {status}");
}

/// Compiles a small C program into `dir` and returns its path.
pub fn compile_c(dir: &std::path::Path, name: &str, source: &str) -> std::path::PathBuf {
    let src = dir.join(format!("{name}.c"));
    let bin = dir.join(name);
    std::fs::write(&src, source).expect("write C source");
    let status = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("cc runs");
    assert!(status.success(), "cc failed for {name}");
    bin
}
