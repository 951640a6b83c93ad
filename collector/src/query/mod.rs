//! Host state queries (`osprey.query.<host>`, request/reply): a read-only, bounded, paged look
//! at the live process table for operators (`osprey ps`, `osprey top`).
//!
//! The table belongs to the pipeline's thread, so the pipeline answers: the [`server`] task
//! decodes a request and hands it over a bounded channel, the pipeline builds the
//! [`Snapshot`](protocol::Snapshot) between two event batches ([`snapshot`]) and the server
//! encodes and sends it. Answers are exact (a process that started a millisecond ago is
//! there) and cost nothing while nobody asks, where a periodically published copy of the
//! table would cost its rebuild every period and be stale. What the table does not hold —
//! each process's recent connections, its findings and its last CPU/RSS sample — is kept in
//! [`activity`], bounded.

pub mod activity;
pub mod server;
pub mod snapshot;

pub use activity::Activity;
pub use server::{QueryRequest, QueryServer};
