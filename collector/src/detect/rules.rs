//! The policy file and Sigma rules as a detector: the `rules` crate's [`Engine`], compiled once
//! per load and shared behind an `Arc` that a reload swaps atomically.
//!
//! The reload side ([`super::reload`]) owns a `watch::Sender<Arc<Engine>>`; the pipeline owns
//! an [`ActiveRules`], which keeps its own clone of the current `Arc` and looks at the channel's
//! version (one atomic load) per event. Evaluating never waits for a reload, and a reload
//! never waits for an evaluation: the old engine is dropped by whoever lets go of it last.

use std::{path::PathBuf, sync::Arc};

use protocol::Detector;
use rules::{Engine, LoadError, RuleInfo};
use tokio::sync::watch;

use super::Detection;

/// The paths the rules come from: the policy file first, then the Sigma files and directories.
pub fn rule_paths(policy: Option<&PathBuf>, sigma: &[PathBuf]) -> Vec<PathBuf> {
    policy.into_iter().chain(sigma).cloned().collect()
}

/// Loads and compiles every rule of `paths` (an empty list gives the empty engine: built-in
/// heuristics with their default settings).
pub fn load(paths: &[PathBuf]) -> Result<Engine, LoadError> {
    if paths.is_empty() {
        return Ok(Engine::default());
    }
    Engine::load(paths)
}

/// One line for the log: how many rules evaluate, how many do not, the heuristics settings.
pub fn summary(engine: &Engine) -> String {
    let report = engine.report();
    let count = |detector: Detector| {
        report
            .rules
            .iter()
            .filter(|r| r.detector == detector && r.reason().is_none())
            .count()
    };
    let h = engine.heuristics();
    let show = |s: &rules::HeuristicSetting| {
        if s.enabled {
            s.severity.as_str().to_string()
        } else {
            "off".to_string()
        }
    };
    format!(
        "{} file(s), {} rule(s): {} evaluate ({} Sigma, {} policy), {} do not (`osprey rules check` says why); \
         heuristics: script_engine_network {}, script_engine_background {}",
        report.files.len(),
        report.rules.len(),
        report.evaluating(),
        count(Detector::Sigma),
        count(Detector::Policy),
        report.rules.len() - report.evaluating(),
        show(&h.script_engine_network),
        show(&h.script_engine_background),
    )
}

/// A load error on one line (the log promises one line per failed load): every problem,
/// each naming its file and line, separated by `; `.
pub fn one_line(error: &LoadError) -> String {
    error
        .problems
        .iter()
        .map(|p| p.to_string().replace(['\n', '\r'], " "))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<&RuleInfo> for Detection {
    fn from(rule: &RuleInfo) -> Self {
        Detection {
            detector: rule.detector,
            rule_id: rule.id.clone(),
            title: rule.title.clone(),
            description: rule.description.clone(),
            author: rule.author.clone(),
            severity: rule.severity,
            tags: rule.tags.clone(),
            actions: rule.actions.clone(),
        }
    }
}

/// The engine the pipeline evaluates with: the latest one the reloader published.
pub struct ActiveRules {
    updates: watch::Receiver<Arc<Engine>>,
    current: Arc<Engine>,
}

impl ActiveRules {
    pub fn new(mut updates: watch::Receiver<Arc<Engine>>) -> Self {
        let current = updates.borrow_and_update().clone();
        ActiveRules { updates, current }
    }

    /// A fixed engine, never reloaded.
    pub fn fixed(engine: Engine) -> Self {
        let (_, updates) = watch::channel(Arc::new(engine));
        ActiveRules::new(updates)
    }

    /// The current engine; picks up a reloaded one (cheap when nothing changed: one atomic
    /// load of the channel's version).
    pub fn current(&mut self) -> &Arc<Engine> {
        if self.updates.has_changed().unwrap_or(false) {
            self.current = self.updates.borrow_and_update().clone();
        }
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_rules_follow_the_published_engine() {
        let first = Engine::from_texts([(
            "a.yaml",
            "rules:\n  - id: a\n    title: A\n    severity: low\n    match:\n      name: a\n",
        )])
        .unwrap();
        let (tx, rx) = watch::channel(Arc::new(first));
        let mut active = ActiveRules::new(rx);
        assert_eq!(active.current().report().rules[0].id, "a");
        let second = Engine::from_texts([(
            "b.yaml",
            "rules:\n  - id: b\n    title: B\n    severity: low\n    match:\n      name: b\n",
        )])
        .unwrap();
        tx.send_replace(Arc::new(second));
        assert_eq!(active.current().report().rules[0].id, "b");
        drop(tx);
        assert_eq!(
            active.current().report().rules[0].id,
            "b",
            "keeps the last engine"
        );
    }

    #[test]
    fn errors_fit_on_one_line_and_name_file_and_line() {
        let err = Engine::from_texts([
            ("/etc/osprey/p.yaml", "rules:\n  - id: x\n    title: X\n    severity: low\n    match:\n      argv_regex: ['(']\n"),
            ("/etc/osprey/q.yaml", "rules: [\n"),
        ])
        .unwrap_err();
        let line = one_line(&err);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("/etc/osprey/p.yaml:6"), "{line}");
        assert!(line.contains("/etc/osprey/q.yaml:"), "{line}");
    }

    #[test]
    fn sigma_matches_become_detections_with_the_rule_metadata() {
        let engine = Engine::from_texts([(
            "s.yml",
            "title: Id\nid: 11111111-2222-3333-4444-555555555555\nauthor: Someone\nlevel: high\n\
             tags: [attack.discovery]\nlogsource: {product: linux, category: process_creation}\n\
             detection:\n  sel:\n    Image|endswith: /id\n  condition: sel\n",
        )])
        .unwrap();
        let rule = &engine.report().rules[0];
        assert_eq!(rule.detector, Detector::Sigma);
        assert!(
            summary(&engine).contains("1 evaluate (1 Sigma, 0 policy)"),
            "{}",
            summary(&engine)
        );
    }
}
