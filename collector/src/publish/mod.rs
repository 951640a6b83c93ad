//! The publisher: where findings, events and heartbeats leave the collector.
//!
//! - **Findings** are appended to a bounded on-disk [spool](spool) first, then delivered by a
//!   single sender task to the JetStream stream `OSPREY_FINDINGS`, in spool order, a batch of
//!   PubAcks in flight at a time, with a `Nats-Msg-Id` that only this host can produce
//!   ([`msgid`]). A finding leaves the spool only after its PubAck, so NATS outages (at start
//!   or mid-run), cluster leader elections and collector restarts lose nothing, and a lost ack
//!   is de-duplicated by the stream. A full spool evicts the lowest severity first.
//! - **Events** and **heartbeats** go out with core NATS, best effort. [`Publisher::event`]
//!   never blocks nor touches the disk: it queues into a bounded channel and counts what does
//!   not fit, or what arrives while NATS is away, in `events_dropped`. Heartbeats have a queue
//!   of their own that the sender serves first, so an event flood cannot crowd them out; each
//!   carries the publisher's counters as they are when it is queued.
//! - **`--output jsonl`** prints findings (and optionally events) as JSON lines on stdout from
//!   a dedicated thread.
//!
//! ```no_run
//! # async fn run(cfg: collector::publish::PublisherConfig) -> Result<(), collector::publish::PublishError> {
//! use collector::publish::Publisher;
//! let (publisher, task) = Publisher::start(cfg).await?;
//! // ... the pipeline calls publisher.finding(..), publisher.event(..), publisher.heartbeat(..)
//! let final_stats = task.shutdown(std::time::Duration::from_secs(5)).await;
//! # let _ = final_stats; Ok(()) }
//! ```

mod jsonl;
pub mod msgid;
mod nats;
pub mod spool;

use std::{
    io,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};

use bytes::Bytes;
use protocol::{subject, Event, Finding, Heartbeat, Severity};
use tokio::{
    sync::{mpsc, watch, Notify},
    task::JoinHandle,
};

pub use jsonl::JsonlOptions;
pub use nats::NatsConfig;
pub use spool::{SpoolConfig, SpoolError};

use jsonl::{JsonlSink, JsonlWriter, NotQueued};
use msgid::MessageIds;
use nats::{CoreMessage, FindingSender};
use spool::Spool;

/// Events waiting for the core sender before new ones are dropped.
const EVENT_QUEUE: usize = 8192;
/// Bytes of encoded events waiting for the core sender before new ones are dropped: with
/// their ancestry events run to a few KiB, and a full queue of them must stay small next to
/// the collector's memory bound.
const EVENT_QUEUE_BYTES: usize = 4 << 20;
/// Heartbeats waiting for the core sender (they come every few seconds).
const HEARTBEAT_QUEUE: usize = 16;

/// Everything the publisher needs; built by the collector from its config file and flags.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// Host name; subjects carry its NATS-safe token ([`protocol::subject::host_token`]).
    pub host: String,
    /// `None`: no NATS at all (jsonl only); the spool is then not used either.
    pub nats: Option<NatsConfig>,
    /// Publish every event on `osprey.events.<host>.<kind>` (core NATS).
    pub publish_events: bool,
    /// `--output jsonl`.
    pub jsonl: Option<JsonlOptions>,
    pub spool: SpoolConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Credentials(#[from] bus::CredentialsError),
    #[error(transparent)]
    MessageIdKey(#[from] msgid::KeyError),
    #[error("invalid NATS server address {url:?}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("no NATS server address given (the NATS URL is empty)")]
    NoNatsServer,
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("cannot start the jsonl output thread: {0}")]
    JsonlThread(io::Error),
}

