//! Harness for the end-to-end tests: a real nats-server, the real collector (which loads the
//! real eBPF programs into this kernel), and real processes. Tests run one at a time
//! (`cargo xtask test` passes `--test-threads=1`): each loads the sensor.

pub mod actuation;
pub mod browser;
pub mod cgroup;
pub mod collector;
pub mod console;
pub mod deployed;
pub mod llm;
pub mod metrics;
pub mod nats;
pub mod responder;
pub mod terminal;
pub mod virustotal;
pub mod workload;

use std::{path::PathBuf, time::Duration};

/// Where the binaries under test are (`cargo xtask test` sets OSPREY_BIN_DIR).
pub fn bin_dir() -> PathBuf {
    std::env::var_os("OSPREY_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"))
}

/// A string unique to this run, to find a test's own processes among everything else.
pub fn marker(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("osprey-e2e-{tag}-{}-{nanos}", std::process::id())
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
