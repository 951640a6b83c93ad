//! The Windows source: the ETW sessions of `sensor-etw` behind [`EventSource`].
//!
//! sensor-etw translates each ETW event on its session threads into a platform-neutral record
//! and hands it to a bounded channel; here records wait in the command-line join (a start is
//! held until the kernel's copy of its command line arrives, see `sensor_etw::join`) and are
//! mapped field for field onto [`SensorEvent`]s. Windows creates a process and its image in
//! one step: a start is one [`ExecRecord`] carrying its parent, with no
//! [`ForkRecord`](super::ForkRecord).

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{ArgvSource, ArgvTruncation, ConnectHook, Outcome, Timestamp};
use sensor_etw::{
    snapshot, CommandLineJoin, Connection, Direction, EtwError, EtwRecord, EtwSessions,
    ProcessInfo, ProcessStart, ProcessStop, SessionConfig, Sink, NO_UNIX_ID,
};
use tokio::sync::mpsc;

use super::{
    ConnectRecord, EventSource, ExecRecord, ExitRecord, ProcessKey, ProcessReader, SensorEvent,
    SourceError, SourceOptions, SourceStats,
};

/// Records in flight between the ETW threads and the pipeline. When full, the ETW threads
/// block and ETW's own buffers absorb the burst (and count what they lose): nothing is
/// dropped here.
const CHANNEL_CAPACITY: usize = 65_536;
/// How long a start waits for its command line. Both sessions flush every second, so the
/// kernel's copy normally arrives within about one flush of the start.
const COMMAND_LINE_WAIT: Duration = Duration::from_secs(3);
/// Longest sleep when nothing is pending: bounds how late a stopped session is noticed.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Records taken from the channel per wake-up before they are released.
const MAX_BATCH: usize = 4096;

pub struct EtwSource {
    // Dropped first: a session thread blocked on a full channel then returns at once, before
    // the sessions are stopped.
    rx: mpsc::Receiver<EtwRecord>,
    sessions: EtwSessions,
    join: CommandLineJoin,
    ready: Vec<EtwRecord>,
    /// Whether the join currently waits for command lines (the session runs).
    waiting_for_command_lines: bool,
    /// Starts whose command line was read from the live process after the kernel's copy did
    /// not come.
    argv_from_process: u64,
}

fn source_error(err: EtwError) -> SourceError {
    match err {
        EtwError::Unsupported => SourceError::Unsupported(err.to_string()),
        EtwError::Os { context, source } => SourceError::Io { context, source },
        other => SourceError::Other(other.to_string()),
    }
}

/// Reads one process from a process snapshot (Windows has no per-pid /proc).
pub struct SnapshotReader;

impl ProcessReader for SnapshotReader {
    fn read(&self, pid: u32) -> Option<ExecRecord> {
        snapshot::processes()
            .ok()?
            .into_iter()
            .find(|p| p.pid == pid)
            .map(existing_exec)
    }
}

impl EventSource for EtwSource {
    type Reader = SnapshotReader;

    fn start(options: &SourceOptions) -> Result<Self, SourceError> {
        let config = SessionConfig::default().with_budget_bytes(options.buffer_bytes);
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let sink: Sink = Arc::new(move |record| {
            // The ETW threads are not runtime threads, so blocking here is allowed; an error
            // means the source was dropped (shutdown) and the record has nowhere to go.
            let _ = tx.blocking_send(record);
        });
        let sessions = EtwSessions::start(&config, sink).map_err(source_error)?;
        let command_lines = sessions.health().command_lines;
        Ok(Self {
            rx,
            sessions,
            join: CommandLineJoin::new(command_lines.then_some(COMMAND_LINE_WAIT)),
            ready: Vec::new(),
            waiting_for_command_lines: command_lines,
            argv_from_process: 0,
        })
    }

