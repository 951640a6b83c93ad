//! SHA-256 of executables, computed on a worker thread (never on the event path) and cached
//! by (device, inode, mtime, size): a binary replaced in place gets a new hash.

use std::{
    collections::HashMap,
    io::Read,
    sync::mpsc as std_mpsc,
    time::{Duration, Instant, SystemTime},
};

use protocol::ExecId;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::source::FileId;

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
    /// Where to read the executable: `/proc/<pid>/exe` reaches the mapped file even if its
    /// path was replaced; the resolved path is the fallback once the process is gone.
    paths: [String; 2],
}

/// The pipeline's side: the hashes known so far, and a queue to the worker.
pub struct ExeHashes {
    known: HashMap<FileId, String>,
    /// Files whose hash was last (re)validated recently: not re-sent to the worker.
    checked: HashMap<FileId, Instant>,
    requests: std_mpsc::SyncSender<Request>,
    dropped: u64,
}

/// Validation requests for the same file within this window are skipped.
const RECHECK_AFTER: Duration = Duration::from_secs(5);
/// Files larger than this are not hashed (their hash is rarely in intel feeds and costs much).
const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;

impl ExeHashes {
    /// Starts the worker thread; results arrive on the returned receiver.
    pub fn start() -> std::io::Result<(Self, mpsc::UnboundedReceiver<HashResult>)> {
        let (req_tx, req_rx) = std_mpsc::sync_channel::<Request>(4096);
        let (res_tx, res_rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("osprey-hash".into())
            .spawn(move || worker(req_rx, res_tx))?;
        Ok((
            ExeHashes {
                known: HashMap::new(),
                checked: HashMap::new(),
                requests: req_tx,
                dropped: 0,
            },
            res_rx,
        ))
    }

    /// The cached hash of `file`, if any; asks the worker to (re)validate it in the
    /// background.
    pub fn lookup(&mut self, file: FileId, exec_id: ExecId, pid: u32, exe: &str) -> Option<String> {
        let now = Instant::now();
        let fresh = self
            .checked
            .get(&file)
            .is_some_and(|t| now.duration_since(*t) < RECHECK_AFTER);
        if !fresh {
            self.checked.insert(file, now);
            if self.checked.len() > 65_536 {
                self.checked
                    .retain(|_, t| now.duration_since(*t) < RECHECK_AFTER);
            }
            let req = Request {
                file,
                exec_id,
                paths: [format!("/proc/{pid}/exe"), exe.to_string()],
            };
            if self.requests.try_send(req).is_err() {
                self.dropped += 1;
            }
        }
        self.known.get(&file).cloned()
    }

    pub fn store(&mut self, result: &HashResult) {
        if self.known.len() > 65_536 {
            self.known.clear();
        }
        self.known.insert(result.file, result.sha256.clone());
    }

    /// Hash requests skipped because the worker was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[derive(PartialEq, Eq)]
struct Version {
    mtime: Option<SystemTime>,
    size: u64,
}

fn worker(requests: std_mpsc::Receiver<Request>, results: mpsc::UnboundedSender<HashResult>) {
    let mut cache: HashMap<FileId, (Version, String)> = HashMap::new();
    while let Ok(req) = requests.recv() {
        for path in &req.paths {
            let Ok(mut file) = std::fs::File::open(path) else {
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
                        break;
                    }
                    let Some(sha) = sha256_of(&mut file) else {
                        continue;
                    };
                    cache.insert(req.file, (version, sha.clone()));
                    sha
                }
            };
            if results
                .send(HashResult {
                    file: req.file,
                    exec_id: req.exec_id,
                    sha256: sha,
                })
                .is_err()
            {
                return;
            }
            break;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::BootId;

    #[tokio::test]
    async fn hashes_off_thread_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        std::fs::write(&path, b"abc").unwrap();
        let (mut hashes, mut results) = ExeHashes::start().unwrap();
        let file = FileId { dev: 1, ino: 2 };
        let id = ExecId {
            boot: BootId(1),
            pid: 0,
            start_ticks: 0,
            seq: 0,
        };
        assert_eq!(hashes.lookup(file, id, 0, path.to_str().unwrap()), None);
        let r = results.recv().await.unwrap();
        // SHA-256("abc")
        assert_eq!(
            r.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        hashes.store(&r);
        assert_eq!(
            hashes.lookup(file, id, 0, "/nonexistent").as_deref(),
            Some(r.sha256.as_str())
        );
    }
}
