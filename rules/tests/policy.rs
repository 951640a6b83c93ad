//! The policy file: the example loads and fires as documented; errors are located.

mod common;

use std::io::Write;

use common::{connect, example_policy, exec};
use protocol::{ActionKind, Detector, Severity, TransportProtocol::Tcp};
use rules::{Engine, IntelVerdict, MatchInput, ProblemKind, RuleState, SubjectKind};

const MIB: u64 = 1 << 20;

fn example() -> Engine {
    Engine::load(&[example_policy()]).unwrap_or_else(|e| panic!("example policy:\n{e}"))
}

fn ids(engine: &Engine, input: &MatchInput<'_>) -> Vec<String> {
    engine
        .evaluate(input)
        .iter()
        .map(|m| m.id.clone())
        .collect()
}

#[test]
fn example_policy_loads_with_its_heuristics() {
    let engine = example();
    let report = engine.report();
    println!("{report}");
    assert_eq!(report.rules.len(), 5);
    assert_eq!(report.evaluating(), 3);
    assert!(report
        .not_evaluating()
        .all(|r| r.state == RuleState::Disabled && r.reason().is_some()));
    assert_eq!(
        report.heuristics_source.as_deref(),
        Some(example_policy().as_path())
    );
    let h = engine.heuristics();
    assert!(h.script_engine_network.enabled && h.script_engine_background.enabled);
    assert_eq!(h.script_engine_network.severity, Severity::High);
    assert_eq!(h.script_engine_background.severity, Severity::Medium);
    assert_eq!(engine.rules_for(SubjectKind::Exec), 3);
    assert_eq!(engine.rules_for(SubjectKind::Sample), 3);
}

#[test]
fn virus_rule_fires_on_a_process_named_virus() {
    let engine = example();
    for (exe, argv0) in [("/tmp/virus", "virus"), ("/home/a/VIRUS.EXE", "VIRUS.EXE")] {
        let event = exec(&[argv0], exe, Some(exe));
        let hits = engine.evaluate(&MatchInput::from_event(&event));
        assert_eq!(hits.len(), 1, "{exe}");
        let hit = &hits[0];
        assert_eq!(hit.id, "osprey-policy-virus-name");
        assert_eq!(hit.detector, Detector::Policy);
        assert_eq!(hit.severity, Severity::Critical);
        assert_eq!(hit.actions, vec![ActionKind::Kill, ActionKind::Quarantine]);
        assert_eq!(hit.tags, vec!["attack.execution", "attack.t1204.002"]);
        let finding = hit.to_finding(&event);
        assert_eq!(
            finding.recommended_actions,
            vec![ActionKind::Kill, ActionKind::Quarantine]
        );
    }
    let benign = exec(&["virusscan"], "/usr/bin/virusscan", None);
    assert!(engine.evaluate(&MatchInput::from_event(&benign)).is_empty());
}

#[test]
fn memory_rule_fires_only_above_the_threshold() {
    let engine = example();
    let event = exec(&["postgres"], "/usr/lib/postgresql/15/bin/postgres", None);
    let (p, a) = (&event.process, event.ancestry.as_slice());
    let rule = "osprey-policy-large-rss";
    assert!(!ids(&engine, &MatchInput::sample(p, a)).contains(&rule.to_string()));
    assert!(
        !ids(&engine, &MatchInput::sample(p, a).with_rss_bytes(500 * MIB))
            .contains(&rule.to_string())
    );
    assert_eq!(
        ids(
            &engine,
            &MatchInput::sample(p, a).with_rss_bytes(500 * MIB + 1)
        ),
        vec![rule]
    );
    assert_eq!(
        ids(&engine, &MatchInput::sample(p, a).with_rss_bytes(8 << 30)),
        vec![rule]
    );
    // Exec events carry no sample unless the collector attaches one.
    assert!(engine.evaluate(&MatchInput::from_event(&event)).is_empty());
    let hit = &engine.evaluate(&MatchInput::sample(p, a).with_rss_bytes(600 * MIB))[0];
    assert_eq!(
        (hit.severity, hit.actions.as_slice()),
        (Severity::Low, &[ActionKind::Log][..])
    );
}

