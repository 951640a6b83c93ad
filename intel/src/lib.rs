//! Threat intelligence for Osprey (docs/intel.md).
//!
//! - [`VirusTotal`]: hash lookups against VirusTotal API v3, off the caller's thread,
//!   de-duplicated per hash, paced to the key's quota, backing off after 429/5xx/outages,
//!   cached in SQLite ([`VerdictCache`]), optionally uploading unknown executables.
//!   Verdicts ([`Answer`]) arrive on a `tokio::sync::mpsc` channel.
//! - [`Feeds`]: offline IP/CIDR and SHA-256 lists from files or URLs, reloaded when they
//!   change; a broken or unreachable feed keeps its previous copy. Matching is a lock-free
//!   read of the current tables, cheap enough for the event path.
//!
//! The API key ([`ApiKey`]) prints as `***` and is sent in the `x-apikey` header only.

mod cache;
mod config;
mod feeds;
mod key;
mod sha256;
mod verdict;
mod virustotal;

pub use cache::{CacheError, VerdictCache};
pub use config::{
    Column, ConfigError, FeedConfig, IntelConfig, UploadConfig, VirusTotalConfig, MAX_UPLOAD_BYTES,
};
pub use feeds::{FeedStatus, Feeds};
pub use key::ApiKey;
pub use sha256::{NotASha256, Sha256};
pub use verdict::{report_link, Answer, FeedHit, FeedKind, Verdict, VerdictSource};
pub use virustotal::{ApiError, LookupStats, Refused, StartError, VirusTotal};
