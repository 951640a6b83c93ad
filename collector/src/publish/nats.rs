//! The NATS side of the publisher: the connection, the findings sender (JetStream, in spool
//! order, a batch of acks in flight) and the core sender (events and heartbeats, best effort;
//! heartbeats first).

use std::{
    future::IntoFuture,
    path::PathBuf,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use async_nats::{
    connection::State,
    jetstream::{self, context::Publish},
    Client,
};
use bus::{FindingsStream, IfMissing, OpenError};
use bytes::Bytes;
use futures::FutureExt;
use protocol::{subject, Finding};
use tokio::sync::{mpsc, watch, Notify};

use super::{lock, msgid::MessageIds, spool::Spool, Counters, PublishError};

/// How to reach NATS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsConfig {
    /// e.g. `nats://127.0.0.1:4222`; several servers may be given comma-separated.
    pub url: String,
    /// This host's NKey seed (`osprey creds host NAME`) or a `.creds` file.
    pub credentials: Option<PathBuf>,
    /// `OSPREY_FINDINGS` as this publisher creates it when it is missing and the server lets
    /// it (deployments with per-host permissions leave that to the responder).
    pub stream: FindingsStream,
    /// How long to wait for each JetStream PubAck before retrying.
    pub ack_timeout: Duration,
}

impl NatsConfig {
    /// Acks take milliseconds, even from a 3-node cluster; what times out is a publish that
    /// went to a stream without a leader (an election takes seconds), so the retry after a
    /// short wait is the one that lands.
    pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(2);

    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            credentials: None,
            stream: FindingsStream::default(),
            ack_timeout: Self::DEFAULT_ACK_TIMEOUT,
        }
    }
}

/// Messages the NATS client buffers on its way to the server (async-nats' default, 2048,
/// held several MiB of events in a flood).
const CLIENT_CAPACITY: usize = 256;

