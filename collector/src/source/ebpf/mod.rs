//! The Linux source: eBPF programs (tracepoints for process lifecycle, cgroup sock_addr hooks
//! for connects) streaming records through one ring buffer, plus /proc for what predates them.

mod btf;
mod connect;
mod decode;
mod enforce;
mod offsets;
mod persist;
mod preflight;
pub mod procfs;
mod tracefs;

use std::{
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{CgroupSockAddr, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use protocol::{ArgvSource, CloseEvent, ExitEvent, Timestamp, TransportProtocol};
use sensor_common::{CgroupDrops, DropKind, InflightConnect, TrackedSock, EXEC_HAS_TTY};
use tokio::io::unix::AsyncFd;

use self::{connect::ConnectJoiner, decode::Record};
pub use self::{enforce::EbpfEnforcement, persist::hold_forever, preflight::cgroup2_root};
use super::{
    CloseRecord, EventSource, ExecRecord, ExitRecord, FileId, ForkRecord, ProcessKey,
    ProcessReader, SensorEvent, SourceError, SourceOptions, SourceStats,
};

static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/osprey-sensor.bpf.o"));

/// Tracepoints the programs attach to: (program, category, tracepoint).
const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("sys_exit_connect", "syscalls", "sys_exit_connect"),
    ("sys_exit_sendto", "syscalls", "sys_exit_sendto"),
    ("sys_exit_sendmsg", "syscalls", "sys_exit_sendmsg"),
    ("sys_exit_sendmmsg", "syscalls", "sys_exit_sendmmsg"),
    ("inet_sock_set_state", "sock", "inet_sock_set_state"),
    ("tcp_receive_reset", "tcp", "tcp_receive_reset"),
];

/// Shortest time between two reads of the ring buffer while events keep coming. Each read
/// is a wake-up of the collector (tens of µs on a VM), but an exec's finding waits for it:
/// at 2 ms the exec storm's wake-ups halved and exec→finding p99 passed 5 ms.
const BATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1);
/// How long before the reader's timer fires records wake it again: a program reads the clock
/// a moment before it commits its record, and a record committed unseen after the ring was
/// read must have woken the reader.
const WAKEUP_MARGIN: std::time::Duration = std::time::Duration::from_micros(100);
/// Records taken from the ring buffer per batch at most.
const MAX_BATCH: usize = 1024;
/// How often the kernel's connect tracking maps are swept for entries that can no longer
/// complete (a thread or socket that vanished through a path no tracepoint sees).
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// A tracking entry older than this is stale: a TCP handshake gives up after about two
/// minutes (tcp_syn_retries = 6) and a connect syscall returns by then.
const TRACKING_STALE_NS: u64 = 300 * 1_000_000_000;

/// The cgroup hooks and their attach types (uapi `enum bpf_attach_type`).
const SOCK_ADDR_PROGRAMS: &[(&str, u32)] = &[
    ("connect4", 10), // BPF_CGROUP_INET4_CONNECT
    ("connect6", 11), // BPF_CGROUP_INET6_CONNECT
    ("sendmsg4", 14), // BPF_CGROUP_UDP4_SENDMSG
    ("sendmsg6", 15), // BPF_CGROUP_UDP6_SENDMSG
];

/// The raw tracepoint program that enforces kill-on-exec, held with the cgroup hooks.
const KILL_ON_EXEC_PROGRAM: &str = "enforce_exec";

/// Converts the kernel's CLOCK_BOOTTIME stamps to wall-clock time.
struct BootClock {
    /// CLOCK_REALTIME − CLOCK_BOOTTIME, in ns.
    offset_ns: i64,
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

impl BootClock {
    fn now() -> Self {
        BootClock {
            offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME),
        }
    }
    fn wall(&self, boot_ns: u64) -> Timestamp {
        Timestamp::from_unix_nanos(boot_ns as i64 + self.offset_ns)
    }
}

