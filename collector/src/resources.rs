//! CPU use and resident memory of live processes, sampled periodically (sysinfo, on Linux and
//! Windows) for the policy's memory rules (`rss_above_mb`, which look at every process) and
//! for host state queries (`osprey ps`, `osprey top`: the processes with network activity or
//! findings).
//!
//! Reading the platform's process list is blocking I/O, so it runs on its own thread: the
//! pipeline asks for a sample and gets the results on a channel, like exe hashes.

use std::{collections::HashMap, sync::mpsc as std_mpsc, thread, time::Instant};

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::mpsc;

/// One process's CPU use and resident memory at the time of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResourceSample {
    pub pid: u32,
    /// Process start, seconds since the Unix epoch (tells a reused pid apart).
    pub start_time_secs: u64,
    pub rss_bytes: u64,
    /// CPU time used since the previous sample, percent of one core (above 100 for a
    /// process busy on several cores). `None` on a process's first sample: there is nothing
    /// to compare with yet.
    pub cpu_percent: Option<f32>,
}

/// Which processes a sample covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SampleScope {
    /// Every live process.
    All,
    /// These pids only.
    Pids(Vec<u32>),
}

/// Requests samples from the sampling thread; dropping it stops the thread.
pub struct ResourceSampler {
    requests: std_mpsc::SyncSender<SampleScope>,
}

impl ResourceSampler {
    /// Starts the sampling thread; each sample arrives on the returned channel.
    pub fn start() -> std::io::Result<(
        ResourceSampler,
        mpsc::UnboundedReceiver<Vec<ResourceSample>>,
    )> {
        // One request may wait while a sample is taken; more would only queue stale work.
        let (requests, incoming) = std_mpsc::sync_channel::<SampleScope>(1);
        let (results, samples) = mpsc::unbounded_channel();
        thread::Builder::new()
            .name("osprey-resources".into())
            .spawn(move || {
                let mut system = System::new();
                let what = ProcessRefreshKind::nothing()
                    .with_memory()
                    .with_cpu()
                    .without_tasks();
                // CPU time (ms) of each (pid, start) sampled last time, and when: a CPU figure
                // is the difference over the interval between two samples (sysinfo's own
                // figure stays 0 for a process that had used no CPU time at its first sample).
                let mut previous: HashMap<(u32, u64), u64> = HashMap::new();
                let mut previous_at = Instant::now();
                while let Ok(scope) = incoming.recv() {
                    let now = Instant::now();
                    let elapsed_ms = now.duration_since(previous_at).as_millis() as f32;
                    previous_at = now;
                    let sample = match &scope {
                        SampleScope::All => {
                            system.refresh_processes_specifics(ProcessesToUpdate::All, true, what);
                            collect(system.processes().values(), &mut previous, elapsed_ms)
                        }
                        SampleScope::Pids(pids) => {
                            let pids: Vec<Pid> = pids.iter().map(|&p| Pid::from_u32(p)).collect();
                            // Only the pids asked for are refreshed (and dropped when dead):
                            // start afresh when those asked for before pile up.
                            if system.processes().len() > 2 * pids.len() + 1024 {
                                system = System::new();
                            }
                            system.refresh_processes_specifics(
                                ProcessesToUpdate::Some(&pids),
                                true,
                                what,
                            );
                            collect(
                                pids.iter().filter_map(|pid| system.process(*pid)),
                                &mut previous,
                                elapsed_ms,
                            )
                        }
                    };
                    if results.send(sample).is_err() {
                        return;
                    }
                }
            })?;
        Ok((ResourceSampler { requests }, samples))
    }

    /// Asks for a sample; `false` when one is already pending (the thread is slower than the
    /// interval, so this tick is skipped rather than queued).
    pub fn request(&self, scope: SampleScope) -> bool {
        self.requests.try_send(scope).is_ok()
    }
}

/// Whether `sample` is of `process` and not of another process that reused its pid (start
/// times in whole seconds, from different clocks: a little slack is allowed).
pub fn same_process(sample: &ResourceSample, process: &protocol::Process) -> bool {
    let started = process.start_time.unix_nanos() / 1_000_000_000;
    sample.start_time_secs == 0 || (started - sample.start_time_secs as i64).abs() <= 2
}

/// Samples of `processes`; `previous` (CPU time by process at the last sample, taken
/// `elapsed_ms` ago) is replaced by this sample's.
fn collect<'a>(
    processes: impl Iterator<Item = &'a sysinfo::Process>,
    previous: &mut HashMap<(u32, u64), u64>,
    elapsed_ms: f32,
) -> Vec<ResourceSample> {
    let mut now: HashMap<(u32, u64), u64> = HashMap::new();
    let mut out = Vec::new();
    for p in processes.filter(|p| p.thread_kind().is_none()) {
        let key = (p.pid().as_u32(), p.start_time());
        if now.contains_key(&key) {
            continue;
        }
        let cpu_ms = p.accumulated_cpu_time();
        now.insert(key, cpu_ms);
        out.push(ResourceSample {
            pid: key.0,
            start_time_secs: key.1,
            rss_bytes: p.memory(),
            cpu_percent: previous
                .get(&key)
                .filter(|_| elapsed_ms > 0.0)
                .map(|before| cpu_ms.saturating_sub(*before) as f32 * 100.0 / elapsed_ms),
        });
    }
    *previous = now;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn samples_report_this_process_with_its_resident_memory() {
        let (sampler, mut samples) = ResourceSampler::start().unwrap();
        // Touch 32 MiB so the resident set is clearly above it.
        let block = std::hint::black_box(vec![1u8; 32 << 20]);
        assert!(sampler.request(SampleScope::All));
        let sample = samples.recv().await.unwrap();
        let me = sample
            .iter()
            .find(|s| s.pid == std::process::id())
            .expect("this process is sampled");
        assert!(me.rss_bytes >= 32 << 20, "rss {}", me.rss_bytes);
        assert!(
            me.start_time_secs > 1_600_000_000,
            "start {}",
            me.start_time_secs
        );
        assert_eq!(me.cpu_percent, None, "no CPU figure on a first sample");
        assert!(sample.len() > 1);
        drop(block);
    }

    #[tokio::test]
    async fn a_busy_process_shows_its_cpu_from_the_second_sample_on() {
        let (sampler, mut samples) = ResourceSampler::start().unwrap();
        let me = std::process::id();
        assert!(sampler.request(SampleScope::Pids(vec![me])));
        let first = samples.recv().await.unwrap();
        assert_eq!(first.len(), 1, "only the pids asked for: {first:?}");
        // Burn CPU for a while, then sample again.
        let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(sampler.request(SampleScope::Pids(vec![me])));
        let second = samples.recv().await.unwrap();
        let cpu = second[0]
            .cpu_percent
            .expect("a CPU figure on a second sample");
        assert!(cpu > 10.0, "busy for the whole interval, yet {cpu}%");
    }
}
