//! Joining each process start with its command line.
//!
//! The Kernel-Process provider has no command line; the kernel logger's Process/Start event
//! has the one the kernel captured at creation. They arrive from two sessions, each flushed on
//! its own timer, so either may come first. The join keeps records in arrival order and holds
//! a start (and everything after it, so a stop or connect never overtakes its process's start)
//! until its command line arrives or `wait` passes; then the start goes out without one and
//! `missing` counts it. Command lines that arrive first wait for their start the same time.
//!
//! A pair matches on pid and parent pid, logged within [`MATCH_WINDOW`] of each other: pids
//! are reused, but not by two live processes, and not within seconds under the same parent.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::record::{EtwRecord, KernelProcessStart, ProcessStart};

/// How far apart the two sessions' timestamps of one process creation may be.
pub const MATCH_WINDOW: Duration = Duration::from_secs(5);

/// More held records than this releases the oldest waiting start without its command line
/// (nothing is dropped): memory stays bounded if the command-line session stalls.
pub const MAX_QUEUED: usize = 100_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JoinStats {
    /// Starts that got their command line.
    pub joined: u64,
    /// Starts released without a command line (it never came, or came too late).
    pub missing: u64,
    /// Command lines whose start never came (typically: ETW lost that start).
    pub unmatched: u64,
}

enum Slot {
    Ready(EtwRecord),
    Waiting {
        start: ProcessStart,
        deadline: Instant,
    },
    /// Placeholder while a slot is rewritten in place; never left in the queue.
    Taken,
}

struct Orphan {
    record: KernelProcessStart,
    deadline: Instant,
}

pub struct CommandLineJoin {
    wait: Option<Duration>,
    queue: VecDeque<Slot>,
    /// Sequence number of `queue.front()`.
    front_seq: u64,
    /// Waiting starts by pid: sequence numbers into `queue`.
    waiting: HashMap<u32, Vec<u64>>,
    orphans: VecDeque<Orphan>,
    stats: JoinStats,
}

impl CommandLineJoin {
    /// `wait`: how long a start waits for its command line; `None` when no command-line
    /// session runs (starts pass straight through).
    pub fn new(wait: Option<Duration>) -> Self {
        Self {
            wait,
            queue: VecDeque::new(),
            front_seq: 0,
            waiting: HashMap::new(),
            orphans: VecDeque::new(),
            stats: JoinStats::default(),
        }
    }

    pub fn stats(&self) -> JoinStats {
        self.stats
    }

    /// Records held right now.
    pub fn held(&self) -> usize {
        self.queue.len()
    }

    /// Stops (`None`) or resumes waiting for command lines, e.g. when the command-line session
    /// ended. Starts already waiting are released on the next [`Self::pop_ready`].
    pub fn set_wait(&mut self, wait: Option<Duration>) {
        self.wait = wait;
        if wait.is_none() {
            for slot in &mut self.queue {
                if let Slot::Waiting { .. } = slot {
                    if let Slot::Waiting { start, .. } = std::mem::replace(slot, Slot::Taken) {
                        *slot = Slot::Ready(EtwRecord::ProcessStart(start));
                        self.stats.missing += 1;
                    }
                }
            }
            self.waiting.clear();
        }
    }

    pub fn push(&mut self, record: EtwRecord, now: Instant) {
        match record {
            EtwRecord::ProcessStart(mut start) => {
                if let Some(orphan) = self.take_orphan(&start) {
                    start.set_command_line(orphan.command_line);
                    self.stats.joined += 1;
                    self.queue
                        .push_back(Slot::Ready(EtwRecord::ProcessStart(start)));
                } else if let Some(wait) = self.wait {
                    let seq = self.front_seq + self.queue.len() as u64;
                    self.waiting.entry(start.pid).or_default().push(seq);
                    self.queue.push_back(Slot::Waiting {
                        start,
                        deadline: now + wait,
                    });
                } else {
                    self.stats.missing += 1;
                    self.queue
                        .push_back(Slot::Ready(EtwRecord::ProcessStart(start)));
                }
            }
            EtwRecord::KernelProcessStart(kernel) => {
                if !self.fill_waiting(&kernel) {
                    let wait = self.wait.unwrap_or_default();
                    self.orphans.push_back(Orphan {
                        record: kernel,
                        deadline: now + wait,
                    });
                }
            }
            other => self.queue.push_back(Slot::Ready(other)),
        }
        if self.queue.len() > MAX_QUEUED {
            // Give up on the oldest waiting start, so what queued up behind it can go out.
            self.stop_waiting_at_front();
        }
    }