    async fn next_batch(&mut self, out: &mut Vec<SensorEvent>) -> Result<(), SourceError> {
        loop {
            let health = self.sessions.health();
            if self.waiting_for_command_lines && !health.command_lines {
                tracing::warn!("the command-line ETW session stopped: starts go on without argv");
                self.join.set_wait(None);
                self.waiting_for_command_lines = false;
            }
            self.join.pop_ready(Instant::now(), &mut self.ready);
            if !self.ready.is_empty() {
                self.emit(out);
                return Ok(());
            }
            if health.main_ended && self.rx.is_empty() {
                self.join.flush(&mut self.ready);
                self.emit(out);
                if !out.is_empty() {
                    return Ok(());
                }
                return Err(SourceError::Other(
                    "the ETW session stopped (stopped from outside, or failed): no more events"
                        .to_string(),
                ));
            }
            let wait = self
                .join
                .next_deadline()
                .map(|deadline| deadline.saturating_duration_since(Instant::now()))
                .unwrap_or(IDLE_TICK)
                .min(IDLE_TICK);
            // recv is cancel-safe: if the pipeline's select! drops this future, no record is
            // lost (records only move into `self` after recv returned them).
            match tokio::time::timeout(wait, self.rx.recv()).await {
                Ok(Some(record)) => {
                    let now = Instant::now();
                    self.join.push(record, now);
                    for _ in 1..MAX_BATCH {
                        match self.rx.try_recv() {
                            Ok(record) => self.join.push(record, now),
                            Err(_) => break,
                        }
                    }
                }
                Ok(None) => {
                    // Every sender is gone: the sessions were torn down.
                    self.join.flush(&mut self.ready);
                    self.emit(out);
                    return Ok(());
                }
                Err(_elapsed) => {}
            }
        }
    }

    fn stats(&mut self) -> SourceStats {
        let mut stats = SourceStats::default();
        for (name, count) in self.sessions.stats().drops() {
            stats.drops.insert(name.to_string(), count);
        }
        let join = self.join.stats();
        // The start is still reported, with argv from the live process when it could still
        // be read (else empty, marked `unavailable`).
        stats.drops.insert("argv_missing".to_string(), join.missing);
        stats
            .drops
            .insert("cmdline_unmatched".to_string(), join.unmatched);
        stats
            .drops
            .insert("argv_from_process".to_string(), self.argv_from_process);
        stats
    }

    fn existing_processes(&mut self) -> Result<Vec<ExecRecord>, SourceError> {
        let processes = snapshot::processes().map_err(source_error)?;
        Ok(processes.into_iter().map(existing_exec).collect())
    }

    fn process_reader(&self) -> SnapshotReader {
        SnapshotReader
    }

    fn live_processes(&mut self) -> Result<Vec<ProcessKey>, SourceError> {
        Ok(snapshot::live()
            .map_err(source_error)?
            .into_iter()
            .map(|(pid, create_time)| ProcessKey {
                pid,
                start_ticks: create_time.unwrap_or(0),
            })
            .collect())
    }
}

impl EtwSource {
    fn emit(&mut self, out: &mut Vec<SensorEvent>) {
        for mut record in self.ready.drain(..) {
            if let EtwRecord::ProcessStart(start) = &mut record {
                if start.argv.is_none() {
                    // The kernel's copy never came: read it from the process if it still runs
                    // (and is still the same process).
                    if let Some(line) = snapshot::command_line(start.pid, start.create_time) {
                        start.set_command_line(line);
                        self.argv_from_process += 1;
                    }
                }
            }
            out.extend(sensor_event(record));
        }
    }
}

fn sensor_event(record: EtwRecord) -> Option<SensorEvent> {
    Some(match record {
        EtwRecord::ProcessStart(start) => SensorEvent::Exec(exec_record(start)),
        EtwRecord::ProcessStop(stop) => SensorEvent::Exit(exit_record(stop)),
        EtwRecord::Connection(connection) => SensorEvent::Connect(connect_record(connection)),
        // Consumed by the join; one that gets here has no further use.
        EtwRecord::KernelProcessStart(_) => return None,
    })
}

/// Windows has no Unix ids: [`NO_UNIX_ID`] (never 0, which would read as root).
fn exec_record(start: ProcessStart) -> ExecRecord {
    let tty = start.terminal();
    ExecRecord {
        time: start.time,
        process: ProcessKey {
            pid: start.pid,
            start_ticks: start.create_time,
        },
        ppid: Some(start.ppid),
        uid: NO_UNIX_ID,
        euid: NO_UNIX_ID,
        gid: NO_UNIX_ID,
        loginuid: None,
        // Windows has no separate "path as invoked": the image path is all the kernel reports.
        invoked_path: None,
        exe: start.exe,
        comm: start.comm,
        argv_truncation: start.argv.is_none().then_some(ArgvTruncation::Unavailable),
        argv: start.argv.unwrap_or_default(),
        argv_source: ArgvSource::Os,
        cwd: None,
        tty,
        cgroup_id: 0,
        exe_file: None,
    }
}

fn exit_record(stop: ProcessStop) -> ExitRecord {
    ExitRecord {
        time: stop.time,
        process: ProcessKey {
            pid: stop.pid,
            start_ticks: stop.create_time,
        },
        status: stop.exit,
    }
}

