//! Enrichment: what the kernel record doesn't carry — user names, container ids, executable
//! hashes — each cached so the hot path rarely leaves memory.

pub mod container;
pub mod hash;
pub mod users;

pub use container::ContainerIds;
pub use hash::{ExeHashes, HashResult};
pub use users::UserNames;
