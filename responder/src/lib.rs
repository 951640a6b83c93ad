//! `osprey-responder`: consumes findings through a durable JetStream consumer, maps them
//! through the response policy and the safety controls, and sends signed commands to the
//! hosts' actuators. Every decision is journaled before it is acted on, and audited. See
//! docs/responder.md.

pub mod audit;
pub mod config;
pub mod control;
pub mod failpoint;
pub mod journal;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod responder;
pub mod silence;
