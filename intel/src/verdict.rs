//! What the intel crate tells its caller: VirusTotal verdicts about executables and offline
//! feed hits. The collector maps them into findings and rule inputs.

use protocol::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Sha256;

/// VirusTotal's opinion of one file, from a lookup or from the cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub sha256: Sha256,
    /// False when VirusTotal has never seen the file (HTTP 404): every count is then 0.
    pub known: bool,
    pub malicious: u32,
    pub suspicious: u32,
    pub harmless: u32,
    pub undetected: u32,
    /// Every engine that reported, including those that timed out, failed or do not support
    /// the file type.
    pub engines: u32,
    /// The report page for humans.
    pub link: String,
    /// When VirusTotal answered (for a cache hit: the original lookup).
    pub looked_up_at: Timestamp,
    pub source: VerdictSource,
}

/// Where a [`Verdict`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictSource {
    /// Asked just now (a file lookup, or the analysis of an upload).
    Virustotal,
    /// A fresh entry of the verdict cache.
    Cache,
}

impl VerdictSource {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictSource::Virustotal => "virustotal",
            VerdictSource::Cache => "cache",
        }
    }
}

/// Engine counts of one analysis (`last_analysis_stats`, or an analysis' `stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub malicious: u32,
    pub suspicious: u32,
    pub harmless: u32,
    pub undetected: u32,
    pub engines: u32,
}

/// The public report page of a file.
pub fn report_link(sha256: &Sha256) -> String {
    format!("https://www.virustotal.com/gui/file/{sha256}")
}

impl Verdict {
    /// A verdict just received from VirusTotal (`counts` is `None` for an unknown file).
    pub(crate) fn new(sha256: Sha256, counts: Option<Counts>, looked_up_at: Timestamp) -> Self {
        let c = counts.unwrap_or_default();
        Verdict {
            sha256,
            known: counts.is_some(),
            malicious: c.malicious,
            suspicious: c.suspicious,
            harmless: c.harmless,
            undetected: c.undetected,
            engines: c.engines,
            link: report_link(&sha256),
            looked_up_at,
            source: VerdictSource::Virustotal,
        }
    }

    /// What the policy's `intel.detections_above` compares: engines calling the file
    /// malicious or suspicious.
    pub fn detections(&self) -> u32 {
        self.malicious.saturating_add(self.suspicious)
    }
}

impl From<&Verdict> for rules::IntelVerdict {
    fn from(v: &Verdict) -> Self {
        rules::IntelVerdict {
            detections: v.detections(),
            engines: v.engines,
        }
    }
}

/// One VirusTotal verdict and everyone who asked for it.
#[derive(Clone, Debug)]
pub struct Answer<R> {
    pub verdict: Verdict,
    /// Every requester of this hash since the last answer (de-duplicated lookups).
    pub requesters: Vec<R>,
}

/// What an offline feed lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedKind {
    /// IP addresses and CIDR ranges, matched against connect destinations.
    Ip,
    /// SHA-256 digests, matched against executables.
    Sha256,
}

impl FeedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::Ip => "ip",
            FeedKind::Sha256 => "sha256",
        }
    }
}

/// An address or hash found in a feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedHit {
    /// The feed's configured name.
    pub feed: String,
    /// The feed entry that matched: a CIDR (`203.0.113.0/24`, `198.51.100.7/32`) or a digest.
    pub entry: String,
    pub kind: FeedKind,
}
