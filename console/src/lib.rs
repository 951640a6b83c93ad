//! `osprey-console`: the fleet's web console and HTTP API (docs/console.md).
//!
//! ```text
//! NATS ─ OSPREY_FINDINGS (durable consumer) ─┐
//!      ─ osprey.heartbeat.*                  ├─► ingest ─► store (SQLite) ◄─ api ◄─ page / curl
//!      ─ osprey.audit[.>]                    ┘      └─► live (SSE) ────────────┘
//! api ─► client (signed commands, approvals, responder control) ─► NATS
//! ```

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod ingest;
pub mod metrics;
pub mod server;
pub mod store;
pub mod web;
