//! Sigma modifiers and condition forms, one behaviour per test, on synthetic events.

mod common;

use common::{connect, exec};
use protocol::{Event, Severity, TransportProtocol::Tcp};
use rules::{Engine, MatchInput, Platform, ProblemKind, RuleState};

/// A one-rule engine from a detection block (indented by four spaces under `detection:`).
fn engine_for(category: &str, product: &str, detection: &str) -> Engine {
    let text = rule_text(category, product, detection);
    Engine::from_texts([("test.yml", text.as_str())])
        .unwrap_or_else(|e| panic!("rule does not load:\n{e}\n{text}"))
}

fn rule_text(category: &str, product: &str, detection: &str) -> String {
    format!(
        "title: Test rule\nid: test-rule\nauthor: Jane Doe\nlevel: high\n\
         tags:\n    - attack.discovery\n    - attack.t1033\n\
         logsource:\n    product: {product}\n    category: {category}\ndetection:\n{detection}"
    )
}

fn proc_rule(detection: &str) -> Engine {
    engine_for("process_creation", "linux", detection)
}

fn net_rule(detection: &str) -> Engine {
    engine_for("network_connection", "linux", detection)
}

fn fires(engine: &Engine, event: &Event) -> bool {
    let hits = engine.evaluate(&MatchInput::from_event(event).with_platform(Platform::Linux));
    hits.iter().any(|m| m.id == "test-rule")
}

fn run(argv: &[&str]) -> Event {
    let exe = format!("/usr/bin/{}", argv[0]);
    exec(argv, &exe, Some(&exe))
}

#[test]
fn contains_is_case_insensitive() {
    let e = proc_rule(
        "    selection:\n        CommandLine|contains: 'WHOAMI'\n    condition: selection\n",
    );
    assert!(fires(&e, &run(&["sudo", "whoami"])));
    assert!(fires(&e, &run(&["sudo", "WhoAmI"])));
    assert!(!fires(&e, &run(&["sudo", "id"])));
}

#[test]
fn re_is_case_sensitive_unless_flagged() {
    let e =
        proc_rule("    selection:\n        CommandLine|re: '\\s-O\\s'\n    condition: selection\n");
    assert!(fires(&e, &run(&["wget", "-O", "/tmp/x", "http://x"])));
    assert!(!fires(&e, &run(&["wget", "-o", "/tmp/x", "http://x"])));
    let e = proc_rule(
        "    selection:\n        CommandLine|re|i: '\\s-O\\s'\n    condition: selection\n",
    );
    assert!(fires(&e, &run(&["wget", "-o", "/tmp/x", "http://x"])));
}

#[test]
fn startswith_endswith_and_exact_values() {
    let e = proc_rule(
        "    selection:\n        CommandLine|startswith: 'SH -c '\n        Image|endswith: '/sh'\n    condition: selection\n",
    );
    assert!(fires(&e, &exec(&["sh", "-c", "true"], "/usr/bin/sh", None)));
    assert!(!fires(&e, &exec(&["bash", "sh -c x"], "/usr/bin/sh", None)));
    assert!(!fires(
        &e,
        &exec(&["sh", "-c", "true"], "/usr/bin/shx", None)
    ));
    let e = proc_rule("    selection:\n        Image: '/USR/BIN/ID'\n    condition: selection\n");
    assert!(fires(&e, &run(&["id"])));
    assert!(!fires(&e, &run(&["idx"])));
}

#[test]
fn image_matches_the_invoked_or_the_resolved_path() {
    let e = proc_rule("    selection:\n        Image|endswith: '/nc'\n    condition: selection\n");
    // Debian: /usr/bin/nc → /etc/alternatives/nc → /usr/bin/nc.openbsd
    assert!(fires(
        &e,
        &exec(
            &["nc", "-z", "127.0.0.1", "9"],
            "/usr/bin/nc.openbsd",
            Some("/usr/bin/nc")
        )
    ));
    assert!(!fires(
        &e,
        &exec(
            &["nc.openbsd"],
            "/usr/bin/nc.openbsd",
            Some("/usr/bin/nc.openbsd")
        )
    ));
    let e = proc_rule(
        "    selection:\n        Image|contains: '/python3.'\n    condition: selection\n",
    );
    assert!(fires(
        &e,
        &exec(
            &["python3"],
            "/usr/bin/python3.11",
            Some("/usr/bin/python3")
        )
    ));
}

