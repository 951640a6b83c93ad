//! The shared Sigma corpus loads, and nearly all of it evaluates on this sensor.

mod common;

use rules::{check, Engine, RuleState};

#[test]
fn every_shared_rule_parses_and_nearly_all_evaluate() {
    let corpus = common::sigma_corpus();
    let report = check(&[&corpus]).unwrap_or_else(|e| panic!("corpus does not load:\n{e}"));
    let shown = report.to_string();
    println!("{shown}");
    assert!(shown.starts_with("127 file(s), 127 rule(s): "), "{shown}");
    assert!(
        shown.contains("field LogonId is not produced by the sensor"),
        "{shown}"
    );
    assert_eq!(report.rules.len(), 127, "the corpus has 127 rules");
    assert!(
        report.evaluating() >= 120,
        "only {} rules evaluate",
        report.evaluating()
    );
    for rule in report.not_evaluating() {
        let reason = rule.reason().unwrap_or_default();
        assert!(!reason.trim().is_empty(), "{} has no reason", rule.id);
        assert!(matches!(rule.state, RuleState::Unsupported(_)));
    }
    let engine = Engine::load(&[&corpus]).expect("loads");
    assert_eq!(
        engine.rules_for(rules::SubjectKind::Exec) + engine.rules_for(rules::SubjectKind::Connect),
        report.evaluating()
    );
}
