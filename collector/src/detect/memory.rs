//! Resident memory of live processes, sampled periodically (sysinfo) for the policy's memory
//! rules (`rss_above_mb`).
//!
//! Reading `/proc` for every process is blocking I/O, so it runs on its own thread: the
//! pipeline asks for a sample and gets the results on a channel, like exe hashes.

use std::{sync::mpsc as std_mpsc, thread};

use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::mpsc;

/// One process's resident set size at the time of a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RssSample {
    pub pid: u32,
    /// Process start, seconds since the Unix epoch (tells a reused pid apart).
    pub start_time_secs: u64,
    pub rss_bytes: u64,
}

/// Requests samples from the sampling thread; dropping it stops the thread.
pub struct MemorySampler {
    requests: std_mpsc::SyncSender<()>,
}

impl MemorySampler {
    /// Starts the sampling thread; each sample arrives on the returned channel.
    pub fn start() -> std::io::Result<(MemorySampler, mpsc::UnboundedReceiver<Vec<RssSample>>)> {
        // One request may wait while a sample is taken; more would only queue stale work.
        let (requests, incoming) = std_mpsc::sync_channel::<()>(1);
        let (results, samples) = mpsc::unbounded_channel();
        thread::Builder::new()
            .name("osprey-rss".into())
            .spawn(move || {
                let mut system = System::new();
                let what = ProcessRefreshKind::nothing().with_memory().without_tasks();
                while incoming.recv().is_ok() {
                    system.refresh_processes_specifics(ProcessesToUpdate::All, true, what);
                    let sample: Vec<RssSample> = system
                        .processes()
                        .values()
                        .filter(|p| p.thread_kind().is_none())
                        .map(|p| RssSample {
                            pid: p.pid().as_u32(),
                            start_time_secs: p.start_time(),
                            rss_bytes: p.memory(),
                        })
                        .collect();
                    if results.send(sample).is_err() {
                        return;
                    }
                }
            })?;
        Ok((MemorySampler { requests }, samples))
    }

    /// Asks for a sample; `false` when one is already pending (the thread is slower than the
    /// interval, so this tick is skipped rather than queued).
    pub fn request(&self) -> bool {
        self.requests.try_send(()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn samples_report_this_process_with_its_resident_memory() {
        let (sampler, mut samples) = MemorySampler::start().unwrap();
        // Touch 32 MiB so the resident set is clearly above it.
        let block = std::hint::black_box(vec![1u8; 32 << 20]);
        assert!(sampler.request());
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
        assert!(!sample.is_empty());
        drop(block);
    }
}
