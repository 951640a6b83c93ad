//! Threat intelligence as a detector: destinations and executable hashes matched against
//! offline feeds on the event loop (a lock-free lookup), and hashes looked up at VirusTotal
//! off it — the verdict arrives later, as an intel verdict event the rules see
//! (`intel.detections_above`) and that raises an `intel` finding when engines flag the file.

use std::path::{Path, PathBuf};

use intel::{Answer, FeedHit, Feeds, IntelConfig, Sha256, VirusTotal};
use protocol::{
    Detector, Event, EventDetail, ExecId, IntelVerdictEvent, Process, Severity, Timestamp,
};
use tokio::sync::mpsc;

use super::Detection;
use crate::cache::CountedLru;

pub const FEED_DESTINATION: &str = "osprey.intel.feed-destination";
pub const FEED_EXECUTABLE: &str = "osprey.intel.feed-executable";
pub const VIRUSTOTAL: &str = "osprey.intel.virustotal";

/// Engines flagging a file from which its finding is high (below: medium).
const HIGH_FROM_DETECTIONS: u32 = 5;
/// Verdicts remembered on the event loop, so a binary run again is judged at once.
const VERDICTS_REMEMBERED: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum IntelStartError {
    #[error("cannot start the threat-intel feeds: {0}")]
    Feeds(std::io::Error),
    #[error(transparent)]
    VirusTotal(#[from] intel::StartError),
}

/// VirusTotal's answers, one per hash looked up, naming the processes that asked.
pub type Answers = mpsc::Receiver<Answer<ExecId>>;

pub struct IntelDetector {
    feeds: Feeds,
    virustotal: Option<VirusTotal<ExecId>>,
    verdicts: CountedLru<Sha256, IntelVerdictEvent>,
}

impl IntelDetector {
    /// Starts the feeds and, when configured, VirusTotal lookups with their verdict cache
    /// in `cache_path`; verdicts arrive on the returned receiver. Executables under
    /// `safe_paths` are never uploaded.
    pub fn start(
        config: &IntelConfig,
        cache_path: &Path,
        safe_paths: &[PathBuf],
    ) -> Result<(IntelDetector, Option<Answers>), IntelStartError> {
        let feeds =
            Feeds::start(&config.feeds, &config.feeds_dir).map_err(IntelStartError::Feeds)?;
        let (virustotal, answers) = match &config.virustotal {
            Some(vt) => {
                let mut vt = vt.clone();
                vt.upload.exclude.extend(safe_paths.iter().cloned());
                let (client, answers) = VirusTotal::start(&vt, cache_path)?;
                (Some(client), Some(answers))
            }
            None => (None, None),
        };
        Ok((
            IntelDetector {
                feeds,
                virustotal,
                verdicts: CountedLru::new(VERDICTS_REMEMBERED),
            },
            answers,
        ))
    }

    /// Feed hits on a connect's destination.
    pub fn on_connect(&self, event: &Event, out: &mut Vec<Detection>) {
        let EventDetail::Connect(c) = &event.detail else {
            return;
        };
        for hit in self.feeds.match_ip(c.destination_ip) {
            out.push(feed_detection(
                FEED_DESTINATION,
                format!(
                    "{} connected to {}:{}, listed in threat feed {} ({})",
                    event.process.name, c.destination_ip, c.destination_port, hit.feed, hit.entry
                ),
                &hit,
            ));
        }
    }

    /// The hash of a process's executable is known: feed hits on it (returned as a verdict
    /// event per feed), and a VirusTotal verdict — at once when remembered, else asked for
    /// (it arrives on the answers channel).
    pub fn on_hash(&mut self, process: &Process, sha256: &str) -> Vec<IntelVerdictEvent> {
        let Ok(sha) = sha256.parse::<Sha256>() else {
            return Vec::new();
        };
        let mut out: Vec<IntelVerdictEvent> = self
            .feeds
            .match_sha256(&sha)
            .into_iter()
            .map(|hit| IntelVerdictEvent {
                sha256: sha256.to_string(),
                source: hit.feed,
                ..Default::default()
            })
            .collect();
        if let Some(known) = self.verdicts.get(&sha) {
            out.push(known.clone());
        } else if let Some(vt) = &self.virustotal {
            let exe = Some(PathBuf::from(&process.exe)).filter(|p| p.is_absolute());
            if let Err(e) = vt.lookup(sha, exe, process.exec_id) {
                tracing::debug!("VirusTotal lookup of {sha} not queued: {e}");
            }
        }
        out
    }

    /// A VirusTotal answer as the verdict event of its requesters (remembered for the next
    /// process running the same file).
    pub fn on_answer(&mut self, answer: &Answer<ExecId>) -> IntelVerdictEvent {
        let v = &answer.verdict;
        let event = IntelVerdictEvent {
            sha256: v.sha256.to_string(),
            source: "virustotal".into(),
            malicious: v.malicious,
            suspicious: v.suspicious,
            engines: v.engines,
            link: v.known.then(|| v.link.clone()),
        };
        if v.known {
            self.verdicts.insert(v.sha256, event.clone());
        }
        event
    }

    /// What a verdict event concludes on its own: a feed listing the hash, or engines
    /// flagging it. (Policy rules on `intel.detections_above` see the same event.)
    pub fn evaluate(&self, event: &Event, out: &mut Vec<Detection>) {
        let EventDetail::IntelVerdict(v) = &event.detail else {
            return;
        };
        if v.engines == 0 && v.source != "virustotal" {
            let hit = FeedHit {
                feed: v.source.clone(),
                entry: v.sha256.clone(),
                kind: intel::FeedKind::Sha256,
            };
            out.push(feed_detection(
                FEED_EXECUTABLE,
                format!(
                    "{} runs {}, whose sha256 is listed in threat feed {}",
                    event.process.name, event.process.exe, v.source
                ),
                &hit,
            ));
        } else if v.detections() > 0 {
            out.push(Detection {
                detector: Detector::Intel,
                rule_id: VIRUSTOTAL.into(),
                title: format!(
                    "{} is flagged by {} of {} VirusTotal engines ({} malicious, {} suspicious)",
                    event.process.exe,
                    v.detections(),
                    v.engines,
                    v.malicious,
                    v.suspicious
                ),
                description: v.link.clone().map(|l| format!("Report: {l}")),
                author: None,
                severity: if v.detections() >= HIGH_FROM_DETECTIONS {
                    Severity::High
                } else {
                    Severity::Medium
                },
                tags: vec!["attack.execution".into(), "attack.t1204".into()],
                actions: Vec::new(),
            });
        }
    }

    /// Lookups and feeds, for heartbeats and logs.
    pub fn stats(&self) -> Option<intel::LookupStats> {
        self.virustotal.as_ref().map(VirusTotal::stats)
    }

    /// Re-reads the feed files (SIGHUP).
    pub fn reload_feeds(&self) {
        self.feeds.reload();
    }
}

fn feed_detection(rule_id: &str, title: String, hit: &FeedHit) -> Detection {
    Detection {
        detector: Detector::Intel,
        rule_id: rule_id.into(),
        title,
        description: Some(format!(
            "Threat feed {} lists {} ({}).",
            hit.feed,
            hit.entry,
            hit.kind.as_str()
        )),
        author: None,
        severity: Severity::High,
        tags: vec!["attack.command_and_control".into()],
        actions: Vec::new(),
    }
}

/// The event a verdict becomes for one process: its trigger, and what rules evaluate.
pub fn verdict_event(
    host: &str,
    process: Process,
    ancestry: Vec<protocol::Ancestor>,
    verdict: IntelVerdictEvent,
) -> Event {
    Event {
        time: Timestamp::now(),
        host: host.to_string(),
        process,
        ancestry,
        detail: EventDetail::IntelVerdict(verdict),
    }
}
