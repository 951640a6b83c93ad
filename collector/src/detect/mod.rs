//! Detectors: each looks at an enriched event and says what it concludes.

pub mod engines;
pub mod heuristics;
pub mod intel;
pub mod reload;
pub mod rules;

use protocol::{ActionKind, Detector, Severity};

/// One detector's conclusion about one event, before it becomes a [`protocol::Finding`].
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub detector: Detector,
    pub rule_id: String,
    pub title: String,
    pub description: Option<String>,
    pub author: Option<String>,
    pub severity: Severity,
    pub tags: Vec<String>,
    pub actions: Vec<ActionKind>,
}

/// Every detector the collector runs, in order: the built-in heuristics (tuned by the
/// policy), the policy's rules and Sigma rules, then threat intelligence.
pub struct Detectors {
    heuristics: heuristics::Heuristics,
    rules: rules::ActiveRules,
    intel: Option<intel::IntelDetector>,
}

impl Detectors {
    pub fn new(
        heuristics: heuristics::Heuristics,
        rules: rules::ActiveRules,
        intel: Option<intel::IntelDetector>,
    ) -> Self {
        Detectors {
            heuristics,
            rules,
            intel,
        }
    }

    /// Threat intelligence, when configured (hash lookups and verdicts go through it).
    pub fn intel(&mut self) -> Option<&mut intel::IntelDetector> {
        self.intel.as_mut()
    }

    /// The rules in force (the latest successful load).
    pub fn engine(&mut self) -> &std::sync::Arc<::rules::Engine> {
        self.rules.current()
    }

    /// The built-in heuristics and the settings the policy in force gives them (host state
    /// queries classify live processes with them).
    pub fn heuristics(&mut self) -> (&heuristics::Heuristics, std::sync::Arc<::rules::Engine>) {
        let engine = self.rules.current().clone();
        (&self.heuristics, engine)
    }

