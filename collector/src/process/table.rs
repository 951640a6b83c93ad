//! The bounded process table.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use protocol::{Ancestor, ArgvSource, BootId, ExecId, Process, Timestamp};

use crate::source::{ExecRecord, ForkRecord, ProcessKey};

/// Exited processes stay this long, so late events and their children's ancestry resolve.
const EXITED_GRACE: Duration = Duration::from_secs(30);
/// Longest ancestry reported (nearest parent first).
const MAX_ANCESTRY: usize = 32;

struct Entry {
    key: ProcessKey,
    process: Process,
    exited: Option<Instant>,
    /// Last time this entry was used; the least recently used live entry is evicted first.
    touched: Instant,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    pub size: u64,
    pub evicted: u64,
}

pub struct ProcessTable {
    boot: BootId,
    entries: HashMap<u32, Entry>,
    capacity: usize,
    evicted: u64,
    images: CurrentImages,
}

/// The `ExecId` each live pid runs now, shared read-only with the actuator: /proc shows pid
/// and start time, but only the table knows whether the process has exec'd since, which makes
/// an `ExecId` stale.
#[derive(Clone, Default)]
pub struct CurrentImages(Arc<RwLock<HashMap<u32, ExecId>>>);

impl CurrentImages {
    pub fn get(&self, pid: u32) -> Option<ExecId> {
        self.0.read().ok()?.get(&pid).copied()
    }

    fn set(&self, id: ExecId) {
        if let Ok(mut map) = self.0.write() {
            map.insert(id.pid, id);
        }
    }

    fn remove(&self, pid: u32) {
        if let Ok(mut map) = self.0.write() {
            map.remove(&pid);
        }
    }