    /// Moves every record that may go out now, in order, to `out`.
    pub fn pop_ready(&mut self, now: Instant, out: &mut Vec<EtwRecord>) {
        while let Some(front) = self.queue.front() {
            match front {
                Slot::Waiting { deadline, .. } if *deadline > now => break,
                _ => {
                    if let Some(record) = self.release_front() {
                        out.push(record);
                    }
                }
            }
        }
        while self.orphans.front().is_some_and(|o| o.deadline <= now) {
            if let Some(orphan) = self.orphans.pop_front() {
                self.stats.unmatched += 1;
                tracing::debug!(
                    pid = orphan.record.pid,
                    "command line without a process start"
                );
            }
        }
    }

    /// Releases everything held (shutdown).
    pub fn flush(&mut self, out: &mut Vec<EtwRecord>) {
        while !self.queue.is_empty() {
            if let Some(record) = self.release_front() {
                out.push(record);
            }
        }
        self.stats.unmatched += self.orphans.len() as u64;
        self.orphans.clear();
    }

    /// When the next held record becomes releasable (for the caller's timer).
    pub fn next_deadline(&self) -> Option<Instant> {
        let start = self.queue.front().and_then(|slot| match slot {
            Slot::Waiting { deadline, .. } => Some(*deadline),
            _ => None,
        });
        let orphan = self.orphans.front().map(|o| o.deadline);
        match (start, orphan) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn stop_waiting_at_front(&mut self) {
        let seq = self.front_seq;
        let Some(slot) = self.queue.front_mut() else {
            return;
        };
        if !matches!(slot, Slot::Waiting { .. }) {
            return;
        }
        if let Slot::Waiting { start, .. } = std::mem::replace(slot, Slot::Taken) {
            let pid = start.pid;
            *slot = Slot::Ready(EtwRecord::ProcessStart(start));
            self.stats.missing += 1;
            self.forget_waiting(pid, seq);
        }
    }

    fn release_front(&mut self) -> Option<EtwRecord> {
        let slot = self.queue.pop_front()?;
        let seq = self.front_seq;
        self.front_seq += 1;
        match slot {
            Slot::Ready(record) => Some(record),
            Slot::Waiting { start, .. } => {
                self.forget_waiting(start.pid, seq);
                self.stats.missing += 1;
                tracing::debug!(pid = start.pid, "process start without its command line");
                Some(EtwRecord::ProcessStart(start))
            }
            Slot::Taken => None,
        }
    }

    fn forget_waiting(&mut self, pid: u32, seq: u64) {
        if let Some(seqs) = self.waiting.get_mut(&pid) {
            seqs.retain(|&s| s != seq);
            if seqs.is_empty() {
                self.waiting.remove(&pid);
            }
        }
    }

    /// Gives a command line to the oldest waiting start it matches.
    fn fill_waiting(&mut self, kernel: &KernelProcessStart) -> bool {
        let Some(seqs) = self.waiting.get(&kernel.pid) else {
            return false;
        };
        let front_seq = self.front_seq;
        let found = seqs.iter().copied().find(|&seq| {
            let index = (seq - front_seq) as usize;
            match self.queue.get(index) {
                Some(Slot::Waiting { start, .. }) => matches(start, kernel),
                _ => false,
            }
        });
        let Some(seq) = found else {
            return false;
        };
        let index = (seq - front_seq) as usize;
        let Some(slot) = self.queue.get_mut(index) else {
            return false;
        };
        if let Slot::Waiting { start, .. } = std::mem::replace(slot, Slot::Taken) {
            let mut start = start;
            start.set_command_line(kernel.command_line.clone());
            *slot = Slot::Ready(EtwRecord::ProcessStart(start));
            self.stats.joined += 1;
        }
        self.forget_waiting(kernel.pid, seq);
        true
    }

    fn take_orphan(&mut self, start: &ProcessStart) -> Option<KernelProcessStart> {
        let index = self
            .orphans
            .iter()
            .position(|o| matches(start, &o.record))?;
        self.orphans.remove(index).map(|o| o.record)
    }
}

fn matches(start: &ProcessStart, kernel: &KernelProcessStart) -> bool {
    let apart = (start.time.unix_nanos() - kernel.time.unix_nanos()).unsigned_abs();
    start.pid == kernel.pid && start.ppid == kernel.ppid && apart <= MATCH_WINDOW.as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ProcessStop;
    use protocol::{ExitEvent, Timestamp};

    const WAIT: Duration = Duration::from_secs(3);
    const SEC: i64 = 1_000_000_000;

    fn start(pid: u32, ppid: u32, at: i64) -> EtwRecord {
        EtwRecord::ProcessStart(ProcessStart {
            time: Timestamp::from_unix_nanos(at),
            pid,
            create_time: at as u64,
            ppid,
            creator_pid: ppid,
            session_id: 1,
            image_nt_path: String::new(),
            exe: Some(format!(r"C:\p{pid}.exe")),
            comm: format!("p{pid}.exe"),
            command_line: None,
            argv: None,
        })
    }

    fn cmdline(pid: u32, ppid: u32, at: i64, line: &str) -> EtwRecord {
        EtwRecord::KernelProcessStart(KernelProcessStart {
            time: Timestamp::from_unix_nanos(at),
            pid,
            ppid,
            command_line: line.to_string(),
        })
    }

    fn stop(pid: u32) -> EtwRecord {
        EtwRecord::ProcessStop(ProcessStop {
            time: Timestamp::default(),
            pid,
            create_time: 0,
            exit: ExitEvent::default(),
        })
    }

    fn argv(record: &EtwRecord) -> Option<Vec<String>> {
        match record {
            EtwRecord::ProcessStart(s) => s.argv.clone(),
            _ => None,
        }
    }

    #[test]
    fn start_waits_for_its_command_line_and_keeps_order() {
        let t0 = Instant::now();
        let mut join = CommandLineJoin::new(Some(WAIT));
        let mut out = Vec::new();
        join.push(start(10, 1, 100 * SEC), t0);
        join.push(stop(10), t0);
        join.pop_ready(t0, &mut out);
        assert!(out.is_empty(), "the stop must not overtake the start");
        join.push(cmdline(10, 1, 100 * SEC, "p10.exe -a \"b c\""), t0);
        join.pop_ready(t0, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            argv(&out[0]),
            Some(vec!["p10.exe".into(), "-a".into(), "b c".into()])
        );
        assert!(matches!(out[1], EtwRecord::ProcessStop(_)));
        assert_eq!(
            join.stats(),
            JoinStats {
                joined: 1,
                missing: 0,
                unmatched: 0
            }
        );
        assert_eq!(join.held(), 0);
    }

    #[test]
    fn command_line_first_is_kept_for_its_start() {
        let t0 = Instant::now();
        let mut join = CommandLineJoin::new(Some(WAIT));
        let mut out = Vec::new();
        join.push(cmdline(10, 1, 100 * SEC, "p10.exe x"), t0);
        join.push(start(10, 1, 100 * SEC + 1000), t0);
        join.pop_ready(t0, &mut out);
        assert_eq!(argv(&out[0]), Some(vec!["p10.exe".into(), "x".into()]));
        assert_eq!(join.stats().joined, 1);
    }

    #[test]
    fn start_goes_out_without_command_line_after_the_wait() {
        let t0 = Instant::now();
        let mut join = CommandLineJoin::new(Some(WAIT));
        let mut out = Vec::new();
        join.push(start(10, 1, 100 * SEC), t0);
        assert_eq!(join.next_deadline(), Some(t0 + WAIT));
        join.pop_ready(t0 + WAIT - Duration::from_millis(1), &mut out);
        assert!(out.is_empty());
        join.pop_ready(t0 + WAIT, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(argv(&out[0]), None);
        assert_eq!(join.stats().missing, 1);
        // The late command line finds nothing and expires as unmatched.
        join.push(cmdline(10, 1, 100 * SEC, "late"), t0 + WAIT);
        join.pop_ready(t0 + WAIT * 2, &mut out);
        assert_eq!(join.stats().unmatched, 1);
    }

    #[test]
    fn pid_reuse_does_not_cross_match() {
        let t0 = Instant::now();
        let mut join = CommandLineJoin::new(Some(WAIT));
        let mut out = Vec::new();
        // Same pid, other parent: not this start's command line.
        join.push(start(10, 1, 100 * SEC), t0);
        join.push(cmdline(10, 2, 100 * SEC, "other parent"), t0);
        // Same pid and parent, but logged a minute apart: a different process.
        join.push(cmdline(10, 1, 160 * SEC, "a minute later"), t0);
        join.pop_ready(t0, &mut out);
        assert!(out.is_empty());
        join.push(cmdline(10, 1, 100 * SEC, "right one"), t0);
        join.pop_ready(t0, &mut out);
        assert_eq!(argv(&out[0]), Some(vec!["right".into(), "one".into()]));
    }

    #[test]
    fn interleaved_starts_each_get_their_own_line() {
        let t0 = Instant::now();
        let mut join = CommandLineJoin::new(Some(WAIT));
        let mut out = Vec::new();
        join.push(start(10, 1, 100 * SEC), t0);
        join.push(start(11, 1, 100 * SEC), t0);
        join.push(cmdline(11, 1, 100 * SEC, "eleven"), t0);
        join.pop_ready(t0, &mut out);
        assert!(out.is_empty(), "10 still waits and holds 11 behind it");
        join.push(cmdline(10, 1, 100 * SEC, "ten"), t0);
        join.pop_ready(t0, &mut out);
        assert_eq!(argv(&out[0]), Some(vec!["ten".to_string()]));
        assert_eq!(argv(&out[1]), Some(vec!["eleven".to_string()]));
    }

    #[test]
    fn without_a_command_line_session_starts_pass_straight_through() {
        let t0 = Instant::now();
        let mut join = CommandLineJoin::new(None);
        let mut out = Vec::new();
        join.push(start(10, 1, 100 * SEC), t0);
        join.pop_ready(t0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(join.stats().missing, 1);
    }

    #[test]
    fn turning_waiting_off_releases_held_starts() {
        let t0 = Instant::now();
        let mut join = CommandLineJoin::new(Some(Duration::from_secs(3600)));
        let mut out = Vec::new();
        join.push(start(10, 1, 100 * SEC), t0);
        join.push(stop(10), t0);
        join.set_wait(None);
        join.pop_ready(t0, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn a_stalled_command_line_session_cannot_grow_the_queue_without_bound() {
        let t0 = Instant::now();
        let mut join = CommandLineJoin::new(Some(Duration::from_secs(3600)));
        let mut out = Vec::new();
        join.push(start(10, 1, 100 * SEC), t0);
        for _ in 0..MAX_QUEUED {
            join.push(stop(11), t0);
        }
        // One past the bound: the start stops waiting; nothing is lost.
        join.pop_ready(t0, &mut out);
        assert_eq!(out.len(), MAX_QUEUED + 1);
        assert!(matches!(out[0], EtwRecord::ProcessStart(_)));
        assert_eq!(join.stats().missing, 1);
        assert_eq!(join.held(), 0);
    }

    #[test]
    fn flush_releases_everything_in_order() {
        let t0 = Instant::now();
        let mut join = CommandLineJoin::new(Some(WAIT));
        let mut out = Vec::new();
        join.push(start(10, 1, 100 * SEC), t0);
        join.push(stop(10), t0);
        join.push(cmdline(99, 1, 100 * SEC, "orphan"), t0);
        join.flush(&mut out);
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0], EtwRecord::ProcessStart(_)));
        assert_eq!(
            join.stats(),
            JoinStats {
                joined: 0,
                missing: 1,
                unmatched: 1
            }
        );
    }
}
