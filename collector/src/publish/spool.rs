//! The bounded on-disk spool of findings waiting for a JetStream acknowledgement.
//!
//! One file per finding, named by a zero-padded sequence number (so that directory order is
//! delivery order) and its severity. A file is written under a temporary name and renamed into
//! place, so a crash leaves either a whole finding or a temporary file, which the next
//! [`Spool::open`] discards. With `fsync` the file and the directory are synced before the
//! append returns, so a finding also survives power loss (at the cost measured in
//! docs/nats.md).
//!
//! When the spool is over its bounds, findings are evicted lowest severity first, oldest first
//! within a severity — a critical finding is never evicted while a lower one is spooled — and
//! counted per severity.
//!
//! If the disk refuses a write, the finding is held in memory instead (still bounded, still in
//! order, still delivered while the process lives) and the failure is counted: a full disk
//! must not silently lose findings.

use std::{
    collections::{BTreeMap, VecDeque},
    fs, io,
    io::Write,
    path::{Path, PathBuf},
};

use protocol::Severity;

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
    /// Sync each finding (file and directory) to disk before `append` returns.
    pub fsync: bool,
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

/// A spooled finding, as handed to the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spooled {
    pub seq: u64,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct Entry {
    severity: Severity,
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
    fsync: bool,
    /// By sequence: oldest first.
    entries: BTreeMap<u64, Entry>,
    /// The sequences of each severity (index: `Severity as usize`), oldest first: eviction
    /// takes the front of the lowest non-empty one.
    by_severity: [VecDeque<u64>; 5],
    bytes: u64,
    next_seq: u64,
    evicted: [u64; 5],
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
            let Some((seq, severity)) = parse_name(name) else {
                continue;
            };
            let mut path = item.path();
            let severity = match severity {
                Some(severity) => severity,
                None => {
                    // Written by an earlier version, without its severity: it counts as
                    // critical (the last to be evicted) and gets today's name.
                    let renamed = dir.join(format!("{seq:0SEQ_DIGITS$}-critical{SUFFIX}"));
                    fs::rename(&path, &renamed).map_err(SpoolError::io("rename", &path))?;
                    path = renamed;
                    Severity::Critical
                }
            };
            let len = fs::metadata(&path)
                .map_err(SpoolError::io("read metadata of", &path))?
                .len();
            found.push((
                seq,
                Entry {
                    severity,
                    len,
                    in_memory: None,
                },
            ));
        }
        found.sort_by_key(|(seq, _)| *seq);
        let next_seq = found.last().map_or(1, |(seq, _)| seq.saturating_add(1));
        let mut spool = Spool {
            dir,
            max_bytes: config.max_bytes,
            max_findings: config.max_findings,
            fsync: config.fsync,
            entries: BTreeMap::new(),
            by_severity: Default::default(),
            bytes: 0,
            next_seq,
            evicted: [0; 5],
            write_errors: 0,
        };
        for (seq, entry) in found {
            spool.insert(seq, entry);
        }
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
    /// place, so a crash never leaves half a finding), then evicts findings, lowest severity
    /// first, if the spool is over its bounds. Returns its sequence number.
    pub fn append(&mut self, severity: Severity, payload: &[u8]) -> u64 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        let in_memory = match self.write_file(seq, severity, payload) {
            Ok(()) => None,
            Err(error) => {
                self.write_errors += 1;
                tracing::error!(%error, "spool: finding kept in memory only (lost if the collector stops before NATS acknowledges it)");
                Some(payload.to_vec())
            }
        };
        self.insert(
            seq,
            Entry {
                severity,
                len: payload.len() as u64,
                in_memory,
            },
        );
        seq
    }

    fn insert(&mut self, seq: u64, entry: Entry) {
        self.bytes += entry.len;
        self.by_severity[entry.severity as usize].push_back(seq);
        self.entries.insert(seq, entry);
        self.enforce_bounds();
    }

    /// The oldest finding, read from disk (see [`Spool::head`]).
    pub fn front(&mut self) -> Result<Option<Spooled>, SpoolError> {
        Ok(self.head(1)?.pop())
    }

    /// Up to `n` of the oldest findings, oldest first, read from disk. A file that vanished
    /// under us is dropped from the spool (and counted as evicted) rather than blocking
    /// delivery forever.
    pub fn head(&mut self, n: usize) -> Result<Vec<Spooled>, SpoolError> {
        let mut out = Vec::with_capacity(n.min(self.entries.len()));
        let mut vanished = Vec::new();
        for (&seq, entry) in &self.entries {
            if out.len() == n {
                break;
            }
            if let Some(payload) = &entry.in_memory {
                out.push(Spooled {
                    seq,
                    payload: payload.clone(),
                });
                continue;
            }
            let path = self.path(seq, entry.severity);
            match fs::read(&path) {
                Ok(payload) => out.push(Spooled { seq, payload }),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), "spool: finding file disappeared; skipping it");
                    vanished.push(seq);
                }
                Err(error) if out.is_empty() => return Err(SpoolError::io("read", &path)(error)),
                // Deliver what was read; the failing one is the next head.
                Err(_) => break,
            }
        }
        for seq in vanished {
            if let Some(entry) = self.forget(seq) {
                self.evicted[entry.severity as usize] += 1;
            }
        }
        Ok(out)
    }

    /// Removes an acknowledged finding. Returns false when it was no longer spooled (evicted
    /// while it was in flight).
    pub fn remove(&mut self, seq: u64) -> bool {
        match self.forget(seq) {
            Some(entry) => {
                if entry.in_memory.is_none() {
                    self.delete_file(seq, entry.severity);
                }
                true
            }
            None => false,
        }
    }

    /// Sets a finding that can never be sent aside (renamed, kept for inspection) so delivery
    /// of the others can go on.
    pub fn set_aside(&mut self, seq: u64) {
        let Some(entry) = self.forget(seq) else {
            return;
        };
        if entry.in_memory.is_some() {
            return;
        }
        let from = self.path(seq, entry.severity);
        let to = self.dir.join(format!("{seq:0SEQ_DIGITS$}{UNSENT_SUFFIX}"));
        if let Err(error) = fs::rename(&from, &to) {
            tracing::warn!(path = %from.display(), %error, "spool: cannot set an unsendable finding aside; deleting it");
            self.delete_file(seq, entry.severity);
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
        self.evicted.iter().sum()
    }

    /// The same, per severity (index: `Severity as usize`).
    pub fn evicted_by_severity(&self) -> [u64; 5] {
        self.evicted
    }

    /// Findings the disk refused since this spool was opened (kept in memory instead).
    pub fn write_errors(&self) -> u64 {
        self.write_errors
    }

    fn enforce_bounds(&mut self) {
        let mut evicted_now = [0u64; 5];
        // At least one finding is always kept, even alone over max_bytes: evicting the last
        // one would lose it without it ever having had a chance.
        while self.entries.len() > 1
            && (self.entries.len() > self.max_findings || self.bytes > self.max_bytes)
        {
            let Some(seq) = self
                .by_severity
                .iter()
                .find_map(|queue| queue.front().copied())
            else {
                break;
            };
            if let Some(entry) = self.forget(seq) {
                if entry.in_memory.is_none() {
                    self.delete_file(seq, entry.severity);
                }
                evicted_now[entry.severity as usize] += 1;
            }
        }
        if evicted_now.iter().any(|&n| n > 0) {
            let by_severity: Vec<String> = Severity::ALL
                .iter()
                .filter(|s| evicted_now[**s as usize] > 0)
                .map(|s| format!("{s} {}", evicted_now[*s as usize]))
                .collect();
            for (total, now) in self.evicted.iter_mut().zip(evicted_now) {
                *total += now;
            }
            tracing::warn!(
                evicted = by_severity.join(", "),
                evicted_total = self.evicted(),
                max_findings = self.max_findings,
                max_bytes = self.max_bytes,
                "spool full: findings evicted (lowest severity first) before NATS acknowledged them"
            );
        }
    }

    /// Drops an entry from the index.
    fn forget(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.entries.remove(&seq)?;
        self.bytes -= entry.len;
        let queue = &mut self.by_severity[entry.severity as usize];
        // Acks and evictions take the oldest of a severity: the front, but for a finding
        // evicted while it was in flight.
        if queue.front() == Some(&seq) {
            queue.pop_front();
        } else if let Some(index) = queue.iter().position(|&s| s == seq) {
            queue.remove(index);
        }
        Some(entry)
    }

    fn path(&self, seq: u64, severity: Severity) -> PathBuf {
        self.dir
            .join(format!("{seq:0SEQ_DIGITS$}-{severity}{SUFFIX}"))
    }

    fn write_file(&self, seq: u64, severity: Severity, payload: &[u8]) -> Result<(), SpoolError> {
        let temp = self.dir.join(format!("{seq:0SEQ_DIGITS$}{TEMP_SUFFIX}"));
        let path = self.path(seq, severity);
        let result = (|| {
            let mut file = fs::File::create(&temp).map_err(SpoolError::io("create", &temp))?;
            file.write_all(payload)
                .map_err(SpoolError::io("write", &temp))?;
            // Without fsync the write + rename survives the collector crashing or being
            // killed, which is what the spool is for; `fsync` adds power loss, for the disk
            // latency measured in docs/nats.md.
            if self.fsync {
                file.sync_data().map_err(SpoolError::io("sync", &temp))?;
            }
            fs::rename(&temp, &path).map_err(SpoolError::io("rename into place", &temp))?;
            if self.fsync {
                fs::File::open(&self.dir)
                    .and_then(|dir| dir.sync_all())
                    .map_err(SpoolError::io("sync directory", &self.dir))?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    fn delete_file(&self, seq: u64, severity: Severity) {
        let path = self.path(seq, severity);
        if let Err(error) = fs::remove_file(&path) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), %error, "spool: cannot delete a finding file; it may be re-sent on restart (de-duplicated by its id)");
            }
        }
    }
}