#[test]
fn lists_are_or_and_all_makes_them_and() {
    let e = proc_rule("    selection:\n        CommandLine|contains:\n            - 'alpha'\n            - 'beta'\n    condition: selection\n");
    assert!(fires(&e, &run(&["echo", "beta"])));
    let e = proc_rule("    selection:\n        CommandLine|contains|all:\n            - 'alpha'\n            - 'beta'\n    condition: selection\n");
    assert!(!fires(&e, &run(&["echo", "beta"])));
    assert!(fires(&e, &run(&["echo", "beta", "alpha"])));
}

#[test]
fn wildcards_in_plain_values_with_escapes() {
    let e = proc_rule(
        "    selection:\n        CommandLine: 'cat /etc/*.conf'\n    condition: selection\n",
    );
    assert!(fires(&e, &run(&["cat", "/etc/resolv.conf"])));
    assert!(fires(&e, &run(&["CAT", "/etc/a/b.CONF"])));
    assert!(!fires(&e, &run(&["cat", "/etc/resolv.conf.bak"])));
    let e = proc_rule(
        "    selection:\n        CommandLine|contains: 'vir?s'\n    condition: selection\n",
    );
    assert!(fires(&e, &run(&["ls", "virus.exe"])));
    assert!(!fires(&e, &run(&["ls", "virs"])));
    let e = proc_rule(
        "    selection:\n        CommandLine|endswith: 'echo \\*'\n    condition: selection\n",
    );
    assert!(fires(&e, &run(&["echo", "*"])));
    assert!(!fires(&e, &run(&["echo", "x"])));
}

#[test]
fn cidr_numbers_and_network_fields() {
    let e = net_rule(
        "    selection:\n        DestinationIp|cidr:\n            - '10.0.0.0/8'\n            - 'fc00::/7'\n        DestinationPort: 4444\n        Initiated: 'true'\n        Protocol: tcp\n    condition: selection\n",
    );
    let bash = ["bash"];
    assert!(fires(
        &e,
        &connect(&bash, "/usr/bin/bash", "10.1.2.3", 4444, Tcp)
    ));
    assert!(fires(
        &e,
        &connect(&bash, "/usr/bin/bash", "fd00::1", 4444, Tcp)
    ));
    assert!(fires(
        &e,
        &connect(&bash, "/usr/bin/bash", "::ffff:10.9.9.9", 4444, Tcp)
    ));
    assert!(!fires(
        &e,
        &connect(&bash, "/usr/bin/bash", "11.0.0.1", 4444, Tcp)
    ));
    assert!(!fires(
        &e,
        &connect(&bash, "/usr/bin/bash", "10.1.2.3", 4445, Tcp)
    ));
    assert!(!fires(
        &e,
        &connect(
            &bash,
            "/usr/bin/bash",
            "10.1.2.3",
            4444,
            protocol::TransportProtocol::Udp
        )
    ));
}

#[test]
fn plain_addresses_compare_as_addresses() {
    let e = net_rule("    selection:\n        Image|endswith: '/bin/bash'\n    filter:\n        DestinationIp:\n            - '127.0.0.1'\n            - '0::1'\n    condition: selection and not filter\n");
    let bash = ["bash"];
    assert!(fires(
        &e,
        &connect(&bash, "/usr/bin/bash", "192.0.2.1", 80, Tcp)
    ));
    assert!(!fires(
        &e,
        &connect(&bash, "/usr/bin/bash", "127.0.0.1", 80, Tcp)
    ));
    assert!(!fires(
        &e,
        &connect(&bash, "/usr/bin/bash", "::ffff:127.0.0.1", 80, Tcp)
    ));
    assert!(!fires(&e, &connect(&bash, "/usr/bin/bash", "::1", 80, Tcp)));
    let e = net_rule(
        "    selection:\n        DestinationIp|startswith: '192.0.2.'\n    condition: selection\n",
    );
    assert!(fires(
        &e,
        &connect(&bash, "/usr/bin/bash", "192.0.2.1", 80, Tcp)
    ));
    assert!(!fires(
        &e,
        &connect(&bash, "/usr/bin/bash", "192.0.3.1", 80, Tcp)
    ));
}

