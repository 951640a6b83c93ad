//! The NATS side of the publisher: the connection, the findings sender (JetStream, strictly in
//! spool order) and the core sender (events and heartbeats, best effort).

use std::{
    path::PathBuf,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use async_nats::{
    connection::State,
    jetstream::{self, context::Publish, stream},
    Client, ConnectOptions,
};
use bytes::Bytes;
use protocol::{subject, Finding};
use tokio::sync::{mpsc, watch, Notify};

use super::{lock, spool::Spool, Counters, PublishError};

/// How to reach NATS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsConfig {
    /// e.g. `nats://127.0.0.1:4222`; several servers may be given comma-separated.
    pub url: String,
    /// A `.creds` file (JWT + nkey seed), as the deploy/ configs issue per host.
    pub credentials: Option<PathBuf>,
    /// Duplicate window of the `OSPREY_FINDINGS` stream when this publisher creates it. An
    /// outage longer than this may re-deliver a finding whose ack was lost; consumers then
    /// de-duplicate by finding id.
    pub stream_duplicate_window: Duration,
    /// How long to wait for each JetStream PubAck before retrying.
    pub ack_timeout: Duration,
}

impl NatsConfig {
    pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
    pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            credentials: None,
            stream_duplicate_window: Self::DEFAULT_DUPLICATE_WINDOW,
            ack_timeout: Self::DEFAULT_ACK_TIMEOUT,
        }
    }
}

/// Connects without waiting for the server: the client keeps retrying in the background, so a
/// collector started before NATS still runs (its findings wait in the spool).
pub(crate) async fn connect(
    config: &NatsConfig,
    host: &str,
    connected: Arc<Notify>,
) -> Result<Client, PublishError> {
    let servers = servers(&config.url);
    if servers.is_empty() {
        return Err(PublishError::NoNatsServer);
    }
    let mut options = ConnectOptions::new();
    if let Some(path) = &config.credentials {
        options =
            options
                .credentials_file(path)
                .await
                .map_err(|source| PublishError::Credentials {
                    path: path.clone(),
                    source,
                })?;
    }
    let url = config.url.clone();
    options
        .name(format!("osprey-collector@{host}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |event| {
            let connected = connected.clone();
            let url = url.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(%url, "NATS connected");
                        connected.notify_one();
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(%url, "NATS disconnected; findings are spooled until it returns")
                    }
                    other => tracing::debug!(%url, event = %other, "NATS"),
                }
            }
        })
        .connect(servers)
        .await
        .map_err(|source| PublishError::Connect {
            url: config.url.clone(),
            source,
        })
}

/// `a,b,c` → the servers of a cluster (the client also learns the others from the first).
fn servers(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .collect()
}