pub struct EbpfSource {
    /// Keeps the programs loaded and attached.
    ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    /// Tells the programs until when the ring's reader sleeps (see [`BATCH_INTERVAL`]).
    asleep_until: Array<MapData, u64>,
    drops: PerCpuArray<MapData, u64>,
    cgroup_drops: PerCpuHashMap<MapData, u64, CgroupDrops>,
    tracking: Tracking,
    cgroup_root: PathBuf,
    expiry: tokio::time::Interval,
    sweep: tokio::time::Interval,
    /// Enforcement that outlives the collector, released (or kept, while something is
    /// enforced) when the source goes away.
    persistence: Option<persist::Persistence>,
    /// Active blocks and kill-on-exec entries (kept by the actuator).
    enforcing: Arc<AtomicU64>,
    /// Where exec records are decoded (reused: they are 6 KiB).
    exec_buf: Box<sensor_common::ExecRecord>,
    /// When the last non-empty batch was handed out (see [`BATCH_INTERVAL`]).
    last_batch: Option<tokio::time::Instant>,
    translator: Translator,
    reading: Reading,
}

/// What reading the ring took: its use, and the time spent draining it since the last
/// `stats`.
struct Reading {
    ring_use: protocol::RingUse,
    time: std::time::Duration,
}

/// Turns ring-buffer records into [`SensorEvent`]s (separate from the ring so both can be
/// borrowed at once while draining).
struct Translator {
    joiner: ConnectJoiner,
    clock: BootClock,
    clock_refreshed: Instant,
    /// Nanoseconds per clock tick (USER_HZ), for start times in /proc's units.
    ns_per_tick: u64,
    connects: Vec<super::ConnectRecord>,
}

fn load_error(context: &str, err: impl std::fmt::Debug) -> SourceError {
    SourceError::Other(format!("{context}: {err:?}"))
}

/// Takes a map out of the loaded object as its typed view.
fn take_map<M: TryFrom<aya::maps::Map>>(ebpf: &mut Ebpf, name: &str) -> Result<M, SourceError>
where
    M::Error: std::fmt::Debug,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| SourceError::Other(format!("eBPF object lacks {name}")))?;
    M::try_from(map).map_err(|e| load_error(name, e))
}

/// The kernel's connect tracking maps, swept for stale entries.
struct Tracking {
    inflight: BpfHashMap<MapData, u32, InflightConnect>,
    tcp: BpfHashMap<MapData, u64, TrackedSock>,
    stale: u64,
}

impl Tracking {
    /// Removes entries older than [`TRACKING_STALE_NS`]; they are counted.
    fn sweep(&mut self) {
        let now = clock_ns(libc::CLOCK_BOOTTIME) as u64;
        let stale = |since: u64| now.saturating_sub(since) > TRACKING_STALE_NS;
        let threads: Vec<u32> = self
            .inflight
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| stale(v.since_ns))
            .map(|(k, _)| k)
            .collect();
        let sockets: Vec<u64> = self
            .tcp
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| stale(v.since_ns))
            .map(|(k, _)| k)
            .collect();
        for tid in &threads {
            let _ = self.inflight.remove(tid);
        }
        for sock in &sockets {
            let _ = self.tcp.remove(sock);
        }
        let swept = (threads.len() + sockets.len()) as u64;
        if swept > 0 {
            tracing::debug!(swept, "stale connect tracking entries removed");
        }
        self.stale += swept;
    }
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

impl Translator {
    /// Takes what the ring holds, bounded so timers still get their turn and so that what
    /// one batch queues for the outputs (encoded events, history records) stays small next
    /// to the collector's memory bound. True when the ring is empty.
    fn drain(
        &mut self,
        ring: &mut RingBuf<MapData>,
        exec_buf: &mut sensor_common::ExecRecord,
        reading: &mut Reading,
        out: &mut Vec<SensorEvent>,
    ) -> bool {
        let now = Instant::now();
        let mut drained = false;
        let mut read = 0u64;
        for _ in 0..MAX_BATCH {
            let Some(item) = ring.next() else {
                drained = true;
                break;
            };
            read += item.len() as u64;
            self.handle(&item, exec_buf, now, out);
        }
        reading.time += now.elapsed();
        reading.ring_use.read_bytes += read;
        reading.ring_use.largest_read_bytes = reading.ring_use.largest_read_bytes.max(read);
        drained
    }

