//! The bounded process table.
//!
//! Every operation on an event is O(1): entries live in one map ordered by last use, exited
//! entries also in a queue in exit order, so making room evicts the oldest exited entry (or,
//! with none left, the least recently used live one) without scanning the table.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use hashlink::LinkedHashMap;
use protocol::{Ancestor, ArgvTruncation, BootId, ExecId, Process, Timestamp};

use super::images::{Image, Images};
use crate::source::{ExecRecord, FileId, ForkRecord, ProcessKey};

/// Exited processes stay this long, so late events and their children's ancestry resolve.
const EXITED_GRACE: Duration = Duration::from_secs(30);
/// Longest ancestry reported (nearest parent first).
const MAX_ANCESTRY: usize = 32;

struct Entry {
    key: ProcessKey,
    process: Process,
    /// The executable's identity as the kernel reported it.
    file: Option<FileId>,
    exited: Option<Instant>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    pub size: u64,
    pub evicted: u64,
}

pub struct ProcessTable {
    boot: BootId,
    /// By pid, least recently used first.
    entries: LinkedHashMap<u32, Entry>,
    /// Exits in the order they happened; an item whose entry was replaced since is skipped.
    exited: VecDeque<(ProcessKey, Instant)>,
    capacity: usize,
    evicted: u64,
    images: Images,
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl ProcessTable {
    pub fn new(boot: BootId, capacity: usize) -> Self {
        ProcessTable {
            boot,
            entries: LinkedHashMap::new(),
            exited: VecDeque::new(),
            capacity: capacity.max(16),
            evicted: 0,
            images: Images::default(),
        }
    }

    /// A handle on the current image of every live pid.
    pub fn images(&self) -> Images {
        self.images.clone()
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            size: self.entries.len() as u64,
            evicted: self.evicted,
        }
    }

