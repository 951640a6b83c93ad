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
}
