//! The collector's Prometheus metrics, served on `metrics_address` when configured (off by
//! default; docs/metrics.md lists them).
//!
//! Most figures are the heartbeat's: the pipeline hands each heartbeat to [`Metrics::heartbeat`]
//! and a scrape encodes the latest one, so `/metrics` and `osprey.heartbeat.<host>` never
//! disagree and the event path pays nothing for them. Findings per severity and the publish
//! latency are counted where they happen.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, OnceLock},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        counter::ConstCounter,
        gauge::ConstGauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use protocol::{Heartbeat, Severity};

pub struct Metrics {
    registry: Arc<Registry>,
    findings: metrics::BySeverity,
    publish_latency: Histogram,
    latest: Arc<Latest>,
}

/// The last heartbeat, encoded on each scrape.
#[derive(Debug, Default)]
struct Latest(Mutex<Option<Heartbeat>>);

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("osprey_collector");
        let findings = metrics::BySeverity::register(
            &mut registry,
            "findings",
            "Findings raised on this host, by severity",
        );
        // 1 ms .. ~16 s: a local JetStream acks in milliseconds, a spooled finding waits out
        // an outage.
        let publish_latency = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "publish_latency_seconds",
            "From a finding's publication to JetStream's acknowledgement",
            publish_latency.clone(),
        );
        let latest = Arc::new(Latest::default());
        registry.register_collector(Box::new(latest.clone()));
        Metrics {
            registry: Arc::new(registry),
            findings,
            publish_latency,
            latest,
        }
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    pub fn finding(&self, severity: Severity) {
        self.findings.inc(severity);
    }

    pub fn published(&self, latency: std::time::Duration) {
        self.publish_latency.observe(latency.as_secs_f64());
    }

    pub fn heartbeat(&self, heartbeat: &Heartbeat) {
        if let Ok(mut latest) = self.latest.0.lock() {
            *latest = Some(heartbeat.clone());
        }
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// One counter or gauge per key of `values`, labelled `label="<key>"`.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: &BTreeMap<String, u64>,
    metric: impl Fn(u64) -> M,
) -> Result<(), std::fmt::Error> {
    let Some(first) = values.values().next() else {
        return Ok(());
    };
    let mut family = encoder.encode_descriptor(name, help, None, metric(*first).metric_type())?;
    for (key, value) in values {
        metric(*value).encode(family.encode_family(&[(label, key.as_str())])?)?;
    }
    Ok(())
}

fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

fn seconds(ns: u64) -> ConstCounter<f64> {
    ConstCounter::new(ns as f64 / 1e9)
}

impl Collector for Latest {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(hb) = self.0.lock().ok().and_then(|latest| latest.clone()) else {
            return Ok(());
        };
        let e = &mut encoder;
        family(
            e,
            "events",
            "Kernel events handled, by kind",
            "kind",
            &hb.events,
            ConstCounter::new,
        )?;
        family(
            e,
            "drops",
            "Kernel records that could not be delivered (ring buffer full, staging maps), by kind",
            "kind",
            &hb.drops,
            ConstCounter::new,
        )?;
        family(
            e,
            "pending",
            "Work in flight, by what it is",
            "work",
            &hb.pending,
            gauge,
        )?;
        family(
            e,
            "evicted",
            "Entries bounded structures pushed out, by structure",
            "structure",
            &hb.evicted,
            ConstCounter::new,
        )?;
        single(
            e,
            "spool_depth",
            "Findings waiting in the on-disk spool for JetStream",
            gauge(hb.spool_depth),
        )?;
        single(
            e,
            "spool_evicted",
            "Findings evicted from a full spool",
            ConstCounter::new(hb.spool_evicted),
        )?;
        single(
            e,
            "spool_write_errors",
            "Findings the disk refused to spool (held in memory)",
            ConstCounter::new(hb.spool_write_errors),
        )?;
        single(
            e,
            "findings_failed",
            "Findings that can never be published",
            ConstCounter::new(hb.findings_failed),
        )?;
        single(
            e,
            "events_unpublished",
            "Events not published (queue full, NATS away)",
            ConstCounter::new(hb.events_dropped),
        )?;
        single(
            e,
            "heartbeats_unpublished",
            "Heartbeats not published (NATS away)",
            ConstCounter::new(hb.heartbeats_dropped),
        )?;
        single(
            e,
            "process_table_size",
            "Processes in the process table",
            gauge(hb.process_table_size),
        )?;
        single(
            e,
            "process_table_evicted",
            "Process entries evicted from a full table",
            ConstCounter::new(hb.process_table_evicted),
        )?;
        single(
            e,
            "active_blocks",
            "Active kernel blocks and kill-on-exec entries",
            gauge(hb.active_blocks),
        )?;
        single(
            e,
            "ring_buffer_size_bytes",
            "The kernel ring buffer's size",
            gauge(hb.ring.size_bytes),
        )?;
        single(
            e,
            "ring_buffer_read_bytes",
            "Bytes of records read from the kernel ring buffer",
            ConstCounter::new(hb.ring.read_bytes),
        )?;
        family(
            e,
            "stage_seconds",
            "Time the pipeline thread spent per stage of the event path",
            "stage",
            &hb.stage_ns,
            seconds,
        )?;
        family(
            e,
            "thread_cpu_seconds",
            "CPU time (user and system) of each collector thread",
            "thread",
            &hb.thread_cpu_ns,
            seconds,
        )?;
        single(e, "ring_buffer_largest_read_bytes", "The most bytes read from the ring buffer in one wake-up since the previous heartbeat: how full it got", gauge(hb.ring.largest_read_bytes))?;
        Ok(())
    }
}
