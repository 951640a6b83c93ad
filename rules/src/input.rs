//! What the engine looks at: one event (or a periodic sample) of one process, with the
//! optional measurements the collector attaches to it.

use protocol::{Ancestor, ConnectEvent, Event, EventDetail, Process};
use serde::{Deserialize, Serialize};

/// The platform an input comes from. Sigma rules apply only to inputs of their `product`, so
/// the Windows rule corpus can be loaded next to the Linux one and apply to Windows events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Platform {
    Linux,
    Windows,
    Macos,
}

impl Platform {
    /// The platform this binary was built for: where the collector runs, its events come from.
    pub const fn host() -> Self {
        if cfg!(windows) {
            Platform::Windows
        } else if cfg!(target_os = "macos") {
            Platform::Macos
        } else {
            Platform::Linux
        }
    }

    /// The platform a Sigma `product` names (any case), if the sensor runs there.
    pub fn from_product(name: &str) -> Option<Self> {
        [Platform::Linux, Platform::Windows, Platform::Macos]
            .into_iter()
            .find(|p| name.eq_ignore_ascii_case(p.as_str()))
    }

    /// The Sigma `product` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Linux => "linux",
            Platform::Windows => "windows",
            Platform::Macos => "macos",
        }
    }
}

/// What an input is about.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subject<'a> {
    /// A new program image: Sigma `process_creation`.
    Exec,
    /// An outbound connection attempt: Sigma `network_connection`.
    Connect(&'a ConnectEvent),
    /// A periodic look at a living process (resident memory, a late threat-intel verdict).
    Sample,
    /// Fork and exit events: no rule applies to them.
    Other,
}

impl Subject<'_> {
    pub fn kind(&self) -> Option<SubjectKind> {
        match self {
            Subject::Exec => Some(SubjectKind::Exec),
            Subject::Connect(_) => Some(SubjectKind::Connect),
            Subject::Sample => Some(SubjectKind::Sample),
            Subject::Other => None,
        }
    }
}

/// The kinds of input rules can apply to (a policy rule's `on:` list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    Exec,
    Connect,
    Sample,
}

impl SubjectKind {
    pub const ALL: [SubjectKind; 3] =
        [SubjectKind::Exec, SubjectKind::Connect, SubjectKind::Sample];

    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Exec => "exec",
            SubjectKind::Connect => "connect",
            SubjectKind::Sample => "sample",
        }
    }
}

/// A threat-intel verdict about the process's executable (filled by the intel detector;
/// `intel` builds it from a VirusTotal verdict with `IntelVerdict::from(&verdict)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntelVerdict {
    /// How many engines flag the executable as malicious or suspicious: what
    /// `intel.detections_above` compares.
    pub detections: u32,
    /// How many engines reported (0 when the file is unknown).
    pub engines: u32,
}

/// One input to [`crate::Engine::evaluate`].
///
/// Optional measurements are `None` when the collector has none; a rule that needs one then
/// does not match.
#[derive(Clone, Copy, Debug)]
pub struct MatchInput<'a> {
    pub process: &'a Process,
    /// Nearest parent first.
    pub ancestry: &'a [Ancestor],
    pub subject: Subject<'a>,
    pub platform: Platform,
    /// Resident set size in bytes, from a sample the collector took.
    pub rss_bytes: Option<u64>,
    pub intel: Option<IntelVerdict>,
}

impl<'a> MatchInput<'a> {
    /// The input for one enriched event, on the host's platform. A memory sample event is a
    /// [`Subject::Sample`] carrying its resident set size.
    pub fn from_event(event: &'a Event) -> Self {
        let (subject, rss_bytes, intel) = match &event.detail {
            EventDetail::Exec(_) => (Subject::Exec, None, None),
            EventDetail::Connect(connect) => (Subject::Connect(connect), None, None),
            EventDetail::MemorySample(sample) => (Subject::Sample, Some(sample.rss_bytes), None),
            EventDetail::IntelVerdict(v) => (
                Subject::Sample,
                None,
                Some(IntelVerdict {
                    detections: v.detections(),
                    engines: v.engines,
                }),
            ),
            EventDetail::Fork(_) | EventDetail::Exit(_) | EventDetail::Close(_) => {
                (Subject::Other, None, None)
            }
        };
        MatchInput {
            process: &event.process,
            ancestry: &event.ancestry,
            subject,
            platform: Platform::host(),
            rss_bytes,
            intel,
        }
    }

    /// A periodic sample of a living process; attach what was measured with the `with_*`
    /// methods.
    pub fn sample(process: &'a Process, ancestry: &'a [Ancestor]) -> Self {
        MatchInput {
            process,
            ancestry,
            subject: Subject::Sample,
            platform: Platform::host(),
            rss_bytes: None,
            intel: None,
        }
    }

    pub fn with_rss_bytes(mut self, bytes: u64) -> Self {
        self.rss_bytes = Some(bytes);
        self
    }

    pub fn with_intel(mut self, verdict: IntelVerdict) -> Self {
        self.intel = Some(verdict);
        self
    }

    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }
}
