//! What the ETW source produces: platform-neutral records, one per event it understands.
//!
//! They use the wire model's types (`Timestamp`, `ExitEvent`, `SocketFamily`, ...) and map
//! field for field onto the collector's `ExecRecord`, `ExitRecord` and `ConnectRecord`
//! (`collector/src/source/etw.rs`); this crate does not depend on the collector, so the two
//! never form a cycle.

use std::net::IpAddr;

use protocol::{ExitEvent, SocketFamily, Timestamp, TransportProtocol};

#[derive(Clone, Debug, PartialEq)]
pub enum EtwRecord {
    ProcessStart(ProcessStart),
    ProcessStop(ProcessStop),
    /// The kernel logger's view of a process start: only its command line is used, joined
    /// onto the matching [`ProcessStart`] by [`crate::join::CommandLineJoin`].
    KernelProcessStart(KernelProcessStart),
    Connection(Connection),
}

impl EtwRecord {
    pub fn time(&self) -> Timestamp {
        match self {
            EtwRecord::ProcessStart(r) => r.time,
            EtwRecord::ProcessStop(r) => r.time,
            EtwRecord::KernelProcessStart(r) => r.time,
            EtwRecord::Connection(r) => r.time,
        }
    }
}

/// A new process (Windows creates a process and its image in one step: there is no separate
/// fork).
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessStart {
    /// When ETW logged the start (header timestamp).
    pub time: Timestamp,
    /// `ProcessID`.
    pub pid: u32,
    /// `CreateTime` as raw FILETIME ticks: with the pid, the process's identity (the
    /// collector's `ProcessKey::start_ticks`), equal to what `GetProcessTimes` reports.
    pub create_time: u64,
    /// `ParentProcessID`: the parent the process inherits from (may be chosen by the creator
    /// with `PROC_THREAD_ATTRIBUTE_PARENT_PROCESS`).
    pub ppid: u32,
    /// The process that actually called CreateProcess (the event header's pid). Differs from
    /// `ppid` when the parent was reassigned: UAC elevation, or parent-pid spoofing.
    pub creator_pid: u32,
    /// `SessionID`: 0 is the services session, 1+ are logon sessions.
    pub session_id: u32,
    /// `ImageName` exactly as the kernel reported it (an NT device path).
    pub image_nt_path: String,
    /// The image as a drive-letter path (see [`crate::device_path`]); `None` for processes
    /// without an image file.
    pub exe: Option<String>,
    /// The image's file name (`cmd.exe`).
    pub comm: String,
    /// The command line the kernel captured at creation, when the command-line session
    /// delivered it.
    pub command_line: Option<String>,
    /// `command_line` split the way the C runtime splits it.
    pub argv: Option<Vec<String>>,
}

impl ProcessStart {
    /// When the process was created (`CreateTime`), if it is a valid time.
    pub fn start_time(&self) -> Option<Timestamp> {
        crate::filetime::to_timestamp(self.create_time)
    }

    /// See [`session_terminal`].
    pub fn terminal(&self) -> Option<String> {
        session_terminal(self.session_id)
    }

    pub fn set_command_line(&mut self, command_line: String) {
        self.argv = Some(crate::command_line::split(&command_line));
        self.command_line = Some(command_line);
    }
}

/// The Windows counterpart of a controlling terminal: the logon session a process runs in,
/// `session<N>`. Session 0 hosts services and has no user at a keyboard, which is what "no
/// terminal" means to the background-script heuristic.
pub fn session_terminal(session_id: u32) -> Option<String> {
    (session_id != 0).then(|| format!("session{session_id}"))
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProcessStop {
    pub time: Timestamp,
    pub pid: u32,
    /// `CreateTime` ticks, so the stop names the same process as its start even after pid
    /// reuse.
    pub create_time: u64,
    /// `ExitCode` (Windows has no signals: `signal` is always `None`; NTSTATUS codes such as
    /// 0xC0000005 arrive as negative `i32`, as `ExitStatus::code` shows them).
    pub exit: ExitEvent,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KernelProcessStart {
    pub time: Timestamp,
    pub pid: u32,
    pub ppid: u32,
    pub command_line: String,
}

/// Which side opened the TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// This host connected out (Kernel-Network events 12/28).
    Outbound,
    /// This host accepted it (events 15/31).
    Inbound,
}

/// A TCP connection the OS reported. `destination` is always the remote end and `source` the
/// local end, whichever side opened it (ETW's `daddr`/`saddr`, and Sysmon's and Sigma's
/// `DestinationIp`/`SourceIp` convention); [`Direction`] says who initiated.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    pub time: Timestamp,
    /// The owning process: the `PID` property.
    pub pid: u32,
    /// The event header's pid: whatever process the TCP stack ran in when it logged the event
    /// (often System, 4). Kept for diagnostics only; never the owner.
    pub header_pid: u32,
    pub direction: Direction,
    /// The address family of the event (12/15 are IPv4, 28/31 IPv6).
    pub family: SocketFamily,
    pub protocol: TransportProtocol,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    pub source_ip: IpAddr,
    pub source_port: u16,
}
