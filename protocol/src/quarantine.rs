//! The JSON sidecar written next to each quarantined file (`<id>.json` beside `<id>`), read
//! by `osprey quarantine list|restore`.

use serde::{Deserialize, Serialize};

use crate::{FindingId, Timestamp};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// Name of the quarantined file inside the quarantine directory.
    pub id: String,
    pub original_path: String,
    pub sha256: String,
    pub time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding_id: Option<FindingId>,
    /// Permission bits, owner and group before quarantine (restored by `restore`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// `original_path` is in another mount namespace (a container's) than the host's:
    /// `restore` does not put it back by itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub foreign_namespace: bool,
    /// Other names (hard links) the file still has, when it was quarantined anyway by
    /// configuration: they keep pointing at it, now mode 000.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub other_links: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
