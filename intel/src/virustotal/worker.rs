//! The two intel threads: the scheduler (cache, de-duplication, quota, back-off, uploads)
//! and the HTTP thread it hands one request at a time.

use std::{
    collections::{HashMap, VecDeque},
    fs::File,
    io::Read,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc, Arc,
    },
    time::{Duration, Instant},
};

use protocol::Timestamp;
use tokio::sync::mpsc;

use super::{
    bump,
    client::{AnalysisState, ApiError, Client, FileReport},
    limiter::{Backoff, RateLimiter},
    Counters,
};
use crate::{Answer, Sha256, Verdict, VerdictCache, VirusTotalConfig};

/// Malformed answers about one hash before it is given up.
const MAX_MALFORMED: u32 = 3;
/// Between two prunes of stale cache entries.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

pub(super) enum Msg<R> {
    Lookup {
        sha256: Sha256,
        exe: Option<PathBuf>,
        requester: R,
    },
    Done {
        sha256: Sha256,
        outcome: Outcome,
        /// When the request finished; `None` when it did not reach the server (unreachable,
        /// or an upload skipped).
        sent: Option<Instant>,
    },
    Stop,
}

pub(super) enum Job {
    File(Sha256),
    Upload {
        sha256: Sha256,
        path: PathBuf,
        max_bytes: u64,
    },
    Analysis {
        sha256: Sha256,
        id: String,
    },
}

pub(super) enum Outcome {
    File(Result<FileReport, ApiError>),
    Upload(Result<String, UploadError>),
    Analysis(Result<AnalysisState, ApiError>),
}

pub(super) enum UploadError {
    /// Not sent: why the file is not uploaded.
    Skipped(String),
    Api(ApiError),
}

struct Pending<R> {
    /// Waiting for the lookup; during an upload: to be told the analysis' verdict.
    requesters: Vec<R>,
    exe: Option<PathBuf>,
    stage: Stage,
}

enum Stage {
    /// Queued for (or under) a file lookup.
    Lookup { malformed: u32 },
    /// VirusTotal did not know the file; queued for (or under) upload.
    Upload { unknown: Verdict },
    /// Uploaded; the analysis is polled.
    Analysis {
        unknown: Verdict,
        id: String,
        next_poll: Instant,
        deadline: Instant,
        malformed: u32,
    },
}

pub(super) struct Scheduler<R> {
    config: VirusTotalConfig,
    cache: VerdictCache,
    answers: mpsc::Sender<Answer<R>>,
    jobs: std_mpsc::Sender<Job>,
    /// A job is with the HTTP thread.
    busy: bool,
    pending: HashMap<Sha256, Pending<R>>,
    lookups: VecDeque<Sha256>,
    uploads: VecDeque<Sha256>,
    limiter: RateLimiter,
    backoff: Backoff,
    stats: Arc<Counters>,
    stopped: Arc<AtomicBool>,
    /// Set while requests are refused for too many pending hashes (one warning per episode).
    overflowing: bool,
    last_prune: Option<Instant>,
}