/// Outbound connections (12/28) come from connect(): hook `Connect`. Accepted ones (15/31)
/// have no counterpart on Linux: hook `Os` ("a TCP connection the OS reported") keeps them
/// apart, so "connecting to a non-local destination" rules can tell who initiated.
fn connect_record(connection: Connection) -> ConnectRecord {
    ConnectRecord {
        time: connection.time,
        pid: connection.pid,
        family: connection.family,
        protocol: connection.protocol,
        destination_ip: protocol::net::canonical_ip(connection.destination_ip),
        destination_port: connection.destination_port,
        source_ip: Some(connection.source_ip),
        source_port: Some(connection.source_port),
        // The TCP stack logs these once the connection exists; failed attempts are separate
        // events (17/33) the sensor does not enable.
        outcome: Outcome::Ok,
        errno: None,
        hook: match connection.direction {
            Direction::Outbound => ConnectHook::Connect,
            Direction::Inbound => ConnectHook::Os,
        },
        late_outcome: false,
    }
}

fn existing_exec(info: ProcessInfo) -> ExecRecord {
    let time = info
        .create_time
        .and_then(sensor_etw::filetime::to_timestamp)
        .unwrap_or_else(Timestamp::now);
    let argv = info.argv();
    let tty = info.terminal();
    ExecRecord {
        time,
        process: ProcessKey {
            pid: info.pid,
            start_ticks: info.create_time.unwrap_or(0),
        },
        ppid: Some(info.ppid),
        uid: NO_UNIX_ID,
        euid: NO_UNIX_ID,
        gid: NO_UNIX_ID,
        loginuid: None,
        invoked_path: None,
        exe: info.exe,
        comm: info.name,
        argv_truncation: argv.is_none().then_some(ArgvTruncation::Unavailable),
        argv: argv.unwrap_or_default(),
        argv_source: ArgvSource::Os,
        cwd: None,
        tty,
        cgroup_id: 0,
        exe_file: None,
    }
}