    fn start_ticks(&self, start_boottime_ns: u64) -> u64 {
        start_boottime_ns / self.ns_per_tick
    }

    fn exec(&self, r: &sensor_common::ExecRecord) -> ExecRecord {
        let (argv, argv_truncation) = decode::exec_argv(r);
        ExecRecord {
            time: self.clock.wall(r.header.boot_ns),
            process: ProcessKey {
                pid: r.header.pid,
                start_ticks: self.start_ticks(r.start_boottime),
            },
            ppid: Some(r.ppid),
            uid: r.uid,
            euid: r.euid,
            gid: r.gid,
            loginuid: (r.loginuid != u32::MAX).then_some(r.loginuid),
            invoked_path: Some(decode::c_str(&r.filename)).filter(|s| !s.is_empty()),
            exe: decode::dentry_path(&r.exe),
            comm: decode::c_str(&r.comm),
            argv,
            argv_truncation,
            argv_source: ArgvSource::Kernel,
            cwd: decode::dentry_path(&r.cwd),
            tty: (r.flags & EXEC_HAS_TTY != 0).then(|| decode::c_str(&r.tty)),
            cgroup_id: r.cgroup_id,
            exe_file: (r.exe_ino != 0).then(|| FileId {
                dev: decode::kernel_dev_to_user(r.exe_dev),
                ino: r.exe_ino,
            }),
        }
    }

    fn handle(
        &mut self,
        bytes: &[u8],
        exec_buf: &mut sensor_common::ExecRecord,
        now: Instant,
        out: &mut Vec<SensorEvent>,
    ) {
        let record = match decode::decode(bytes, exec_buf) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("skipping ring buffer record: {e}");
                return;
            }
        };
        match record {
            Record::Exec(r) => out.push(SensorEvent::Exec(self.exec(r))),
            Record::Fork(r) => out.push(SensorEvent::Fork(ForkRecord {
                time: self.clock.wall(r.header.boot_ns),
                child: ProcessKey {
                    pid: r.child_pid,
                    start_ticks: self.start_ticks(r.child_start_boottime),
                },
                ppid: r.header.pid,
            })),
            Record::Exit(r) => out.push(SensorEvent::Exit(ExitRecord {
                time: self.clock.wall(r.header.boot_ns),
                process: ProcessKey {
                    pid: r.header.pid,
                    start_ticks: self.start_ticks(r.start_boottime),
                },
                status: ExitEvent::from_wait_status(r.exit_code),
            })),
            Record::ConnectAttempt(r) => {
                let time = self.clock.wall(r.header.boot_ns);
                self.joiner.attempt(&r, time, now, &mut self.connects)
            }
            Record::SyscallResult(r) => self.joiner.syscall_result(&r, &mut self.connects),
            Record::TcpOutcome(r) => self.joiner.tcp_outcome(&r, &mut self.connects),
            Record::TcpClose(r) => out.push(SensorEvent::Close(CloseRecord {
                time: self.clock.wall(r.header.boot_ns),
                process: ProcessKey {
                    pid: r.owner_pid,
                    start_ticks: self.start_ticks(r.owner_start_boottime),
                },
                detail: CloseEvent {
                    protocol: TransportProtocol::Tcp,
                    destination_ip: decode::ip(r.family, &r.destination_addr),
                    destination_port: r.destination_port,
                    source_port: r.source_port,
                    established: self.clock.wall(r.established_ns),
                    bytes_sent: r.bytes_acked,
                    bytes_received: r.bytes_received,
                },
            })),
        }
        out.extend(self.connects.drain(..).map(SensorEvent::Connect));
    }

    fn tick(&mut self, out: &mut Vec<SensorEvent>) {
        let now = Instant::now();
        self.joiner.expire(now, &mut self.connects);
        out.extend(self.connects.drain(..).map(SensorEvent::Connect));
        if now.duration_since(self.clock_refreshed).as_secs() >= 60 {
            // Follow wall-clock adjustments (NTP, settimeofday).
            self.clock = BootClock::now();
            self.clock_refreshed = now;
        }
    }
}

