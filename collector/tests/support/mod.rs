//! Helpers shared by the collector's integration tests. Each test binary uses a subset.
#![allow(dead_code)]

pub mod nats;
