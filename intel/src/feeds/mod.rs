//! Offline feeds: lists of bad addresses and bad executables' digests, from files or URLs.
//!
//! [`Feeds::start`] loads every feed it can before returning (files, and the last good copy
//! of each URL feed), then a thread (`osprey-intel-feeds`) re-reads a file when it changes
//! and downloads a URL every `refresh`. A copy that cannot be read, downloaded or parsed is
//! logged with its reason (file, line, what is wrong) and the previous copy stays in force.
//! Matching reads the current tables without a lock.

mod parse;
mod table;

use std::{
    fs,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant, SystemTime},
};

use arc_swap::ArcSwap;
use protocol::Timestamp;

use self::{
    parse::Rejected,
    table::{FeedSet, Loaded},
};
use crate::{FeedConfig, FeedHit, FeedKind, Sha256};

/// A changed file must stay unchanged this long before it is read (a writer may not be done).
const SETTLE: Duration = Duration::from_millis(100);
/// After a failed download, the next try comes at the latest after this.
const RETRY_DOWNLOAD: Duration = Duration::from_secs(5 * 60);
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_DOWNLOAD_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum FeedError {
    #[error("feed {feed}: cannot read {path}: {source}")]
    Read {
        feed: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("feed {feed}: cannot download {url}: {reason}")]
    Download {
        feed: String,
        url: String,
        reason: String,
    },
    #[error("feed {feed}: {origin}{}: {problem}", .line.map(|l| format!(":{l}")).unwrap_or_default())]
    Content {
        feed: String,
        /// The file or URL.
        origin: String,
        /// 1-based, when one line is at fault.
        line: Option<usize>,
        problem: String,
    },
}

/// How a feed is doing, for status displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedStatus {
    pub name: String,
    pub kind: FeedKind,
    /// The file or URL.
    pub origin: String,
    /// Entries of the copy in force.
    pub entries: usize,
    /// When the copy in force was loaded.
    pub loaded_at: Option<Timestamp>,
    /// Why the last load or download failed, until one succeeds.
    pub error: Option<String>,
}

struct Shared {
    current: ArcSwap<FeedSet>,
    status: Mutex<Vec<FeedStatus>>,
}

/// The matchers' handle: cheap to clone, usable from any thread. When the last clone is
/// dropped, the refresh thread stops.
#[derive(Clone)]
pub struct Feeds {
    shared: Arc<Shared>,
    reload: Option<Arc<mpsc::Sender<()>>>,
}