#[test]
fn null_means_absent() {
    let e = proc_rule("    selection:\n        Image|endswith: '/id'\n        ParentImage: null\n    condition: selection\n");
    let mut orphan = run(&["id"]);
    orphan.ancestry.clear();
    assert!(fires(&e, &orphan));
    assert!(!fires(&e, &run(&["id"])));
}

#[test]
fn exists_and_numeric_comparisons() {
    let e = net_rule("    selection:\n        SourcePort|exists: false\n        DestinationPort|gte: 1024\n        DestinationPort|lt: 2000\n    condition: selection\n");
    assert!(fires(
        &e,
        &connect(&["x"], "/usr/bin/x", "192.0.2.1", 1024, Tcp)
    ));
    assert!(fires(
        &e,
        &connect(&["x"], "/usr/bin/x", "192.0.2.1", 1999, Tcp)
    ));
    assert!(!fires(
        &e,
        &connect(&["x"], "/usr/bin/x", "192.0.2.1", 2000, Tcp)
    ));
    assert!(!fires(
        &e,
        &connect(&["x"], "/usr/bin/x", "192.0.2.1", 80, Tcp)
    ));
}

#[test]
fn windash_accepts_slashes_and_dashes() {
    let e = proc_rule("    selection:\n        CommandLine|windash|contains: ' -enc '\n    condition: selection\n");
    assert!(fires(&e, &run(&["pwsh", "-enc", "AAA"])));
    assert!(fires(&e, &run(&["pwsh", "/enc", "AAA"])));
    assert!(fires(&e, &run(&["pwsh", "\u{2013}enc", "AAA"])));
    assert!(!fires(&e, &run(&["pwsh", "enc", "AAA"])));
}

const THREE: &str = "    selection_a:\n        CommandLine|contains: 'alpha'\n    selection_b:\n        CommandLine|contains: 'beta'\n    filter:\n        CommandLine|contains: 'gamma'\n";

fn cond(condition: &str) -> Engine {
    proc_rule(&format!("{THREE}    condition: {condition}\n"))
}

#[test]
fn one_of_pattern() {
    let e = cond("1 of selection_*");
    assert!(fires(&e, &run(&["echo", "alpha"])));
    assert!(fires(&e, &run(&["echo", "beta"])));
    assert!(!fires(&e, &run(&["echo", "gamma"])));
    let e = cond("any of selection*");
    assert!(fires(&e, &run(&["echo", "beta"])));
}

#[test]
fn all_of_pattern_and_all_of_them() {
    let e = cond("all of selection_*");
    assert!(fires(&e, &run(&["echo", "alpha", "beta"])));
    assert!(!fires(&e, &run(&["echo", "alpha"])));
    let e = cond("all of them");
    assert!(!fires(&e, &run(&["echo", "alpha", "beta"])));
    assert!(fires(&e, &run(&["echo", "alpha", "beta", "gamma"])));
    let e = cond("1 of them");
    assert!(fires(&e, &run(&["echo", "gamma"])));
}