impl<R: Clone + Send + 'static> Scheduler<R> {
    pub(super) fn new(
        config: VirusTotalConfig,
        cache: VerdictCache,
        answers: mpsc::Sender<Answer<R>>,
        jobs: std_mpsc::Sender<Job>,
        stats: Arc<Counters>,
        stopped: Arc<AtomicBool>,
    ) -> Self {
        Scheduler {
            limiter: RateLimiter::new(&[
                (config.per_minute, config.minute_window),
                (config.per_day, config.day_window),
            ]),
            backoff: Backoff::new(config.retry_initial, config.retry_max),
            config,
            cache,
            answers,
            jobs,
            busy: false,
            pending: HashMap::new(),
            lookups: VecDeque::new(),
            uploads: VecDeque::new(),
            stats,
            stopped,
            overflowing: false,
            last_prune: None,
        }
    }

    pub(super) fn run(mut self, inbox: std_mpsc::Receiver<Msg<R>>) {
        loop {
            if self.stopped.load(Ordering::Relaxed) || self.answers.is_closed() {
                break;
            }
            let now = Instant::now();
            self.prune(now);
            self.dispatch(now);
            let msg = match self.wake_at(now) {
                Some(at) => match inbox.recv_timeout(at.saturating_duration_since(now)) {
                    Ok(msg) => msg,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match inbox.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                },
            };
            let keep_going = match msg {
                Msg::Lookup {
                    sha256,
                    exe,
                    requester,
                } => self.request(sha256, exe, requester),
                Msg::Done {
                    sha256,
                    outcome,
                    sent,
                } => self.done(sha256, outcome, sent),
                Msg::Stop => false,
            };
            self.stats
                .pending
                .store(self.pending.len() as u64, Ordering::Relaxed);
            if !keep_going {
                break;
            }
        }
        tracing::debug!("VirusTotal scheduler stopped");
    }

    /// A new request: answered from the cache, merged into a pending lookup, or queued.
    /// Returns false once nobody listens for answers.
    fn request(&mut self, sha256: Sha256, exe: Option<PathBuf>, requester: R) -> bool {
        bump(&self.stats.requested);
        if let Some(p) = self.pending.get_mut(&sha256) {
            bump(&self.stats.deduplicated);
            if p.exe.is_none() {
                p.exe = exe;
            }
            p.requesters.push(requester.clone());
            // During an upload the file is known to be unknown: say so now, and again
            // when the analysis completes.
            if let Stage::Upload { unknown } | Stage::Analysis { unknown, .. } = &p.stage {
                let verdict = unknown.clone();
                return self.answer(verdict, vec![requester]);
            }
            return true;
        }
        match self.cache.get(&sha256, Timestamp::now()) {
            Ok(Some(verdict)) => {
                bump(&self.stats.cache_hits);
                return self.answer(verdict, vec![requester]);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("verdict cache not read, asking VirusTotal: {e}"),
        }
        if self.pending.len() >= self.config.max_pending {
            bump(&self.stats.refused);
            if !self.overflowing {
                self.overflowing = true;
                tracing::warn!(
                    pending = self.pending.len(),
                    "VirusTotal lookups refused: {} hashes already wait (virustotal.max_pending)",
                    self.config.max_pending
                );
            }
            return true;
        }
        self.overflowing = false;
        self.pending.insert(
            sha256,
            Pending {
                requesters: vec![requester],
                exe,
                stage: Stage::Lookup { malformed: 0 },
            },
        );
        self.lookups.push_back(sha256);
        true
    }

    /// When the loop must wake up without a message: the next request may go, or an
    /// analysis poll is due. `None`: only a message can bring work.
    fn wake_at(&mut self, now: Instant) -> Option<Instant> {
        if self.busy {
            return None;
        }
        let queued = if self.lookups.is_empty() && self.uploads.is_empty() {
            None
        } else {
            Some(now)
        };
        let polls = self.pending.values().filter_map(|p| match &p.stage {
            Stage::Analysis { next_poll, .. } => Some(*next_poll),
            _ => None,
        });
        let next = queued.into_iter().chain(polls).min()?;
        Some(next.max(self.ready_at(now)))
    }

    fn ready_at(&mut self, now: Instant) -> Instant {
        self.limiter.ready_at(now).max(self.backoff.ready_at(now))
    }

    /// Hands the next request to the HTTP thread when it is idle and the quota and back-off
    /// allow: due analysis polls first (an upload already spent quota), then lookups, then
    /// uploads.
    fn dispatch(&mut self, now: Instant) {
        if self.busy || self.ready_at(now) > now {
            return;
        }
        let Some(job) = self.next_job(now) else {
            return;
        };
        if self.jobs.send(job).is_ok() {
            self.busy = true;
        }
    }

    fn next_job(&mut self, now: Instant) -> Option<Job> {
        let mut given_up = Vec::new();
        let mut due = None;
        for (sha256, p) in &self.pending {
            if let Stage::Analysis {
                id,
                next_poll,
                deadline,
                ..
            } = &p.stage
            {
                if *deadline <= now {
                    given_up.push(*sha256);
                } else if *next_poll <= now && due.is_none() {
                    due = Some(Job::Analysis {
                        sha256: *sha256,
                        id: id.clone(),
                    });
                }
            }
        }
        for sha256 in given_up {
            tracing::warn!(
                %sha256,
                "VirusTotal analysis of the upload not completed within {}: given up, \
                 the file stays unknown",
                humantime::format_duration(self.config.upload.poll_timeout)
            );
            bump(&self.stats.given_up);
            self.pending.remove(&sha256);
        }
        if due.is_some() {
            return due;
        }
        if let Some(sha256) = self.lookups.pop_front() {
            return Some(Job::File(sha256));
        }
        while let Some(sha256) = self.uploads.pop_front() {
            if let Some(path) = self.pending.get(&sha256).and_then(|p| p.exe.clone()) {
                return Some(Job::Upload {
                    sha256,
                    path,
                    max_bytes: self.config.upload.max_bytes,
                });
            }
        }
        None
    }

    /// The HTTP thread's result. Returns false once nobody listens for answers.
    fn done(&mut self, sha256: Sha256, outcome: Outcome, sent: Option<Instant>) -> bool {
        self.busy = false;
        if let Some(finished) = sent {
            self.limiter.record(finished);
        }
        let counter = match &outcome {
            Outcome::File(_) => &self.stats.lookups,
            Outcome::Upload(_) => &self.stats.uploads,
            Outcome::Analysis(_) => &self.stats.analysis_polls,
        };
        if sent.is_some() {
            bump(counter);
        }
        match outcome {
            Outcome::File(result) => self.file_done(sha256, result),
            Outcome::Upload(result) => {
                self.upload_done(sha256, result);
                true
            }
            Outcome::Analysis(result) => self.analysis_done(sha256, result),
        }
    }

    fn file_done(&mut self, sha256: Sha256, result: Result<FileReport, ApiError>) -> bool {
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                self.failed(sha256, e, Retry::Lookup);
                return true;
            }
        };
        self.backoff.succeeded();
        let Some(mut p) = self.pending.remove(&sha256) else {
            return true;
        };
        let counts = match report {
            FileReport::Known(counts) => Some(counts),
            FileReport::Unknown => None,
        };
        let verdict = Verdict::new(sha256, counts, Timestamp::now());
        self.store(&verdict);
        tracing::debug!(
            %sha256,
            known = verdict.known,
            malicious = verdict.malicious,
            suspicious = verdict.suspicious,
            "VirusTotal verdict"
        );
        let requesters = std::mem::take(&mut p.requesters);
        let upload = !verdict.known && self.uploadable(p.exe.as_deref());
        if upload {
            p.requesters = requesters.clone();
            p.stage = Stage::Upload {
                unknown: verdict.clone(),
            };
            self.pending.insert(sha256, p);
            self.uploads.push_back(sha256);
        }
        self.answer(verdict, requesters)
    }

    fn upload_done(&mut self, sha256: Sha256, result: Result<String, UploadError>) {
        let id = match result {
            Ok(id) => id,
            Err(UploadError::Skipped(why)) => {
                tracing::info!(%sha256, "not uploaded to VirusTotal: {why}");
                self.pending.remove(&sha256);
                return;
            }
            Err(UploadError::Api(e)) => {
                self.failed(sha256, e, Retry::Upload);
                return;
            }
        };
        self.backoff.succeeded();
        let Some(p) = self.pending.get_mut(&sha256) else {
            return;
        };
        tracing::info!(%sha256, "uploaded to VirusTotal, analysis {id}");
        let now = Instant::now();
        if let Stage::Upload { unknown } = &p.stage {
            p.stage = Stage::Analysis {
                unknown: unknown.clone(),
                id,
                next_poll: now + self.config.upload.poll_interval,
                deadline: now + self.config.upload.poll_timeout,
                malformed: 0,
            };
        }
    }

    fn analysis_done(&mut self, sha256: Sha256, result: Result<AnalysisState, ApiError>) -> bool {
        let state = match result {
            Ok(state) => state,
            Err(e) => {
                self.failed(sha256, e, Retry::Analysis);
                return true;
            }
        };
        self.backoff.succeeded();
        match state {
            AnalysisState::Running => {
                let next = Instant::now() + self.config.upload.poll_interval;
                if let Some(Pending {
                    stage: Stage::Analysis { next_poll, .. },
                    ..
                }) = self.pending.get_mut(&sha256)
                {
                    *next_poll = next;
                }
                true
            }
            AnalysisState::Completed(counts) => {
                let Some(p) = self.pending.remove(&sha256) else {
                    return true;
                };
                let verdict = Verdict::new(sha256, Some(counts), Timestamp::now());
                self.store(&verdict);
                tracing::info!(
                    %sha256,
                    malicious = verdict.malicious,
                    suspicious = verdict.suspicious,
                    "VirusTotal analysis of the upload completed"
                );
                self.answer(verdict, p.requesters)
            }
        }
    }

    /// A request failed: transient failures back off and retry the same step; a hash whose
    /// answers keep making no sense is given up.
    fn failed(&mut self, sha256: Sha256, error: ApiError, step: Retry) {
        if error.is_transient() {
            if matches!(error, ApiError::RateLimited { .. }) {
                bump(&self.stats.rate_limited);
            }
            bump(&self.stats.retries);
            let wait = self.backoff.failed(Instant::now(), error.retry_after());
            let message = format!(
                "VirusTotal requests paused for {}: {error}",
                humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
            );
            if matches!(error, ApiError::Unauthorized { .. }) {
                tracing::error!("{message}");
            } else if self.backoff.failures() <= 1 {
                tracing::warn!("{message}");
            } else {
                tracing::debug!(failures = self.backoff.failures(), "{message}");
            }
            self.requeue(sha256, step);
            return;
        }
        let Some(p) = self.pending.get_mut(&sha256) else {
            return;
        };
        let malformed = match &mut p.stage {
            Stage::Lookup { malformed } | Stage::Analysis { malformed, .. } => {
                *malformed += 1;
                *malformed
            }
            // An upload is not repeated on a nonsensical answer: the file stays unknown.
            Stage::Upload { .. } => MAX_MALFORMED,
        };
        if malformed >= MAX_MALFORMED {
            tracing::error!(%sha256, "VirusTotal given up for this file: {error}");
            bump(&self.stats.given_up);
            self.pending.remove(&sha256);
        } else {
            tracing::warn!(%sha256, "VirusTotal answer not understood, will ask again: {error}");
            self.requeue(sha256, step);
        }
    }

    fn requeue(&mut self, sha256: Sha256, step: Retry) {
        match step {
            Retry::Lookup => self.lookups.push_front(sha256),
            Retry::Upload => self.uploads.push_front(sha256),
            // The poll stays due: it goes first once the back-off ends.
            Retry::Analysis => {}
        }
    }

    /// Whether the file at `exe` may be uploaded (the size and content are checked when it is
    /// read).
    fn uploadable(&self, exe: Option<&Path>) -> bool {
        let upload = &self.config.upload;
        let Some(exe) = exe else {
            return false;
        };
        if !upload.enabled {
            return false;
        }
        if let Some(dir) = upload.exclude.iter().find(|d| exe.starts_with(d)) {
            tracing::debug!(exe = %exe.display(), "not uploaded: under {}", dir.display());
            return false;
        }
        true
    }

    fn store(&self, verdict: &Verdict) {
        if let Err(e) = self.cache.put(verdict) {
            tracing::warn!("verdict not cached: {e}");
        }
    }

    /// Delivers an answer, waiting if the caller is behind (this thread may wait, the
    /// caller's never does). Returns false once nobody listens.
    fn answer(&self, verdict: Verdict, requesters: Vec<R>) -> bool {
        if requesters.is_empty() {
            return true;
        }
        self.answers
            .blocking_send(Answer {
                verdict,
                requesters,
            })
            .is_ok()
    }

    fn prune(&mut self, now: Instant) {
        if self
            .last_prune
            .is_some_and(|t| now.duration_since(t) < PRUNE_EVERY)
        {
            return;
        }
        self.last_prune = Some(now);
        match self.cache.prune(Timestamp::now()) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "stale verdicts pruned"),
            Err(e) => tracing::warn!("stale verdicts not pruned: {e}"),
        }
    }
}

