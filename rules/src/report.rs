//! What a load found: which rules evaluate, which do not and why. Rendered by
//! `osprey rules check`.

use std::{fmt, path::PathBuf};

use protocol::Detector;

use crate::policy::{HeuristicSetting, Heuristics};

/// Whether a rule takes part in matching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleState {
    Evaluates,
    /// A policy rule with `enabled: false`.
    Disabled,
    /// The rule needs something the sensor or engine lacks (a field, a modifier, a log
    /// source); the text says what.
    Unsupported(String),
}

/// One loaded rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleStatus {
    pub source: PathBuf,
    pub detector: Detector,
    pub id: String,
    pub title: String,
    /// Sigma `product`, lowercase.
    pub product: Option<String>,
    pub state: RuleState,
}

impl RuleStatus {
    /// Why the rule does not evaluate; `None` when it does.
    pub fn reason(&self) -> Option<&str> {
        match &self.state {
            RuleState::Evaluates => None,
            RuleState::Disabled => Some("disabled in the policy (enabled: false)"),
            RuleState::Unsupported(reason) => Some(reason),
        }
    }
}

/// The outcome of a successful load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Every file read, in load order.
    pub files: Vec<PathBuf>,
    /// Every rule found, in load order.
    pub rules: Vec<RuleStatus>,
    /// The heuristics settings in force (defaults when no policy sets them).
    pub heuristics: Heuristics,
    /// The policy file that set them.
    pub heuristics_source: Option<PathBuf>,
}

impl Report {
    /// How many rules evaluate.
    pub fn evaluating(&self) -> usize {
        self.rules.iter().filter(|r| r.reason().is_none()).count()
    }

    /// Rules that do not evaluate, each with a reason.
    pub fn not_evaluating(&self) -> impl Iterator<Item = &RuleStatus> {
        self.rules.iter().filter(|r| r.reason().is_some())
    }

    fn count(&self, detector: Detector, evaluating: bool) -> usize {
        self.rules
            .iter()
            .filter(|r| r.detector == detector && r.reason().is_none() == evaluating)
            .count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sigma = self.count(Detector::Sigma, true);
        let policy = self.count(Detector::Policy, true);
        let skipped = self.rules.len() - sigma - policy;
        writeln!(
            f,
            "{} file(s), {} rule(s): {} evaluate ({} Sigma, {} policy), {} do not",
            self.files.len(),
            self.rules.len(),
            sigma + policy,
            sigma,
            policy,
            skipped
        )?;
        if skipped > 0 {
            writeln!(f, "not evaluating:")?;
            for rule in self.not_evaluating() {
                writeln!(
                    f,
                    "  {:<6} {}  {}\n         {}\n         in {}",
                    rule.detector.as_str(),
                    rule.id,
                    rule.title,
                    rule.reason().unwrap_or_default(),
                    rule.source.display()
                )?;
            }
        }
        let show = |s: &HeuristicSetting| {
            if s.enabled {
                format!("on, {}", s.severity)
            } else {
                "off".to_string()
            }
        };
        write!(
            f,
            "heuristics{}: script_engine_network {}; script_engine_background {}",
            match &self.heuristics_source {
                Some(path) => format!(" (from {})", path.display()),
                None => " (defaults)".to_string(),
            },
            show(&self.heuristics.script_engine_network),
            show(&self.heuristics.script_engine_background)
        )
    }
}