#[test]
fn not_and_parentheses() {
    let e = cond("selection_a and not filter");
    assert!(fires(&e, &run(&["echo", "alpha"])));
    assert!(!fires(&e, &run(&["echo", "alpha", "gamma"])));
    // Without parentheses `and` binds tighter: alpha or (beta and not gamma).
    let e = cond("selection_a or selection_b and not filter");
    assert!(fires(&e, &run(&["echo", "alpha", "gamma"])));
    let e = cond("(selection_a or selection_b) and not filter");
    assert!(!fires(&e, &run(&["echo", "alpha", "gamma"])));
    assert!(fires(&e, &run(&["echo", "beta"])));
    let e = cond("not (selection_a or filter)");
    assert!(fires(&e, &run(&["echo", "beta"])));
    assert!(fires(&e, &run(&["echo", "nothing", "at", "all"])));
    assert!(!fires(&e, &run(&["echo", "gamma"])));
    let e = cond("2 of them");
    assert!(fires(&e, &run(&["echo", "gamma", "beta"])));
    assert!(!fires(&e, &run(&["echo", "gamma"])));
}

#[test]
fn list_of_maps_is_or_of_ands() {
    let e = proc_rule("    selection:\n        - Image|endswith: '/curl'\n          CommandLine|contains: ' -d '\n        - CommandLine|re: '\\s-F\\s'\n    condition: selection\n");
    assert!(fires(&e, &run(&["curl", "-d", "x"])));
    assert!(fires(&e, &run(&["wget", "-F", "x"])));
    assert!(!fires(&e, &run(&["wget", "-d", "x"])));
}

#[test]
fn logsource_and_product_decide_where_rules_apply() {
    let e =
        proc_rule("    selection:\n        Image|endswith: '/bash'\n    condition: selection\n");
    assert!(fires(&e, &run(&["bash"])));
    assert!(!fires(
        &e,
        &connect(&["bash"], "/usr/bin/bash", "192.0.2.1", 80, Tcp)
    ));
    let e = engine_for(
        "process_creation",
        "windows",
        "    selection:\n        Image|endswith: '\\cmd.exe'\n    condition: selection\n",
    );
    let ev = exec(&["cmd.exe"], "C:\\Windows\\System32\\cmd.exe", None);
    assert!(!fires(&e, &ev));
    let on_windows = MatchInput::from_event(&ev).with_platform(Platform::Windows);
    assert_eq!(e.evaluate(&on_windows).len(), 1);
}

#[test]
fn matches_carry_sigma_metadata() {
    let e =
        proc_rule("    selection:\n        Image|endswith: '/whoami'\n    condition: selection\n");
    let ev = run(&["whoami"]);
    let hits = e.evaluate(&MatchInput::from_event(&ev));
    let hit = &hits[0];
    assert_eq!(hit.title, "Test rule");
    assert_eq!(hit.author.as_deref(), Some("Jane Doe"));
    assert_eq!(hit.severity, Severity::High);
    assert_eq!(hit.tags, vec!["attack.discovery", "attack.t1033"]);
    assert_eq!(hit.detector, protocol::Detector::Sigma);
    let finding = hit.to_finding(&ev);
    assert_eq!(finding.rule_id, "test-rule");
    assert_eq!(finding.author.as_deref(), Some("Jane Doe"));
    assert_eq!(finding.process.exec_id, ev.process.exec_id);
}

fn state_of(text: &str) -> RuleState {
    let e = Engine::from_texts([("test.yml", text)]).unwrap_or_else(|e| panic!("{e}"));
    e.report().rules[0].state.clone()
}

#[test]
fn rules_that_cannot_evaluate_say_why() {
    let reason = |detection: &str, category: &str| match state_of(&rule_text(
        category, "linux", detection,
    )) {
        RuleState::Unsupported(reason) => reason,
        other => panic!("{other:?}"),
    };
    let r = reason("    selection:\n        CommandLine|base64offset|contains: 'x'\n    condition: selection\n", "process_creation");
    assert_eq!(r, "unsupported modifier base64offset");
    let r = reason("    selection:\n        DestinationHostname|endswith: '.ngrok.io'\n    condition: selection\n", "network_connection");
    assert_eq!(r, "field DestinationHostname is not produced by the sensor");
    let r = reason(
        "    keywords:\n        - 'evil'\n    condition: keywords\n",
        "process_creation",
    );
    assert!(r.contains("keyword"), "{r}");
    let r = reason(
        "    selection:\n        TargetFilename|endswith: '.so'\n    condition: selection\n",
        "file_event",
    );
    assert_eq!(
        r,
        "logsource category file_event is not produced by the sensor"
    );
    let r = reason(
        "    selection:\n        CommandLine|re: '(?<=a)b'\n    condition: selection\n",
        "process_creation",
    );
    assert!(r.contains("look-around"), "{r}");
    let r = reason(
        "    selection:\n        Image: x\n    condition: selection | count() > 5\n",
        "process_creation",
    );
    assert!(r.contains("aggregation"), "{r}");
}

