//! Process identity and the process as findings and events describe it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{fmt, str::FromStr};

use crate::Timestamp;

/// The first 8 hex digits of `/proc/sys/kernel/random/boot_id`: tells reboots apart.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BootId(pub u32);

impl BootId {
    /// Parses the boot id as the kernel prints it (`4cd11df2-fd0b-...`).
    pub fn from_boot_id_text(text: &str) -> Option<Self> {
        let hex = text.trim().get(..8)?;
        u32::from_str_radix(hex, 16).ok().map(BootId)
    }
}

impl fmt::Display for BootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// Identity of one program image running in one process:
/// `bootid-pid-ticks-seq`, where `ticks` is the process start time in clock ticks exactly as
/// field 22 of `/proc/<pid>/stat` shows it and `seq` counts execs within the process (0 for
/// the image running when first seen). Stable across kernel and /proc views, changes on exec,
/// never collides across pid reuse or reboots.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecId {
    pub boot: BootId,
    pub pid: u32,
    pub start_ticks: u64,
    pub seq: u32,
}

impl ExecId {
    /// Same process (pid and start time), any image.
    pub fn same_process(&self, other: &ExecId) -> bool {
        self.boot == other.boot && self.pid == other.pid && self.start_ticks == other.start_ticks
    }
}

impl fmt::Display for ExecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}-{}",
            self.boot, self.pid, self.start_ticks, self.seq
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid ExecId {0:?}: expected bootid-pid-ticks-seq, e.g. 4cd11df2-1234-5678-0")]
pub struct ExecIdParseError(pub String);

impl FromStr for ExecId {
    type Err = ExecIdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ExecIdParseError(s.to_string());
        let mut parts = s.split('-');
        let boot = parts.next().ok_or_else(err)?;
        if boot.len() != 8 {
            return Err(err());
        }
        let id = ExecId {
            boot: BootId(u32::from_str_radix(boot, 16).map_err(|_| err())?),
            pid: parts.next().ok_or_else(err)?.parse().map_err(|_| err())?,
            start_ticks: parts.next().ok_or_else(err)?.parse().map_err(|_| err())?,
            seq: parts.next().ok_or_else(err)?.parse().map_err(|_| err())?,
        };
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(id)
    }
}

impl ExecId {
    /// Renders into a stack buffer: ids are serialized several times per event (process,
    /// parent, every ancestor), and `fmt` machinery showed up in profiles.
    fn render(&self, buf: &mut [u8; 64]) -> usize {
        fn push_dec(buf: &mut [u8; 64], at: &mut usize, mut v: u64) {
            let mut digits = [0u8; 20];
            let mut n = 0;
            loop {
                digits[n] = b'0' + (v % 10) as u8;
                n += 1;
                v /= 10;
                if v == 0 {
                    break;
                }
            }
            for d in digits[..n].iter().rev() {
                buf[*at] = *d;
                *at += 1;
            }
        }
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut at = 0;
        for shift in (0..8).rev() {
            buf[at] = HEX[((self.boot.0 >> (shift * 4)) & 0xf) as usize];
            at += 1;
        }
        for part in [u64::from(self.pid), self.start_ticks, u64::from(self.seq)] {
            buf[at] = b'-';
            at += 1;
            push_dec(buf, &mut at, part);
        }
        at
    }
}

impl Serialize for ExecId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        let len = self.render(&mut buf);
        // Only ASCII hex digits, decimal digits and '-' were written.
        s.serialize_str(std::str::from_utf8(&buf[..len]).unwrap_or_default())
    }
}

impl<'de> Deserialize<'de> for ExecId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A process as the collector knows it when it reports an event or a finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub exec_id: ExecId,
    pub pid: u32,
    pub ppid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_exec_id: Option<ExecId>,
    /// Short name: the executable's file name (or `comm` when the path is unknown).
    pub name: String,
    /// Resolved executable path.
    pub exe: String,
    /// Path as given to execve (may be relative or a symlink); absent for processes that
    /// predate the sensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoked_path: Option<String>,
    pub argv: Vec<String>,
    /// `argv` is not the whole argument list; `argv_truncation` says why.
    #[serde(default)]
    pub argv_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv_truncation: Option<ArgvTruncation>,
    /// Where argv came from: `kernel` (captured at exec) or `procfs` (read afterwards).
    pub argv_source: ArgvSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loginuid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Controlling terminal (e.g. `pts0`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<String>,
    #[serde(default)]
    pub cgroup_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    pub start_time: Timestamp,
    /// SHA-256 of the executable, when already computed (hashing is off the hot path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgvSource {
    Kernel,
    /// Read from /proc after the fact (the default for what was not captured at exec).
    #[default]
    Procfs,
    /// Windows: the command line as the OS reported it.
    Os,
}

/// Why an argv is incomplete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgvTruncation {
    /// Longer than the capture limit: the first bytes are kept.
    TooLong,
    /// The argument memory could not be read when the process started.
    Unreadable,
    /// The process had no argument area to read (or was gone before /proc could be read).
    Unavailable,
}

impl Process {
    /// Sets argv's truncation reason, keeping `argv_truncated` in step with it.
    pub fn set_argv_truncation(&mut self, reason: Option<ArgvTruncation>) {
        self.argv_truncation = reason;
        self.argv_truncated = reason.is_some();
    }
}

/// One step up the process tree, nearest parent first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    pub exec_id: ExecId,
    pub pid: u32,
    pub name: String,
    pub exe: String,
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<String>,
}

impl Process {
    /// A process known by its identity, executable and arguments, every other field empty:
    /// fill in the rest with struct update syntax (`Process { tty, ..Process::new(..) }`).
    /// The name is the executable's file name.
    pub fn new(exec_id: ExecId, exe: impl Into<String>, argv: Vec<String>) -> Process {
        let exe = exe.into();
        Process {
            exec_id,
            pid: exec_id.pid,
            ppid: 0,
            parent_exec_id: None,
            name: exe.rsplit(['/', '\\']).next().unwrap_or(&exe).to_string(),
            exe,
            invoked_path: None,
            argv,
            argv_truncated: false,
            argv_truncation: None,
            argv_source: ArgvSource::Kernel,
            cwd: None,
            uid: 0,
            euid: 0,
            gid: 0,
            loginuid: None,
            user: None,
            tty: None,
            cgroup_id: 0,
            container_id: None,
            start_time: Timestamp::default(),
            sha256: None,
        }
    }

    /// Arguments joined by single spaces, the way Sigma's `CommandLine` sees them.
    pub fn command_line(&self) -> String {
        self.argv.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_id_round_trips_through_text() {
        let id = ExecId {
            boot: BootId::from_boot_id_text("4cd11df2-fd0b-45d4-93db-24d00252c07c").unwrap(),
            pid: 4242,
            start_ticks: 123456,
            seq: 2,
        };
        assert_eq!(id.to_string(), "4cd11df2-4242-123456-2");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"4cd11df2-4242-123456-2\"");
        let max = ExecId {
            boot: BootId(u32::MAX),
            pid: u32::MAX,
            start_ticks: u64::MAX,
            seq: u32::MAX,
        };
        assert_eq!(serde_json::to_string(&max).unwrap(), format!("\"{max}\""));
        assert_eq!("4cd11df2-4242-123456-2".parse::<ExecId>().unwrap(), id);
        assert!("4cd11df2-4242-123456".parse::<ExecId>().is_err());
        assert!("zz-1-2-3".parse::<ExecId>().is_err());
    }
}