/// End to end on the Windows build (run under wine by .ci/windows.sh): raw ETW property bytes
/// through sensor-etw's translation into the collector's records, field for field.
#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::HashMap;
    use std::net::IpAddr;

    use protocol::{ExitEvent, SocketFamily, TransportProtocol};
    use sensor_etw::properties::{EventProperties, PropertyError};
    use sensor_etw::provider::ProviderKind;
    use sensor_etw::{DeviceMap, EventHeader, Translator};

    use super::*;

    struct Props(HashMap<&'static str, Vec<u8>>);

    impl EventProperties for Props {
        fn raw(&self, name: &str) -> Result<Cow<'_, [u8]>, PropertyError> {
            self.0
                .get(name)
                .map(|bytes| Cow::Borrowed(bytes.as_slice()))
                .ok_or_else(|| PropertyError::Missing(name.to_string()))
        }
    }

    fn utf16z(text: &str) -> Vec<u8> {
        text.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    /// 2023-11-14T22:13:20Z as FILETIME.
    const T: u64 = 116_444_736_000_000_000 + 17_000_000_000_000_000;

    fn translate(provider: ProviderKind, event_id: u16, pid: u32, props: Props) -> EtwRecord {
        let devices = DeviceMap::new([("C:", r"\Device\HarddiskVolume3")], None);
        let header = EventHeader {
            provider,
            event_id,
            opcode: 0,
            pid,
            timestamp: T as i64,
        };
        Translator::new(devices)
            .translate(&header, &props)
            .expect("valid event")
            .expect("a record")
    }

    /// Through the join (not waiting) and the mapping, as `next_batch` does.
    fn events(record: EtwRecord) -> Vec<SensorEvent> {
        let mut join = CommandLineJoin::new(None);
        join.push(record, Instant::now());
        let mut ready = Vec::new();
        join.flush(&mut ready);
        ready.into_iter().filter_map(sensor_event).collect()
    }

    #[test]
    fn process_start_becomes_an_exec_with_parent_and_identity() {
        let props = Props(HashMap::from([
            ("ProcessID", 4242u32.to_le_bytes().to_vec()),
            ("CreateTime", (T + 7).to_le_bytes().to_vec()),
            ("ParentProcessID", 1000u32.to_le_bytes().to_vec()),
            ("SessionID", 1u32.to_le_bytes().to_vec()),
            (
                "ImageName",
                utf16z(r"\Device\HarddiskVolume3\Windows\System32\cmd.exe"),
            ),
        ]));
        let mut record = translate(ProviderKind::KernelProcess, 1, 999, props);
        if let EtwRecord::ProcessStart(start) = &mut record {
            start.set_command_line(r#"cmd.exe /c "echo hi""#.to_string());
        }
        let expected = ExecRecord {
            time: Timestamp::from_unix_nanos(1_700_000_000_000_000_000),
            process: ProcessKey {
                pid: 4242,
                start_ticks: T + 7,
            },
            ppid: Some(1000),
            uid: NO_UNIX_ID,
            euid: NO_UNIX_ID,
            gid: NO_UNIX_ID,
            loginuid: None,
            invoked_path: None,
            exe: Some(r"C:\Windows\System32\cmd.exe".to_string()),
            comm: "cmd.exe".to_string(),
            argv: vec!["cmd.exe".into(), "/c".into(), "echo hi".into()],
            argv_truncation: None,
            argv_source: ArgvSource::Os,
            cwd: None,
            tty: Some("session1".to_string()),
            cgroup_id: 0,
            exe_file: None,
        };
        assert_eq!(events(record), vec![SensorEvent::Exec(expected)]);
    }

    #[test]
    fn process_stop_becomes_an_exit_of_the_same_process_key() {
        let props = Props(HashMap::from([
            ("ProcessID", 4242u32.to_le_bytes().to_vec()),
            ("CreateTime", (T + 7).to_le_bytes().to_vec()),
            ("ExitCode", 1u32.to_le_bytes().to_vec()),
        ]));
        let record = translate(ProviderKind::KernelProcess, 2, 4242, props);
        assert_eq!(
            events(record),
            vec![SensorEvent::Exit(ExitRecord {
                time: Timestamp::from_unix_nanos(1_700_000_000_000_000_000),
                process: ProcessKey {
                    pid: 4242,
                    start_ticks: T + 7
                },
                status: ExitEvent {
                    exit_code: Some(1),
                    signal: None,
                    core_dumped: false
                },
            })]
        );
    }

    #[test]
    fn tcp_connects_become_connect_records_owned_by_the_pid_property() {
        let v4 = Props(HashMap::from([
            ("PID", 4242u32.to_le_bytes().to_vec()),
            ("daddr", vec![93, 184, 216, 34]),
            ("saddr", vec![10, 0, 0, 5]),
            ("dport", vec![0x01, 0xBB]),
            ("sport", vec![0xC3, 0x50]),
        ]));
        let record = translate(ProviderKind::KernelNetwork, 12, 4, v4);
        let expected = ConnectRecord {
            time: Timestamp::from_unix_nanos(1_700_000_000_000_000_000),
            pid: 4242,
            family: SocketFamily::Ipv4,
            protocol: TransportProtocol::Tcp,
            destination_ip: "93.184.216.34".parse::<IpAddr>().expect("literal"),
            destination_port: 443,
            source_ip: Some("10.0.0.5".parse().expect("literal")),
            source_port: Some(50000),
            outcome: Outcome::Ok,
            errno: None,
            hook: ConnectHook::Connect,
            late_outcome: false,
        };
        assert_eq!(events(record), vec![SensorEvent::Connect(expected)]);

        let remote: std::net::Ipv6Addr = "2001:db8::443".parse().expect("literal");
        let v6 = Props(HashMap::from([
            ("PID", 77u32.to_le_bytes().to_vec()),
            ("daddr", remote.octets().to_vec()),
            ("saddr", std::net::Ipv6Addr::LOCALHOST.octets().to_vec()),
            ("dport", vec![0x00, 0x50]),
            ("sport", vec![0xFF, 0xFE]),
        ]));
        let accepted = translate(ProviderKind::KernelNetwork, 31, 4, v6);
        match events(accepted).as_slice() {
            [SensorEvent::Connect(c)] => {
                assert_eq!(
                    (c.pid, c.family, c.hook),
                    (77, SocketFamily::Ipv6, ConnectHook::Os)
                );
                assert_eq!(c.destination_ip.to_string(), "2001:db8::443");
                assert_eq!(c.destination_port, 80);
                assert_eq!(c.source_ip.map(|ip| ip.to_string()).as_deref(), Some("::1"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn existing_processes_use_the_creation_time_as_identity_and_time() {
        let rec = existing_exec(ProcessInfo {
            pid: 500,
            ppid: 4,
            name: "svchost.exe".into(),
            exe: Some(r"C:\Windows\System32\svchost.exe".into()),
            create_time: Some(T),
            session_id: Some(0),
            command_line: Some(r"C:\Windows\System32\svchost.exe -k netsvcs".into()),
        });
        assert_eq!(
            rec.process,
            ProcessKey {
                pid: 500,
                start_ticks: T
            }
        );
        assert_eq!(
            rec.time,
            Timestamp::from_unix_nanos(1_700_000_000_000_000_000)
        );
        assert_eq!(rec.ppid, Some(4));
        assert_eq!(rec.tty, None, "session 0 has no terminal");
        assert_eq!(rec.argv.len(), 3);
        assert_eq!(rec.uid, NO_UNIX_ID);
    }
}
