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
    pub received: Arc<Mutex<Received>>,
    /// The collector's stderr lines, when started with [`Collector::start_logged`].
    log: Arc<Mutex<Vec<String>>>,
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
        let host = host
            .map(String::from)
            .unwrap_or_else(|| format!("e2e{}", crate::marker("h").replace('-', "")));
        let received = Arc::new(Mutex::new(Received::default()));
        subscribe(client, &host, received.clone()).await;
        let mut child = Command::new(crate::bin_dir().join("osprey-collector"))
            .arg("--config")
            .arg(config)
            .args([
                "--host",
                &host,
                "--nats",
                nats_url,
                "--heartbeat-interval-secs",
                "1",
            ])
            .arg("--spool-dir")
            .arg(spool)
            .args(extra)
            .stdout(Stdio::null())
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
        let collector = Collector {
            host,
            child,
            received,
            log,
        };
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

    pub fn pid(&self) -> u32 {
        self.child.id()
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
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
