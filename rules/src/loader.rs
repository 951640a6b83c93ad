//! Reading rule files: discovery in directories, telling Sigma rules from policy files,
//! collecting every problem instead of stopping at the first.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use yaml_serde::Value;

use crate::{
    error::{Problem, ProblemKind},
    ir::{RuleInfo, RuleIr},
    policy::{self, Heuristics, PolicyFile},
    report::{RuleState, RuleStatus},
    sigma::{self, SigmaDoc},
};

/// Directories nest this deep at most: deeper is a symlink loop, not a rule tree.
const MAX_DEPTH: usize = 32;

/// Everything loaded from a set of paths, before compiling.
#[derive(Default)]
pub(crate) struct Loaded {
    pub files: Vec<PathBuf>,
    pub rules: Vec<RuleIr>,
    pub statuses: Vec<RuleStatus>,
    pub heuristics: Option<(PathBuf, Heuristics)>,
    pub problems: Vec<Problem>,
    ids: HashMap<String, PathBuf>,
}

enum Kind {
    Sigma,
    Policy,
    Empty,
}

impl Loaded {
    /// Loads a file, or every `*.yml`/`*.yaml` under a directory (recursively, in name order,
    /// skipping hidden entries).
    pub(crate) fn add_path(&mut self, path: &Path) {
        match fs::metadata(path) {
            Err(e) => self.read_problem(path, &e),
            Ok(meta) if meta.is_dir() => self.walk(path, 0),
            Ok(_) => self.add_file(path),
        }
    }

    fn read_problem(&mut self, path: &Path, e: &std::io::Error) {
        self.problems
            .push(Problem::new(ProblemKind::Read, format!("cannot read: {e}")).at(path));
    }