/// Connects without waiting for the server: the client keeps retrying in the background, so a
/// collector started before NATS still runs (its findings wait in the spool).
pub(crate) async fn connect(
    config: &NatsConfig,
    host: &str,
    connected: Arc<Notify>,
) -> Result<Client, PublishError> {
    let servers = bus::servers(&config.url);
    if servers.is_empty() {
        return Err(PublishError::NoNatsServer);
    }
    let options = bus::options(bus::Role::Host(host), config.credentials.as_deref())?;
    let url = config.url.clone();
    options
        .name(format!("osprey-collector@{host}"))
        .client_capacity(CLIENT_CAPACITY)
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
                    async_nats::Event::ServerError(error) => {
                        tracing::error!(%url, %error, "NATS server refused something (permissions?)")
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
    #[error(transparent)]
    Stream(#[from] OpenError),
    #[error("JetStream publish failed: {0}")]
    Publish(#[from] jetstream::context::PublishError),
}

impl DeliveryError {
    fn stream_may_be_gone(&self) -> bool {
        use jetstream::context::PublishErrorKind;
        match self {
            DeliveryError::NotConnected => false,
            DeliveryError::Stream(_) => true,
            DeliveryError::Publish(e) => !matches!(
                e.kind(),
                PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
            ),
        }
    }
}

const WARN_AFTER_FAILURES: u32 = 2;
/// Findings published before their acks are awaited. A batch goes out back to back and its
/// acks are awaited together; the next batch waits for them, so a failure is retried before
/// anything newer is sent (which keeps the stream in spool order: see `deliver_batch`).
const BATCH: usize = 64;

/// The single task that moves findings from the spool to JetStream, oldest first.
pub(crate) struct FindingSender {
    pub(crate) client: Client,
    pub(crate) host: String,
    pub(crate) config: NatsConfig,
    pub(crate) spool: Arc<Mutex<Spool>>,
    pub(crate) message_ids: MessageIds,
    pub(crate) counters: Arc<Counters>,
    /// Rung by producers after each append.
    pub(crate) wake: Arc<Notify>,
    /// Rung by the connection when it (re)connects.
    pub(crate) connected: Arc<Notify>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// What one batch achieved.
struct BatchOutcome {
    delivered: usize,
    failure: Option<DeliveryError>,
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
            let head = lock(&self.spool).head(BATCH);
            let batch = match head {
                Ok(batch) if batch.is_empty() => {
                    if stopping {
                        return;
                    }
                    tokio::select! {
                        () = self.wake.notified() => {}
                        _ = self.shutdown.changed() => stopping = true,
                    }
                    continue;
                }
                Ok(batch) => batch,
                Err(error) => {
                    tracing::error!(%error, "cannot read the oldest spooled findings; retrying");
                    if stopping {
                        return;
                    }
                    self.pause(backoff.step(), &mut stopping).await;
                    continue;
                }
            };
            let outcome = self.deliver_batch(&js, batch, &mut stream_ready).await;
            match outcome.failure {
                None => {
                    if failures >= WARN_AFTER_FAILURES {
                        tracing::info!(
                            spool_depth = lock(&self.spool).len(),
                            "JetStream acknowledges findings again; delivering the spool"
                        );
                    }
                    failures = 0;
                    backoff.reset();
                }
                Some(error) => {
                    // No stream answering may mean it was deleted: look it up again before the
                    // next attempt. A timeout (a leader election in a cluster, a slow server)
                    // does not: another lookup would only wait as long again.
                    if error.stream_may_be_gone() {
                        stream_ready = false;
                    }
                    if outcome.delivered > 0 {
                        failures = 0;
                        backoff.reset();
                    }
                    failures = failures.saturating_add(1);
                    if failures == WARN_AFTER_FAILURES
                        || matches!(error, DeliveryError::Stream(OpenError::Wrong(_)))
                    {
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

    /// Publishes a batch back to back, then awaits all its acks at once (each bounded by the
    /// ack timeout). Acknowledged findings leave the spool; from the first failure on, the
    /// rest is retried by the next batch, so nothing newer is sent before it. The stream
    /// could only get out of spool order if a stream leader were elected in the microseconds
    /// between two messages of one batch; that is logged.
    async fn deliver_batch(
        &self,
        js: &jetstream::Context,
        batch: Vec<super::spool::Spooled>,
        stream_ready: &mut bool,
    ) -> BatchOutcome {
        let failed = |failure: DeliveryError| BatchOutcome {
            delivered: 0,
            failure: Some(failure),
        };
        // A request made while disconnected would sit in the client's buffer and be sent
        // again on every retry: only try on a live connection.
        if self.client.connection_state() != State::Connected {
            return failed(DeliveryError::NotConnected);
        }
        if !*stream_ready {
            if let Err(error) =
                bus::stream::open_findings(js, &self.client, &self.config.stream, IfMissing::Create)
                    .await
            {
                return failed(error.into());
            }
            *stream_ready = true;
        }
        let max_payload = self.client.server_info().max_payload;
        let mut in_flight = Vec::with_capacity(batch.len());
        let mut failure = None;
        for spooled in batch {
            let finding: Finding = match protocol::decode(&spooled.payload) {
                Ok(finding) => finding,
                Err(error) => {
                    tracing::error!(seq = spooled.seq, %error, "spooled finding is unreadable; set aside as .unsent");
                    self.set_aside(spooled.seq);
                    continue;
                }
            };
            if max_payload > 0 && spooled.payload.len() > max_payload {
                // Retrying cannot help, and the server would drop the connection.
                tracing::error!(id = %finding.id, len = spooled.payload.len(), max_payload, "finding is over the server's max_payload; set aside as .unsent");
                self.set_aside(spooled.seq);
                continue;
            }
            let publish = Publish::build()
                .payload(Bytes::from(spooled.payload))
                .message_id(self.message_ids.for_finding(&finding.id));
            match js
                .send_publish(subject::findings(&self.host, finding.severity), publish)
                .await
            {
                Ok(ack) => {
                    let sent = std::time::Instant::now();
                    let ack = ack.into_future().map(move |result| {
                        if result.is_ok() {
                            crate::metrics::get().published(sent.elapsed());
                        }
                        result
                    });
                    in_flight.push((spooled.seq, finding.id, ack));
                }
                Err(error) => {
                    failure = Some(error.into());
                    break;
                }
            }
        }
        let (seqs_ids, acks): (Vec<_>, Vec<_>) = in_flight
            .into_iter()
            .map(|(seq, id, ack)| ((seq, id), ack))
            .unzip();
        let results = futures::future::join_all(acks).await;
        let mut delivered = 0;
        let mut first_failure_at = None;
        for (index, ((seq, id), result)) in seqs_ids.into_iter().zip(results).enumerate() {
            match result {
                Ok(ack) => {
                    if let Some(at) = first_failure_at {
                        if !ack.duplicate {
                            tracing::warn!(%id, failed_before = at, "a finding was stored after an earlier one of its batch failed: the stream holds them out of spool order");
                        }
                    }
                    let removed = lock(&self.spool).remove(seq);
                    self.counters
                        .findings_published
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%id, stream_seq = ack.sequence, duplicate = ack.duplicate, removed, "finding acknowledged by JetStream");
                    delivered += 1;
                }
                Err(error) => {
                    first_failure_at.get_or_insert(index);
                    failure.get_or_insert(error.into());
                }
            }
        }
        BatchOutcome { delivered, failure }
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

/// A core NATS message: an event or a heartbeat.
pub(crate) struct CoreMessage {
    pub(crate) subject: String,
    pub(crate) payload: Bytes,
}

/// How long events gather before they go to the NATS client together. Each hand-off ends in
/// a socket write that wakes the server, and handing over each reading of the ring buffer
/// (a few events) cost the collector as much as the events' encoding. Findings do not wait:
/// they go through JetStream at once.
const EVENT_GATHER: Duration = Duration::from_millis(10);

/// Publishes events and heartbeats with core NATS, heartbeats first: they have a queue of
/// their own, so a flood of events can delay a heartbeat by one publish but never drop it.
/// Events go out in gathered batches (see [`EVENT_GATHER`]). Core publish only buffers in
/// the client, so while disconnected messages are dropped and counted here instead of piling
/// up there.
pub(crate) async fn run_core_sender(
    client: Client,
    mut heartbeats: mpsc::Receiver<CoreMessage>,
    mut events: mpsc::Receiver<CoreMessage>,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut stopping = *shutdown.borrow();
    // While set, events wait in their queue until then.
    let mut gathering: Option<tokio::time::Instant> = None;
    while !stopping {
        let gathered = gathering.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            biased;
            Some(message) = heartbeats.recv() => publish_core(&client, message, Kind::Heartbeat, &counters).await,
            Some(message) = events.recv(), if gathering.is_none() => {
                publish_core(&client, message, Kind::Event, &counters).await;
                while let Ok(message) = events.try_recv() {
                    publish_core(&client, message, Kind::Event, &counters).await;
                }
                gathering = Some(tokio::time::Instant::now() + EVENT_GATHER);
            }
            _ = tokio::time::sleep_until(gathered), if gathering.is_some() => gathering = None,
            _ = shutdown.changed() => stopping = true,
            else => break,
        }
    }
    // Flush what was queued before shutdown.
    while let Ok(message) = heartbeats.try_recv() {
        publish_core(&client, message, Kind::Heartbeat, &counters).await;
    }
    while let Ok(message) = events.try_recv() {
        publish_core(&client, message, Kind::Event, &counters).await;
    }
    if client.connection_state() == State::Connected {
        if let Err(error) = client.flush().await {
            tracing::warn!(%error, "cannot flush NATS on shutdown");
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Event,
    Heartbeat,
}

async fn publish_core(client: &Client, message: CoreMessage, kind: Kind, counters: &Counters) {
    if kind == Kind::Event {
        // Out of the queue; the client's own (CLIENT_CAPACITY) holds it from here.
        counters
            .events_queued_bytes
            .fetch_sub(message.payload.len(), Ordering::Relaxed);
    }
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
    let counter = match (kind, dropped) {
        (Kind::Event, false) => &counters.events_published,
        (Kind::Event, true) => &counters.events_dropped,
        (Kind::Heartbeat, false) => &counters.heartbeats_published,
        (Kind::Heartbeat, true) => &counters.heartbeats_dropped,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}
