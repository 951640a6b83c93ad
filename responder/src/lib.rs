//! `osprey-responder`: consumes findings through a durable JetStream consumer, maps them
//! through the response policy and the safety controls, and sends signed commands to the
//! hosts' actuators. Every decision is audited. See docs/responder.md.

pub mod audit;
pub mod config;
pub mod control;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod processed;
pub mod responder;
pub mod silence;