/// Counters since start. Heartbeats carry them; nothing is dropped without being counted here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Findings waiting in the spool for a JetStream ack.
    pub spool_depth: u64,
    /// Findings evicted from a full spool before they were acknowledged (lowest severity
    /// first, oldest first within a severity).
    pub spool_evicted: u64,
    /// The same, per severity (index: `Severity as usize`).
    pub spool_evicted_by_severity: [u64; 5],
    /// Findings the disk refused to spool; they are held in memory instead.
    pub spool_write_errors: u64,
    /// Findings acknowledged by JetStream (a re-sent duplicate counts once per ack).
    pub findings_published: u64,
    /// Findings that can never be published: not encodable, spooled copy unreadable, or
    /// larger than the server's max_payload (those two are kept as `*.finding.unsent`).
    pub findings_failed: u64,
    /// Events handed to the NATS client while connected (core NATS: not a delivery receipt).
    pub events_published: u64,
    /// Events not published or not printed (queue full, NATS away, output closed), counted
    /// once per output that missed them.
    pub events_dropped: u64,
    /// Heartbeats handed to the NATS client while connected.
    pub heartbeats_published: u64,
    /// Heartbeats not published (queue full or NATS away).
    pub heartbeats_dropped: u64,
}

impl PublisherStats {
    /// Writes the publisher's counters into a heartbeat.
    pub fn stamp(&self, heartbeat: &mut Heartbeat) {
        heartbeat.spool_depth = self.spool_depth;
        heartbeat.spool_evicted = self.spool_evicted;
        heartbeat.spool_evicted_by_severity = Severity::ALL
            .iter()
            .filter(|s| self.spool_evicted_by_severity[**s as usize] > 0)
            .map(|s| (s.to_string(), self.spool_evicted_by_severity[*s as usize]))
            .collect();
        heartbeat.spool_write_errors = self.spool_write_errors;
        heartbeat.findings_failed = self.findings_failed;
        heartbeat.events_dropped = self.events_dropped;
        heartbeat.heartbeats_dropped = self.heartbeats_dropped;
    }
}

#[derive(Debug, Default)]
struct Counters {
    findings_published: AtomicU64,
    findings_failed: AtomicU64,
    events_published: AtomicU64,
    events_dropped: AtomicU64,
    heartbeats_published: AtomicU64,
    heartbeats_dropped: AtomicU64,
    /// Encoded bytes of the events queued for the core sender.
    events_queued_bytes: AtomicUsize,
}

/// A cheap handle for the pipeline. All methods are synchronous and never wait on the network.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    publish_events: bool,
    counters: Arc<Counters>,
    /// Present when NATS is configured.
    spool: Option<Arc<Mutex<Spool>>>,
    wake: Arc<Notify>,
    events: Option<mpsc::Sender<CoreMessage>>,
    heartbeats: Option<mpsc::Sender<CoreMessage>>,
    jsonl: Option<(JsonlSink, JsonlOptions)>,
}

/// The background side of a [`Publisher`]; stop it with [`PublisherTask::shutdown`].
pub struct PublisherTask {
    shutdown: watch::Sender<bool>,
    finding_sender: Option<JoinHandle<()>>,
    core_sender: Option<JoinHandle<()>>,
    jsonl: Option<JsonlWriter>,
    publisher: Publisher,
}

impl Publisher {
    /// Opens the spool, connects to NATS in the background and starts the senders. It does
    /// not wait for NATS: a server that is down only delays delivery. Fails only on local
    /// problems (spool directory or its message id key, credentials file, malformed URL,
    /// thread creation).
    pub async fn start(
        config: PublisherConfig,
    ) -> Result<(Publisher, PublisherTask), PublishError> {
        Self::start_with_output(config, Box::new(io::stdout())).await
    }