#[test]
fn broken_rules_are_errors_naming_file_line_rule_and_field() {
    let text = rule_text(
        "process_creation",
        "linux",
        "    selection:\n        CommandLine|re: 'a(b'\n    condition: selection\n",
    );
    let err = Engine::from_texts([("broken.yml", text.as_str())]).unwrap_err();
    let p = &err.problems[0];
    assert_eq!(p.kind, ProblemKind::Invalid);
    assert_eq!(p.rule.as_deref(), Some("test-rule"));
    assert_eq!(p.field.as_deref(), Some("CommandLine|re"));
    assert_eq!(p.line, Some(13));
    let shown = err.to_string();
    assert!(
        shown.starts_with("broken.yml:13: rule \"test-rule\": field CommandLine|re: invalid regex"),
        "{shown}"
    );

    let text = rule_text(
        "process_creation",
        "linux",
        "    selection:\n        Image: x\n    condition: selection and filter\n",
    );
    let err = Engine::from_texts([("broken.yml", text.as_str())]).unwrap_err();
    assert!(
        err.to_string().contains("unknown selection `filter`"),
        "{err}"
    );

    let err = Engine::from_texts([("broken.yml", "title: x\ndetection: [\n")]).unwrap_err();
    assert_eq!(err.problems[0].kind, ProblemKind::Syntax);
    assert!(err.problems[0].line.is_some(), "{err}");
}

#[test]
fn duplicate_ids_are_errors() {
    let text = rule_text(
        "process_creation",
        "linux",
        "    selection:\n        Image: x\n    condition: selection\n",
    );
    let err = Engine::from_texts([("a.yml", text.as_str()), ("b.yml", text.as_str())]).unwrap_err();
    assert_eq!(err.problems[0].kind, ProblemKind::Duplicate);
    assert!(err.to_string().contains("also used in a.yml"), "{err}");
}

#[test]
fn regexes_behind_literals_and_under_not_give_the_same_results() {
    // Regexes ANDed with a literal are only run for candidate rules; results must not change.
    let e = proc_rule("    selection:\n        Image|endswith: '/wget'\n        CommandLine|re: '\\s-O\\s'\n    condition: selection\n");
    assert!(fires(&e, &run(&["wget", "-O", "/tmp/x"])));
    assert!(!fires(&e, &run(&["wget", "-o", "/tmp/x"])));
    assert!(!fires(&e, &run(&["curl", "-O", "/tmp/x"])));
    let e = proc_rule("    selection:\n        Image|endswith: '/wget'\n    filter:\n        CommandLine|re: '^wget -q'\n    condition: selection and not filter\n");
    assert!(fires(&e, &run(&["wget", "-O", "x"])));
    assert!(!fires(&e, &run(&["wget", "-q", "x"])));
    let e = proc_rule("    filter:\n        CommandLine|re: '^wget'\n    condition: not filter\n");
    assert!(fires(&e, &run(&["curl"])));
    assert!(!fires(&e, &run(&["wget"])));
}

#[test]
fn case_folding_covers_non_ascii_text() {
    let e = proc_rule(
        "    selection:\n        CommandLine|endswith: 'ÜBER.TXT'\n    condition: selection\n",
    );
    assert!(fires(&e, &run(&["cat", "/tmp/über.txt"])));
    assert!(fires(&e, &run(&["cat", "/tmp/ÜBER.txt"])));
    assert!(!fires(&e, &run(&["cat", "/tmp/uber.txt"])));
}
