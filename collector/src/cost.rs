//! Where the collector's own CPU goes: the event path's stages, timed on the pipeline
//! thread, and each thread's CPU as the kernel counts it. Both go out with every heartbeat
//! and as metrics (`osprey_collector_stage_seconds_total`,
//! `osprey_collector_thread_cpu_seconds_total`), so a regression shows without a profiler.

use std::{collections::BTreeMap, time::Instant};

/// A step of the event path on the pipeline thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Records taken from the kernel's ring buffer and decoded into sensor events (timed by
    /// the eBPF source; the ETW source does not time its reads, so it stays 0 on Windows).
    Read,
    /// The process table updated and the process enriched (user, container, hash lookup).
    Table,
    /// Ancestry built for the events that carry it.
    Ancestry,
    /// The event encoded once and handed to every output (NATS, JSON lines).
    Publish,
    /// Detectors, findings and the host state kept for queries.
    Detect,
    /// The event handed to the history (its database writes run on a thread of their own).
    History,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Read,
        Stage::Table,
        Stage::Ancestry,
        Stage::Publish,
        Stage::Detect,
        Stage::History,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Table => "table",
            Stage::Ancestry => "ancestry",
            Stage::Publish => "publish",
            Stage::Detect => "detect",
            Stage::History => "history",
        }
    }
}

/// Time per stage since start. Between [`StageClock::start`] and the last
/// [`StageClock::charge`] each interval goes to the stage that ends it, so the stages of one
/// event cost two clock reads each (tens of nanoseconds) and nothing is counted twice.
#[derive(Debug)]
pub struct StageClock {
    ns: [u64; Stage::ALL.len()],
    mark: Instant,
}

impl Default for StageClock {
    fn default() -> Self {
        StageClock {
            ns: [0; Stage::ALL.len()],
            mark: Instant::now(),
        }
    }
}

impl StageClock {
    /// Starts an interval.
    pub fn start(&mut self) {
        self.mark = Instant::now();
    }

    /// Charges the time since the last mark to `stage` and starts the next interval.
    pub fn charge(&mut self, stage: Stage) {
        let now = Instant::now();
        self.add(stage, now.saturating_duration_since(self.mark));
        self.mark = now;
    }

    /// Charges time measured elsewhere (e.g. by the source) to `stage`.
    pub fn add(&mut self, stage: Stage, elapsed: std::time::Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let total = &mut self.ns[stage as usize];
        *total = total.saturating_add(ns);
    }

    /// Nanoseconds per stage name since start.
    pub fn totals(&self) -> BTreeMap<String, u64> {
        Stage::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), self.ns[*s as usize]))
            .collect()
    }
}

/// CPU time (user and system, ns) of each of this process's threads since it started, summed
/// per thread name; empty where the platform does not say.
pub fn thread_cpu_ns() -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return by_name;
        };
        for task in tasks.flatten() {
            let dir = task.path();
            // schedstat's first field: time on a CPU in ns (stat counts clock ticks).
            let Some(ns) = std::fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            else {
                continue;
            };
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            *by_name.entry(name.trim_end().to_string()).or_default() += ns;
        }
    }
    by_name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_interval_goes_to_the_stage_that_ends_it() {
        let mut clock = StageClock::default();
        clock.start();
        std::thread::sleep(std::time::Duration::from_millis(2));
        clock.charge(Stage::Table);
        clock.charge(Stage::Detect);
        clock.add(Stage::Read, std::time::Duration::from_micros(7));
        let totals = clock.totals();
        assert!(totals["table"] >= 2_000_000, "{totals:?}");
        assert!(totals["detect"] < totals["table"], "{totals:?}");
        assert_eq!(totals["read"], 7_000);
        assert_eq!(totals["history"], 0);
        assert_eq!(totals.len(), Stage::ALL.len());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn threads_are_named_and_counted() {
        let spinner = std::thread::Builder::new()
            .name("cost-test-spin".into())
            .spawn(|| {
                let start = Instant::now();
                let mut x = 0u64;
                while start.elapsed() < std::time::Duration::from_millis(30) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                thread_cpu_ns()
            })
            .expect("a thread");
        let seen = spinner.join().expect("it ran");
        assert!(seen["cost-test-spin"] >= 10_000_000, "{seen:?}");
    }
}