    async fn start_with_output(
        config: PublisherConfig,
        out: Box<dyn io::Write + Send>,
    ) -> Result<(Publisher, PublisherTask), PublishError> {
        let counters = Arc::new(Counters::default());
        let wake = Arc::new(Notify::new());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        let mut spool = None;
        let mut events = None;
        let mut heartbeats = None;
        let mut finding_sender = None;
        let mut core_sender = None;
        if let Some(nats_config) = &config.nats {
            let opened = Arc::new(Mutex::new(Spool::open(&config.spool)?));
            let message_ids = MessageIds::open(&config.spool.dir)?;
            let connected = Arc::new(Notify::new());
            let nats_client = nats::connect(nats_config, &config.host, connected.clone()).await?;
            let sender = FindingSender {
                client: nats_client.clone(),
                host: config.host.clone(),
                config: nats_config.clone(),
                spool: opened.clone(),
                message_ids,
                counters: counters.clone(),
                wake: wake.clone(),
                connected,
                shutdown: shutdown_rx.clone(),
            };
            finding_sender = Some(tokio::spawn(sender.run()));
            let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
            let (heartbeats_tx, heartbeats_rx) = mpsc::channel(HEARTBEAT_QUEUE);
            core_sender = Some(tokio::spawn(nats::run_core_sender(
                nats_client.clone(),
                heartbeats_rx,
                events_rx,
                counters.clone(),
                shutdown_rx.clone(),
            )));
            events = Some(events_tx);
            heartbeats = Some(heartbeats_tx);
            spool = Some(opened);
        }

        let (jsonl, jsonl_writer) = match config.jsonl {
            Some(options) => {
                let (sink, writer) = jsonl::spawn(out).map_err(PublishError::JsonlThread)?;
                (Some((sink, options)), Some(writer))
            }
            None => (None, None),
        };

        let publisher = Publisher {
            inner: Arc::new(Inner {
                host: config.host,
                publish_events: config.publish_events,
                counters,
                spool,
                wake,
                events,
                heartbeats,
                jsonl,
            }),
        };
        let task = PublisherTask {
            shutdown: shutdown_tx,
            finding_sender,
            core_sender,
            jsonl: jsonl_writer,
            publisher: publisher.clone(),
        };
        Ok((publisher, task))
    }

    /// Queues an event for core NATS (when enabled) and for jsonl (when enabled). Never
    /// blocks; what cannot be queued is counted in `events_dropped`.
    pub fn event(&self, event: &Event) {
        let inner = &self.inner;
        if let (true, Some(events)) = (inner.publish_events, &inner.events) {
            if !self.queue_event(events, event) {
                inner.count_event_drop();
            }
        }
        self.jsonl_event(event);
    }

