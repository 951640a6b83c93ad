//! The bounded on-disk spool of findings waiting for a JetStream acknowledgement.
//!
//! One file per finding, named by a zero-padded sequence number so that directory order is
//! delivery order. A file is written under a temporary name and renamed into place, so a crash
//! leaves either a whole finding or a temporary file, which the next [`Spool::open`] discards.
//! When the spool is over its bounds the oldest findings are evicted and counted.
//!
//! If the disk refuses a write, the finding is held in memory instead (still bounded, still in
//! order, still delivered while the process lives) and the failure is counted: a full disk
//! must not silently lose findings.

use std::{
    collections::VecDeque,
    fs, io,
    io::Write,
    path::{Path, PathBuf},
};

const SUFFIX: &str = ".finding";
const TEMP_SUFFIX: &str = ".finding.tmp";
/// Findings that can never be sent (unreadable, or larger than the server accepts), kept for
/// inspection.
const UNSENT_SUFFIX: &str = ".finding.unsent";
/// Enough digits for any u64, so lexical and numeric order agree.
const SEQ_DIGITS: usize = 20;

/// Where the spool lives and how large it may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Total size of spooled payloads; at least one finding is always kept.
    pub max_bytes: u64,
    /// Number of spooled findings; must be at least 1.
    pub max_findings: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool: cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("spool: {what} must be at least 1")]
    ZeroBound { what: &'static str },
}

impl SpoolError {
    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
        move |source| SpoolError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The oldest spooled finding, as handed to the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spooled {
    pub seq: u64,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    len: u64,
    /// Set when the disk refused the write: the payload lives only here.
    in_memory: Option<Vec<u8>>,
}

/// Synchronous spool; the publisher shares it behind a mutex between the producers and the
/// single sender task.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    max_findings: usize,
    /// Oldest first.
    entries: VecDeque<Entry>,
    bytes: u64,
    next_seq: u64,
    evicted: u64,
    write_errors: u64,
}

