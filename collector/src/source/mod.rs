//! Sources: where platform events come from.
//!
//! A source attaches its probes, then yields [`SensorEvent`]s — platform-neutral, before
//! enrichment — in the order the kernel produced them. The eBPF source runs on Linux, the ETW
//! source on Windows; everything downstream (process table, detectors, publisher) is shared.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use protocol::{
    ArgvSource, ArgvTruncation, CloseEvent, ConnectHook, ExitEvent, Outcome, SocketFamily,
    Timestamp, TransportProtocol,
};

#[cfg(target_os = "linux")]
pub mod ebpf;
#[cfg(windows)]
pub mod etw;

/// The platform's source.
#[cfg(target_os = "linux")]
pub type PlatformSource = ebpf::EbpfSource;
#[cfg(windows)]
pub type PlatformSource = etw::EtwSource;

/// A process-start identity: pid plus the start time in the platform's units (Linux: clock
/// ticks since boot, as `/proc/<pid>/stat` field 22; Windows: the FILETIME of CreateTime).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProcessKey {
    pub pid: u32,
    pub start_ticks: u64,
}

/// One event from the kernel, before the process table and enrichment see it.
#[derive(Clone, Debug, PartialEq)]
pub enum SensorEvent {
    Exec(ExecRecord),
    Fork(ForkRecord),
    Exit(ExitRecord),
    Connect(ConnectRecord),
    Close(CloseRecord),
}

impl SensorEvent {
    pub fn time(&self) -> Timestamp {
        match self {
            SensorEvent::Exec(e) => e.time,
            SensorEvent::Fork(e) => e.time,
            SensorEvent::Exit(e) => e.time,
            SensorEvent::Connect(e) => e.time,
            SensorEvent::Close(e) => e.time,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecRecord {
    pub time: Timestamp,
    pub process: ProcessKey,
    /// Parent process id, when the source knows it (Windows: ParentProcessID).
    pub ppid: Option<u32>,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub loginuid: Option<u32>,
    /// Path as given to exec (may be relative or a symlink).
    pub invoked_path: Option<String>,
    /// Resolved executable path.
    pub exe: Option<String>,
    /// `comm` / image base name, for when paths are missing.
    pub comm: String,
    pub argv: Vec<String>,
    /// Why `argv` is incomplete, if it is.
    pub argv_truncation: Option<ArgvTruncation>,
    /// Where `argv` came from.
    pub argv_source: ArgvSource,
    pub cwd: Option<String>,
    pub tty: Option<String>,
    pub cgroup_id: u64,
    /// Device and inode of the executable, when known.
    pub exe_file: Option<FileId>,
}

/// Identity of a file on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ForkRecord {
    pub time: Timestamp,
    pub child: ProcessKey,
    pub ppid: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExitRecord {
    pub time: Timestamp,
    pub process: ProcessKey,
    pub status: ExitEvent,
}

/// A connection attempt with its outcome (or [`Outcome::Pending`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectRecord {
    pub time: Timestamp,
    pub pid: u32,
    pub family: SocketFamily,
    pub protocol: TransportProtocol,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    pub source_ip: Option<IpAddr>,
    pub source_port: Option<u16>,
    pub outcome: Outcome,
    pub errno: Option<i32>,
    pub hook: ConnectHook,
    /// This is the outcome of an attempt already reported as pending.
    pub late_outcome: bool,
}

/// An outbound TCP connection closed: the process that made it (which may have exited since)
/// and what it carried.
#[derive(Clone, Debug, PartialEq)]
pub struct CloseRecord {
    pub time: Timestamp,
    pub process: ProcessKey,
    pub detail: CloseEvent,
}

/// Counters a source keeps about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Records the kernel (or ETW) could not deliver, per type name, since start.
    pub drops: BTreeMap<String, u64>,
    /// The same per cgroup v2 id of the tasks that lost them (Linux), the cgroups with most
    /// drops only (see [`MAX_CGROUPS_REPORTED`]).
    pub drops_by_cgroup: BTreeMap<u64, BTreeMap<String, u64>>,
    /// Work in flight, by what it is (e.g. `connects` awaiting an outcome).
    pub pending: BTreeMap<String, u64>,
    /// Entries bounded structures had to push out (or found stale) since start, by structure.
    pub evicted: BTreeMap<String, u64>,
    /// The kernel ring buffer's use; its largest read restarts at each call.
    pub ring: protocol::RingUse,
    /// Time spent taking records and decoding them since the previous call (zero from a
    /// source that does not time it: ETW).
    pub read_time: std::time::Duration,
}

/// Cgroups whose drops a heartbeat lists.
pub const MAX_CGROUPS_REPORTED: usize = 32;

/// How a source is set up.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Ring buffer size in bytes (eBPF) / per-buffer size (ETW).
    pub buffer_bytes: u32,
    /// How long a connect attempt waits for its outcome before it is reported as pending.
    pub connect_outcome_wait: std::time::Duration,
    /// Override of the cgroup v2 mount (autodetected when `None`).
    pub cgroup_root: Option<PathBuf>,
    /// Where enforcement (block and kill-on-exec maps, and the links of the programs that
    /// enforce them) is pinned so it outlives a restart (Linux: a bpffs directory).
    pub pin_dir: PathBuf,
}

/// Reads one process from the platform after the fact, shaped like an exec record (argv,
/// parent, exe as the OS shows them now); `None` when it is gone. Runs on a worker thread.
pub trait ProcessReader: Send + 'static {
    fn read(&self, pid: u32) -> Option<ExecRecord>;
}

/// A running source of [`SensorEvent`]s.
#[allow(async_fn_in_trait)]
pub trait EventSource: Sized {
    type Reader: ProcessReader;

    /// Attaches every probe. Once this returns, every new event is captured, so a scan of the
    /// existing processes afterwards leaves no gap.
    fn start(options: &SourceOptions) -> Result<Self, SourceError>;

    /// Waits for events and appends them to `out` (at least one unless the source stopped).
    async fn next_batch(&mut self, out: &mut Vec<SensorEvent>) -> Result<(), SourceError>;

    /// Current counters (drops per type).
    fn stats(&mut self) -> SourceStats;

    /// Processes that predate the sensor, as exec records (argv, parent, exe as the OS shows
    /// them now). Called once, after [`EventSource::start`].
    fn existing_processes(&mut self) -> Result<Vec<ExecRecord>, SourceError>;

    /// A reader for single processes the table learns of late (see [`ProcessReader`]).
    fn process_reader(&self) -> Self::Reader;

    /// The processes alive right now: the table reconciles against this periodically, so
    /// exits the source missed do not leak entries.
    fn live_processes(&mut self) -> Result<Vec<ProcessKey>, SourceError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A precondition of the platform is missing: the message is one sentence naming it.
    #[error("{0}")]
    Unsupported(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}
