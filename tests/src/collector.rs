//! The collector under test, and what it publishes as the tests see it.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use protocol::{Event, EventDetail, Finding, Heartbeat};

/// Everything received from the collector's subjects.
#[derive(Default)]
pub struct Received {
    pub events: Vec<Event>,
    pub findings: Vec<Finding>,
    /// When each finding reached this subscriber (wall clock), for latency measurements.
    pub finding_arrivals: Vec<protocol::Timestamp>,
    pub heartbeats: Vec<Heartbeat>,
}

pub struct Collector {
    pub host: String,
    child: Child,
    /// The bpffs directory of its pinned enforcement, removed on drop unless
    /// [`Collector::keep_pins`] (so nothing a test attached outlives it).
    pin_dir: Option<std::path::PathBuf>,
    pub received: Arc<Mutex<Received>>,
    /// The collector's stderr lines, when started with [`Collector::start_logged`].
    log: Arc<Mutex<Vec<String>>>,
    /// Its history database's directory, unless the test chose one (`--history-db`) or none
    /// (`--no-history`): removed with the collector.
    _history: Option<tempfile::TempDir>,
}

impl Collector {
    /// Subscribes to the host's subjects, starts the collector and waits for its first
    /// heartbeat (probes attached, table built).
    pub async fn start(
        client: &async_nats::Client,
        nats_url: &str,
        spool: &Path,
        extra: &[&str],
    ) -> Collector {
        Self::spawn(client, nats_url, spool, extra, false).await
    }

    /// [`Collector::start`] with a configuration file, and optionally a given host name (to
    /// restart "the same" host).
    pub async fn start_with_config(
        client: &async_nats::Client,
        nats_url: &str,
        spool: &Path,
        config: &Path,
        host: Option<&str>,
        extra: &[&str],
    ) -> Collector {
        Self::spawn_with(client, nats_url, spool, config, host, extra, false).await
    }

    /// Like [`Collector::start`], and keeps the collector's stderr (still echoed) for
    /// [`Collector::log_lines`].
    pub async fn start_logged(
        client: &async_nats::Client,
        nats_url: &str,
        spool: &Path,
        extra: &[&str],
    ) -> Collector {
        Self::spawn(client, nats_url, spool, extra, true).await
    }

    async fn spawn(
        client: &async_nats::Client,
        nats_url: &str,
        spool: &Path,
        extra: &[&str],
        logged: bool,
    ) -> Collector {
        Self::spawn_with(
            client,
            nats_url,
            spool,
            Path::new("/dev/null"),
            None,
            extra,
            logged,
        )
        .await
    }