impl EbpfSource {
    /// The block and kill-on-exec maps, for the actuator (once), and the gauge of what it
    /// enforces: while it is not zero, enforcement stays attached when the collector stops.
    pub fn take_enforcement(
        &mut self,
        enforcing: Arc<AtomicU64>,
    ) -> Result<EbpfEnforcement, SourceError> {
        self.enforcing = enforcing;
        EbpfEnforcement::take(&mut self.ebpf).map_err(SourceError::Other)
    }
}

impl Drop for EbpfSource {
    fn drop(&mut self) {
        if let Some(persistence) = self.persistence.take() {
            persistence.release(self.enforcing.load(Ordering::Relaxed) > 0);
        }
    }
}

impl EventSource for EbpfSource {
    type Reader = procfs::Reader;

    fn start(options: &SourceOptions) -> Result<Self, SourceError> {
        preflight::check_capabilities()?;
        preflight::check_bpf_syscall()?;
        preflight::check_kernel_btf()?;
        let tracefs = preflight::ensure_tracefs()?;
        preflight::ensure_bpffs()?;
        let cgroup_root = match &options.cgroup_root {
            Some(p) => p.clone(),
            None => preflight::cgroup2_root()?,
        };

        let offsets = offsets::resolve(Path::new(preflight::KERNEL_BTF), &tracefs)
            .map_err(|e| SourceError::Unsupported(format!("cannot lay out kernel records: {e}")))?;
        let collector_tgid = std::process::id();
        let mut persistence = persist::Persistence::prepare(&options.pin_dir)?;
        let mut ebpf = EbpfLoader::new()
            .set_global("OFFSETS", &offsets, true)
            .set_global("COLLECTOR_TGID", &collector_tgid, true)
            .set_max_entries("EVENTS", options.buffer_bytes)
            .map_pin_path(persistence.maps_dir())
            .load(OBJECT)
            .map_err(|e| load_error("cannot load the eBPF object", e))?;

        for (prog, category, name) in TRACEPOINTS {
            let p: &mut TracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| SourceError::Other(format!("eBPF object lacks program {prog}")))?
                .try_into()
                .map_err(|e| load_error(prog, e))?;
            p.load()
                .map_err(|e| load_error(&format!("verifier rejected {prog}"), e))?;
            p.attach(category, name).map_err(|e| {
                load_error(&format!("cannot attach {prog} to {category}/{name}"), e)
            })?;
        }
        {
            let p: &mut RawTracePoint = ebpf
                .program_mut(KILL_ON_EXEC_PROGRAM)
                .ok_or_else(|| SourceError::Other("eBPF object lacks enforce_exec".into()))?
                .try_into()
                .map_err(|e| load_error(KILL_ON_EXEC_PROGRAM, e))?;
            p.load()
                .map_err(|e| load_error("verifier rejected enforce_exec", e))?;
            let fd = p.fd().map_err(|e| load_error(KILL_ON_EXEC_PROGRAM, e))?;
            persistence
                .attach_raw_tracepoint(fd.as_fd(), "sched_process_exec")
                .map_err(|e| SourceError::Other(format!("cannot attach enforce_exec: {e}")))?;
        }
        {
            let p: &mut RawTracePoint = ebpf
                .program_mut("sched_process_fork")
                .ok_or_else(|| SourceError::Other("eBPF object lacks sched_process_fork".into()))?
                .try_into()
                .map_err(|e| load_error("sched_process_fork", e))?;
            p.load()
                .map_err(|e| load_error("verifier rejected sched_process_fork", e))?;
            p.attach("sched_process_fork")
                .map_err(|e| load_error("cannot attach sched_process_fork", e))?;
        }
        let cgroup = std::fs::File::open(&cgroup_root).map_err(|source| SourceError::Io {
            context: format!("cannot open cgroup v2 root {}", cgroup_root.display()),
            source,
        })?;
        for (prog, attach_type) in SOCK_ADDR_PROGRAMS {
            let p: &mut CgroupSockAddr = ebpf
                .program_mut(prog)
                .ok_or_else(|| SourceError::Other(format!("eBPF object lacks program {prog}")))?
                .try_into()
                .map_err(|e| load_error(prog, e))?;
            p.load()
                .map_err(|e| load_error(&format!("verifier rejected {prog}"), e))?;
            // A bpf_link has multi-attach semantics: descendant cgroups (a container
            // runtime's, a test's) can attach their own.
            let fd = p.fd().map_err(|e| load_error(prog, e))?;
            persistence
                .attach_cgroup(fd.as_fd(), cgroup.as_fd(), *attach_type)
                .map_err(|e| {
                    SourceError::Other(format!(
                        "cannot attach {prog} to {}: {e}",
                        cgroup_root.display()
                    ))
                })?;
        }
        let retired = persistence.hold()?;
        if retired > 0 {
            tracing::info!(retired, "took over enforcement from the previous collector");
        }

