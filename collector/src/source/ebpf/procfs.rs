//! /proc: processes that predate the sensor, and the live set for reconciliation.
//!
//! Reading /proc after the fact is only a fallback (a process may have rewritten its argv by
//! then); events from the kernel carry what was true at exec.

use std::{fs, io::Read, os::unix::fs::MetadataExt, path::Path};

use protocol::{ArgvSource, ArgvTruncation, Timestamp};
use sensor_common::ARGV_MAX_BYTES;

use crate::source::{ExecRecord, FileId, ProcessKey, ProcessReader};

/// Fields of `/proc/<pid>/stat` after the `(comm)`.
pub struct Stat {
    pub comm: String,
    pub ppid: u32,
    pub tty_nr: u32,
    pub flags: u32,
    pub start_ticks: u64,
}

const PF_KTHREAD: u32 = 0x0020_0000;

pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields from 3 (state) onward; field N is at index N - 3.
    let rest: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    Some(Stat {
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        tty_nr: rest.get(4)?.parse().ok()?,
        flags: rest.get(6)?.parse().ok()?,
        start_ticks: rest.get(19)?.parse().ok()?,
    })
}

pub fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Terminal name for a `tty_nr` (e.g. `pts/3`), as far as the common majors go.
pub fn tty_name(tty_nr: u32) -> Option<String> {
    if tty_nr == 0 {
        return None;
    }
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    Some(match major {
        136..=143 => format!("pts{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        5 => "tty".to_string(),
        _ => format!("tty{major}:{minor}"),
    })
}

/// argv from `/proc/<pid>/cmdline`, at most [`ARGV_MAX_BYTES`] like the kernel's capture (a
/// command line can run to megabytes, and every finding carries its ancestors' argv).
pub fn read_cmdline(pid: u32) -> Option<(Vec<String>, Option<ArgvTruncation>)> {
    let file = fs::File::open(format!("/proc/{pid}/cmdline")).ok()?;
    let mut raw = Vec::with_capacity(256);
    file.take(ARGV_MAX_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .ok()?;
    let truncation = (raw.len() > ARGV_MAX_BYTES).then(|| {
        raw.truncate(ARGV_MAX_BYTES);
        ArgvTruncation::TooLong
    });
    Some((super::decode::split_argv(&raw, usize::MAX), truncation))
}

fn read_link(pid: u32, what: &str) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/{what}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn status_ids(text: &str, key: &str) -> Option<(u32, u32)> {
    let line = text.lines().find_map(|l| l.strip_prefix(key))?;
    let mut it = line.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn cgroup_id(pid: u32, cgroup_root: Option<&Path>) -> u64 {
    let Some(root) = cgroup_root else { return 0 };
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return 0;
    };
    let Some(path) = text.lines().find_map(|l| l.strip_prefix("0::")) else {
        return 0;
    };
    // A cgroup v2 id is the inode number of its directory.
    fs::metadata(root.join(path.trim_start_matches('/')))
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// Reads processes from /proc, with what is needed to express them like kernel records.
#[derive(Clone, Debug)]
pub struct Reader {
    /// CLOCK_REALTIME − CLOCK_BOOTTIME, in ns.
    pub boot_time_ns: i64,
    /// Clock ticks per second (USER_HZ).
    pub clk_tck: u64,
    /// The cgroup v2 mount, to turn a cgroup path into its id.
    pub cgroup_root: Option<std::path::PathBuf>,
}

impl ProcessReader for Reader {
    fn read(&self, pid: u32) -> Option<ExecRecord> {
        read_process(
            pid,
            self.boot_time_ns,
            self.clk_tck,
            self.cgroup_root.as_deref(),
        )
    }
}

/// Everything /proc says about a process now, shaped like an exec record.
pub fn read_process(
    pid: u32,
    boot_time_ns: i64,
    clk_tck: u64,
    cgroup_root: Option<&Path>,
) -> Option<ExecRecord> {
    let stat = read_stat(pid)?;
    if stat.flags & PF_KTHREAD != 0 {
        return None;
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let (uid, euid) = status_ids(&status, "Uid:")?;
    let (gid, _) = status_ids(&status, "Gid:")?;
    let loginuid = fs::read_to_string(format!("/proc/{pid}/loginuid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&u| u != u32::MAX);
    let exe_file = fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .map(|m| FileId {
            dev: m.dev(),
            ino: m.ino(),
        });
    let start_ns = (stat.start_ticks as i64).saturating_mul(1_000_000_000 / clk_tck as i64);
    let (argv, argv_truncation) =
        read_cmdline(pid).unwrap_or((Vec::new(), Some(ArgvTruncation::Unavailable)));
    Some(ExecRecord {
        time: Timestamp::from_unix_nanos(boot_time_ns + start_ns),
        process: ProcessKey {
            pid,
            start_ticks: stat.start_ticks,
        },
        ppid: Some(stat.ppid),
        uid,
        euid,
        gid,
        loginuid,
        invoked_path: None,
        exe: read_link(pid, "exe"),
        comm: stat.comm,
        argv,
        argv_truncation,
        argv_source: ArgvSource::Procfs,
        cwd: read_link(pid, "cwd"),
        tty: tty_name(stat.tty_nr),
        cgroup_id: cgroup_id(pid, cgroup_root),
        exe_file,
    })
}

/// Pids of /proc's process directories.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_and_parens_in_comm() {
        let text =
            "1234 (a (b) c) S 1 1234 1234 34816 1234 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 0 0";
        let s = parse_stat(text).unwrap();
        assert_eq!(s.comm, "a (b) c");
        assert_eq!(s.ppid, 1);
        assert_eq!(s.tty_nr, 34816);
        assert_eq!(s.start_ticks, 98765);
        assert_eq!(tty_name(34816).as_deref(), Some("pts0"));
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let rec = read_process(me, 0, 100, None).unwrap();
        assert_eq!(rec.process.pid, me);
        assert!(rec.exe.is_some());
        assert!(!rec.argv.is_empty());
        assert_eq!(rec.argv_truncation, None);
    }
}