/// Exponential backoff between delivery attempts, so an outage costs a retry every few
/// seconds rather than a busy loop.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        now
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("not connected to NATS")]
    NotConnected,
    #[error("cannot create or look up stream OSPREY_FINDINGS: {0}")]
    Stream(#[from] jetstream::context::CreateStreamError),
    #[error("encoded finding is {len} bytes, over the server's max_payload of {max_payload}")]
    TooLarge { len: usize, max_payload: usize },
    #[error("JetStream publish failed: {0}")]
    Publish(#[from] jetstream::context::PublishError),
}

const WARN_AFTER_FAILURES: u32 = 2;

/// The single task that moves findings from the spool to JetStream, oldest first.
pub(crate) struct FindingSender {
    pub(crate) client: Client,
    pub(crate) host: String,
    pub(crate) config: NatsConfig,
    pub(crate) spool: Arc<Mutex<Spool>>,
    pub(crate) counters: Arc<Counters>,
    /// Rung by producers after each append.
    pub(crate) wake: Arc<Notify>,
    /// Rung by the connection when it (re)connects.
    pub(crate) connected: Arc<Notify>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl FindingSender {
    /// Runs until shutdown. On shutdown it keeps delivering while deliveries succeed and
    /// returns once the spool is empty or an attempt fails; what is left stays on disk for the
    /// next start.
    pub(crate) async fn run(mut self) {
        let js = {
            let mut js = jetstream::new(self.client.clone());
            js.set_timeout(self.config.ack_timeout);
            js
        };
        let mut stopping = *self.shutdown.borrow();
        let mut stream_ready = false;
        let mut backoff = Backoff::new();
        // Consecutive failed attempts; the first one alone is not worth a warning (at start
        // the sender often runs before the connection is up).
        let mut failures = 0u32;
        loop {
            let head = lock(&self.spool).front();
            let head = match head {
                Ok(Some(head)) => head,
                Ok(None) => {
                    if stopping {
                        return;
                    }
                    tokio::select! {
                        () = self.wake.notified() => {}
                        _ = self.shutdown.changed() => stopping = true,
                    }
                    continue;
                }
                Err(error) => {
                    tracing::error!(%error, "cannot read the oldest spooled finding; retrying");
                    if stopping {
                        return;
                    }
                    self.pause(backoff.step(), &mut stopping).await;
                    continue;
                }
            };
            let finding: Finding = match protocol::decode(&head.payload) {
                Ok(finding) => finding,
                Err(error) => {
                    tracing::error!(seq = head.seq, %error, "spooled finding is unreadable; set aside as .unsent");
                    self.set_aside(head.seq);
                    continue;
                }
            };
            match self
                .deliver(&js, &finding, head.payload, &mut stream_ready)
                .await
            {
                Ok(ack) => {
                    let removed = lock(&self.spool).remove(head.seq);
                    self.counters
                        .findings_published
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(id = %finding.id, stream_seq = ack.sequence, duplicate = ack.duplicate, removed, "finding acknowledged by JetStream");
                    if failures >= WARN_AFTER_FAILURES {
                        tracing::info!(
                            spool_depth = lock(&self.spool).len(),
                            "JetStream acknowledges findings again; delivering the spool"
                        );
                    }
                    failures = 0;
                    backoff.reset();
                }
                Err(error @ DeliveryError::TooLarge { .. }) => {
                    // Retrying cannot help, and the server would drop the connection.
                    tracing::error!(id = %finding.id, %error, "finding set aside as .unsent");
                    self.set_aside(head.seq);
                }
                Err(error) => {
                    // Any failure may mean the stream was deleted or never created: look it up
                    // again before the next attempt.
                    stream_ready = false;
                    failures = failures.saturating_add(1);
                    if failures == WARN_AFTER_FAILURES {
                        let depth = lock(&self.spool).len();
                        tracing::warn!(%error, spool_depth = depth, "cannot deliver findings to JetStream; they stay in the spool and are retried");
                    } else {
                        tracing::debug!(%error, "finding delivery retry failed");
                    }
                    if stopping {
                        return;
                    }
                    self.pause(backoff.step(), &mut stopping).await;
                }
            }
        }
    }

    async fn deliver(
        &self,
        js: &jetstream::Context,
        finding: &Finding,
        payload: Vec<u8>,
        stream_ready: &mut bool,
    ) -> Result<jetstream::publish::PublishAck, DeliveryError> {
        // A request made while disconnected would sit in the client's buffer and be sent
        // again on every retry: only try on a live connection.
        if self.client.connection_state() != State::Connected {
            return Err(DeliveryError::NotConnected);
        }
        let max_payload = self.client.server_info().max_payload;
        if max_payload > 0 && payload.len() > max_payload {
            return Err(DeliveryError::TooLarge {
                len: payload.len(),
                max_payload,
            });
        }
        if !*stream_ready {
            ensure_stream(js, &self.config).await?;
            *stream_ready = true;
        }
        let publish = Publish::build()
            .payload(Bytes::from(payload))
            .message_id(&finding.id.0);
        let ack = js
            .send_publish(subject::findings(&self.host, finding.severity), publish)
            .await?
            .await?;
        Ok(ack)
    }

    fn set_aside(&self, seq: u64) {
        lock(&self.spool).set_aside(seq);
        self.counters
            .findings_failed
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Waits for the backoff, cut short when NATS reconnects or shutdown starts.
    async fn pause(&mut self, delay: Duration, stopping: &mut bool) {
        if *stopping {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.connected.notified() => {}
            _ = self.shutdown.changed() => *stopping = true,
        }
    }
}

/// Creates `OSPREY_FINDINGS` if it is missing; an existing stream is used as it is (its owner
/// may have tuned limits or replicas).
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    config: &NatsConfig,
) -> Result<(), jetstream::context::CreateStreamError> {
    js.get_or_create_stream(stream::Config {
        name: subject::FINDINGS_STREAM.to_string(),
        subjects: vec![subject::FINDINGS_WILDCARD.to_string()],
        storage: stream::StorageType::File,
        duplicate_window: config.stream_duplicate_window,
        description: Some("Osprey findings (published by collectors)".to_string()),
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// A core NATS message: an event or a heartbeat.
pub(crate) struct CoreMessage {
    pub(crate) subject: String,
    pub(crate) payload: Bytes,
    pub(crate) is_event: bool,
}

/// Publishes events and heartbeats with core NATS. Core publish only buffers in the client,
/// so while disconnected messages are dropped and counted here instead of piling up there.
pub(crate) async fn run_core_sender(
    client: Client,
    mut rx: mpsc::Receiver<CoreMessage>,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut stopping = *shutdown.borrow();
    while !stopping {
        tokio::select! {
            biased;
            message = rx.recv() => match message {
                Some(message) => publish_core(&client, message, &counters).await,
                None => break,
            },
            _ = shutdown.changed() => stopping = true,
        }
    }
    // Flush what was queued before shutdown.
    while let Ok(message) = rx.try_recv() {
        publish_core(&client, message, &counters).await;
    }
    if client.connection_state() == State::Connected {
        if let Err(error) = client.flush().await {
            tracing::warn!(%error, "cannot flush NATS on shutdown");
        }
    }
}

async fn publish_core(client: &Client, message: CoreMessage, counters: &Counters) {
    let dropped = if client.connection_state() != State::Connected {
        true
    } else {
        match client.publish(message.subject, message.payload).await {
            Ok(()) => false,
            Err(error) => {
                tracing::debug!(%error, "core NATS publish failed");
                true
            }
        }
    };
    let counter = match (message.is_event, dropped) {
        (true, false) => &counters.events_published,
        (true, true) => &counters.events_dropped,
        (false, false) => return,
        (false, true) => &counters.heartbeats_dropped,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}
