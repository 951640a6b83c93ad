//! The per-connection feature vector every model scores (built-in and ONNX), in this order.
//! The CSV export carries it as the `f_*` columns, so a model trained on an export sees
//! exactly what the collector computes. Documented in docs/history.md ("Feature vector").

use chrono::{DateTime, Timelike, Utc};
use protocol::Timestamp;

/// Number of features.
pub const FEATURE_COUNT: usize = 11;

/// Column names, in vector order.
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "f_hour",
    "f_port_rarity",
    "f_destination_novelty",
    "f_process_age",
    "f_script_engine",
    "f_duration",
    "f_bytes_sent",
    "f_bytes_received",
    "f_parent_rarity",
    "f_udp",
    "f_failed",
];

/// One connection's features.
pub type Features = [f32; FEATURE_COUNT];

/// What is known when the connection starts (everything but its end).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConnectFeatures {
    /// UTC hour of the connect, 0..23.
    pub hour: f32,
    /// 1 / (1 + programs on this host that learned a destination on this port and protocol).
    pub port_rarity: f32,
    /// 0: a learned destination of this program; 0.5: learned by another program on this
    /// host; 1: never learned on this host.
    pub destination_novelty: f32,
    /// ln(1 + seconds since the process started).
    pub process_age: f32,
    /// 1 when the program is a script engine.
    pub script_engine: f32,
    /// 1 / (1 + times this parent → program pair was seen); 1 when the parent is unknown.
    pub parent_rarity: f32,
    /// 1 for UDP.
    pub udp: f32,
    /// 1 when the connect failed (refused, timed out, denied, error).
    pub failed: f32,
}

impl ConnectFeatures {
    /// The full vector once the connection ended (TCP close, UDP flow flushed, failed
    /// connect: duration and bytes 0).
    pub fn complete(&self, duration_secs: f64, bytes_sent: u64, bytes_received: u64) -> Features {
        [
            self.hour,
            self.port_rarity,
            self.destination_novelty,
            self.process_age,
            self.script_engine,
            log1p(duration_secs.max(0.0)),
            log1p(bytes_sent as f64),
            log1p(bytes_received as f64),
            self.parent_rarity,
            self.udp,
            self.failed,
        ]
    }
}

/// ln(1 + x) as f32: byte counts and durations span orders of magnitude.
pub fn log1p(x: f64) -> f32 {
    x.ln_1p() as f32
}

/// UTC hour of a timestamp.
pub fn hour_of(time: Timestamp) -> f32 {
    DateTime::<Utc>::from_timestamp_nanos(time.unix_nanos()).hour() as f32
}

/// 1 / (1 + count).
pub fn rarity(count: u32) -> f32 {
    1.0 / (1.0 + count as f32)
}