/// `<seq>-<severity>.finding`, or `<seq>.finding` (earlier versions: no severity).
fn parse_name(name: &str) -> Option<(u64, Option<Severity>)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (digits, severity) = match stem.split_once('-') {
        Some((digits, severity)) => (digits, Some(severity.parse().ok()?)),
        None => (stem, None),
    };
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, severity))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, max_findings: usize, max_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            max_findings,
            fsync: false,
        }
    }

    const M: Severity = Severity::Medium;

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
            spool.append(M, &[i; 3]);
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
                spool.append(M, &[i]);
            }
            let head = spool.front().unwrap().unwrap();
            assert!(spool.remove(head.seq));
        }
        let mut spool = Spool::open(&cfg).unwrap();
        assert_eq!(spool.len(), 4);
        spool.append(M, &[99]);
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
            spool.append(M, &[i]);
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
        spool.append(M, &[1; 4]);
        spool.append(M, &[2; 4]);
        spool.append(M, &[3; 4]);
        assert_eq!((spool.len(), spool.evicted()), (2, 1));
        spool.append(M, &[4; 50]);
        assert_eq!((spool.len(), spool.evicted()), (1, 3));
        assert_eq!(drain(&mut spool), vec![vec![4; 50]]);
    }

    #[test]
    fn reopening_with_smaller_bounds_evicts_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(&config(dir.path(), 100, 1 << 20)).unwrap();
            for i in 0..6u8 {
                spool.append(M, &[i]);
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
            spool.append(M, b"whole");
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
        let first = spool.append(M, b"a");
        spool.append(M, b"b");
        fs::remove_file(spool.path(first, M)).unwrap();
        assert_eq!(drain(&mut spool), vec![b"b".to_vec()]);
        assert_eq!(spool.evicted(), 1);
    }

    #[test]
    fn findings_set_aside_leave_the_queue_but_stay_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 100, 1 << 20);
        let mut spool = Spool::open(&cfg).unwrap();
        let bad = spool.append(M, b"garbage");
        spool.append(M, b"good");
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
        spool.append(M, b"on disk");
        // A directory where the temp file should go makes File::create fail.
        fs::create_dir(dir.path().join(format!("{:020}{TEMP_SUFFIX}", 2))).unwrap();
        spool.append(M, b"in memory");
        spool.append(M, b"on disk again");
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

    #[test]
    fn a_full_spool_evicts_the_lowest_severity_first_and_counts_per_severity() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(&config(dir.path(), 4, 1 << 20)).unwrap();
        spool.append(Severity::Critical, b"c1");
        spool.append(Severity::Low, b"l1");
        spool.append(Severity::Medium, b"m1");
        spool.append(Severity::Low, b"l2");
        // Full: each new finding pushes out the oldest of the lowest severity present.
        spool.append(Severity::High, b"h1");
        spool.append(Severity::Critical, b"c2");
        spool.append(Severity::Medium, b"m2");
        let evicted = spool.evicted_by_severity();
        assert_eq!(evicted[Severity::Low as usize], 2);
        assert_eq!(evicted[Severity::Medium as usize], 1);
        assert_eq!(spool.evicted(), 3);
        // Delivery stays in arrival order.
        assert_eq!(
            drain(&mut spool),
            vec![
                b"c1".to_vec(),
                b"h1".to_vec(),
                b"c2".to_vec(),
                b"m2".to_vec()
            ]
        );
    }

    #[test]
    fn a_critical_is_never_evicted_while_a_lower_finding_is_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(&config(dir.path(), 50, 1 << 20)).unwrap();
        for i in 0..200u32 {
            spool.append(Severity::Medium, &i.to_le_bytes());
        }
        for i in 0..5u8 {
            spool.append(Severity::Critical, &[b'c', i]);
        }
        assert_eq!(spool.len(), 50);
        assert_eq!(spool.evicted_by_severity()[Severity::Medium as usize], 155);
        assert_eq!(spool.evicted_by_severity()[Severity::Critical as usize], 0);
        let delivered = drain(&mut spool);
        let criticals: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'c', i]).collect();
        assert_eq!(delivered[45..].to_vec(), criticals);
        // A new low finding into a spool full of criticals is the one evicted.
        let mut full = Spool::open(&config(dir.path(), 2, 1 << 20)).unwrap();
        full.append(Severity::Critical, b"c1");
        full.append(Severity::Critical, b"c2");
        full.append(Severity::Info, b"i1");
        assert_eq!(full.evicted_by_severity()[Severity::Info as usize], 1);
        assert_eq!(drain(&mut full), vec![b"c1".to_vec(), b"c2".to_vec()]);
    }

    #[test]
    fn severities_survive_a_reopen_and_old_file_names_count_as_critical() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(&config(dir.path(), 100, 1 << 20)).unwrap();
            spool.append(Severity::Low, b"low");
            spool.append(Severity::High, b"high");
        }
        // A spool file written by an earlier version, without its severity.
        fs::write(dir.path().join(format!("{:020}{SUFFIX}", 3)), b"old").unwrap();
        let mut spool = Spool::open(&config(dir.path(), 2, 1 << 20)).unwrap();
        assert_eq!(spool.evicted_by_severity()[Severity::Low as usize], 1);
        assert_eq!(drain(&mut spool), vec![b"high".to_vec(), b"old".to_vec()]);
    }

    #[test]
    fn head_reads_the_oldest_findings_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(&SpoolConfig {
            fsync: true,
            ..config(dir.path(), 100, 1 << 20)
        })
        .unwrap();
        for i in 0..5u8 {
            spool.append(Severity::ALL[i as usize], &[i]);
        }
        let head = spool.head(3).unwrap();
        assert_eq!(
            head.iter().map(|h| h.payload.clone()).collect::<Vec<_>>(),
            vec![vec![0], vec![1], vec![2]]
        );
        assert_eq!(spool.head(10).unwrap().len(), 5);
        assert!(spool.remove(head[0].seq));
        assert_eq!(spool.head(1).unwrap()[0].payload, vec![1]);
    }
}