    /// Encodes an event for the core sender; false when it cannot be queued.
    fn queue_event(&self, events: &mpsc::Sender<CoreMessage>, event: &Event) -> bool {
        let inner = &self.inner;
        let payload = match protocol::encode(event) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(%error, "cannot encode an event");
                return false;
            }
        };
        let queued = &inner.counters.events_queued_bytes;
        let size = payload.len();
        let message = CoreMessage {
            subject: subject::events(&inner.host, event.kind()),
            payload: Bytes::from(payload),
        };
        if queued.fetch_add(size, Ordering::Relaxed) + size > EVENT_QUEUE_BYTES
            || events.try_send(message).is_err()
        {
            queued.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Queues an event for `--output jsonl` (when it prints events).
    fn jsonl_event(&self, event: &Event) {
        let inner = &self.inner;
        if let Some((sink, options)) = &inner.jsonl {
            if options.events {
                let queued = match serde_json::to_string(event) {
                    Ok(line) => sink.try_line(line),
                    Err(error) => {
                        tracing::error!(%error, "cannot render an event as JSON");
                        Err(NotQueued::Closed)
                    }
                };
                if queued.is_err() {
                    inner.count_event_drop();
                }
            }
        }
    }

    /// Appends a finding to the spool (when NATS is configured) and wakes the sender; prints
    /// it when jsonl output is on. Does one small synchronous file write and rename: findings
    /// are rare next to events, and the finding is on disk before this returns. With jsonl
    /// output it waits for room in the output queue rather than drop a finding from it.
    pub fn finding(&self, finding: &Finding) {
        let inner = &self.inner;
        if let Some(spool) = &inner.spool {
            match protocol::encode(finding) {
                Ok(payload) => {
                    lock(spool).append(finding.severity, &payload);
                    inner.wake.notify_one();
                }
                Err(error) => {
                    tracing::error!(id = %finding.id, %error, "cannot encode a finding; it is not published");
                    inner
                        .counters
                        .findings_failed
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some((sink, _)) = &inner.jsonl {
            let printed = match serde_json::to_string(finding) {
                Ok(line) => sink.line(line).is_ok(),
                Err(error) => {
                    tracing::error!(id = %finding.id, %error, "cannot render a finding as JSON");
                    false
                }
            };
            if !printed && inner.spool.is_none() {
                // jsonl was its only output.
                inner
                    .counters
                    .findings_failed
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues an audit record for `osprey.audit.<host>` (core NATS, best effort: the audit
    /// file keeps it too). Never blocks.
    pub fn audit(&self, record: &protocol::AuditRecord) {
        let inner = &self.inner;
        // The heartbeats' queue: served first, so an event flood does not crowd it out.
        let Some(queue) = &inner.heartbeats else {
            return;
        };
        match protocol::encode(record) {
            Ok(payload) => {
                let message = CoreMessage {
                    subject: subject::audit(&inner.host),
                    payload: Bytes::from(payload),
                };
                if queue.try_send(message).is_err() {
                    tracing::warn!(action = %record.action, "audit record not published: the queue is full");
                }
            }
            Err(error) => tracing::error!(%error, "cannot encode an audit record"),
        }
    }

    /// Queues a heartbeat for `osprey.heartbeat.<host>` (core NATS), with the publisher's own
    /// counters ([`PublisherStats::stamp`]) written into it. Never blocks; a heartbeat that
    /// cannot go now is counted in `heartbeats_dropped` (the next one carries fresher numbers
    /// anyway).
    /// Queues a heartbeat, [`PublisherStats::stamp`]ed by the caller.
    pub fn heartbeat(&self, heartbeat: &Heartbeat) {
        let inner = &self.inner;
        let Some(heartbeats) = &inner.heartbeats else {
            return;
        };
        let queued = match protocol::encode(heartbeat) {
            Ok(payload) => heartbeats
                .try_send(CoreMessage {
                    subject: subject::heartbeat(&inner.host),
                    payload: Bytes::from(payload),
                })
                .is_ok(),
            Err(error) => {
                tracing::error!(%error, "cannot encode a heartbeat");
                false
            }
        };
        if !queued {
            inner
                .counters
                .heartbeats_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> PublisherStats {
        let inner = &self.inner;
        let (spool_depth, spool_evicted_by_severity, spool_write_errors) = match &inner.spool {
            Some(spool) => {
                let spool = lock(spool);
                (
                    spool.len() as u64,
                    spool.evicted_by_severity(),
                    spool.write_errors(),
                )
            }
            None => (0, [0; 5], 0),
        };
        let counters = &inner.counters;
        PublisherStats {
            spool_depth,
            spool_evicted: spool_evicted_by_severity.iter().sum(),
            spool_evicted_by_severity,
            spool_write_errors,
            findings_published: counters.findings_published.load(Ordering::Relaxed),
            findings_failed: counters.findings_failed.load(Ordering::Relaxed),
            events_published: counters.events_published.load(Ordering::Relaxed),
            events_dropped: counters.events_dropped.load(Ordering::Relaxed),
            heartbeats_published: counters.heartbeats_published.load(Ordering::Relaxed),
            heartbeats_dropped: counters.heartbeats_dropped.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    fn count_event_drop(&self) {
        self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
    }
}

impl PublisherTask {
    /// Stops the publisher: delivers what it can of the spool (while NATS acknowledges),
    /// publishes queued events and heartbeats, flushes jsonl output, and returns the final
    /// counters. Waits at most `grace` for NATS; undelivered findings stay in the spool for
    /// the next start. Publisher handles still alive afterwards keep spooling findings
    /// (delivered next start) and count events as dropped.
    pub async fn shutdown(mut self, grace: Duration) -> PublisherStats {
        // Receivers see the change; send_replace works even when no receiver is left.
        self.shutdown.send_replace(true);
        let deadline = tokio::time::Instant::now() + grace;
        for (name, handle) in [
            ("findings sender", self.finding_sender.take()),
            ("events sender", self.core_sender.take()),
        ] {
            let Some(mut handle) = handle else { continue };
            match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "publisher {name} task failed"),
                Err(_) => {
                    // Aborting is safe: a spooled finding is only deleted after its ack.
                    tracing::warn!("publisher {name} did not finish within {grace:?}; stopping it");
                    handle.abort();
                }
            }
        }
        if let Some(writer) = self.jsonl.take() {
            if let Err(error) = tokio::task::spawn_blocking(move || writer.finish()).await {
                tracing::error!(%error, "jsonl output did not finish cleanly");
            }
        }
        let stats = self.publisher.stats();
        if stats.spool_depth > 0 {
            tracing::warn!(
                spool_depth = stats.spool_depth,
                "publisher stopped with findings still spooled; they are delivered on next start"
            );
        }
        stats
    }
}

/// The spool's state stays consistent even if a holder panicked (every mutation is
/// completed before the next begins), so a poisoned lock is still usable.
fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::*;
    use std::sync::Mutex as StdMutex;

    #[derive(Clone, Default)]
    struct Captured(Arc<StdMutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn process() -> Process {
        Process {
            ppid: 1,
            start_time: Timestamp::from_unix_nanos(1),
            ..Process::new(
                "0000abcd-10-20-1".parse().unwrap(),
                "/usr/bin/python3",
                vec!["python3".into()],
            )
        }
    }

    #[tokio::test]
    async fn a_malformed_nats_url_is_reported_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for url in ["nats://bad host:4222", ""] {
            let config = PublisherConfig {
                host: "h".into(),
                nats: Some(NatsConfig::new(url)),
                publish_events: false,
                jsonl: None,
                spool: SpoolConfig {
                    dir: dir.path().to_path_buf(),
                    max_bytes: 1 << 20,
                    max_findings: 10,
                    fsync: false,
                },
            };
            match Publisher::start(config).await {
                Err(error @ PublishError::Connect { .. }) => {
                    assert!(error.to_string().contains(&format!("{url:?}")), "{error}")
                }
                Err(PublishError::NoNatsServer) if url.is_empty() => {}
                Err(other) => panic!("unexpected error for {url:?}: {other}"),
                Ok(_) => panic!("{url:?} was accepted"),
            }
        }
    }

    #[tokio::test]
    async fn jsonl_prints_findings_always_and_events_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        for events in [false, true] {
            let out = Captured::default();
            let config = PublisherConfig {
                host: "h".into(),
                nats: None,
                publish_events: true,
                jsonl: Some(JsonlOptions { events }),
                spool: SpoolConfig {
                    dir: dir.path().join("spool"),
                    max_bytes: 1 << 20,
                    max_findings: 10,
                    fsync: false,
                },
            };
            let (publisher, task) = Publisher::start_with_output(config, Box::new(out.clone()))
                .await
                .unwrap();
            let event = Event {
                time: Timestamp::from_unix_nanos(2),
                host: "h".into(),
                process: process(),
                ancestry: vec![],
                detail: EventDetail::Exit(ExitEvent::from_wait_status(0)),
            };
            let finding = Finding {
                id: FindingId::new("h", &process().exec_id, Detector::Heuristic, "r"),
                time: Timestamp::from_unix_nanos(3),
                host: "h".into(),
                detector: Detector::Heuristic,
                rule_id: "r".into(),
                title: "t".into(),
                description: None,
                author: None,
                severity: Severity::High,
                tags: vec![],
                process: process(),
                ancestry: vec![],
                triggers: vec![],
                recommended_actions: vec![],
            };
            publisher.event(&event);
            publisher.finding(&finding);
            let stats = task.shutdown(Duration::from_secs(5)).await;
            assert_eq!(stats.events_dropped, 0);

            let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            let kinds: Vec<&str> = lines
                .iter()
                .map(|v| {
                    if v.get("rule_id").is_some() {
                        "finding"
                    } else {
                        "event"
                    }
                })
                .collect();
            if events {
                assert_eq!(kinds, ["event", "finding"]);
                assert_eq!(lines[0]["kind"], "exit");
            } else {
                assert_eq!(kinds, ["finding"]);
            }
            assert_eq!(lines.last().unwrap()["id"], finding.id.0.as_str());
            // Without NATS nothing is spooled.
            assert!(!dir.path().join("spool").exists());
        }
    }
}
