//! Suspension through the cgroup v2 freezer: a suspended process is moved into a cgroup of
//! its own (a child of the one it was in, so its resource limits still apply) and frozen
//! there. Unlike SIGSTOP alone, its user cannot undo this with `kill -CONT`: only root can
//! thaw the cgroup or move the process out.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// How long to wait for the kernel to report the cgroup frozen.
const FREEZE_WAIT: Duration = Duration::from_secs(2);

/// Where a frozen process is kept and where it came from (in the state file, so a restarted
/// collector can thaw it when its time is up).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frozen {
    /// The freezer cgroup holding the process.
    pub cgroup: PathBuf,
    /// The cgroup it was in.
    pub origin: PathBuf,
}

/// The cgroup v2 directory of `pid`, under the cgroup v2 mount `root`.
fn cgroup_of(pid: u32, root: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("cannot read the cgroup of {pid}: {e}"))?;
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| format!("pid {pid} is in no cgroup v2 group"))?;
    Ok(root.join(path.trim_start_matches('/')))
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Moves `pid` into a new freezer cgroup and freezes it.
pub fn freeze(pid: u32, start_ticks: u64, root: &Path) -> Result<Frozen, String> {
    let origin = cgroup_of(pid, root)?;
    let cgroup = origin.join(format!("osprey-frozen-{pid}-{start_ticks}"));
    std::fs::create_dir(&cgroup)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(e),
        })
        .map_err(|e| format!("cannot create freezer cgroup {}: {e}", cgroup.display()))?;
    let frozen = Frozen { cgroup, origin };
    let result = write(&frozen.cgroup.join("cgroup.procs"), &pid.to_string())
        .and_then(|()| write(&frozen.cgroup.join("cgroup.freeze"), "1"))
        .and_then(|()| wait_frozen(&frozen.cgroup));
    if let Err(e) = result {
        let _ = thaw(&frozen);
        return Err(e);
    }
    Ok(frozen)
}

fn wait_frozen(cgroup: &Path) -> Result<(), String> {
    let events = cgroup.join("cgroup.events");
    let deadline = Instant::now() + FREEZE_WAIT;
    loop {
        let text = std::fs::read_to_string(&events)
            .map_err(|e| format!("cannot read {}: {e}", events.display()))?;
        if text.lines().any(|l| l.trim() == "frozen 1") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not report frozen within {FREEZE_WAIT:?}",
                cgroup.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Thaws the freezer cgroup, moves its processes back where they came from and removes it.
/// A process that exited meanwhile is simply not there any more.
pub fn thaw(frozen: &Frozen) -> Result<(), String> {
    let _ = write(&frozen.cgroup.join("cgroup.freeze"), "0");
    let procs = std::fs::read_to_string(frozen.cgroup.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().map(str::trim).filter(|p| !p.is_empty()) {
        write(&frozen.origin.join("cgroup.procs"), pid)?;
    }
    match std::fs::remove_dir(&frozen.cgroup) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!(
            "cannot remove freezer cgroup {}: {e}",
            frozen.cgroup.display()
        )),
    }
}