    fn exec_id(&self, key: ProcessKey, seq: u32) -> ExecId {
        ExecId {
            boot: self.boot,
            pid: key.pid,
            start_ticks: key.start_ticks,
            seq,
        }
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.entries.get(&pid).map(|e| &e.process)
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Process> {
        self.entries.get_mut(&pid).map(|e| &mut e.process)
    }

    /// Marks `pid` as just used (it is evicted last) and returns its process.
    pub fn touch(&mut self, pid: u32) -> Option<&Process> {
        self.entries.to_back(&pid).map(|e| &e.process)
    }

    /// The process `key` names, live or exited within the grace period (its current image).
    pub fn by_key(&self, key: ProcessKey) -> Option<&Process> {
        self.entries
            .get(&key.pid)
            .filter(|e| e.key == key)
            .map(|e| &e.process)
    }

    /// The live process `exec_id` names, if it is still that image.
    pub fn by_exec_id(&self, exec_id: &ExecId) -> Option<&Process> {
        self.entries
            .get(&exec_id.pid)
            .filter(|e| e.exited.is_none() && e.process.exec_id == *exec_id)
            .map(|e| &e.process)
    }

    fn insert(&mut self, key: ProcessKey, process: Process, file: Option<FileId>) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key.pid) {
            self.evict_one();
        }
        self.images.set(Image {
            exec_id: process.exec_id,
            parent: process.parent_exec_id,
            file,
            exe: process.exe.clone(),
            exited: false,
        });
        self.entries.insert(
            key.pid,
            Entry {
                key,
                process,
                file,
                exited: None,
            },
        );
    }

    /// Whether the queued exit `key` still describes the entry of its pid.
    fn is_current_exit(&self, key: &ProcessKey) -> bool {
        self.entries
            .get(&key.pid)
            .is_some_and(|e| e.key == *key && e.exited.is_some())
    }

    /// Makes room: the oldest exited entry if any, else the least recently used.
    fn evict_one(&mut self) {
        while let Some((key, _)) = self.exited.pop_front() {
            if self.is_current_exit(&key) {
                self.entries.remove(&key.pid);
                self.images.remove(key.pid);
                self.evicted += 1;
                return;
            }
        }
        if let Some((pid, _)) = self.entries.pop_front() {
            self.images.remove(pid);
            self.evicted += 1;
            tracing::debug!(pid, "process table full: evicted an entry");
        }
    }

    /// Builds a process from an exec record; `seq` is the exec sequence number.
    fn process_from(&self, rec: &ExecRecord, seq: u32) -> Process {
        let parent = rec.ppid.and_then(|ppid| self.entries.get(&ppid));
        let exe = rec
            .exe
            .clone()
            .or_else(|| rec.invoked_path.clone())
            .unwrap_or_else(|| rec.comm.clone());
        let name = if rec.exe.is_some() || rec.invoked_path.is_some() {
            base_name(&exe).to_string()
        } else {
            rec.comm.clone()
        };
        let mut process = Process {
            exec_id: self.exec_id(rec.process, seq),
            pid: rec.process.pid,
            ppid: rec.ppid.unwrap_or(0),
            parent_exec_id: parent.map(|p| p.process.exec_id),
            name,
            exe,
            invoked_path: rec.invoked_path.clone(),
            argv: rec.argv.clone(),
            argv_truncated: false,
            argv_truncation: None,
            argv_source: rec.argv_source,
            cwd: rec.cwd.clone(),
            uid: rec.uid,
            euid: rec.euid,
            gid: rec.gid,
            loginuid: rec.loginuid,
            user: None,
            tty: rec.tty.clone(),
            cgroup_id: rec.cgroup_id,
            container_id: None,
            start_time: rec.time,
            sha256: None,
        };
        process.set_argv_truncation(rec.argv_truncation);
        process
    }

    /// Loads processes that predate the sensor. Entries already created by events win: they
    /// are newer than the scan.
    pub fn bootstrap(&mut self, existing: Vec<ExecRecord>) {
        // Parents first, so parent ExecIds resolve.
        let mut existing = existing;
        existing.sort_by_key(|r| (r.process.start_ticks, r.process.pid));
        for rec in existing {
            self.adopt(&rec);
        }
    }

    /// Takes in a process read from the platform after the fact (a pid seen in an event but
    /// unknown to the table). Returns false when the table already knows it from an event.
    pub fn adopt(&mut self, rec: &ExecRecord) -> bool {
        if self
            .entries
            .get(&rec.process.pid)
            .is_some_and(|e| e.key == rec.process || e.key.start_ticks != 0)
        {
            return false;
        }
        let process = self.process_from(rec, 0);
        self.insert(rec.process, process, rec.exe_file);
        true
    }

    /// A new process: it runs its parent's image until it execs.
    pub fn fork(&mut self, rec: &ForkRecord) -> Process {
        let parent = self
            .entries
            .to_back(&rec.ppid)
            .map(|e| (e.process.clone(), e.file));
        let (mut child, file) = match parent {
            Some((parent, file)) => (
                Process {
                    exec_id: self.exec_id(rec.child, 0),
                    pid: rec.child.pid,
                    ppid: rec.ppid,
                    parent_exec_id: Some(parent.exec_id),
                    ..parent
                },
                file,
            ),
            None => {
                // Parent unknown (its fork predates us and /proc had no trace): a bare entry.
                let mut bare = self.process_from(
                    &ExecRecord {
                        time: rec.time,
                        process: rec.child,
                        ppid: Some(rec.ppid),
                        argv_truncation: Some(ArgvTruncation::Unavailable),
                        ..Default::default()
                    },
                    0,
                );
                bare.name = String::new();
                (bare, None)
            }
        };
        child.start_time = rec.time;
        self.insert(rec.child, child.clone(), file);
        child
    }

    /// A new image. Returns the process after the exec and the executable before it.
    pub fn exec(&mut self, rec: &ExecRecord) -> (Process, Option<String>) {
        let (seq, previous_exe, start_time) = match self.entries.get(&rec.process.pid) {
            // Same process (same start time): the next image.
            Some(e) if e.key == rec.process && e.exited.is_none() => (
                e.process.exec_id.seq + 1,
                Some(e.process.exe.clone()),
                e.process.start_time,
            ),
            // First sight of this process (its fork was missed): the image seen first is 0.
            _ => (0, None, rec.time),
        };
        let mut process = self.process_from(rec, seq);
        process.start_time = start_time;
        self.insert(rec.process, process.clone(), rec.exe_file);
        (process, previous_exe)
    }

    /// Marks a process exited; returns it as it was.
    pub fn exit(&mut self, key: ProcessKey) -> Option<Process> {
        let now = Instant::now();
        let entry = self.entries.get_mut(&key.pid)?;
        if entry.key.start_ticks != key.start_ticks || entry.exited.is_some() {
            return None;
        }
        entry.exited = Some(now);
        let process = entry.process.clone();
        self.exited.push_back((key, now));
        self.images.mark_exited(key.pid);
        Some(process)
    }

    /// Ancestry of `process`, nearest parent first.
    pub fn ancestry(&self, process: &Process) -> Vec<Ancestor> {
        self.ancestors(process)
            .map(|p| Ancestor {
                exec_id: p.exec_id,
                pid: p.pid,
                name: p.name.clone(),
                exe: p.exe.clone(),
                argv: p.argv.clone(),
                tty: p.tty.clone(),
            })
            .collect()
    }

    /// The processes up the tree from `process`, nearest parent first (at most
    /// `MAX_ANCESTRY`), without copying them.
    pub fn ancestors<'a>(&'a self, process: &Process) -> impl Iterator<Item = &'a Process> + 'a {
        let mut ppid = process.ppid;
        let mut expected = process.parent_exec_id;
        let mut left = MAX_ANCESTRY;
        std::iter::from_fn(move || {
            if ppid == 0 || left == 0 {
                return None;
            }
            let entry = self.entries.get(&ppid)?;
            // A reused pid is not our parent.
            if expected.is_some_and(|id| !entry.process.exec_id.same_process(&id)) {
                return None;
            }
            let p = &entry.process;
            left -= 1;
            ppid = if p.ppid == p.pid { 0 } else { p.ppid };
            expected = p.parent_exec_id;
            Some(p)
        })
    }

    /// Every live process (exited ones excluded), in no particular order.
    /// Live processes with their executable's identity as the kernel reported it.
    pub fn live_with_files(&self) -> impl Iterator<Item = (&Process, Option<FileId>)> {
        self.entries
            .values()
            .filter(|e| e.exited.is_none())
            .map(|e| (&e.process, e.file))
    }

    pub fn live(&self) -> impl Iterator<Item = &Process> {
        self.entries
            .values()
            .filter(|e| e.exited.is_none())
            .map(|e| &e.process)
    }

    /// The process `exec_id` names, live or exited but still remembered; `true` when exited.
    pub fn remembered(&self, exec_id: &ExecId) -> Option<(&Process, bool)> {
        self.entries
            .get(&exec_id.pid)
            .filter(|e| e.process.exec_id == *exec_id)
            .map(|e| (&e.process, e.exited.is_some()))
    }

    /// Drops exited entries past their grace period and live entries whose process is gone
    /// (an exit the source missed). `live` is the platform's current process list.
    pub fn reconcile(&mut self, live: &[ProcessKey]) -> usize {
        self.reap();
        let alive: std::collections::HashSet<ProcessKey> = live.iter().copied().collect();
        let before = self.entries.len();
        let images = &self.images;
        self.entries.retain(|pid, e| {
            let keep = e.exited.is_some() || alive.contains(&e.key);
            if !keep {
                images.remove(*pid);
            }
            keep
        });
        before - self.entries.len()
    }

    /// Drops exited entries past their grace period (cheap: only the expired ones are visited).
    pub fn reap(&mut self) {
        let now = Instant::now();
        while let Some(&(key, at)) = self.exited.front() {
            if now.duration_since(at) < EXITED_GRACE {
                break;
            }
            self.exited.pop_front();
            if self.is_current_exit(&key) {
                self.entries.remove(&key.pid);
                self.images.remove(key.pid);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Start time of a pid's entry, for callers that only have the pid.
    pub fn start_time(&self, pid: u32) -> Option<Timestamp> {
        self.entries.get(&pid).map(|e| e.process.start_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ArgvSource;

    fn exec(pid: u32, ppid: u32, ticks: u64, exe: &str, argv: &[&str]) -> ExecRecord {
        ExecRecord {
            process: ProcessKey {
                pid,
                start_ticks: ticks,
            },
            ppid: Some(ppid),
            exe: Some(exe.into()),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            argv_source: ArgvSource::Kernel,
            comm: base_name(exe).into(),
            ..Default::default()
        }
    }

    fn key(pid: u32, start_ticks: u64) -> ProcessKey {
        ProcessKey { pid, start_ticks }
    }

    fn table() -> ProcessTable {
        let mut t = ProcessTable::new(BootId(0xabcd), 100);
        t.bootstrap(vec![
            exec(1, 0, 1, "/sbin/init", &["init"]),
            exec(100, 1, 50, "/bin/bash", &["bash"]),
        ]);
        t
    }

    #[test]
    fn fork_then_exec_advances_the_sequence_and_keeps_ancestry() {
        let mut t = table();
        let child = key(200, 90);
        let forked = t.fork(&ForkRecord {
            time: Timestamp::default(),
            child,
            ppid: 100,
        });
        assert_eq!(forked.exec_id.seq, 0);
        assert_eq!(forked.exe, "/bin/bash");
        let (p, prev) = t.exec(&exec(
            200,
            100,
            90,
            "/usr/bin/python3.11",
            &["python3", "-c", "x"],
        ));
        assert_eq!(p.exec_id.to_string(), "0000abcd-200-90-1");
        assert_eq!(prev.as_deref(), Some("/bin/bash"));
        let names: Vec<_> = t.ancestry(&p).into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["bash", "init"]);
        let images = t.images();
        assert_eq!(
            images.descendants(&t.get(100).unwrap().exec_id)[0].exec_id,
            p.exec_id
        );
    }

    #[test]
    fn pid_reuse_is_a_new_process_and_exits_check_start_time() {
        let mut t = table();
        t.exec(&exec(300, 100, 10, "/bin/a", &["a"]));
        assert!(t.exit(key(300, 11)).is_none(), "wrong start time");
        assert!(t.exit(key(300, 10)).is_some());
        assert!(t.exit(key(300, 10)).is_none(), "an exit is reported once");
        let (p, prev) = t.exec(&exec(300, 100, 20, "/bin/b", &["b"]));
        assert_eq!(p.exec_id.seq, 0);
        assert!(prev.is_none());
    }

    #[test]
    fn images_follow_exec_and_exit() {
        let mut t = table();
        let images = t.images();
        let (p, _) = t.exec(&exec(400, 100, 7, "/bin/a", &["a"]));
        assert_eq!(images.get(400).map(|i| i.exec_id), Some(p.exec_id));
        let (q, _) = t.exec(&exec(400, 100, 7, "/bin/b", &["b"]));
        assert_eq!(images.get(400).map(|i| i.exec_id.seq), Some(q.exec_id.seq));
        assert_ne!(p.exec_id, q.exec_id);
        t.exit(key(400, 7));
        let gone = images
            .get(400)
            .expect("kept while the table keeps the exit");
        assert!(gone.exited);
        assert_eq!(gone.exe, "/bin/b");
    }

    #[test]
    fn bounded_with_evictions_counted() {
        let mut t = ProcessTable::new(BootId(1), 16);
        for pid in 1..=40 {
            t.exec(&exec(pid, 0, pid as u64, "/bin/x", &["x"]));
        }
        assert_eq!(t.len(), 16);
        assert_eq!(t.stats().evicted, 24);
    }

    #[test]
    fn exited_entries_go_first_then_the_least_recently_used() {
        let mut t = ProcessTable::new(BootId(1), 16);
        for pid in 1..=16 {
            t.exec(&exec(pid, 0, pid as u64, "/bin/x", &["x"]));
        }
        t.exit(key(9, 9));
        t.touch(1);
        t.exec(&exec(17, 0, 17, "/bin/x", &["x"]));
        assert!(t.get(9).is_none(), "the exited entry made room");
        t.exec(&exec(18, 0, 18, "/bin/x", &["x"]));
        assert!(t.get(1).is_some(), "recently used");
        assert!(t.get(2).is_none(), "least recently used");
        assert!(t.images().get(2).is_none());
    }

    #[test]
    fn a_storm_of_short_lived_processes_stays_bounded() {
        // Every fork + exit leaves an exited entry: they are evicted in exit order, never by
        // scanning the table (this runs 100,000 processes through a 1,024-entry table).
        let mut t = ProcessTable::new(BootId(1), 1024);
        t.exec(&exec(1, 0, 1, "/sbin/init", &["init"]));
        for i in 0..100_000u32 {
            let child = key(10 + (i % 30_000), 10 + i as u64);
            t.fork(&ForkRecord {
                time: Timestamp::default(),
                child,
                ppid: 1,
            });
            t.exit(child);
        }
        assert_eq!(t.len(), 1024);
        assert!(t.get(1).is_some(), "the live parent was never evicted");
        assert!(t.exited.len() <= 100_000);
    }

    #[test]
    fn adopting_a_late_process_never_overrides_what_events_told() {
        let mut t = table();
        let (p, _) = t.exec(&exec(500, 100, 70, "/bin/kernel-saw-this", &["k"]));
        assert!(!t.adopt(&exec(500, 100, 70, "/bin/proc-says", &["p"])));
        assert_eq!(t.get(500).unwrap().exec_id, p.exec_id);
        assert!(t.adopt(&exec(501, 100, 71, "/bin/late", &["late"])));
        assert_eq!(t.get(501).unwrap().exe, "/bin/late");
    }

    #[test]
    fn reconcile_drops_processes_that_vanished() {
        let mut t = table();
        assert_eq!(t.reconcile(&[key(1, 1)]), 1);
        assert!(t.get(100).is_none());
        assert!(t.images().get(100).is_none());
        assert!(t.get(1).is_some());
    }
}
