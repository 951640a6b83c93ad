//! The Osprey collector: one per host. See DESIGN.md for the data flow:
//! source → process table → enrichment → detectors → findings → publisher.

pub mod publish;
pub mod source;
pub mod process;
