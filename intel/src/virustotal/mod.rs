//! VirusTotal lookups off the caller's thread.
//!
//! [`VirusTotal::lookup`] never blocks: it queues the request for the scheduler thread
//! (`osprey-intel`), which answers from the verdict cache, merges requests for a hash already
//! on its way, paces requests to the quota and backs off after failures. One more thread
//! (`osprey-intel-http`) makes the HTTP requests, one at a time, so a slow or unreachable
//! server never delays cache answers. Verdicts arrive on a bounded `tokio::sync::mpsc`
//! channel: the collector's event loop awaits it in its `select!`, and a command-line tool
//! can `blocking_recv` it.

mod client;
mod limiter;
mod worker;

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc as std_mpsc, Arc,
    },
    thread,
};

use tokio::sync::mpsc;

pub use client::ApiError;

use crate::{cache::CacheError, Answer, ConfigError, Sha256, VerdictCache, VirusTotalConfig};

/// Requests waiting for the scheduler thread at most; beyond, [`VirusTotal::lookup`] refuses.
const QUEUE: usize = 4096;
/// Answers waiting for the caller at most; beyond, the scheduler waits (never the caller).
const ANSWERS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("cannot start the intel threads: {0}")]
    Thread(#[from] std::io::Error),
}

/// Why a lookup was not queued. Each one is also counted in [`LookupStats::refused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the intel queue is full")]
    QueueFull,
    #[error("the intel thread has stopped")]
    Stopped,
}

/// The caller's handle. Dropping it stops the threads.
pub struct VirusTotal<R> {
    requests: std_mpsc::SyncSender<worker::Msg<R>>,
    stats: Arc<Counters>,
    stopped: Arc<AtomicBool>,
}

impl<R: Clone + Send + 'static> VirusTotal<R> {
    /// Opens the verdict cache at `cache_path` (table `intel_verdicts`, created when missing)
    /// and starts the threads. `requester` values come back with each answer: the collector
    /// passes the `ExecId` that asked.
    pub fn start(
        config: &VirusTotalConfig,
        cache_path: &Path,
    ) -> Result<(Self, mpsc::Receiver<Answer<R>>), StartError> {
        let key = config.api_key()?;
        let cache = VerdictCache::open(cache_path, config.ttl_known, config.ttl_unknown)?;
        let (requests, inbox) = std_mpsc::sync_channel(QUEUE);
        let (answers, answers_rx) = mpsc::channel(ANSWERS);
        let (jobs, job_rx) = std_mpsc::channel();
        let stats = Arc::new(Counters::default());
        let stopped = Arc::new(AtomicBool::new(false));

        let client = client::Client::new(config, key);
        let done = requests.clone();
        thread::Builder::new()
            .name("osprey-intel-http".into())
            .spawn(move || worker::http(client, job_rx, done))?;
        let scheduler = worker::Scheduler::new(
            config.clone(),
            cache,
            answers,
            jobs,
            Arc::clone(&stats),
            Arc::clone(&stopped),
        );
        thread::Builder::new()
            .name("osprey-intel".into())
            .spawn(move || scheduler.run(inbox))?;
        tracing::info!(
            base_url = %config.base_url,
            per_minute = config.per_minute,
            per_day = config.per_day,
            cache = %cache_path.display(),
            upload = config.upload.enabled,
            "VirusTotal lookups enabled"
        );
        Ok((
            VirusTotal {
                requests,
                stats,
                stopped,
            },
            answers_rx,
        ))
    }

    /// Asks for the verdict about `sha256` on behalf of `requester`; never blocks. `exe` is
    /// where the file is, for an upload when VirusTotal does not know it (uploads enabled,
    /// not under an excluded path, small enough).
    pub fn lookup(
        &self,
        sha256: Sha256,
        exe: Option<PathBuf>,
        requester: R,
    ) -> Result<(), Refused> {
        let msg = worker::Msg::Lookup {
            sha256,
            exe,
            requester,
        };
        self.requests.try_send(msg).map_err(|e| {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            match e {
                std_mpsc::TrySendError::Full(_) => Refused::QueueFull,
                std_mpsc::TrySendError::Disconnected(_) => Refused::Stopped,
            }
        })
    }

    pub fn stats(&self) -> LookupStats {
        self.stats.snapshot()
    }
}

impl<R> Drop for VirusTotal<R> {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        // Wakes the scheduler; if the queue is full it is busy and sees the flag soon.
        let _ = self.requests.try_send(worker::Msg::Stop);
    }
}

/// What the lookups did so far (for heartbeats and `osprey scan`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Lookups asked for.
    pub requested: u64,
    /// Requests merged into a lookup already waiting or under way.
    pub deduplicated: u64,
    /// Requests answered from the verdict cache.
    pub cache_hits: u64,
    /// `GET /files` requests that reached the server.
    pub lookups: u64,
    /// `POST /files` requests that reached the server.
    pub uploads: u64,
    /// `GET /analyses` requests that reached the server.
    pub analysis_polls: u64,
    /// HTTP 429 answers.
    pub rate_limited: u64,
    /// Failed requests that will be retried (5xx, unreachable, refused key).
    pub retries: u64,
    /// Hashes given up after malformed answers.
    pub given_up: u64,
    /// Requests refused (queue full, too many hashes pending, stopped).
    pub refused: u64,
    /// Hashes waiting now.
    pub pending: u64,
}

#[derive(Default)]
struct Counters {
    requested: AtomicU64,
    deduplicated: AtomicU64,
    cache_hits: AtomicU64,
    lookups: AtomicU64,
    uploads: AtomicU64,
    analysis_polls: AtomicU64,
    rate_limited: AtomicU64,
    retries: AtomicU64,
    given_up: AtomicU64,
    refused: AtomicU64,
    pending: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> LookupStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LookupStats {
            requested: get(&self.requested),
            deduplicated: get(&self.deduplicated),
            cache_hits: get(&self.cache_hits),
            lookups: get(&self.lookups),
            uploads: get(&self.uploads),
            analysis_polls: get(&self.analysis_polls),
            rate_limited: get(&self.rate_limited),
            retries: get(&self.retries),
            given_up: get(&self.given_up),
            refused: get(&self.refused),
            pending: get(&self.pending),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