impl Feeds {
    /// Loads what can be loaded now and starts the refresh thread. Content problems do not
    /// fail the start (they are logged and shown by [`Feeds::status`]): a feed's bad day must
    /// not keep the sensor down.
    pub fn start(configs: &[FeedConfig], feeds_dir: &Path) -> std::io::Result<Feeds> {
        let mut states: Vec<FeedState> = configs
            .iter()
            .map(|config| FeedState::new(config.clone(), feeds_dir))
            .collect();
        for state in &mut states {
            state.load_initial();
        }
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(FeedSet::build(&loaded(&states))),
            status: Mutex::new(states.iter().map(|s| s.status.clone()).collect()),
        });
        if states.is_empty() {
            return Ok(Feeds {
                shared,
                reload: None,
            });
        }
        let (reload, requests) = mpsc::channel();
        let worker = Arc::clone(&shared);
        thread::Builder::new()
            .name("osprey-intel-feeds".into())
            .spawn(move || refresh(states, &worker, &requests))?;
        Ok(Feeds {
            shared,
            reload: Some(Arc::new(reload)),
        })
    }

    /// Every feed listing `ip` (one hit per feed, its most specific entry). An IPv4-mapped
    /// IPv6 address is looked up as the IPv4 address it is.
    pub fn match_ip(&self, ip: IpAddr) -> Vec<FeedHit> {
        self.shared.current.load().match_ip(ip)
    }

    /// Every feed listing `sha256`.
    pub fn match_sha256(&self, sha256: &Sha256) -> Vec<FeedHit> {
        self.shared.current.load().match_sha256(sha256)
    }

    /// Re-reads every file and downloads every URL now (SIGHUP).
    pub fn reload(&self) {
        if let Some(reload) = &self.reload {
            let _ = reload.send(());
        }
    }

    pub fn status(&self) -> Vec<FeedStatus> {
        self.shared
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

/// One feed as the refresh thread keeps it.
struct FeedState {
    config: FeedConfig,
    /// Where a URL feed's last good download is kept.
    saved_copy: Option<PathBuf>,
    copy: Option<Arc<Loaded>>,
    /// The file as last read (or found unreadable): a broken file is reported once, not at
    /// every check.
    seen: Option<Stamp>,
    next_check: Instant,
    status: FeedStatus,
}

impl FeedState {
    fn new(config: FeedConfig, feeds_dir: &Path) -> Self {
        FeedState {
            status: FeedStatus {
                name: config.name.clone(),
                kind: config.kind,
                origin: config.origin(),
                entries: 0,
                loaded_at: None,
                error: None,
            },
            saved_copy: config.url.as_ref().map(|_| config.saved_copy(feeds_dir)),
            config,
            copy: None,
            seen: None,
            next_check: Instant::now(),
        }
    }

    /// At start: a file feed's file, a URL feed's saved copy (downloaded again right away).
    fn load_initial(&mut self) {
        if let Some(path) = self.config.path.clone() {
            self.seen = Stamp::of(&path);
            let result = self.read(&path);
            self.apply(result, "start");
            self.next_check = Instant::now() + self.config.refresh();
        } else if let Some(saved) = self.saved_copy.clone() {
            if saved.exists() {
                let result = self.read(&saved);
                self.apply(result, "saved copy");
            }
        }
    }

    /// Reloads the feed if it is due (or `forced`); returns whether its copy changed.
    fn check(&mut self, forced: bool, agent: &ureq::Agent) -> bool {
        let now = Instant::now();
        if !forced && now < self.next_check {
            return false;
        }
        if let Some(path) = self.config.path.clone() {
            self.next_check = now + self.config.refresh();
            let mut stamp = Stamp::of(&path);
            if !forced && stamp == self.seen {
                return false;
            }
            loop {
                thread::sleep(SETTLE);
                let again = Stamp::of(&path);
                if again == stamp {
                    break;
                }
                stamp = again;
            }
            self.seen = stamp;
            let result = self.read(&path);
            return self.apply(result, if forced { "reload" } else { "file change" });
        }
        let result = self.download(agent);
        let ok = result.is_ok();
        let changed = self.apply(result, "download");
        let refresh = self.config.refresh();
        self.next_check = now
            + if ok {
                refresh
            } else {
                refresh.min(RETRY_DOWNLOAD)
            };
        changed
    }

    fn read(&self, path: &Path) -> Result<parse::Entries, FeedError> {
        let read_error = |source| FeedError::Read {
            feed: self.config.name.clone(),
            path: path.to_path_buf(),
            source,
        };
        let len = fs::metadata(path).map_err(read_error)?.len();
        if len > MAX_DOWNLOAD_BYTES {
            return Err(self.content_error(
                path.display().to_string(),
                Rejected {
                    line: None,
                    problem: format!(
                        "{len} bytes, more than a feed may hold ({MAX_DOWNLOAD_BYTES})"
                    ),
                },
            ));
        }
        let text = fs::read(path).map_err(read_error)?;
        parse::parse(&text, &self.config)
            .map_err(|r| self.content_error(path.display().to_string(), r))
    }

    /// Downloads, parses and (when good) saves the copy.
    fn download(&self, agent: &ureq::Agent) -> Result<parse::Entries, FeedError> {
        let url = self.config.url.clone().unwrap_or_default();
        let failed = |reason: String| FeedError::Download {
            feed: self.config.name.clone(),
            url: url.clone(),
            reason,
        };
        let text = agent
            .get(&url)
            .call()
            .map_err(|e| failed(e.to_string()))?
            .body_mut()
            .with_config()
            .limit(MAX_DOWNLOAD_BYTES)
            .read_to_vec()
            .map_err(|e| failed(e.to_string()))?;
        let entries =
            parse::parse(&text, &self.config).map_err(|r| self.content_error(url.clone(), r))?;
        if let Some(saved) = &self.saved_copy {
            if let Err(e) = save(saved, &text) {
                tracing::warn!(
                    feed = %self.config.name,
                    "downloaded copy not saved to {}: {e}",
                    saved.display()
                );
            }
        }
        Ok(entries)
    }

    fn content_error(&self, origin: String, rejected: Rejected) -> FeedError {
        FeedError::Content {
            feed: self.config.name.clone(),
            origin,
            line: rejected.line,
            problem: rejected.problem,
        }
    }

    /// Puts a good copy in force, or reports why there is none. Returns whether the copy in
    /// force changed.
    fn apply(&mut self, result: Result<parse::Entries, FeedError>, reason: &str) -> bool {
        match result {
            Ok(entries) => {
                let count = entries.len();
                self.copy = Some(Arc::new(Loaded {
                    name: self.config.name.clone(),
                    entries,
                }));
                self.status.entries = count;
                self.status.loaded_at = Some(Timestamp::now());
                self.status.error = None;
                tracing::info!(
                    feed = %self.config.name,
                    kind = self.config.kind.as_str(),
                    entries = count,
                    "feed loaded ({reason}) from {}",
                    self.status.origin
                );
                true
            }
            Err(e) => {
                let kept = match &self.copy {
                    Some(copy) => format!(
                        "the previous copy ({} entries) stays in force",
                        copy.entries.len()
                    ),
                    None => "no copy of it is in force".into(),
                };
                tracing::error!("feed not loaded ({reason}), {kept}: {e}");
                self.status.error = Some(e.to_string());
                false
            }
        }
    }
}

fn loaded(states: &[FeedState]) -> Vec<Arc<Loaded>> {
    states.iter().filter_map(|s| s.copy.clone()).collect()
}

/// The refresh thread: checks each feed when due, everything on request, and swaps in new
/// tables when a copy changed.
fn refresh(mut states: Vec<FeedState>, shared: &Shared, requests: &mpsc::Receiver<()>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(DOWNLOAD_TIMEOUT))
        .user_agent(concat!("osprey-intel/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    loop {
        let now = Instant::now();
        let next = states.iter().map(|s| s.next_check).min().unwrap_or(now);
        let forced = match requests.recv_timeout(next.saturating_duration_since(now)) {
            Ok(()) => true,
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut changed = false;
        for state in &mut states {
            changed |= state.check(forced, &agent);
        }
        if changed {
            shared
                .current
                .store(Arc::new(FeedSet::build(&loaded(&states))));
        }
        if let Ok(mut status) = shared.status.lock() {
            *status = states.iter().map(|s| s.status.clone()).collect();
        }
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so a crash leaves the old
/// copy or the new one, never half of one.
fn save(path: &Path, text: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(text)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

/// What a file looks like on disk: modification time, size and inode (an atomic rename gives
/// a new inode even within one timestamp tick). `None`: missing or unreadable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let meta = fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        })
    }
}
