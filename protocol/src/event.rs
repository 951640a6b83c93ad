//! What the sensor saw: exec, fork, exit, connect and close events.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use crate::{Ancestor, Process, Timestamp};

/// One observation, with the process it concerns and that process's ancestry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub time: Timestamp,
    pub host: String,
    pub process: Process,
    /// Nearest parent first, up to the root of the known tree. Exec and connect events carry
    /// it; fork and exit events leave it empty (the process's `parent_exec_id` links them).
    #[serde(default)]
    pub ancestry: Vec<Ancestor>,
    #[serde(flatten)]
    pub detail: EventDetail,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        self.detail.kind()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventDetail {
    Exec(ExecEvent),
    Fork(ForkEvent),
    Exit(ExitEvent),
    Connect(ConnectEvent),
    /// An outbound connection ended: how long it lasted and what it carried.
    Close(CloseEvent),
    /// A periodic look at a living process (not published as an event: it appears as the
    /// trigger of the findings it raises, e.g. a resident-memory rule).
    MemorySample(MemorySampleEvent),
    /// A threat-intel verdict about the process's executable, when it arrived (not
    /// published as an event either: it is the trigger of the findings it raises).
    IntelVerdict(IntelVerdictEvent),
}

impl EventDetail {
    pub fn kind(&self) -> EventKind {
        match self {
            EventDetail::Exec(_) => EventKind::Exec,
            EventDetail::Fork(_) => EventKind::Fork,
            EventDetail::Exit(_) => EventKind::Exit,
            EventDetail::Connect(_) => EventKind::Connect,
            EventDetail::Close(_) => EventKind::Close,
            EventDetail::MemorySample(_) => EventKind::MemorySample,
            EventDetail::IntelVerdict(_) => EventKind::IntelVerdict,
        }
    }
}

/// The `<kind>` token of `osprey.events.<host>.<kind>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Exec,
    Fork,
    Exit,
    Connect,
    Close,
    MemorySample,
    IntelVerdict,
}

impl EventKind {
    /// The kinds published on `osprey.events.<host>.<kind>` (memory samples are not: they
    /// only appear as finding triggers).
    pub const ALL: [EventKind; 5] = [
        EventKind::Exec,
        EventKind::Fork,
        EventKind::Exit,
        EventKind::Connect,
        EventKind::Close,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Exec => "exec",
            EventKind::Fork => "fork",
            EventKind::Exit => "exit",
            EventKind::Connect => "connect",
            EventKind::Close => "close",
            EventKind::MemorySample => "memory_sample",
            EventKind::IntelVerdict => "intel_verdict",
        }
    }
}

/// A new program image (the process is the one after the exec).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecEvent {
    /// Executable before this exec, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_exe: Option<String>,
}

/// A sample of a living process's resident memory (sysinfo, every
/// `memory_sample_interval_secs`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemorySampleEvent {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// What threat intelligence says about an executable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntelVerdictEvent {
    pub sha256: String,
    /// `virustotal`, or the name of the offline feed that lists the hash.
    pub source: String,
    /// Engines calling it malicious / suspicious, and engines that reported (VirusTotal).
    #[serde(default)]
    pub malicious: u32,
    #[serde(default)]
    pub suspicious: u32,
    #[serde(default)]
    pub engines: u32,
    /// The report (VirusTotal's page for the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl IntelVerdictEvent {
    /// What `intel.detections_above` compares: engines calling it malicious or suspicious.
    pub fn detections(&self) -> u32 {
        self.malicious + self.suspicious
    }
}

/// A new process (the event's process is the child).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkEvent {}

/// A process ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitEvent {
    /// Exit status when it exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Killing signal when a signal ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default)]
    pub core_dumped: bool,
}

impl ExitEvent {
    /// Decodes a wait(2) status word.
    pub fn from_wait_status(status: u32) -> Self {
        let signal = status & 0x7f;
        if signal == 0 {
            ExitEvent {
                exit_code: Some(((status >> 8) & 0xff) as i32),
                signal: None,
                core_dumped: false,
            }
        } else {
            ExitEvent {
                exit_code: None,
                signal: Some(signal as i32),
                core_dumped: status & 0x80 != 0,
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketFamily {
    Ipv4,
    Ipv6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportProtocol {
    Tcp,
    Udp,
}

impl TransportProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportProtocol::Tcp => "tcp",
            TransportProtocol::Udp => "udp",
        }
    }
}

/// How a connection attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// TCP established, UDP connected (or datagram sent).
    Ok,
    Refused,
    TimedOut,
    /// EPERM/EACCES: a block refused it.
    Denied,
    /// Any other error; the errno is in [`ConnectEvent::errno`].
    Error,
    /// No outcome seen before the socket closed or the collector stopped waiting.
    Pending,
}

/// Which syscall path the attempt came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectHook {
    /// connect(2)
    Connect,
    /// sendto(2)/sendmsg(2) with a destination on an unconnected datagram socket.
    Sendmsg,
    /// Windows: a TCP connection the OS reported.
    Os,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectEvent {
    pub family: SocketFamily,
    pub protocol: TransportProtocol,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    pub hook: ConnectHook,
    /// Outcome arrived after the event was first published with [`Outcome::Pending`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late_outcome: bool,
}

/// An outbound TCP connection closed (FIN, RST or abort). The event's process is the one that
/// connected, even when the close ran elsewhere (a child that inherited the socket, softirq).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseEvent {
    pub protocol: TransportProtocol,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    pub source_port: u16,
    /// When the connection was established.
    pub established: Timestamp,
    /// Payload bytes sent and acknowledged by the peer (`tcp_sock.bytes_acked`).
    pub bytes_sent: u64,
    /// Payload bytes received (`tcp_sock.bytes_received`).
    pub bytes_received: u64,
}

impl CloseEvent {
    /// How long the connection was established, given the event's time (its close).
    pub fn duration_until(&self, closed: Timestamp) -> std::time::Duration {
        let nanos = closed
            .unix_nanos()
            .saturating_sub(self.established.unix_nanos());
        std::time::Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decodes_exit_codes_and_signals() {
        assert_eq!(ExitEvent::from_wait_status(3 << 8).exit_code, Some(3));
        let killed = ExitEvent::from_wait_status(9);
        assert_eq!((killed.exit_code, killed.signal), (None, Some(9)));
        assert!(ExitEvent::from_wait_status(11 | 0x80).core_dumped);
    }

    #[test]
    fn memory_samples_are_tagged_like_the_other_kinds() {
        let detail = EventDetail::MemorySample(MemorySampleEvent { rss_bytes: 42 });
        let json = serde_json::to_value(&detail).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "memory_sample", "rss_bytes": 42})
        );
        assert_eq!(detail.kind().as_str(), "memory_sample");
        assert!(!EventKind::ALL.contains(&EventKind::MemorySample));
    }
}