    fn walk(&mut self, dir: &Path, depth: usize) {
        if depth > MAX_DEPTH {
            self.problems.push(
                Problem::new(
                    ProblemKind::Read,
                    format!("directories nest deeper than {MAX_DEPTH} levels (a symlink loop?)"),
                )
                .at(dir),
            );
            return;
        }
        let mut entries: Vec<PathBuf> = match fs::read_dir(dir) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => return self.read_problem(dir, &e),
        };
        entries.sort();
        for path in entries {
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            match fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => self.walk(&path, depth + 1),
                Ok(_) if is_yaml(&path) => self.add_file(&path),
                Ok(_) => {}
                Err(e) => self.read_problem(&path, &e),
            }
        }
    }

    fn add_file(&mut self, path: &Path) {
        match fs::read_to_string(path) {
            Ok(text) => self.add_text(path, &text),
            Err(e) => self.read_problem(path, &e),
        }
    }

    /// Loads the rules of one file's text; `path` names it in reports and errors.
    pub(crate) fn add_text(&mut self, path: &Path, text: &str) {
        self.files.push(path.to_path_buf());
        // Measured before anything is built from it (a YAML bomb would be built in full).
        for doc in yaml_serde::Deserializer::from_str(text) {
            if let Err(e) = crate::expansion::check(doc, text.len()) {
                return self.problems.push(Problem::yaml(path, &e));
            }
        }
        let mut kinds = Vec::new();
        for doc in yaml_serde::Deserializer::from_str(text) {
            match Value::deserialize(doc) {
                Ok(value) => kinds.push(kind(&value)),
                Err(e) => return self.problems.push(Problem::yaml(path, &e)),
            }
        }
        let Some(kinds) = kinds.into_iter().collect::<Option<Vec<Kind>>>() else {
            return self.problems.push(
                Problem::new(
                    ProblemKind::Syntax,
                    "neither a Sigma rule (no detection) nor an Osprey policy (no rules or \
                     heuristics)",
                )
                .at(path),
            );
        };
        if kinds.iter().any(|k| matches!(k, Kind::Policy)) {
            if kinds.iter().filter(|k| !matches!(k, Kind::Empty)).count() > 1 {
                return self.problems.push(
                    Problem::new(ProblemKind::Syntax, "a policy file holds one YAML document")
                        .at(path),
                );
            }
            return self.add_policy(path, text);
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (i, (doc, kind)) in yaml_serde::Deserializer::from_str(text)
            .zip(kinds)
            .enumerate()
        {
            if !matches!(kind, Kind::Sigma) {
                continue;
            }
            let doc = match SigmaDoc::deserialize(doc) {
                Ok(doc) => doc,
                Err(e) => {
                    self.problems.push(Problem::yaml(path, &e));
                    continue;
                }
            };
            let fallback = if i == 0 {
                stem.clone()
            } else {
                format!("{stem}#{i}")
            };
            match sigma::compile(doc, path, text, fallback) {
                Ok(sigma::SigmaRule::Ready(rule)) => self.add_rule(rule, text),
                Ok(sigma::SigmaRule::Unsupported {
                    info,
                    product,
                    reason,
                }) => {
                    self.add_status(&info, product, RuleState::Unsupported(reason), text);
                }
                Err(problem) => self.problems.push(*problem),
            }
        }
    }

    fn add_policy(&mut self, path: &Path, text: &str) {
        let file: PolicyFile = match yaml_serde::from_str(text) {
            Ok(file) => file,
            Err(e) => return self.problems.push(Problem::yaml(path, &e)),
        };
        if let Some(version) = file.version.filter(|v| *v != 1) {
            self.problems.push(
                Problem::new(
                    ProblemKind::Invalid,
                    format!("policy version {version} is unknown: this engine reads version 1"),
                )
                .at(path)
                .line(crate::locate::key_line(text, 1, "version", false))
                .field("version"),
            );
        }
        if let Some(set) = file.heuristics {
            match &self.heuristics {
                Some((first, _)) => self.problems.push(
                    Problem::new(
                        ProblemKind::Invalid,
                        format!("heuristics are already set in {}", first.display()),
                    )
                    .at(path)
                    .line(crate::locate::key_line(text, 1, "heuristics", false))
                    .field("heuristics"),
                ),
                None => {
                    self.heuristics = Some((path.to_path_buf(), Heuristics::from_file(set)));
                }
            }
        }
        for rule in file.rules {
            match policy::compile_rule(rule, path, text) {
                Ok(policy::PolicyRule::Ready(rule)) => self.add_rule(rule, text),
                Ok(policy::PolicyRule::Disabled(info)) => {
                    self.add_status(&info, None, RuleState::Disabled, text);
                }
                Err(problem) => self.problems.push(*problem),
            }
        }
    }

    fn add_rule(&mut self, rule: RuleIr, text: &str) {
        if self.add_status(&rule.info, rule.product.clone(), RuleState::Evaluates, text) {
            self.rules.push(rule);
        }
    }

    /// Records a rule's status; false (and a problem) when its id is taken.
    fn add_status(
        &mut self,
        info: &RuleInfo,
        product: Option<String>,
        state: RuleState,
        text: &str,
    ) -> bool {
        if let Some(first) = self.ids.get(&info.id) {
            self.problems.push(
                Problem::new(
                    ProblemKind::Duplicate,
                    format!("the rule id is also used in {}", first.display()),
                )
                .at(&info.source)
                .line(crate::locate::rule_line(text, &info.id))
                .rule(&info.id),
            );
            return false;
        }
        self.ids.insert(info.id.clone(), info.source.clone());
        self.statuses.push(RuleStatus {
            source: info.source.clone(),
            detector: info.detector,
            id: info.id.clone(),
            title: info.title.clone(),
            product,
            state,
        });
        true
    }
}

fn is_yaml(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"))
}

/// What a YAML document is, from its top-level keys; `None` when it is neither.
fn kind(value: &Value) -> Option<Kind> {
    match value {
        Value::Null => Some(Kind::Empty),
        Value::Mapping(map) => {
            let has = |k: &str| map.contains_key(k);
            if has("detection") || has("correlation") || has("action") || has("logsource") {
                Some(Kind::Sigma)
            } else if has("rules") || has("heuristics") || has("version") {
                Some(Kind::Policy)
            } else {
                None
            }
        }
        _ => None,
    }
}
