//! Osprey's behaviour history on each host: a SQLite store of processes, connections (with
//! durations and bytes), UDP flows, resource samples and findings, written by one thread off
//! the event path; baselines learned per program; anomaly scoring of every connection; and
//! the export and look-ups behind `osprey history` and `osprey baseline`.
//!
//! The collector owns one [`History`] on its event loop (see docs/history.md for the calls and
//! the configuration); the CLI uses [`store`] directly.

pub mod baseline;
pub mod config;
pub mod detection;
mod error;
pub mod flows;
mod history;
pub mod identity;
pub mod score;
pub mod store;

pub use config::HistoryConfig;
pub use detection::HistoryDetection;
pub use error::HistoryError;
pub use history::{ConnectionClose, History, HistoryStats, Tick};
pub use store::{
    record::Record,
    writer::{HistoryHandle, StoreStats},
};
