//! The live process behind an `ExecId`, signals through a pidfd, and process trees.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    os::unix::fs::MetadataExt,
    path::PathBuf,
};

use protocol::{BootId, ExecId};

use crate::{
    process::{Image, Images},
    source::ebpf::procfs,
};

/// Refuses unless `target` names the image that holds its pid right now: same boot, known to
/// the process table, not exited, same start time (pid reuse always changes it, and /proc
/// shows it) and same exec sequence number (which only the table knows: a process that
/// exec'd since runs another image). Returns the table's view of it.
pub fn check_identity(target: &ExecId, boot: BootId, images: &Images) -> Result<Image, String> {
    if target.boot != boot {
        return Err(format!("stale ExecId {target}: it is from another boot"));
    }
    let Some(image) = images.get(target.pid) else {
        return Err(format!(
            "unknown ExecId {target}: pid {} is not in this host's process table",
            target.pid
        ));
    };
    let current = image.exec_id;
    if !current.same_process(target) {
        return Err(format!(
            "stale ExecId {target}: pid {} now belongs to another process ({current})",
            target.pid
        ));
    }
    if current.seq != target.seq {
        return Err(format!(
            "stale ExecId {target}: process {} has exec'd since and now runs {current}",
            target.pid
        ));
    }
    if image.exited {
        return Err(format!("stale ExecId {target}: the process has exited"));
    }
    match procfs::read_stat(target.pid) {
        None => Err(format!(
            "stale ExecId {target}: no process {} is running",
            target.pid
        )),
        Some(stat) if stat.start_ticks != target.start_ticks => Err(format!(
            "stale ExecId {target}: pid {} now belongs to another process (started at tick {})",
            target.pid, stat.start_ticks
        )),
        Some(_) => Ok(image),
    }
}

/// A process file descriptor: signals sent through it reach the process it was opened for,
/// even if the pid is reused meanwhile.
pub struct PidFd(OwnedFd);

impl PidFd {
    pub fn open(pid: u32) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this fd; nothing else owns it.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    pub fn signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Opens a pidfd for `target` after checking its identity, and checks again afterwards, so
/// the pidfd is known to refer to the checked process.
pub fn open_checked(target: &ExecId, boot: BootId, images: &Images) -> Result<PidFd, String> {
    check_identity(target, boot, images)?;
    let fd = PidFd::open(target.pid)
        .map_err(|e| format!("cannot open a pidfd for {}: {e}", target.pid))?;
    check_identity(target, boot, images)?;
    Ok(fd)
}

/// Opens a pidfd for `pid` if it still started at `start_ticks` once the pidfd is open.
pub fn open_if_same(pid: u32, start_ticks: u64) -> Option<PidFd> {
    let fd = PidFd::open(pid).ok()?;
    (procfs::read_stat(pid)?.start_ticks == start_ticks).then_some(fd)
}

/// The executable of a live process: its path (as /proc shows it, in the process's own mount
/// namespace) and (device, inode).
pub fn exe_file(pid: u32) -> io::Result<(PathBuf, u64, u64)> {
    let link = format!("/proc/{pid}/exe");
    let path = std::fs::read_link(&link)?;
    let meta = std::fs::metadata(&link)?;
    Ok((path, meta.dev(), meta.ino()))
}

/// A member of a process tree as /proc shows it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    pub pid: u32,
    pub start_ticks: u64,
}

/// The live children of every pid in `parents`, by /proc's parent links (one pass over
/// /proc).
pub fn children_of(parents: &[u32]) -> Vec<Member> {
    procfs::pids()
        .into_iter()
        .filter_map(|pid| {
            let stat = procfs::read_stat(pid)?;
            parents.contains(&stat.ppid).then_some(Member {
                pid,
                start_ticks: stat.start_ticks,
            })
        })
        .collect()
}

#[cfg(test)]
mod identity_tests {
    use super::*;
    use crate::{
        process::ProcessTable,
        source::{ExecRecord, ProcessKey},
    };

    fn me_in(table: &mut ProcessTable) -> (ExecId, ExecId) {
        let me = std::process::id();
        let ticks = procfs::read_stat(me).expect("own stat").start_ticks;
        let rec = ExecRecord {
            process: ProcessKey {
                pid: me,
                start_ticks: ticks,
            },
            comm: "test".into(),
            ..Default::default()
        };
        let (before, _) = table.exec(&rec);
        let (now, _) = table.exec(&rec);
        (before.exec_id, now.exec_id)
    }

    #[test]
    fn an_exec_since_makes_an_exec_id_stale() {
        let boot = BootId(7);
        let mut table = ProcessTable::new(boot, 16);
        let (before, now) = me_in(&mut table);
        let images = table.images();
        let err = check_identity(&before, boot, &images).unwrap_err();
        assert!(err.contains("exec'd since"), "{err}");
        assert!(check_identity(&now, boot, &images).is_ok());
        let other_boot = ExecId {
            boot: BootId(8),
            ..now
        };
        assert!(check_identity(&other_boot, boot, &images).is_err());
    }

    #[test]
    fn a_pid_the_table_does_not_know_is_refused() {
        let boot = BootId(7);
        let mut table = ProcessTable::new(boot, 16);
        let (_, now) = me_in(&mut table);
        let stranger = ExecId { pid: 1, ..now };
        let err =
            check_identity(&stranger, boot, &ProcessTable::new(boot, 16).images()).unwrap_err();
        assert!(err.contains("not in this host's process table"), "{err}");
        let err = check_identity(&stranger, boot, &table.images()).unwrap_err();
        assert!(err.contains("not in this host's process table"), "{err}");
    }

    #[test]
    fn this_process_has_children_in_proc() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let kids = children_of(&[std::process::id()]);
        assert!(kids.iter().any(|m| m.pid == child.id()));
        let _ = child.kill();
        let _ = child.wait();
    }
}