        let ring: RingBuf<MapData> = take_map(&mut ebpf, "EVENTS")?;
        let asleep_until = take_map(&mut ebpf, "READER_ASLEEP_UNTIL")?;
        let drops = take_map(&mut ebpf, "DROPS")?;
        let cgroup_drops = take_map(&mut ebpf, "CGROUP_DROPS")?;
        let tracking = Tracking {
            inflight: take_map(&mut ebpf, "CONNECT_INFLIGHT")?,
            tcp: take_map(&mut ebpf, "TCP_TRACKED")?,
            stale: 0,
        };
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long as
        // the AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| SourceError::Other(format!("cannot poll the ring buffer: {e}")))?;
        let mut expiry = tokio::time::interval(
            options
                .connect_outcome_wait
                .max(std::time::Duration::from_millis(10))
                / 2,
        );
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(cgroup = %cgroup_root.display(), ring_bytes = options.buffer_bytes, "eBPF sensor attached");
        Ok(EbpfSource {
            ebpf,
            ring,
            asleep_until,
            drops,
            cgroup_drops,
            tracking,
            cgroup_root,
            expiry,
            sweep,
            persistence: Some(persistence),
            enforcing: Arc::new(AtomicU64::new(0)),
            exec_buf: decode::new_exec_buffer(),
            last_batch: None,
            reading: Reading {
                ring_use: protocol::RingUse {
                    size_bytes: u64::from(options.buffer_bytes),
                    ..Default::default()
                },
                time: std::time::Duration::ZERO,
            },
            translator: Translator {
                joiner: ConnectJoiner::new(options.connect_outcome_wait),
                clock: BootClock::now(),
                clock_refreshed: Instant::now(),
                ns_per_tick: 1_000_000_000 / clk_tck(),
                connects: Vec::new(),
            },
        })
    }

    async fn next_batch(&mut self, out: &mut Vec<SensorEvent>) -> Result<(), SourceError> {
        // Under load, read at most once per interval: every wakeup costs more than handling
        // an event, so records are taken in batches. When idle, the first record is read at
        // once.
        let start_len = out.len();
        if let Some(last) = self.last_batch {
            let wake = last + BATCH_INTERVAL;
            let asleep = wake.saturating_duration_since(tokio::time::Instant::now());
            if asleep > WAKEUP_MARGIN {
                // Records sent meanwhile would each wake the runtime just to be left for
                // this timer: the programs hold those wake-ups back until shortly before it
                // fires. A failed update only costs the wake-ups.
                let until = clock_ns(libc::CLOCK_BOOTTIME).saturating_add(
                    i64::try_from((asleep - WAKEUP_MARGIN).as_nanos()).unwrap_or(i64::MAX),
                );
                if let Err(error) = self.asleep_until.set(0, until as u64, 0) {
                    tracing::debug!(%error, "cannot tell the programs the reader sleeps");
                }
            }
            // `last_batch` is cleared only once this sleep is over, so a caller that drops
            // this future sleeps to the same time when it calls again.
            tokio::time::sleep_until(wake).await;
            self.last_batch = None;
            // Read without waiting to be woken: records held back, and any sent behind them
            // (the ring wakes its reader only for a record it has caught up with), are here.
            let ring = self.ring.get_mut();
            self.translator
                .drain(ring, &mut self.exec_buf, &mut self.reading, out);
        }
        while out.len() == start_len {
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    let mut guard = guard.map_err(|source| SourceError::Io { context: "ring buffer poll failed".into(), source })?;
                    let ring = guard.get_inner_mut();
                    if self.translator.drain(ring, &mut self.exec_buf, &mut self.reading, out) {
                        guard.clear_ready();
                    }
                }
                _ = self.expiry.tick() => self.translator.tick(out),
                _ = self.sweep.tick() => self.tracking.sweep(),
            }
        }
        self.last_batch = Some(tokio::time::Instant::now());
        Ok(())
    }

    fn stats(&mut self) -> SourceStats {
        let mut stats = SourceStats::default();
        for kind in DropKind::ALL {
            let total = self
                .drops
                .get(&(kind as u32), 0)
                .map(|per_cpu| per_cpu.iter().sum::<u64>())
                .unwrap_or(0);
            stats.drops.insert(kind.name().to_string(), total);
        }
        let mut by_cgroup: Vec<(u64, CgroupDrops)> = self
            .cgroup_drops
            .iter()
            .filter_map(Result::ok)
            .map(|(cgroup, per_cpu)| {
                let mut sum: CgroupDrops = Default::default();
                for counts in per_cpu.iter() {
                    for (total, n) in sum.iter_mut().zip(counts) {
                        *total += n;
                    }
                }
                (cgroup, sum)
            })
            .collect();
        by_cgroup.sort_by_key(|(_, counts)| std::cmp::Reverse(counts.iter().sum::<u64>()));
        for (cgroup, counts) in by_cgroup.into_iter().take(super::MAX_CGROUPS_REPORTED) {
            let kinds = DropKind::ALL
                .iter()
                .zip(counts)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (k.name().to_string(), n))
                .collect();
            stats.drops_by_cgroup.insert(cgroup, kinds);
        }
        let joiner = &self.translator.joiner;
        stats
            .pending
            .insert("connects".into(), joiner.pending() as u64);
        stats
            .evicted
            .insert("connect_joiner".into(), joiner.evicted());
        stats
            .evicted
            .insert("kernel_connect_tracking_stale".into(), self.tracking.stale);
        stats.ring = self.reading.ring_use;
        self.reading.ring_use.largest_read_bytes = 0;
        stats.read_time = std::mem::take(&mut self.reading.time);
        stats
    }

    fn existing_processes(&mut self) -> Result<Vec<ExecRecord>, SourceError> {
        let reader = self.process_reader();
        Ok(procfs::pids()
            .into_iter()
            .filter(|&pid| pid != std::process::id())
            .filter_map(|pid| reader.read(pid))
            .collect())
    }

    fn process_reader(&self) -> procfs::Reader {
        procfs::Reader {
            boot_time_ns: self.translator.clock.offset_ns,
            clk_tck: clk_tck(),
            cgroup_root: Some(self.cgroup_root.clone()),
        }
    }

    fn live_processes(&mut self) -> Result<Vec<ProcessKey>, SourceError> {
        Ok(procfs::pids()
            .into_iter()
            .filter_map(|pid| {
                procfs::read_stat(pid).map(|s| ProcessKey {
                    pid,
                    start_ticks: s.start_ticks,
                })
            })
            .collect())
    }
}