impl Spool {
    /// Opens (creating if needed) the spool directory and loads the findings already in it,
    /// discarding temporary files a crash left behind. Files it does not recognise are left
    /// alone.
    pub fn open(config: &SpoolConfig) -> Result<Spool, SpoolError> {
        if config.max_findings == 0 {
            return Err(SpoolError::ZeroBound {
                what: "max_findings",
            });
        }
        if config.max_bytes == 0 {
            return Err(SpoolError::ZeroBound { what: "max_bytes" });
        }
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(SpoolError::io("create directory", &dir))?;
        let mut found = Vec::new();
        for item in fs::read_dir(&dir).map_err(SpoolError::io("list directory", &dir))? {
            let item = item.map_err(SpoolError::io("list directory", &dir))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TEMP_SUFFIX) {
                let path = item.path();
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "spool: removed a partial write left by a crash")
                    }
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "spool: cannot remove a partial write")
                    }
                }
                continue;
            }
            let Some(seq) = parse_name(name) else {
                continue;
            };
            let len = item
                .metadata()
                .map_err(SpoolError::io("read metadata of", &item.path()))?
                .len();
            found.push(Entry {
                seq,
                len,
                in_memory: None,
            });
        }
        found.sort_by_key(|entry| entry.seq);
        let next_seq = found.last().map_or(1, |entry| entry.seq.saturating_add(1));
        let bytes = found.iter().map(|entry| entry.len).sum();
        let mut spool = Spool {
            dir,
            max_bytes: config.max_bytes,
            max_findings: config.max_findings,
            entries: found.into(),
            bytes,
            next_seq,
            evicted: 0,
            write_errors: 0,
        };
        if !spool.entries.is_empty() {
            tracing::info!(
                dir = %spool.dir.display(),
                findings = spool.entries.len(),
                "spool: findings from a previous run will be delivered first"
            );
        }
        spool.enforce_bounds();
        Ok(spool)
    }

    /// Appends a finding's encoded payload (written to a temporary file and renamed into
    /// place, so a crash never leaves half a finding), then evicts the oldest findings if the spool is over its bounds. Returns its sequence number.
    pub fn append(&mut self, payload: &[u8]) -> u64 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        let in_memory = match self.write_file(seq, payload) {
            Ok(()) => None,
            Err(error) => {
                self.write_errors += 1;
                tracing::error!(%error, "spool: finding kept in memory only (lost if the collector stops before NATS acknowledges it)");
                Some(payload.to_vec())
            }
        };
        let len = payload.len() as u64;
        self.entries.push_back(Entry {
            seq,
            len,
            in_memory,
        });
        self.bytes += len;
        self.enforce_bounds();
        seq
    }

    /// The oldest finding, read from disk. A file that vanished under us is dropped from the
    /// spool (and counted as evicted) rather than blocking delivery forever.
    pub fn front(&mut self) -> Result<Option<Spooled>, SpoolError> {
        loop {
            let Some(entry) = self.entries.front() else {
                return Ok(None);
            };
            let seq = entry.seq;
            if let Some(payload) = &entry.in_memory {
                return Ok(Some(Spooled {
                    seq,
                    payload: payload.clone(),
                }));
            }
            let path = self.path(seq);
            match fs::read(&path) {
                Ok(payload) => return Ok(Some(Spooled { seq, payload })),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), "spool: finding file disappeared; skipping it");
                    self.forget_front();
                    self.evicted += 1;
                }
                Err(error) => return Err(SpoolError::io("read", &path)(error)),
            }
        }
    }

    /// Removes an acknowledged finding. Returns false when it was no longer spooled (evicted
    /// while it was in flight).
    pub fn remove(&mut self, seq: u64) -> bool {
        let Some(index) = self.entries.iter().position(|entry| entry.seq == seq) else {
            return false;
        };
        if let Some(entry) = self.entries.remove(index) {
            self.bytes -= entry.len;
            if entry.in_memory.is_none() {
                self.delete_file(seq);
            }
        }
        true
    }

    /// Sets a finding that can never be sent aside (renamed, kept for inspection) so delivery
    /// of the others can go on.
    pub fn set_aside(&mut self, seq: u64) {
        let Some(index) = self.entries.iter().position(|entry| entry.seq == seq) else {
            return;
        };
        if let Some(entry) = self.entries.remove(index) {
            self.bytes -= entry.len;
            if entry.in_memory.is_none() {
                let from = self.path(seq);
                let to = self.dir.join(format!("{seq:0SEQ_DIGITS$}{UNSENT_SUFFIX}"));
                if let Err(error) = fs::rename(&from, &to) {
                    tracing::warn!(path = %from.display(), %error, "spool: cannot set an unsendable finding aside; deleting it");
                    self.delete_file(seq);
                }
            }
        }
    }

    /// Findings waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of payload waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Findings evicted unacknowledged since this spool was opened.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Findings the disk refused since this spool was opened (kept in memory instead).
    pub fn write_errors(&self) -> u64 {
        self.write_errors
    }

    fn enforce_bounds(&mut self) {
        let mut evicted_now = 0u64;
        // The newest finding is always kept, even alone over max_bytes: evicting it on
        // arrival would lose it without it ever having had a chance.
        while self.entries.len() > 1
            && (self.entries.len() > self.max_findings || self.bytes > self.max_bytes)
        {
            if let Some(seq) = self.forget_front() {
                self.delete_file(seq);
            }
            evicted_now += 1;
        }
        if evicted_now > 0 {
            self.evicted += evicted_now;
            tracing::warn!(
                evicted = evicted_now,
                evicted_total = self.evicted,
                max_findings = self.max_findings,
                max_bytes = self.max_bytes,
                "spool full: oldest findings evicted before NATS acknowledged them"
            );
        }
    }

    /// Drops the oldest entry from the index; returns its sequence if it has a file.
    fn forget_front(&mut self) -> Option<u64> {
        let entry = self.entries.pop_front()?;
        self.bytes -= entry.len;
        entry.in_memory.is_none().then_some(entry.seq)
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:0SEQ_DIGITS$}{SUFFIX}"))
    }

    fn write_file(&self, seq: u64, payload: &[u8]) -> Result<(), SpoolError> {
        let temp = self.dir.join(format!("{seq:0SEQ_DIGITS$}{TEMP_SUFFIX}"));
        let path = self.path(seq);
        let result = (|| {
            let mut file = fs::File::create(&temp).map_err(SpoolError::io("create", &temp))?;
            file.write_all(payload)
                .map_err(SpoolError::io("write", &temp))?;
            // No fsync: the write + rename survives the collector crashing or being killed,
            // which is what the spool is for; an fsync per finding would put milliseconds of
            // disk latency on the event path for protection against power loss only.
            fs::rename(&temp, &path).map_err(SpoolError::io("rename into place", &temp))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    fn delete_file(&self, seq: u64) {
        let path = self.path(seq);
        if let Err(error) = fs::remove_file(&path) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), %error, "spool: cannot delete a finding file; it may be re-sent on restart (de-duplicated by its id)");
            }
        }
    }
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, max_findings: usize, max_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            max_findings,
        }
    }

    fn drain(spool: &mut Spool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(head) = spool.front().unwrap() {
            assert!(spool.remove(head.seq));
            out.push(head.payload);
        }
        out
    }

    #[test]
    fn delivers_in_append_order_and_removes_files_on_ack() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(&config(dir.path(), 100, 1 << 20)).unwrap();
        for i in 0..12u8 {
            spool.append(&[i; 3]);
        }
        assert_eq!((spool.len(), spool.bytes()), (12, 36));
        let got = drain(&mut spool);
        assert_eq!(got, (0..12u8).map(|i| vec![i; 3]).collect::<Vec<_>>());
        assert!(spool.is_empty());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn survives_reopen_and_continues_the_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 100, 1 << 20);
        {
            let mut spool = Spool::open(&cfg).unwrap();
            for i in 0..5u8 {
                spool.append(&[i]);
            }
            let head = spool.front().unwrap().unwrap();
            assert!(spool.remove(head.seq));
        }
        let mut spool = Spool::open(&cfg).unwrap();
        assert_eq!(spool.len(), 4);
        spool.append(&[99]);
        assert_eq!(
            drain(&mut spool),
            vec![vec![1], vec![2], vec![3], vec![4], vec![99]]
        );
    }

    #[test]
    fn evicts_the_oldest_over_max_findings_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(&config(dir.path(), 3, 1 << 20)).unwrap();
        for i in 0..5u8 {
            spool.append(&[i]);
        }
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.evicted(), 2);
        assert_eq!(drain(&mut spool), vec![vec![2], vec![3], vec![4]]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn evicts_the_oldest_over_max_bytes_but_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(&config(dir.path(), 100, 10)).unwrap();
        spool.append(&[1; 4]);
        spool.append(&[2; 4]);
        spool.append(&[3; 4]);
        assert_eq!((spool.len(), spool.evicted()), (2, 1));
        spool.append(&[4; 50]);
        assert_eq!((spool.len(), spool.evicted()), (1, 3));
        assert_eq!(drain(&mut spool), vec![vec![4; 50]]);
    }

    #[test]
    fn reopening_with_smaller_bounds_evicts_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(&config(dir.path(), 100, 1 << 20)).unwrap();
            for i in 0..6u8 {
                spool.append(&[i]);
            }
        }
        let mut spool = Spool::open(&config(dir.path(), 2, 1 << 20)).unwrap();
        assert_eq!(spool.evicted(), 4);
        assert_eq!(drain(&mut spool), vec![vec![4], vec![5]]);
    }

    #[test]
    fn temp_files_are_discarded_and_foreign_files_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 100, 1 << 20);
        {
            let mut spool = Spool::open(&cfg).unwrap();
            spool.append(b"whole");
        }
        let partial = dir.path().join(format!("{:020}{TEMP_SUFFIX}", 2));
        fs::write(&partial, b"half").unwrap();
        fs::write(dir.path().join("README"), b"not a finding").unwrap();
        fs::write(dir.path().join("12.finding"), b"short name").unwrap();

        let mut spool = Spool::open(&cfg).unwrap();
        assert!(!partial.exists());
        assert_eq!(drain(&mut spool), vec![b"whole".to_vec()]);
        assert!(dir.path().join("README").exists());
    }

    #[test]
    fn a_vanished_file_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(&config(dir.path(), 100, 1 << 20)).unwrap();
        let first = spool.append(b"a");
        spool.append(b"b");
        fs::remove_file(dir.path().join(format!("{first:020}{SUFFIX}"))).unwrap();
        assert_eq!(drain(&mut spool), vec![b"b".to_vec()]);
        assert_eq!(spool.evicted(), 1);
    }

    #[test]
    fn findings_set_aside_leave_the_queue_but_stay_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 100, 1 << 20);
        let mut spool = Spool::open(&cfg).unwrap();
        let bad = spool.append(b"garbage");
        spool.append(b"good");
        spool.set_aside(bad);
        assert_eq!(drain(&mut spool), vec![b"good".to_vec()]);
        assert!(dir
            .path()
            .join(format!("{bad:020}{UNSENT_SUFFIX}"))
            .exists());
        assert!(Spool::open(&cfg).unwrap().is_empty());
    }

    #[test]
    fn a_refused_write_keeps_the_finding_in_memory_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(&config(dir.path(), 100, 1 << 20)).unwrap();
        spool.append(b"on disk");
        // A directory where the temp file should go makes File::create fail.
        fs::create_dir(dir.path().join(format!("{:020}{TEMP_SUFFIX}", 2))).unwrap();
        spool.append(b"in memory");
        spool.append(b"on disk again");
        assert_eq!(spool.write_errors(), 1);
        assert_eq!(
            drain(&mut spool),
            vec![
                b"on disk".to_vec(),
                b"in memory".to_vec(),
                b"on disk again".to_vec()
            ]
        );
    }

    #[test]
    fn zero_bounds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Spool::open(&config(dir.path(), 0, 10)).is_err());
        assert!(Spool::open(&config(dir.path(), 10, 0)).is_err());
    }
}