    pub fn evaluate(&mut self, event: &protocol::Event) -> Vec<Detection> {
        let mut out = Vec::new();
        let engine = self.rules.current();
        self.heuristics
            .evaluate(event, engine.heuristics(), &mut out);
        for hit in engine.evaluate(&::rules::MatchInput::from_event(event)) {
            out.push(Detection::from(&*hit.rule));
        }
        if let Some(intel) = &self.intel {
            intel.on_connect(event, &mut out);
            intel.evaluate(event, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HeuristicsSection;
    use protocol::*;

    fn event(argv: &[&str], detail: EventDetail) -> Event {
        Event {
            time: Timestamp::default(),
            host: "h".into(),
            process: Process {
                ppid: 1,
                ..Process::new(
                    "00000001-5-6-0".parse().unwrap(),
                    argv[0],
                    argv.iter().map(|s| s.to_string()).collect(),
                )
            },
            ancestry: vec![],
            detail,
        }
    }

    fn detectors(texts: &[(&str, &str)]) -> Detectors {
        let engine = ::rules::Engine::from_texts(texts.iter().copied()).unwrap();
        Detectors::new(
            heuristics::Heuristics::new(&HeuristicsSection::default(), vec![]),
            rules::ActiveRules::fixed(engine),
            None,
        )
    }

    const SIGMA: &str =
        "title: Local account discovery\nid: 0b45e3d6-42c6-47d8-a478-df6bd6cf534c\n\
        author: Alice\nlevel: low\ntags: [attack.discovery, attack.t1087.001]\n\
        logsource: {product: linux, category: process_creation}\n\
        detection:\n  sel:\n    Image|endswith: /id\n  condition: sel\n";

    const POLICY: &str = "heuristics:\n  script_engine_background:\n    severity: high\n    actions: [kill]\n\
        rules:\n  - id: big\n    title: Big\n    severity: medium\n    actions: [log]\n    match:\n      rss_above_mb: 64\n";

    #[test]
    fn sigma_and_policy_matches_carry_the_rule_metadata() {
        let mut d = detectors(&[("s.yml", SIGMA), ("p.yaml", POLICY)]);
        let found = d.evaluate(&event(
            &["/usr/bin/id"],
            EventDetail::Exec(ExecEvent::default()),
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(
            (f.detector, f.rule_id.as_str()),
            (Detector::Sigma, "0b45e3d6-42c6-47d8-a478-df6bd6cf534c")
        );
        assert_eq!(
            (f.title.as_str(), f.author.as_deref(), f.severity),
            ("Local account discovery", Some("Alice"), Severity::Low)
        );
        assert_eq!(f.tags, ["attack.discovery", "attack.t1087.001"]);
    }

    #[test]
    fn memory_samples_feed_the_memory_rules_at_their_threshold() {
        let mut d = detectors(&[("p.yaml", POLICY)]);
        let sample = |mb: u64| {
            event(
                &["/usr/bin/cat"],
                EventDetail::MemorySample(MemorySampleEvent {
                    rss_bytes: mb << 20,
                }),
            )
        };
        assert!(
            d.evaluate(&sample(64)).is_empty(),
            "64 MB is not above 64 MB"
        );
        let found = d.evaluate(&sample(65));
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].detector, found[0].rule_id.as_str()),
            (Detector::Policy, "big")
        );
        assert_eq!(found[0].actions, [ActionKind::Log]);
        // An exec carries no measurement: the memory rule does not apply.
        assert!(d
            .evaluate(&event(
                &["/usr/bin/cat"],
                EventDetail::Exec(ExecEvent::default())
            ))
            .is_empty());
    }

    #[test]
    fn the_policy_tunes_the_built_in_heuristics() {
        let exec = || event(&["/usr/bin/perl"], EventDetail::Exec(ExecEvent::default()));
        let mut d = detectors(&[("p.yaml", POLICY)]);
        let found = d.evaluate(&exec());
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].rule_id.as_str(), found[0].severity),
            (heuristics::SCRIPT_ENGINE_BACKGROUND, Severity::High)
        );
        assert_eq!(found[0].actions, [ActionKind::Kill]);
        let mut off = detectors(&[(
            "p.yaml",
            "heuristics:\n  script_engine_background:\n    enabled: false\n",
        )]);
        assert!(off.evaluate(&exec()).is_empty());
    }

    /// What the event path pays per event with the shared corpus and the example policy
    /// loaded: `cargo test --release -p osprey-collector -- --ignored --nocapture cost`.
    #[test]
    #[ignore = "a measurement; run in release"]
    fn cost_per_event_with_the_corpus_and_the_example_policy() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let paths = [
            root.join("deploy/policy.yaml"),
            root.join("../shared/sigma/rules/linux"),
        ];
        let started = std::time::Instant::now();
        let engine = ::rules::Engine::load(&paths).unwrap();
        let load = started.elapsed();
        let mut d = Detectors::new(
            heuristics::Heuristics::new(&HeuristicsSection::default(), vec![]),
            rules::ActiveRules::fixed(engine),
            None,
        );
        let exec = |argv: &[&str]| event(argv, EventDetail::Exec(ExecEvent::default()));
        let mut events = [
            exec(&["/usr/bin/ls", "-la", "/home/alice/src"]),
            exec(&[
                "/usr/lib/gcc/x86_64-linux-gnu/12/cc1",
                "-quiet",
                "hello.c",
                "-o",
                "/tmp/ccAbc.s",
            ]),
            exec(&["/usr/bin/git", "status", "--porcelain"]),
            exec(&["/usr/bin/cat", "/etc/passwd"]),
            exec(&[
                "/usr/bin/python3",
                "-c",
                "import socket; socket.create_connection(('10.0.0.1', 443))",
            ]),
            event(
                &["/usr/bin/curl", "https://example.org/"],
                EventDetail::Fork(ForkEvent {}),
            ),
        ];
        events[0].ancestry = vec![Ancestor {
            exec_id: "00000001-4-5-0".parse().unwrap(),
            pid: 4,
            name: "bash".into(),
            exe: "/usr/bin/bash".into(),
            argv: vec!["-bash".into()],
            tty: Some("pts/0".into()),
        }];
        let rounds = 200_000;
        let started = std::time::Instant::now();
        let mut found = 0;
        for i in 0..rounds {
            found += d.evaluate(&events[i % events.len()]).len();
        }
        let per_event = started.elapsed().as_nanos() as f64 / rounds as f64;
        eprintln!("load {load:?}; {per_event:.0} ns per event ({found} detections)");
    }
}
