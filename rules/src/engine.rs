//! The engine: load once, evaluate every event.

use std::{ops::Deref, path::Path, sync::Arc};

use protocol::{Event, Finding, FindingId, Trigger};

use crate::{
    error::{LoadError, Problem, ProblemKind},
    input::{MatchInput, SubjectKind},
    ir::RuleInfo,
    loader::Loaded,
    matcher::{self, Matcher},
    policy::Heuristics,
    report::Report,
};

/// All rules of a load, compiled. Immutable and `Send + Sync`: share it behind an `Arc` and
/// swap the `Arc` on reload.
#[derive(Debug, Default)]
pub struct Engine {
    /// One matcher per [`SubjectKind`], indexed by `subject_index`.
    matchers: [Matcher; 3],
    heuristics: Heuristics,
    report: Report,
}

/// A rule that matched an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub rule: Arc<RuleInfo>,
}

impl Deref for Match {
    type Target = RuleInfo;
    fn deref(&self) -> &RuleInfo {
        &self.rule
    }
}

impl Match {
    /// The finding this match raises for `event`: deterministic id (host, exec id, detector,
    /// rule), the rule's metadata and recommended actions, the event as its trigger.
    pub fn to_finding(&self, event: &Event) -> Finding {
        let rule = &self.rule;
        Finding {
            id: FindingId::new(&event.host, &event.process.exec_id, rule.detector, &rule.id),
            time: event.time,
            host: event.host.clone(),
            detector: rule.detector,
            rule_id: rule.id.clone(),
            title: rule.title.clone(),
            description: rule.description.clone(),
            author: rule.author.clone(),
            severity: rule.severity,
            tags: rule.tags.clone(),
            process: event.process.clone(),
            ancestry: event.ancestry.clone(),
            triggers: vec![Trigger {
                time: event.time,
                detail: event.detail.clone(),
            }],
            recommended_actions: rule.actions.clone(),
        }
    }
}

fn subject_index(kind: SubjectKind) -> usize {
    match kind {
        SubjectKind::Exec => 0,
        SubjectKind::Connect => 1,
        SubjectKind::Sample => 2,
    }
}

impl Engine {
    /// Loads every rule of `paths` (files, or directories searched recursively for `*.yml`
    /// and `*.yaml`). Each YAML document is a Sigma rule or an Osprey policy, told apart by
    /// its keys. A pure function: on error nothing else changes, so a caller reloading keeps
    /// its current engine.
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Engine, LoadError> {
        let mut loaded = Loaded::default();
        for path in paths {
            loaded.add_path(path.as_ref());
        }
        Engine::compile(loaded)
    }

    /// Like [`Engine::load`], from texts already in memory; each is named by its path.
    pub fn from_texts<'a, P, I>(sources: I) -> Result<Engine, LoadError>
    where
        P: AsRef<Path> + 'a,
        I: IntoIterator<Item = (P, &'a str)>,
    {
        let mut loaded = Loaded::default();
        for (path, text) in sources {
            loaded.add_text(path.as_ref(), text);
        }
        Engine::compile(loaded)
    }

    fn compile(loaded: Loaded) -> Result<Engine, LoadError> {
        if !loaded.problems.is_empty() {
            return Err(LoadError {
                problems: loaded.problems,
            });
        }
        let mut matchers: [Matcher; 3] = Default::default();
        for kind in SubjectKind::ALL {
            let rules: Vec<_> = loaded
                .rules
                .iter()
                .filter(|r| r.subjects.contains(&kind))
                .collect();
            matchers[subject_index(kind)] = matcher::build(&rules)
                .map_err(|message| LoadError::single(Problem::new(ProblemKind::Build, message)))?;
        }
        let (heuristics_source, heuristics) = match loaded.heuristics {
            Some((path, heuristics)) => (Some(path), heuristics),
            None => (None, Heuristics::default()),
        };
        Ok(Engine {
            matchers,
            report: Report {
                files: loaded.files,
                rules: loaded.statuses,
                heuristics: heuristics.clone(),
                heuristics_source,
            },
            heuristics,
        })
    }

    /// The rules matching `input`, in load order. Empty for fork and exit events.
    pub fn evaluate(&self, input: &MatchInput<'_>) -> Vec<Match> {
        let mut out = Vec::new();
        self.evaluate_into(input, &mut out);
        out
    }

    /// Like [`Engine::evaluate`], appending to `out` (lets a caller reuse one vector).
    pub fn evaluate_into(&self, input: &MatchInput<'_>, out: &mut Vec<Match>) {
        if let Some(kind) = input.subject.kind() {
            self.matchers[subject_index(kind)].evaluate(input, out);
        }
    }

    /// Settings for the collector's built-in heuristics (defaults unless a policy sets them).
    pub fn heuristics(&self) -> &Heuristics {
        &self.heuristics
    }

    /// What was loaded: rules that evaluate, rules that do not and why.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// How many rules apply to inputs of `kind`.
    pub fn rules_for(&self, kind: SubjectKind) -> usize {
        self.matchers[subject_index(kind)].len()
    }
}

/// `osprey rules check PATH...`: loads the paths and returns the report (whose `Display` is
/// the human rendering), or every problem found.
pub fn check<P: AsRef<Path>>(paths: &[P]) -> Result<Report, LoadError> {
    Engine::load(paths).map(|engine| engine.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_can_be_shared_across_threads_and_swapped() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Engine>();
        shareable::<Match>();
        let empty = Engine::default();
        assert_eq!(empty.report().evaluating(), 0);
        assert_eq!(empty.heuristics(), &Heuristics::default());
    }
}
