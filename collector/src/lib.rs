//! The Osprey collector: one per host. See DESIGN.md for the data flow:
//! source → process table → enrichment → detectors → findings → publisher.

#[cfg(target_os = "linux")]
pub mod actuator;
pub mod audit;
pub mod cache;
pub mod config;
pub mod cost;
pub mod detect;
pub mod enrich;
pub mod findings;
pub mod history_feed;
pub mod metrics;
pub mod pipeline;
pub mod process;
pub mod publish;
pub mod query;
pub mod resources;
pub mod service;
pub mod source;
