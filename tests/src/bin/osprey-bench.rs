//! `osprey-bench` (run by `cargo xtask bench`): the collector's cost and latency, measured
//! with real workloads against the release build, with and without the collector, interleaved.
//!
//! Reported: the workload's throughput ratio (with / without), capture completeness, the
//! collector's CPU time per event, its peak RSS, and exec→finding latency (p50/p99) as seen by
//! a NATS subscriber.
//!
//! With `--peer bpftrace`, instead: the same workloads under Osprey and under a bpftrace
//! script that prints what Osprey reports (execs with their argv, connects with their
//! destination), compared figure by figure.

use std::{
    net::TcpListener,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use clap::Parser;
use osprey_tests::{
    collector::Collector, eventually, marker, nats::NatsServer, terminal::Tmux, workload,
};
use protocol::{subject, EventDetail, ProcessFilter, Query, QueryKind, Timestamp};

const EXECS: usize = 2_000;
const CONNECTS: usize = 5_000;
const LATENCY_SAMPLES: usize = 200;
const ROUNDS: usize = 3;
/// The flood scenario: distinct `sendmmsg` destinations, then short-lived processes.
const FLOOD_DESTINATIONS: usize = 50_000;
const FORK_STORM: usize = 10_000;
/// The event rate the console is measured under (must-show 6 of the console's issue).
const CONSOLE_EVENTS_PER_SEC: usize = 5_000;
const CONSOLE_SECS: usize = 10;
/// Extra live processes for the query latency measurement.
const QUERY_EXTRA_PROCESSES: usize = 5_000;

#[derive(clap::Parser)]
#[command(about = "Osprey's cost and latency under real workloads (run by `cargo xtask bench`)")]
struct Args {
    /// Instead of the default figures, compare Osprey with this monitor on the same workloads.
    #[arg(long, value_enum)]
    peer: Option<Peer>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Peer {
    /// A bpftrace script printing execs (pid, comm, argv) and connects (pid, destination).
    Bpftrace,
}

/// The workloads run as child processes, so this process's own threads (its NATS subscriber
/// decoding every event) don't compete with them inside one process.
fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let status = cmd.stdout(Stdio::null()).status().expect("workload runs");
    assert!(status.success(), "workload failed: {status}");
    start.elapsed()
}

/// `/bin/true <mark>-<i>`, EXECS times, each forked and waited for by `bin`
/// ([`workload::EXEC_STORM`]).
fn exec_storm(bin: &Path, mark: &str) -> Duration {
    timed(Command::new(bin).args([mark, &EXECS.to_string()]))
}

/// CONNECTS TCP connects (and closes) to a loopback listener on `port`, accepted by a thread
/// of the same child: an acceptor in this process would be starved by its NATS subscriber,
/// fill the listen backlog and turn dropped SYNs into one-second retransmits.
fn connect_storm(port: u16) -> Duration {
    timed(Command::new("/usr/bin/python3").args([
        "-c",
        &format!(
            "import socket, threading\n\
             l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             l.bind(('127.0.0.1', {port})); l.listen(1024)\n\
             def accept():\n    while True:\n        l.accept()[0].close()\n\
             threading.Thread(target=accept, daemon=True).start()\n\
             for _ in range({CONNECTS}):\n    socket.create_connection(('127.0.0.1', {port})).close()\n"
        ),
    ]))
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Measured {
    without: Vec<f64>,
    with: Vec<f64>,
    captured: Vec<f64>,
    cpu_us_per_event: Vec<f64>,
}

impl Measured {
    fn new() -> Self {
        Measured {
            without: vec![],
            with: vec![],
            captured: vec![],
            cpu_us_per_event: vec![],
        }
    }
    fn report(&self, name: &str, unit: &str) {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        println!(
            "{name}: without {:.0} {unit}/s, with {:.0} {unit}/s, ratio {:.3}; captured {:.1}%; collector CPU {:.2} µs/event",
            mean(&self.without),
            mean(&self.with),
            mean(&self.with) / mean(&self.without),
            100.0 * self.captured.iter().cloned().fold(f64::INFINITY, f64::min),
            mean(&self.cpu_us_per_event),
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = NatsServer::start();
    let client = nats.client().await;
    // A free port for the storm's own listener.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let exec_bin = workload::compile_c(dir.path(), "exec_storm", workload::EXEC_STORM);
    if let Some(Peer::Bpftrace) = args.peer {
        return peer::compare(&client, &nats, dir.path(), &exec_bin, port, tck).await;
    }
    let mut exec = Measured::new();
    let mut conn = Measured::new();
    let mut exec_bare = Measured::new();
    let mut conn_bare = Measured::new();
    let mut peak_rss = 0;
    let mut peak_rss_bare = 0;
    let mut latencies: Vec<f64> = Vec::new();

    for round in 0..ROUNDS {
        // Without the collector.
        let without = EXECS as f64 / exec_storm(&exec_bin, &marker("warm")).as_secs_f64();
        exec.without.push(without);
        exec_bare.without.push(without);
        let without = CONNECTS as f64 / connect_storm(port).as_secs_f64();
        conn.without.push(without);
        conn_bare.without.push(without);

        // With it, its history off and on: a fresh collector for each.
        let spool = dir.path().join(format!("spool{round}-off"));
        let bare = Collector::start(&client, &nats.url(), &spool, &["--no-history"]).await;
        storms(&bare, &exec_bin, &mut exec_bare, &mut conn_bare, port, tck).await;
        peak_rss_bare = peak_rss_bare.max(peak_rss_kib(bare.pid()));
        drop(bare);
        let spool = dir.path().join(format!("spool{round}"));
        let collector = Collector::start(&client, &nats.url(), &spool, &[]).await;
        let pid = collector.pid();
        storms(&collector, &exec_bin, &mut exec, &mut conn, port, tck).await;

        // Latency: a background shell per sample raises a finding; compare the exec's kernel
        // timestamp with the moment the finding reaches this NATS subscriber.
        let mark = marker("latency");
        let n0 = collector.findings(|_| true).len();
        for i in 0..LATENCY_SAMPLES / ROUNDS {
            let _ = Command::new("setsid")
                .args(["--wait", "/bin/sh", "-c", &format!(": {mark}-{i}")])
                .stdin(Stdio::null())
                .status();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let received = collector.received.lock().expect("lock");
        for (f, at) in received
            .findings
            .iter()
            .zip(received.finding_arrivals.iter())
            .skip(n0)
        {
            if f.process.argv.iter().any(|a| a.contains(&mark)) {
                let t: Timestamp = f.triggers[0].time;
                latencies.push((at.unix_nanos() - t.unix_nanos()) as f64 / 1e6);
            }
        }
        drop(received);
        peak_rss = peak_rss.max(peak_rss_kib(pid));
        drop(collector);
    }
    let flood = floods(&client, &nats.url(), dir.path()).await;
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    println!(
        "osprey bench: {ROUNDS} interleaved rounds; {EXECS} execs and {CONNECTS} connects per run"
    );
    exec.report("exec storm (history on)", "exec");
    exec_bare.report("exec storm (history off)", "exec");
    conn.report("connect storm (history on)", "connect");
    conn_bare.report("connect storm (history off)", "connect");
    println!(
        "collector peak RSS: {:.1} MiB with its history, {:.1} MiB without",
        peak_rss as f64 / 1024.0,
        peak_rss_bare as f64 / 1024.0
    );
    println!(
        "exec→finding latency (NATS subscriber, {} samples): p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    println!("{flood}");

    let collector = Collector::start(&client, &nats.url(), &dir.path().join("spool-q"), &[]).await;
    query_latency(&client, &collector).await;
    console(&collector, &nats, port, tck).await;
}

/// The exec storm and the connect storm under `collector`, into `exec` and `conn`.
async fn storms(
    collector: &Collector,
    exec_bin: &Path,
    exec: &mut Measured,
    conn: &mut Measured,
    port: u16,
    tck: f64,
) {
    let pid = collector.pid();
    let mark = marker("exec");
    let cpu0 = cpu_ticks(pid);
    let elapsed = exec_storm(exec_bin, &mark);
    exec.with.push(EXECS as f64 / elapsed.as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu1 = cpu_ticks(pid);
    let got = collector
        .events(|e| {
            matches!(e.detail, EventDetail::Exec(_))
                && e.process.argv.get(1).is_some_and(|a| a.starts_with(&mark))
        })
        .len();
    exec.captured.push(got as f64 / EXECS as f64);
    // fork + exec + exit per process.
    exec.cpu_us_per_event
        .push((cpu1 - cpu0) as f64 / tck * 1e6 / (3 * EXECS) as f64);

    let cpu0 = cpu_ticks(pid);
    let elapsed = connect_storm(port);
    conn.with.push(CONNECTS as f64 / elapsed.as_secs_f64());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu1 = cpu_ticks(pid);
    let got = collector
        .events(|e| matches!(&e.detail, EventDetail::Connect(c) if c.destination_port == port))
        .len();
    conn.captured.push(got as f64 / CONNECTS as f64);
    conn.cpu_us_per_event
        .push((cpu1 - cpu0) as f64 / tck * 1e6 / CONNECTS as f64);
}

/// Host state query round trips (a NATS request answered by the collector's pipeline), with
/// the host's own processes and with QUERY_EXTRA_PROCESSES more.
async fn query_latency(client: &async_nats::Client, collector: &Collector) {
    let ask = |query: Query| async move {
        let payload = protocol::encode(&query).expect("a query encodes");
        let mut took = Vec::new();
        for _ in 0..20 {
            let start = Instant::now();
            let reply = client
                .request(subject::query(&collector.host), payload.clone().into())
                .await
                .expect("the collector answers");
            took.push(start.elapsed().as_secs_f64() * 1e3);
            let _: protocol::Snapshot = protocol::decode(&reply.payload).expect("a Snapshot");
        }
        took.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        took
    };
    let list = || Query {
        kind: QueryKind::Processes(ProcessFilter::default()),
    };
    let page = || Query {
        kind: QueryKind::Processes(ProcessFilter {
            limit: protocol::query::MAX_PAGE,
            ..Default::default()
        }),
    };
    let report = |what: &str, took: &[f64]| {
        println!(
            "query latency, {what}, table of {} processes: p50 {:.2} ms, max {:.2} ms",
            collector
                .last_heartbeat()
                .map_or(0, |h| h.process_table_size),
            percentile(took, 0.5),
            percentile(took, 1.0)
        );
    };
    report("first 50 by risk", &ask(list()).await);
    // QUERY_EXTRA_PROCESSES sleepers in a process group of their own.
    let mut sleepers = Command::new("setsid")
        .args([
            "bash",
            "-c",
            &format!("for i in $(seq {QUERY_EXTRA_PROCESSES}); do sleep 600 & done; wait"),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("sleepers start");
    let group = sleepers.id() as i32;
    let wanted = QUERY_EXTRA_PROCESSES as u64;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if collector
            .last_heartbeat()
            .is_some_and(|h| h.process_table_size > wanted)
        {
            break;
        }
    }
    report("first 50 by risk", &ask(list()).await);
    report("500 by risk", &ask(page()).await);
    // SAFETY: killing the process group this function started.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = sleepers.wait();
}

/// `osprey top` in a real terminal (tmux) while the collector publishes about
/// CONSOLE_EVENTS_PER_SEC events per second: its CPU, its frame draw times, and how long a
/// key takes to show on screen.
async fn console(collector: &Collector, nats: &NatsServer, port: u16, tck: f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stats = dir.path().join("top-stats.json");
    let bin = osprey_tests::bin_dir().join("osprey");
    let term = Tmux::start(
        &format!(
            "{} top --nats {} --host {} --stats-file {}",
            bin.display(),
            nats.url(),
            collector.host,
            stats.display()
        ),
        200,
        50,
        &[("OSPREY_SESSION", "/nonexistent")],
    );
    term.wait_line("the host", false, |l| l.contains(&collector.host))
        .await;
    let top = term.program_pid("osprey").expect("osprey top runs");
    // Paced connects to a listener of the same child, CONSOLE_EVENTS_PER_SEC a second.
    let mut load = Command::new("/usr/bin/python3")
        .args([
            "-c",
            &format!(
                "import socket, threading, time\n\
                 l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 l.bind(('127.0.0.1', {port})); l.listen(1024)\n\
                 def accept():\n    while True:\n        l.accept()[0].close()\n\
                 threading.Thread(target=accept, daemon=True).start()\n\
                 start = time.time()\n\
                 for i in range({total}):\n\
                 \x20   socket.create_connection(('127.0.0.1', {port})).close()\n\
                 \x20   ahead = start + i / {rate} - time.time()\n\
                 \x20   if ahead > 0: time.sleep(ahead)\n",
                total = CONSOLE_EVENTS_PER_SEC * CONSOLE_SECS,
                rate = CONSOLE_EVENTS_PER_SEC
            ),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("the load runs");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu0 = cpu_ticks(top);
    let t0 = Instant::now();
    // Key to screen: the help opens, any key closes it.
    let mut key_ms = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        term.keys(&["?"]);
        term.wait_line("the help", false, |l| l.contains("osprey top — keys"))
            .await;
        key_ms.push(start.elapsed().as_secs_f64() * 1e3);
        term.keys(&["x"]);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = (cpu_ticks(top) - cpu0) as f64 / tck / t0.elapsed().as_secs_f64() * 100.0;
    let rate = collector.last_heartbeat().map_or(0.0, |h| h.events_per_sec);
    let _ = load.wait();
    term.keys(&["Escape"]);
    let mut summary = serde_json::Value::Null;
    for _ in 0..50 {
        if let Ok(text) = std::fs::read(&stats) {
            summary = serde_json::from_slice(&text).unwrap_or_default();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    key_ms.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    println!(
        "osprey top at {rate:.0} events/s (collector heartbeat): CPU {cpu:.1}% of one core; \
         frame draw p50 {} ms, p99 {} ms, max {} ms over {} frames; key to screen p50 {:.0} ms, \
         max {:.0} ms; {} events taken in, {} messages skipped",
        summary["draw_ms_p50"],
        summary["draw_ms_p99"],
        summary["draw_ms_max"],
        summary["frames"],
        percentile(&key_ms, 0.5),
        percentile(&key_ms, 1.0),
        summary["events"],
        summary["skipped"],
    );
}

/// A fresh collector through a `sendmmsg` flood to FLOOD_DESTINATIONS destinations and a
/// storm of FORK_STORM short-lived processes: its peak RSS, and whether anything is left
/// pending once the host is quiet.
async fn floods(client: &async_nats::Client, url: &str, dir: &std::path::Path) -> String {
    let flood = workload::compile_c(dir, "sendmmsg_flood", workload::SENDMMSG_FLOOD);
    let storm = workload::compile_c(dir, "fork_storm", workload::FORK_STORM);
    let collector = Collector::start(client, url, &dir.join("spool-flood"), &[]).await;
    let pid = collector.pid();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let cpu0 = cpu_ticks(pid);
    timed(Command::new(&flood).args([FLOOD_DESTINATIONS.to_string(), port.to_string()]));
    timed(Command::new(&storm).arg(FORK_STORM.to_string()));
    let quiet = eventually(Duration::from_secs(60), || {
        collector
            .last_heartbeat()
            .filter(|h| h.pending.values().all(|&n| n == 0))
    })
    .await;
    let cpu1 = cpu_ticks(pid);
    let pending = collector
        .last_heartbeat()
        .map(|h| format!("{:?}", h.pending))
        .unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    format!(
        "floods ({FLOOD_DESTINATIONS} sendmmsg destinations, {FORK_STORM} forks): collector peak RSS {:.1} MiB, CPU {:.2} s, {} afterwards: {pending}",
        peak_rss_kib(pid) as f64 / 1024.0,
        (cpu1 - cpu0) as f64 / tck,
        if quiet.is_some() { "nothing pending" } else { "STILL PENDING" }
    )
}

/// `--peer bpftrace`: each workload without a monitor, under a fresh Osprey collector (default
/// configuration) and under a fresh bpftrace, ROUNDS interleaved rounds, medians reported.
mod peer {
    use std::{
        collections::{BTreeMap, HashMap, HashSet},
        path::PathBuf,
        process::Child,
    };

    use super::*;

    /// Script processes per run of the script workload.
    const SCRIPTS: usize = 300;
    /// What a bpftrace user would write to see what Osprey reports: every exec with its pid,
    /// comm and argv, and every IPv4/IPv6 connect with its pid and destination.
    const SCRIPT: &str = r#"
BEGIN { printf("osprey-bench-ready\n"); }
tracepoint:syscalls:sys_enter_execve {
    printf("exec %d %s ", pid, comm);
    join(args->argv);
}
tracepoint:syscalls:sys_enter_connect {
    $sa = (struct sockaddr_in *)args->uservaddr;
    if ($sa->sin_family == 2) {
        printf("connect %d %s %d\n", pid, ntop($sa->sin_addr.s_addr), bswap($sa->sin_port));
    }
    if ($sa->sin_family == 10) {
        $sa6 = (struct sockaddr_in6 *)args->uservaddr;
        printf("connect %d %s %d\n", pid, ntop($sa6->sin6_addr.in6_u.u6_addr8),
               bswap($sa6->sin6_port));
    }
}
"#;
    const READY: &str = "osprey-bench-ready";
    const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

    #[derive(Clone, Copy, PartialEq)]
    enum Workload {
        Exec,
        Connect,
        Scripts,
    }

    impl Workload {
        const ALL: [Workload; 3] = [Workload::Exec, Workload::Connect, Workload::Scripts];

        fn items(self) -> usize {
            match self {
                Workload::Exec => EXECS,
                Workload::Connect => CONNECTS,
                Workload::Scripts => SCRIPTS,
            }
        }

        fn unit(self) -> &'static str {
            match self {
                Workload::Exec => "exec",
                Workload::Connect => "connect",
                Workload::Scripts => "script",
            }
        }

        fn title(self) -> String {
            match self {
                Workload::Exec => format!("exec storm ({EXECS} × fork + execl /bin/true MARK-i)"),
                Workload::Connect => {
                    format!("connect storm ({CONNECTS} TCP connects from one python3)")
                }
                Workload::Scripts => format!(
                    "scripts ({SCRIPTS} × python3 -c '…connect…  # MARK-i', one connect each)"
                ),
            }
        }

        /// How long the monitor gets after the workload to take in what it saw.
        fn settle(self) -> Duration {
            match self {
                Workload::Connect => Duration::from_secs(3),
                Workload::Exec | Workload::Scripts => Duration::from_secs(2),
            }
        }
    }

    /// What the workloads run and where they connect.
    struct Workloads {
        exec_bin: PathBuf,
        storm_port: u16,
        /// A listener of this process, accepted by a thread of its own: the scripts connect
        /// one at a time, so it keeps up.
        script_port: u16,
    }

    impl Workloads {
        fn run(&self, w: Workload, mark: &str) -> Duration {
            match w {
                Workload::Exec => exec_storm(&self.exec_bin, mark),
                Workload::Connect => connect_storm(self.storm_port),
                Workload::Scripts => timed(Command::new("bash").args([
                    "-c",
                    &format!(
                        "set -e; for i in $(seq 0 {}); do {} -c \"{}\"; done",
                        SCRIPTS - 1,
                        workload::PYTHON,
                        self.script(mark, "$i")
                    ),
                ])),
            }
        }

        fn script(&self, mark: &str, i: &str) -> String {
            format!(
                "import socket; socket.create_connection(('127.0.0.1', {})).close()  # {mark}-{i}",
                self.script_port
            )
        }

        /// The argv item `i` of `w` runs with; the connect storm's connects are all made by
        /// one process, so they have none of their own.
        fn argv(&self, w: Workload, mark: &str, i: usize) -> Option<Vec<String>> {
            match w {
                Workload::Exec => Some(vec!["/bin/true".into(), format!("{mark}-{i}")]),
                Workload::Scripts => Some(vec![
                    workload::PYTHON.into(),
                    "-c".into(),
                    self.script(mark, &i.to_string()),
                ]),
                Workload::Connect => None,
            }
        }

        /// The item of `w` whose exact argv, space-joined, `line` is or ends with.
        fn item(&self, w: Workload, mark: &str, line: &str) -> Option<usize> {
            let (_, n) = line.rsplit_once(&format!("{mark}-"))?;
            let i = n.parse().ok()?;
            let argv = self.argv(w, mark, i)?.join(" ");
            (line == argv || line.ends_with(&format!(" {argv}"))).then_some(i)
        }
    }

    /// bpftrace running [`SCRIPT`], its standard output in a file.
    struct Bpftrace {
        child: Child,
        output: PathBuf,
        errors: PathBuf,
    }

    impl Bpftrace {
        async fn start(dir: &Path, name: &str) -> Bpftrace {
            let output = dir.join(format!("{name}.out"));
            let errors = dir.join(format!("{name}.err"));
            let file = |p: &Path| std::fs::File::create(p).expect("create a bpftrace output file");
            let child = Command::new("bpftrace")
                .args(["-e", SCRIPT])
                .stdout(file(&output))
                .stderr(file(&errors))
                .spawn()
                .expect("bpftrace runs (cargo xtask bench --peer bpftrace installs it)");
            let bpftrace = Bpftrace {
                child,
                output,
                errors,
            };
            // BEGIN runs once every probe is attached.
            let ready = eventually(Duration::from_secs(60), || {
                let out = std::fs::read_to_string(&bpftrace.output).ok()?;
                out.contains(READY).then_some(())
            })
            .await;
            assert!(
                ready.is_some(),
                "bpftrace did not attach within 60 s: {}",
                std::fs::read_to_string(&bpftrace.errors).unwrap_or_default()
            );
            bpftrace
        }

        /// Stops bpftrace (SIGINT: it prints what its buffers hold first) and returns its
        /// output. Its errors are passed on, but for the warning that it cannot raise
        /// RLIMIT_MEMLOCK, which this kernel (memcg accounting) does not need.
        fn finish(&mut self) -> String {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let status = self.child.wait().expect("wait for bpftrace");
            assert!(status.success(), "bpftrace failed: {status}");
            let errors = std::fs::read_to_string(&self.errors).unwrap_or_default();
            for line in errors.lines().filter(|l| !l.contains("RLIMIT_MEMLOCK")) {
                eprintln!("bpftrace: {line}");
            }
            std::fs::read_to_string(&self.output).expect("bpftrace's output")
        }
    }

    impl Drop for Bpftrace {
        fn drop(&mut self) {
            if !matches!(self.child.try_wait(), Ok(Some(_))) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    enum Monitor {
        Osprey(Collector),
        Bpftrace(Bpftrace),
    }

    impl Monitor {
        fn pid(&self) -> u32 {
            match self {
                Monitor::Osprey(c) => c.pid(),
                Monitor::Bpftrace(b) => b.child.id(),
            }
        }

        /// Osprey's own account of its cost so far (stage and thread times, ns), from its
        /// latest heartbeat; bpftrace keeps none.
        fn cost_ns(&self) -> BTreeMap<String, u64> {
            let Monitor::Osprey(c) = self else {
                return BTreeMap::new();
            };
            let Some(hb) = c.last_heartbeat() else {
                return BTreeMap::new();
            };
            let threads = hb
                .thread_cpu_ns
                .into_iter()
                .map(|(k, v)| (format!("thread {k}"), v));
            hb.stage_ns.into_iter().chain(threads).collect()
        }

        /// How many of `w`'s items the monitor reported in full: the execs and the scripts'
        /// connects whose exact argv it reported (distinct markers), the connect storm's
        /// connects to its port.
        fn captured(&mut self, ws: &Workloads, w: Workload, mark: &str) -> usize {
            match self {
                Monitor::Osprey(c) => {
                    if w == Workload::Connect {
                        return c
                            .events(|e| {
                                matches!(&e.detail, EventDetail::Connect(c)
                                    if c.destination_port == ws.storm_port && !c.late_outcome)
                            })
                            .len();
                    }
                    let items: HashSet<usize> = c
                        .events(|e| match &e.detail {
                            EventDetail::Exec(_) => w == Workload::Exec,
                            EventDetail::Connect(c) => {
                                w == Workload::Scripts && c.destination_port == ws.script_port
                            }
                            _ => false,
                        })
                        .iter()
                        .filter_map(|e| {
                            let i = ws.item(w, mark, &e.process.argv.join(" "))?;
                            (Some(&e.process.argv) == ws.argv(w, mark, i).as_ref()).then_some(i)
                        })
                        .collect();
                    items.len()
                }
                Monitor::Bpftrace(b) => {
                    let output = b.finish();
                    // Item of each exec'd pid, and the pids that connected to each port.
                    let mut execs: HashMap<&str, usize> = HashMap::new();
                    let mut connects: Vec<(&str, u16)> = Vec::new();
                    for line in output.lines() {
                        let mut f = line.split(' ');
                        match (f.next(), f.next()) {
                            (Some("exec"), Some(pid)) => {
                                if let Some(i) = ws.item(w, mark, line) {
                                    execs.insert(pid, i);
                                }
                            }
                            (Some("connect"), Some(pid)) => {
                                if let (Some("127.0.0.1"), Some(Ok(port))) =
                                    (f.next(), f.next().map(str::parse))
                                {
                                    connects.push((pid, port));
                                }
                            }
                            _ => {}
                        }
                    }
                    match w {
                        Workload::Exec => execs.values().collect::<HashSet<_>>().len(),
                        Workload::Connect => connects
                            .iter()
                            .filter(|(_, port)| *port == ws.storm_port)
                            .count(),
                        Workload::Scripts => connects
                            .iter()
                            .filter(|(_, port)| *port == ws.script_port)
                            .filter_map(|(pid, _)| execs.get(pid))
                            .collect::<HashSet<_>>()
                            .len(),
                    }
                }
            }
        }
    }

    /// Run time (ns) and runs, summed over the BPF programs `pid` holds open, as the kernel
    /// counts them in /proc/PID/fdinfo while `kernel.bpf_stats_enabled` is on.
    fn bpf_prog_stats(pid: u32) -> (u64, u64) {
        let mut by_id: HashMap<u64, (u64, u64)> = HashMap::new();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the monitor's fds");
        for fd in fds.flatten() {
            let is_prog =
                std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:bpf-prog");
            if !is_prog {
                continue;
            }
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            let field = |name: &str| -> Option<u64> {
                info.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
                    .trim()
                    .parse()
                    .ok()
            };
            // The same program may be open more than once.
            if let Some(id) = field("prog_id") {
                by_id.insert(
                    id,
                    (
                        field("run_time_ns").unwrap_or(0),
                        field("run_cnt").unwrap_or(0),
                    ),
                );
            }
        }
        by_id
            .values()
            .fold((0, 0), |(ns, n), (dns, dn)| (ns + dns, n + dn))
    }

    /// `kernel.bpf_stats_enabled` on while this lives; the previous value back on drop.
    struct BpfStats {
        previous: String,
    }

    impl BpfStats {
        fn enable() -> BpfStats {
            let previous = std::fs::read_to_string(BPF_STATS).expect("read bpf_stats_enabled");
            std::fs::write(BPF_STATS, "1").expect("enable kernel.bpf_stats_enabled");
            BpfStats { previous }
        }
    }

    impl Drop for BpfStats {
        fn drop(&mut self) {
            if let Err(e) = std::fs::write(BPF_STATS, self.previous.trim()) {
                eprintln!("cannot restore kernel.bpf_stats_enabled: {e}");
            }
        }
    }

    /// One monitored run of one workload.
    struct Sample {
        ratio: f64,
        capture_pct: f64,
        cpu_us_per_item: f64,
        kernel_ns_per_run: f64,
        kernel_us_per_item: f64,
        peak_rss_mib: f64,
        /// Osprey's stage and thread times per item (µs), from its heartbeats.
        cost_us_per_item: BTreeMap<String, f64>,
    }

    /// A column of the comparison: its name (`item` is replaced by the workload's unit), the
    /// value it shows and with how many decimals.
    struct Figure {
        name: &'static str,
        value: fn(&Sample) -> f64,
        precision: usize,
    }

    const FIGURES: [Figure; 6] = [
        Figure {
            name: "ratio",
            value: |s| s.ratio,
            precision: 3,
        },
        Figure {
            name: "capture %",
            value: |s| s.capture_pct,
            precision: 1,
        },
        Figure {
            name: "CPU µs/item",
            value: |s| s.cpu_us_per_item,
            precision: 1,
        },
        Figure {
            name: "kernel ns/run",
            value: |s| s.kernel_ns_per_run,
            precision: 0,
        },
        Figure {
            name: "kernel µs/item",
            value: |s| s.kernel_us_per_item,
            precision: 1,
        },
        Figure {
            name: "peak RSS MiB",
            value: |s| s.peak_rss_mib,
            precision: 1,
        },
    ];

    pub(super) async fn compare(
        client: &async_nats::Client,
        nats: &NatsServer,
        dir: &Path,
        exec_bin: &Path,
        storm_port: u16,
        tck: f64,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
        let script_port = listener.local_addr().expect("its address").port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                drop(conn);
            }
        });
        let ws = Workloads {
            exec_bin: exec_bin.to_path_buf(),
            storm_port,
            script_port,
        };
        let _stats = BpfStats::enable();
        // samples[workload][0: Osprey, 1: bpftrace]
        let mut samples: Vec<[Vec<Sample>; 2]> =
            Workload::ALL.iter().map(|_| [vec![], vec![]]).collect();
        let mut without: Vec<Vec<f64>> = vec![vec![]; Workload::ALL.len()];
        for round in 0..ROUNDS {
            for (wi, &w) in Workload::ALL.iter().enumerate() {
                let items = w.items() as f64;
                let bare = items / ws.run(w, &marker("bare")).as_secs_f64();
                without[wi].push(bare);
                // Which monitor goes first alternates, so neither always runs on a warmer host.
                for m in [round % 2, 1 - round % 2] {
                    let mark = marker(&format!("peer{m}"));
                    let mut monitor = if m == 0 {
                        let spool = dir.join(format!("spool-peer-{round}-{wi}"));
                        Monitor::Osprey(Collector::start(client, &nats.url(), &spool, &[]).await)
                    } else {
                        Monitor::Bpftrace(
                            Bpftrace::start(dir, &format!("bpftrace-{round}-{wi}")).await,
                        )
                    };
                    let pid = monitor.pid();
                    let cost0 = monitor.cost_ns();
                    let (ns0, runs0) = bpf_prog_stats(pid);
                    let cpu0 = cpu_ticks(pid);
                    let elapsed = ws.run(w, &mark);
                    tokio::time::sleep(w.settle()).await;
                    let cpu1 = cpu_ticks(pid);
                    let (ns1, runs1) = bpf_prog_stats(pid);
                    let peak_rss_mib = peak_rss_kib(pid) as f64 / 1024.0;
                    let captured = monitor.captured(&ws, w, &mark);
                    let kernel_ns = ns1.saturating_sub(ns0) as f64;
                    // The settle outlasts a heartbeat interval, so the latest one has it all.
                    let cost_us_per_item = monitor
                        .cost_ns()
                        .into_iter()
                        .map(|(k, v)| {
                            let before = cost0.get(&k).copied().unwrap_or(0);
                            (k, v.saturating_sub(before) as f64 / 1e3 / items)
                        })
                        .collect();
                    samples[wi][m].push(Sample {
                        ratio: items / elapsed.as_secs_f64() / bare,
                        capture_pct: 100.0 * captured as f64 / items,
                        cpu_us_per_item: cpu1.saturating_sub(cpu0) as f64 / tck * 1e6 / items,
                        kernel_ns_per_run: kernel_ns / runs1.saturating_sub(runs0).max(1) as f64,
                        kernel_us_per_item: kernel_ns / 1e3 / items,
                        peak_rss_mib,
                        cost_us_per_item,
                    });
                }
            }
        }
        println!("osprey vs bpftrace: {ROUNDS} interleaved rounds, medians");
        for (wi, &w) in Workload::ALL.iter().enumerate() {
            let median = |v: &[f64]| {
                let mut v = v.to_vec();
                v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
                percentile(&v, 0.5)
            };
            println!(
                "\n{} — without a monitor {:.0} {}/s",
                w.title(),
                median(&without[wi]),
                w.unit()
            );
            let header: Vec<String> = FIGURES
                .iter()
                .map(|f| format!("{:>18}", f.name.replace("item", w.unit())))
                .collect();
            println!("{:<16}{}", "", header.concat());
            let medians: Vec<Vec<f64>> = samples[wi]
                .iter()
                .map(|runs| {
                    FIGURES
                        .iter()
                        .map(|f| median(&runs.iter().map(f.value).collect::<Vec<_>>()))
                        .collect()
                })
                .collect();
            let ratio: Vec<f64> = medians[0]
                .iter()
                .zip(&medians[1])
                .map(|(o, b)| o / b)
                .collect();
            for (name, row) in [
                ("osprey", &medians[0]),
                ("bpftrace", &medians[1]),
                ("osprey/bpftrace", &ratio),
            ] {
                let cells: Vec<String> = row
                    .iter()
                    .zip(&FIGURES)
                    .map(|(v, f)| {
                        // Quotients all get three decimals.
                        let precision = if name == "osprey/bpftrace" {
                            3
                        } else {
                            f.precision
                        };
                        format!("{v:>18.precision$}")
                    })
                    .collect();
                println!("{name:<16}{}", cells.concat());
            }
            // Where Osprey's CPU went: its stages (pipeline thread), what that thread spent
            // outside them (wake-ups, timers, the NATS client), and its other threads.
            let osprey = &samples[wi][0];
            let keys: Vec<&String> = osprey
                .first()
                .map(|s| s.cost_us_per_item.keys().collect())
                .unwrap_or_default();
            let cost = |k: &str| {
                median(
                    &osprey
                        .iter()
                        .map(|s| s.cost_us_per_item.get(k).copied().unwrap_or(0.0))
                        .collect::<Vec<_>>(),
                )
            };
            let staged: f64 = keys
                .iter()
                .filter(|k| !k.starts_with("thread "))
                .map(|k| cost(k))
                .sum();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| (k, cost(k)))
                .filter(|(_, us)| *us >= 0.05)
                .map(|(k, us)| format!("{k} {us:.1}"))
                .collect();
            println!(
                "osprey µs/{}: {}; pipeline thread outside the stages {:.1}",
                w.unit(),
                parts.join(", "),
                cost("thread osprey-collecto") - staged
            );
        }
    }
}
