//! SHA-256 of executables, computed on a worker thread (never on the event path) and cached
//! by (device, inode, mtime, size): a binary replaced in place gets a new hash.
//!
//! The worker runs as root and must not be steerable by whoever names files: it never opens
//! a path for reading by name. It reads the file the process maps (`/proc/<pid>/exe`), or,
//! once the process is gone, resolves the recorded path without following a final symlink and
//! without opening it (`O_PATH`); either way the file must be a regular file whose (device,
//! inode) is the one the kernel reported at exec, else nothing is hashed.

use std::{
    io::Read,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc as std_mpsc, Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use protocol::ExecId;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::{cache::CountedLru, source::FileId};

/// A computed hash, for the pipeline to store and attach to the process.
#[derive(Clone, Debug)]
pub struct HashResult {
    pub file: FileId,
    pub exec_id: ExecId,
    pub sha256: String,
}

struct Request {
    file: FileId,
    exec_id: ExecId,
    /// The resolved path at exec, used once the process is gone (Linux: other platforms
    /// report no file identity, so nothing is hashed there).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    exe: String,
}

/// The pipeline's side: the hashes known so far, and a queue to the worker.
pub struct ExeHashes {
    known: CountedLru<FileId, String>,
    /// Files whose hash was last (re)validated recently: not re-sent to the worker.
    checked: CountedLru<FileId, Instant>,
    /// Processes of a file whose hash is on its way, besides the one that asked for it: the
    /// result is theirs too.
    waiting: CountedLru<FileId, Vec<ExecId>>,
    requests: std_mpsc::SyncSender<Request>,
    /// Requests sent and not yet handled by the worker (`osprey scan` waits for none).
    queued: Arc<AtomicUsize>,
    dropped: u64,
}

/// Validation requests for the same file within this window are skipped.
const RECHECK_AFTER: Duration = Duration::from_secs(5);
/// Files larger than this are not hashed (their hash is rarely in intel feeds and costs much).
const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;
/// Executables whose hash is remembered (on each side of the queue).
const CACHE_ENTRIES: usize = 16_384;
/// Processes of one file that wait for its hash (a fork-exec storm of one program runs many
/// at once; the rest learn the hash from the cache later, if they ask again).
const MAX_WAITERS: usize = 64;

impl ExeHashes {
    /// Starts the worker thread; results arrive on the returned receiver.
    pub fn start() -> std::io::Result<(Self, mpsc::UnboundedReceiver<HashResult>)> {
        let (req_tx, req_rx) = std_mpsc::sync_channel::<Request>(4096);
        let queued = Arc::new(AtomicUsize::new(0));
        let handled = queued.clone();
        let (res_tx, res_rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("osprey-hash".into())
            .spawn(move || worker(req_rx, res_tx, &handled))?;
        Ok((
            ExeHashes {
                known: CountedLru::new(CACHE_ENTRIES),
                checked: CountedLru::new(CACHE_ENTRIES),
                waiting: CountedLru::new(CACHE_ENTRIES),
                requests: req_tx,
                queued,
                dropped: 0,
            },
            res_rx,
        ))
    }

    /// The cached hash of `file`, if any; asks the worker to (re)validate it in the
    /// background.
    pub fn lookup(&mut self, file: FileId, exec_id: ExecId, exe: &str) -> Option<String> {
        let now = Instant::now();
        let fresh = self
            .checked
            .get(&file)
            .is_some_and(|t| now.duration_since(*t) < RECHECK_AFTER);
        if !fresh {
            self.checked.insert(file, now);
            let req = Request {
                file,
                exec_id,
                exe: exe.to_string(),
            };
            // Counted before the worker can see it, so the count never goes below zero.
            self.queued.fetch_add(1, Ordering::Relaxed);
            if self.requests.try_send(req).is_err() {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.dropped += 1;
            }
        }
        let known = self.known.get(&file).cloned();
        if known.is_none() && fresh {
            match self.waiting.get_mut(&file) {
                Some(waiters) if waiters.len() < MAX_WAITERS => waiters.push(exec_id),
                Some(_) => {}
                None => self.waiting.insert(file, vec![exec_id]),
            }
        }
        known
    }

    /// Requests the worker has yet to handle.
    pub fn queued(&self) -> Arc<AtomicUsize> {
        self.queued.clone()
    }

    /// Remembers a computed hash; returns the other processes that were waiting for it.
    pub fn store(&mut self, result: &HashResult) -> Vec<ExecId> {
        self.known.insert(result.file, result.sha256.clone());
        self.waiting.remove(&result.file).unwrap_or_default()
    }

    /// Hash requests skipped because the worker was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Hashes forgotten to make room, since start.
    pub fn evicted(&self) -> u64 {
        self.known.evicted()
    }
}

#[derive(PartialEq, Eq)]
struct Version {
    mtime: Option<SystemTime>,
    size: u64,
}

fn worker(
    requests: std_mpsc::Receiver<Request>,
    results: mpsc::UnboundedSender<HashResult>,
    queued: &AtomicUsize,
) {
    let mut cache: CountedLru<FileId, (Version, String)> = CountedLru::new(CACHE_ENTRIES);
    while let Ok(req) = requests.recv() {
        // Handled from here on, whatever becomes of it; a result is sent before the count
        // falls, so no result is still in flight when it reads zero.
        struct Done<'a>(&'a AtomicUsize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _done = Done(queued);
        let Some(mut file) = open_verified(&req) else {
            continue;
        };
        let Ok(meta) = file.metadata() else { continue };
        let version = Version {
            mtime: meta.modified().ok(),
            size: meta.len(),
        };
        let sha = match cache.get(&req.file) {
            Some((v, sha)) if *v == version => sha.clone(),
            _ => {
                if meta.len() > MAX_FILE_BYTES {
                    continue;
                }
                let Some(sha) = sha256_of(&mut file) else {
                    continue;
                };
                cache.insert(req.file, (version, sha.clone()));
                sha
            }
        };
        let result = HashResult {
            file: req.file,
            exec_id: req.exec_id,
            sha256: sha,
        };
        if results.send(result).is_err() {
            return;
        }
    }
}

/// Opens the executable `req` names for reading, if it is a regular file with the identity
/// the kernel reported.
#[cfg(target_os = "linux")]
fn open_verified(req: &Request) -> Option<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

    let is_it = |meta: &std::fs::Metadata| {
        meta.is_file() && meta.dev() == req.file.dev && meta.ino() == req.file.ino
    };
    // The file the process maps, whatever its path has become.
    let mapped = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/{}/exe", req.exec_id.pid));
    if let Ok(file) = mapped {
        if file.metadata().is_ok_and(|m| is_it(&m)) {
            return Some(file);
        }
    }
    // The process is gone (or runs something else now): the recorded path, resolved without
    // following a final symlink and without opening the file (no FIFO or device is ever
    // opened), then reopened only once it is known to be the file the kernel reported.
    let path = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(&req.exe)
        .ok()?;
    if !path.metadata().is_ok_and(|m| is_it(&m)) {
        return None;
    }
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", path.as_raw_fd()))
        .ok()?;
    file.metadata().is_ok_and(|m| is_it(&m)).then_some(file)
}

/// Other platforms' sources report no file identity, so nothing is ever asked to be hashed.
#[cfg(not(target_os = "linux"))]
fn open_verified(_req: &Request) -> Option<std::fs::File> {
    None
}

fn sha256_of(file: &mut std::fs::File) -> Option<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Some(
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use protocol::BootId;

    fn id_of(path: &std::path::Path) -> FileId {
        let m = std::fs::metadata(path).unwrap();
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    /// An ExecId whose pid does not exist: only the recorded path can be used.
    fn gone() -> ExecId {
        ExecId {
            boot: BootId(1),
            pid: u32::MAX - 1,
            start_ticks: 0,
            seq: 0,
        }
    }

    #[tokio::test]
    async fn hashes_off_thread_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        std::fs::write(&path, b"abc").unwrap();
        let (mut hashes, mut results) = ExeHashes::start().unwrap();
        let file = id_of(&path);
        assert_eq!(hashes.lookup(file, gone(), path.to_str().unwrap()), None);
        // A second process of the same file while its hash is on the way waits for it.
        let second = ExecId { seq: 1, ..gone() };
        assert_eq!(hashes.lookup(file, second, path.to_str().unwrap()), None);
        let r = results.recv().await.unwrap();
        // SHA-256("abc")
        assert_eq!(
            r.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hashes.store(&r), vec![second]);
        // The worker counts the request handled just after sending its result.
        let queued = hashes.queued();
        for _ in 0..500 {
            if queued.load(Ordering::Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(queued.load(Ordering::Relaxed), 0);
        assert_eq!(
            hashes.lookup(file, gone(), "/nonexistent").as_deref(),
            Some(r.sha256.as_str())
        );
    }

    #[test]
    fn never_follows_a_swapped_path_to_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, b"abc").unwrap();
        let other = dir.path().join("secret");
        std::fs::write(&other, b"not yours").unwrap();
        let file = id_of(&real);
        let link = dir.path().join("exe");
        std::os::unix::fs::symlink(&other, &link).unwrap();
        let req = |exe: &std::path::Path| Request {
            file,
            exec_id: gone(),
            exe: exe.to_string_lossy().into_owned(),
        };
        assert!(
            open_verified(&req(&link)).is_none(),
            "a symlink is not followed"
        );
        std::fs::rename(&other, dir.path().join("moved")).unwrap();
        std::fs::hard_link(dir.path().join("moved"), &other).unwrap();
        assert!(
            open_verified(&req(&other)).is_none(),
            "another inode is refused"
        );
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let fifo_id = id_of(&fifo);
        let fifo_req = Request {
            file: fifo_id,
            exec_id: gone(),
            exe: fifo.to_string_lossy().into_owned(),
        };
        assert!(
            open_verified(&fifo_req).is_none(),
            "a FIFO is not a file to hash"
        );
        assert!(open_verified(&req(&real)).is_some());
    }

    #[test]
    fn a_live_process_is_read_through_the_file_it_maps() {
        let me = std::fs::metadata("/proc/self/exe").unwrap();
        let req = Request {
            file: FileId {
                dev: me.dev(),
                ino: me.ino(),
            },
            exec_id: ExecId {
                pid: std::process::id(),
                ..gone()
            },
            exe: "/nonexistent/path".into(),
        };
        assert!(open_verified(&req).is_some());
    }
}