    async fn spawn_with(
        client: &async_nats::Client,
        nats_url: &str,
        spool: &Path,
        config: &Path,
        host: Option<&str>,
        extra: &[&str],
        logged: bool,
    ) -> Collector {
        let host = host.map(String::from).unwrap_or_else(new_host);
        let received = Arc::new(Mutex::new(Received::default()));
        subscribe(client, &host, received.clone()).await;
        let mut args: Vec<String> = vec![
            "--nats".into(),
            nats_url.into(),
            "--heartbeat-interval-secs".into(),
            "1".into(),
            "--spool-dir".into(),
            spool.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let collector = Self::launch(config, host, &args, received, logged, Stdio::null());
        let ready = crate::eventually(Duration::from_secs(30), || {
            (!collector.received.lock().unwrap().heartbeats.is_empty()).then_some(())
        })
        .await;
        assert!(
            ready.is_some(),
            "no heartbeat from the collector within 30 s"
        );
        collector
    }

    /// A collector without NATS (`--no-nats --output jsonl`): what it reports is read from
    /// its standard output (findings, and events), its log is kept for
    /// [`Collector::log_lines`]. Ready once it says it runs.
    pub async fn start_offline(config: &Path, extra: &[&str]) -> Collector {
        let received = Arc::new(Mutex::new(Received::default()));
        let mut args: Vec<String> = ["--no-nats", "--output", "jsonl"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let collector = Self::launch(config, new_host(), &args, received, true, Stdio::piped());
        let ready = crate::eventually(Duration::from_secs(30), || {
            (!collector.log_lines("osprey-collector running").is_empty()).then_some(())
        })
        .await;
        assert!(ready.is_some(), "the collector did not start within 30 s");
        collector
    }

    /// Starts `osprey-collector` with its own bpffs pin directory. `stdout` piped means its
    /// JSON lines are read into `received`.
    fn launch(
        config: &Path,
        host: String,
        args: &[String],
        received: Arc<Mutex<Received>>,
        logged: bool,
        stdout: Stdio,
    ) -> Collector {
        // bpffs refuses names with a dot: the host's subject token has none.
        let pin_dir = std::path::PathBuf::from(format!(
            "/sys/fs/bpf/osprey-test-{}",
            protocol::subject::host_token(&host)
        ));
        // Each collector keeps its history in a file of its own, never the host's.
        let history = (!args
            .iter()
            .any(|a| a == "--history-db" || a == "--no-history"))
        .then(|| tempfile::tempdir().expect("tempdir"));
        let history_args: Vec<String> = history
            .iter()
            .flat_map(|dir| {
                [
                    "--history-db".to_string(),
                    dir.path().join("history.db").display().to_string(),
                ]
            })
            .collect();
        let mut child = Command::new(crate::bin_dir().join("osprey-collector"))
            .arg("--config")
            .arg(config)
            .args(["--host", &host])
            .arg("--pin-dir")
            .arg(&pin_dir)
            .args(args)
            .args(&history_args)
            .stdout(stdout)
            .stderr(if logged {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("osprey-collector is built (cargo build --workspace --bins)");
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    eprintln!("{line}");
                    log.lock().unwrap().push(line);
                }
            });
        }
        if let Some(stdout) = child.stdout.take() {
            let received = received.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    let mut r = received.lock().unwrap();
                    if let Ok(f) = serde_json::from_str::<Finding>(&line) {
                        r.findings.push(f);
                        r.finding_arrivals.push(protocol::Timestamp::now());
                    } else if let Ok(e) = serde_json::from_str::<Event>(&line) {
                        r.events.push(e);
                    }
                }
            });
        }
        Collector {
            host,
            child,
            pin_dir: Some(pin_dir),
            received,
            log,
            _history: history,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The bpffs directory where this collector pins its enforcement.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Leaves the pinned enforcement in place when this collector is dropped, for a
    /// successor with the same host name (which uses the same directory) to take over.
    pub fn keep_pins(&mut self) {
        self.pin_dir = None;
    }

    /// Events matching `pred` so far.
    pub fn events(&self, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
        self.received
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|e| pred(e))
            .cloned()
            .collect()
    }

    pub fn findings(&self, pred: impl Fn(&Finding) -> bool) -> Vec<Finding> {
        self.received
            .lock()
            .unwrap()
            .findings
            .iter()
            .filter(|f| pred(f))
            .cloned()
            .collect()
    }

    /// The collector's stderr lines so far that contain `text` (needs [`Collector::start_logged`]).
    pub fn log_lines(&self, text: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .cloned()
            .collect()
    }

    /// Records of `kind` (`exec`, `fork`, ...) the kernel dropped for tasks of cgroup
    /// `cgroup`, as the last heartbeat reports them.
    pub fn cgroup_drops(&self, cgroup: u64, kind: &str) -> u64 {
        self.last_heartbeat()
            .and_then(|h| h.drops_by_cgroup.get(&cgroup)?.get(kind).copied())
            .unwrap_or(0)
    }

    pub fn last_heartbeat(&self) -> Option<Heartbeat> {
        self.received.lock().unwrap().heartbeats.last().cloned()
    }

    /// Waits for an event matching `pred`.
    pub async fn wait_event(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        crate::eventually(Duration::from_secs(20), || {
            self.events(&pred).into_iter().next()
        })
        .await
        .unwrap_or_else(|| panic!("no {what} event within 20 s"))
    }

    pub async fn wait_finding(&self, what: &str, pred: impl Fn(&Finding) -> bool) -> Finding {
        crate::eventually(Duration::from_secs(20), || {
            self.findings(&pred).into_iter().next()
        })
        .await
        .unwrap_or_else(|| panic!("no {what} finding within 20 s"))
    }

    /// Sends a signal to the collector (e.g. SIGSTOP to stall its reader).
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGTERM);
        let stopped = (0..50).any(|_| {
            let done = matches!(self.child.try_wait(), Ok(Some(_)));
            if !done {
                std::thread::sleep(Duration::from_millis(100));
            }
            done
        });
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(dir) = &self.pin_dir {
            release_enforcement(dir);
        }
    }
}

/// Detaches whatever a collector left enforcing for `pin_dir` (blocks still active when a
/// test ends): stops its enforcement holder (`osprey-collector --hold-enforcement DIR`) and
/// removes the pinned maps.
pub fn release_enforcement(pin_dir: &Path) {
    let wanted = format!("--hold-enforcement\0{}\0", pin_dir.display());
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&wanted) {
            // SAFETY: killing a holder this test's collector started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = std::fs::remove_dir_all(pin_dir);
}

/// A host name unique to this run.
fn new_host() -> String {
    format!("e2e{}", crate::marker("h").replace('-', ""))
}

async fn subscribe(client: &async_nats::Client, host: &str, received: Arc<Mutex<Received>>) {
    let token = protocol::subject::host_token(host);
    let mut events = client
        .subscribe(format!("osprey.events.{token}.>"))
        .await
        .expect("subscribe");
    let mut findings = client
        .subscribe(format!("osprey.findings.{token}.>"))
        .await
        .expect("subscribe");
    let mut heartbeats = client
        .subscribe(protocol::subject::heartbeat(host))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush subscriptions");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(m) = events.next() => {
                    let e: Event = protocol::decode(&m.payload).expect("events decode");
                    received.lock().unwrap().events.push(e);
                }
                Some(m) = findings.next() => {
                    let f: Finding = protocol::decode(&m.payload).expect("findings decode");
                    let mut r = received.lock().unwrap();
                    r.findings.push(f);
                    r.finding_arrivals.push(protocol::Timestamp::now());
                }
                Some(m) = heartbeats.next() => {
                    let h: Heartbeat = protocol::decode(&m.payload).expect("heartbeat decode");
                    received.lock().unwrap().heartbeats.push(h);
                }
                else => break,
            }
        }
    });
}

/// Exec events whose argv contains `marker`.
pub fn is_exec_with(event: &Event, marker: &str) -> bool {
    matches!(event.detail, EventDetail::Exec(_))
        && event.process.argv.iter().any(|a| a.contains(marker))
}