    fn retain(&self, keep: impl Fn(u32) -> bool) {
        if let Ok(mut map) = self.0.write() {
            map.retain(|pid, _| keep(*pid));
        }
    }
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl ProcessTable {
    pub fn new(boot: BootId, capacity: usize) -> Self {
        ProcessTable {
            boot,
            entries: HashMap::new(),
            capacity: capacity.max(16),
            evicted: 0,
            images: CurrentImages::default(),
        }
    }

    /// A handle on the current image of every live pid.
    pub fn current_images(&self) -> CurrentImages {
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

    /// The live process `exec_id` names, if it is still that image.
    pub fn by_exec_id(&self, exec_id: &ExecId) -> Option<&Process> {
        self.entries
            .get(&exec_id.pid)
            .filter(|e| e.exited.is_none() && e.process.exec_id == *exec_id)
            .map(|e| &e.process)
    }

    fn insert(&mut self, key: ProcessKey, process: Process, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key.pid) {
            self.evict_one(now);
        }
        self.images.set(process.exec_id);
        self.entries.insert(
            key.pid,
            Entry {
                key,
                process,
                exited: None,
                touched: now,
            },
        );
    }

    /// Makes room: the oldest exited entry if any, else the least recently used.
    fn evict_one(&mut self, now: Instant) {
        let victim = self
            .entries
            .iter()
            .min_by_key(|(_, e)| (e.exited.is_none(), e.exited.unwrap_or(e.touched)))
            .map(|(pid, _)| *pid);
        if let Some(pid) = victim {
            self.entries.remove(&pid);
            self.images.remove(pid);
            self.evicted += 1;
            tracing::debug!(pid, "process table full: evicted an entry");
        }
        let _ = now;
    }

    /// Builds a process from an exec record; `seq` is the exec sequence number.
    fn process_from(&self, rec: &ExecRecord, seq: u32, argv_source: ArgvSource) -> Process {
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
        Process {
            exec_id: self.exec_id(rec.process, seq),
            pid: rec.process.pid,
            ppid: rec.ppid.unwrap_or(0),
            parent_exec_id: parent.map(|p| p.process.exec_id),
            name,
            exe,
            invoked_path: rec.invoked_path.clone(),
            argv: rec.argv.clone().unwrap_or_default(),
            argv_truncated: rec.argv_truncated,
            argv_source,
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
        }
    }

    /// Loads processes that predate the sensor. Entries already created by events win: they
    /// are newer than the scan.
    pub fn bootstrap(&mut self, existing: Vec<ExecRecord>, argv_source: ArgvSource) {
        let now = Instant::now();
        // Parents first, so parent ExecIds resolve.
        let mut existing = existing;
        existing.sort_by_key(|r| (r.process.start_ticks, r.process.pid));
        for rec in existing {
            if self.entries.contains_key(&rec.process.pid) {
                continue;
            }
            let process = self.process_from(&rec, 0, argv_source);
            self.insert(rec.process, process, now);
        }
    }

    /// A new process: it runs its parent's image until it execs.
    pub fn fork(&mut self, rec: &ForkRecord) -> Option<Process> {
        let now = Instant::now();
        let parent = self.entries.get_mut(&rec.ppid).map(|e| {
            e.touched = now;
            e.process.clone()
        });
        let mut child = match parent {
            Some(parent) => Process {
                exec_id: self.exec_id(rec.child, 0),
                pid: rec.child.pid,
                ppid: rec.ppid,
                parent_exec_id: Some(parent.exec_id),
                start_time: rec.time,
                sha256: parent.sha256.clone(),
                ..parent
            },
            None => {
                // Parent unknown (its fork predates us and /proc had no trace): a bare entry.
                let mut bare = self.process_from(
                    &ExecRecord {
                        time: rec.time,
                        process: rec.child,
                        ppid: Some(rec.ppid),
                        ..Default::default()
                    },
                    0,
                    ArgvSource::Procfs,
                );
                bare.name = String::new();
                bare
            }
        };
        child.start_time = rec.time;
        self.insert(rec.child, child.clone(), now);
        Some(child)
    }

    /// A new image. Returns the process after the exec and the executable before it.
    pub fn exec(&mut self, rec: &ExecRecord, argv_source: ArgvSource) -> (Process, Option<String>) {
        let now = Instant::now();
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
        let mut process = self.process_from(rec, seq, argv_source);
        process.start_time = start_time;
        self.insert(rec.process, process.clone(), now);
        (process, previous_exe)
    }

    /// Marks a process exited; returns it as it was.
    pub fn exit(&mut self, key: ProcessKey) -> Option<Process> {
        let now = Instant::now();
        let entry = self.entries.get_mut(&key.pid)?;
        if entry.key.start_ticks != key.start_ticks {
            return None;
        }
        entry.exited = Some(now);
        self.images.remove(key.pid);
        Some(entry.process.clone())
    }

    /// Ancestry of `process`, nearest parent first.
    pub fn ancestry(&self, process: &Process) -> Vec<Ancestor> {
        let mut out = Vec::new();
        let mut ppid = process.ppid;
        let mut expected = process.parent_exec_id;
        while ppid != 0 && out.len() < MAX_ANCESTRY {
            let Some(entry) = self.entries.get(&ppid) else {
                break;
            };
            // A reused pid is not our parent.
            if let Some(id) = expected {
                if !entry.process.exec_id.same_process(&id) {
                    break;
                }
            }
            let p = &entry.process;
            out.push(Ancestor {
                exec_id: p.exec_id,
                pid: p.pid,
                name: p.name.clone(),
                exe: p.exe.clone(),
                argv: p.argv.clone(),
                tty: p.tty.clone(),
            });
            if p.ppid == p.pid {
                break;
            }
            ppid = p.ppid;
            expected = p.parent_exec_id;
        }
        out
    }

    /// Drops exited entries past their grace period and entries whose process is gone
    /// (an exit the source missed). `live` is the platform's current process list.
    pub fn reconcile(&mut self, live: &[ProcessKey]) -> usize {
        let now = Instant::now();
        let alive: std::collections::HashSet<ProcessKey> = live.iter().copied().collect();
        let before = self.entries.len();
        self.entries.retain(|_, e| match e.exited {
            Some(at) => now.duration_since(at) < EXITED_GRACE,
            None => alive.contains(&e.key) || now.duration_since(e.touched) < EXITED_GRACE,
        });
        let entries = &self.entries;
        self.images
            .retain(|pid| entries.get(&pid).is_some_and(|e| e.exited.is_none()));
        before - self.entries.len()
    }

    /// Drops exited entries past their grace period (cheap, no platform scan).
    pub fn reap(&mut self) {
        let now = Instant::now();
        self.entries.retain(|_, e| {
            e.exited
                .is_none_or(|at| now.duration_since(at) < EXITED_GRACE)
        });
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

    fn exec(pid: u32, ppid: u32, ticks: u64, exe: &str, argv: &[&str]) -> ExecRecord {
        ExecRecord {
            process: ProcessKey {
                pid,
                start_ticks: ticks,
            },
            ppid: Some(ppid),
            exe: Some(exe.into()),
            argv: Some(argv.iter().map(|s| s.to_string()).collect()),
            comm: base_name(exe).into(),
            ..Default::default()
        }
    }

    fn table() -> ProcessTable {
        let mut t = ProcessTable::new(BootId(0xabcd), 100);
        t.bootstrap(
            vec![
                exec(1, 0, 1, "/sbin/init", &["init"]),
                exec(100, 1, 50, "/bin/bash", &["bash"]),
            ],
            ArgvSource::Procfs,
        );
        t
    }

    #[test]
    fn fork_then_exec_advances_the_sequence_and_keeps_ancestry() {
        let mut t = table();
        let child = ProcessKey {
            pid: 200,
            start_ticks: 90,
        };
        let forked = t
            .fork(&ForkRecord {
                time: Timestamp::default(),
                child,
                ppid: 100,
            })
            .unwrap();
        assert_eq!(forked.exec_id.seq, 0);
        assert_eq!(forked.exe, "/bin/bash");
        let (p, prev) = t.exec(
            &exec(200, 100, 90, "/usr/bin/python3.11", &["python3", "-c", "x"]),
            ArgvSource::Kernel,
        );
        assert_eq!(p.exec_id.to_string(), "0000abcd-200-90-1");
        assert_eq!(prev.as_deref(), Some("/bin/bash"));
        let names: Vec<_> = t.ancestry(&p).into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["bash", "init"]);
    }

    #[test]
    fn pid_reuse_is_a_new_process_and_exits_check_start_time() {
        let mut t = table();
        t.exec(&exec(300, 100, 10, "/bin/a", &["a"]), ArgvSource::Kernel);
        assert!(
            t.exit(ProcessKey {
                pid: 300,
                start_ticks: 11
            })
            .is_none(),
            "wrong start time"
        );
        assert!(t
            .exit(ProcessKey {
                pid: 300,
                start_ticks: 10
            })
            .is_some());
        let (p, prev) = t.exec(&exec(300, 100, 20, "/bin/b", &["b"]), ArgvSource::Kernel);
        assert_eq!(p.exec_id.seq, 0);
        assert!(prev.is_none());
    }

    #[test]
    fn current_images_follow_exec_and_exit() {
        let mut t = table();
        let images = t.current_images();
        let (p, _) = t.exec(&exec(400, 100, 7, "/bin/a", &["a"]), ArgvSource::Kernel);
        assert_eq!(images.get(400), Some(p.exec_id));
        let (q, _) = t.exec(&exec(400, 100, 7, "/bin/b", &["b"]), ArgvSource::Kernel);
        assert_eq!(images.get(400).map(|id| id.seq), Some(q.exec_id.seq));
        assert_ne!(p.exec_id, q.exec_id);
        t.exit(ProcessKey {
            pid: 400,
            start_ticks: 7,
        });
        assert_eq!(images.get(400), None);
    }

    #[test]
    fn bounded_with_evictions_counted() {
        let mut t = ProcessTable::new(BootId(1), 16);
        for pid in 1..=40 {
            t.exec(
                &exec(pid, 0, pid as u64, "/bin/x", &["x"]),
                ArgvSource::Kernel,
            );
        }
        assert_eq!(t.len(), 16);
        assert_eq!(t.stats().evicted, 24);
    }

    #[test]
    fn reconcile_drops_processes_that_vanished() {
        let mut t = table();
        // Entries not in the live set and not touched recently go; here both are fresh, so
        // the grace period keeps them until it passes.
        assert_eq!(
            t.reconcile(&[ProcessKey {
                pid: 1,
                start_ticks: 1
            }]),
            0
        );
        assert_eq!(t.len(), 2);
    }
}