#[test]
fn intel_rule_needs_a_verdict_above_three() {
    let engine = example();
    let event = exec(&["dropper"], "/tmp/dropper", None);
    let sample = MatchInput::sample(&event.process, &event.ancestry);
    let verdict = |detections| IntelVerdict {
        detections,
        engines: 70,
    };
    assert!(engine.evaluate(&sample).is_empty());
    assert!(engine.evaluate(&sample.with_intel(verdict(3))).is_empty());
    let hits = engine.evaluate(&sample.with_intel(verdict(4)));
    assert_eq!(hits[0].id, "osprey-policy-intel-detections");
    assert_eq!(
        hits[0].actions,
        vec![
            ActionKind::Suspend,
            ActionKind::Dump,
            ActionKind::Quarantine
        ]
    );
}

fn policy(text: &str) -> Result<Engine, rules::LoadError> {
    Engine::from_texts([("policy.yaml", text)])
}

#[test]
fn network_conditions_unless_and_ancestors() {
    let engine = policy(
        r#"
rules:
  - id: tmp-shell-port
    title: t
    severity: high
    match:
      path: ["/tmp/*"]
      port: [4444, "31337-31339"]
      protocol: tcp
      ancestor: [sshd]
    unless:
      destination: [127.0.0.0/8, "::1"]
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(engine.rules_for(SubjectKind::Connect), 1);
    assert_eq!(engine.rules_for(SubjectKind::Exec), 0);
    let fires = |ip: &str, port: u16| {
        let ev = connect(&["x"], "/tmp/x", ip, port, Tcp);
        !engine.evaluate(&MatchInput::from_event(&ev)).is_empty()
    };
    assert!(fires("192.0.2.7", 4444));
    assert!(fires("192.0.2.7", 31338));
    assert!(!fires("192.0.2.7", 31340));
    assert!(!fires("127.0.0.1", 4444));
    assert!(!fires("::1", 4444));
    let ev = connect(&["x"], "/usr/bin/x", "192.0.2.7", 4444, Tcp);
    assert!(engine.evaluate(&MatchInput::from_event(&ev)).is_empty());
}

#[test]
fn heuristics_can_be_tuned_or_switched_off() {
    let engine = policy(
        "heuristics:\n  script_engine_network: { severity: critical, actions: [block] }\n  script_engine_background: { enabled: false }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let h = engine.heuristics();
    assert!(h.script_engine_network.enabled);
    assert_eq!(h.script_engine_network.severity, Severity::Critical);
    assert_eq!(h.script_engine_network.actions, vec![ActionKind::Block]);
    assert!(!h.script_engine_background.enabled);
    assert_eq!(h.script_engine_background.severity, Severity::Medium);
}

#[test]
fn broken_yaml_names_the_file_and_line() {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    write!(
        file,
        "rules:\n  - id: a\n    title: t\n    severity: high\n    match:\n      name: x\n      nmae: y\n"
    )
    .unwrap();
    let err = Engine::load(&[file.path()]).unwrap_err();
    let p = &err.problems[0];
    assert_eq!(p.kind, ProblemKind::Syntax);
    assert_eq!(p.path.as_deref(), Some(file.path()));
    assert_eq!(p.line, Some(7));
    let shown = err.to_string();
    println!("{shown}");
    assert!(
        shown.starts_with(&format!("{}:7:", file.path().display())),
        "{shown}"
    );
    assert!(shown.contains("unknown field `nmae`"), "{shown}");

    let err =
        policy("rules:\n  - id: a\n    title: t\n    severity: severe\n    match: {name: x}\n")
            .unwrap_err();
    assert_eq!(err.problems[0].line, Some(4), "{err}");
    let err = policy("rules:\n  - id: a\n   title: t\n").unwrap_err();
    assert_eq!(err.problems[0].kind, ProblemKind::Syntax);
    assert!(err.problems[0].line.is_some(), "{err}");
}

#[test]
fn semantic_errors_name_the_rule_and_field() {
    let text = r#"rules:
  - id: ok
    title: fine
    severity: low
    match:
      argv_regex: ['^ok$']
  - id: bad-regex
    title: broken
    severity: low
    match:
      name: x
      argv_regex: ['(unclosed']
  - id: bad-cidr
    title: broken
    severity: low
    match:
      destination: [10.0.0.0/33]
  - id: bad-port
    title: broken
    severity: low
    match:
      port: [99999]
  - id: empty
    title: broken
    severity: low
    match: {}
  - id: exec-network
    title: broken
    severity: low
    events: [exec]
    match:
      port: 22
"#;
    let err = policy(text).unwrap_err();
    println!("{err}");
    let found: Vec<_> = err
        .problems
        .iter()
        .map(|p| {
            (
                p.rule.as_deref().unwrap_or(""),
                p.field.as_deref().unwrap_or(""),
                p.line,
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("bad-regex", "match.argv_regex", Some(12)),
            ("bad-cidr", "match.destination", Some(17)),
            ("bad-port", "match.port", Some(22)),
            ("empty", "match", Some(26)),
            ("exec-network", "events", Some(30)),
        ]
    );
    let shown = err.to_string();
    assert!(
        shown.contains("policy.yaml:12: rule \"bad-regex\": field match.argv_regex: invalid regex"),
        "{shown}"
    );
    assert!(shown.contains("invalid CIDR \"10.0.0.0/33\""), "{shown}");
}

#[test]
fn a_failed_load_is_only_an_error() {
    // Engine::load is a pure function: the caller's engine is whatever it held before.
    let current = example();
    let next = policy("rules: [");
    assert!(next.is_err());
    let event = exec(&["virus"], "/tmp/virus", None);
    assert_eq!(current.evaluate(&MatchInput::from_event(&event)).len(), 1);
}

/// Both YAML bombs are refused with an error naming the file, before they are built: nested
/// aliases (the billion laughs) and one large anchor repeated many times (found while fuzzing
/// the loaders: yaml_serde's own repetition limit let 26 KB take 930 MB).
#[test]
fn yaml_bombs_are_refused_before_they_expand() {
    let mut laughs = vec!["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]".to_string()];
    for (prev, name) in "abcdefgh".chars().zip("bcdefghi".chars()) {
        let refs = vec![format!("*{prev}"); 9].join(", ");
        laughs.push(format!("{name}: &{name} [{refs}]"));
    }
    let laughs = laughs.join("\n") + "\nversion: 1\n";
    let list = (0..3000)
        .map(|i| format!("v{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let repeated = format!(
        "version: 1\nl: &l [{list}]\nrules:\n  - id: r\n    title: t\n    severity: low\n    \
         match:\n      argv_contains: [{}]\n",
        vec!["*l"; 3000].join(",")
    );
    for text in [laughs, repeated] {
        let err = policy(&text).expect_err("a YAML bomb does not load");
        let shown = err.to_string();
        assert!(shown.starts_with("policy.yaml:"), "{shown}");
        assert!(
            shown.contains("aliases expand this document by more than 100000 values"),
            "{shown}"
        );
    }
}

#[test]
fn policy_and_sigma_load_together_from_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(example_policy(), dir.path().join("policy.yaml")).unwrap();
    let sigma = dir.path().join("sigma/linux");
    std::fs::create_dir_all(&sigma).unwrap();
    std::fs::write(
        sigma.join("r.yml"),
        "title: t\nid: sigma-1\nlogsource: {category: process_creation, product: linux}\ndetection:\n  sel:\n    Image|endswith: /virus\n  condition: sel\n",
    )
    .unwrap();
    std::fs::write(sigma.join("notes.txt"), "ignored").unwrap();
    std::fs::write(dir.path().join(".hidden.yml"), "not: [valid").unwrap();
    let report = rules::check(&[dir.path()]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.files.len(), 2);
    assert_eq!(report.evaluating(), 4);
    let engine = Engine::load(&[dir.path()]).unwrap();
    let event = exec(&["virus"], "/tmp/virus", None);
    let hits: Vec<_> = engine
        .evaluate(&MatchInput::from_event(&event))
        .into_iter()
        .map(|m| m.id.clone())
        .collect();
    assert_eq!(hits, vec!["osprey-policy-virus-name", "sigma-1"]);
    assert!(rules::check(&[dir.path().join("missing")]).is_err());
}