#[derive(Clone, Copy)]
enum Retry {
    Lookup,
    Upload,
    Analysis,
}

/// The HTTP thread: one job at a time, its outcome back to the scheduler's inbox.
pub(super) fn http<R>(
    client: Client,
    jobs: std_mpsc::Receiver<Job>,
    done: std_mpsc::SyncSender<Msg<R>>,
) {
    for job in jobs {
        let (sha256, outcome, sent) = match job {
            Job::File(sha256) => {
                let result = client.file(&sha256);
                let sent = reached(result.as_ref().err());
                (sha256, Outcome::File(result), sent)
            }
            Job::Upload {
                sha256,
                path,
                max_bytes,
            } => match read_for_upload(&path, &sha256, max_bytes) {
                Ok((name, content)) => {
                    let result = client.upload(&name, &content);
                    let sent = reached(result.as_ref().err());
                    (
                        sha256,
                        Outcome::Upload(result.map_err(UploadError::Api)),
                        sent,
                    )
                }
                Err(why) => (
                    sha256,
                    Outcome::Upload(Err(UploadError::Skipped(why))),
                    None,
                ),
            },
            Job::Analysis { sha256, id } => {
                let result = client.analysis(&id);
                let sent = reached(result.as_ref().err());
                (sha256, Outcome::Analysis(result), sent)
            }
        };
        let msg = Msg::Done {
            sha256,
            outcome,
            sent,
        };
        if done.send(msg).is_err() {
            return;
        }
    }
}

/// When a request that reached the server finished (it counts against the quota); `None`
/// when it never got there.
fn reached(error: Option<&ApiError>) -> Option<Instant> {
    match error {
        Some(ApiError::Unreachable { .. }) => None,
        _ => Some(Instant::now()),
    }
}

/// The file's name and content, if it is a regular file of at most `max_bytes` whose content
/// still has the digest it was looked up by.
fn read_for_upload(
    path: &Path,
    sha256: &Sha256,
    max_bytes: u64,
) -> Result<(String, Vec<u8>), String> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.len() > max_bytes {
        return Err(format!(
            "{shown} has {} bytes, above upload.max_bytes ({max_bytes})",
            meta.len()
        ));
    }
    let mut content = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut content)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if content.len() as u64 > max_bytes {
        return Err(format!("{shown} grew above upload.max_bytes ({max_bytes})"));
    }
    let now = Sha256::digest(&content);
    if now != *sha256 {
        return Err(format!(
            "{shown} changed since it was hashed (its SHA-256 is now {now})"
        ));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| sha256.to_string());
    Ok((name, content))
}
