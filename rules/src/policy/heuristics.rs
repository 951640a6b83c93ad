//! Settings the policy gives the collector's built-in script-engine heuristics.

use protocol::{ActionKind, Severity};

use super::file::{HeuristicFile, HeuristicsFile};

/// One heuristic's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeuristicSetting {
    pub enabled: bool,
    pub severity: Severity,
    /// Recommended actions for its findings.
    pub actions: Vec<ActionKind>,
}

/// The built-in heuristics (run by the collector) as the policy tunes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heuristics {
    /// A script engine connecting to a non-local destination.
    pub script_engine_network: HeuristicSetting,
    /// A script engine running with no terminal anywhere in its ancestry.
    pub script_engine_background: HeuristicSetting,
}

impl Default for Heuristics {
    /// The severities DESIGN.md gives them: high and medium, both on.
    fn default() -> Self {
        Heuristics {
            script_engine_network: HeuristicSetting {
                enabled: true,
                severity: Severity::High,
                actions: Vec::new(),
            },
            script_engine_background: HeuristicSetting {
                enabled: true,
                severity: Severity::Medium,
                actions: Vec::new(),
            },
        }
    }
}

impl Heuristics {
    /// Defaults overridden by what the file sets; keys it leaves out keep their default.
    pub(crate) fn from_file(file: HeuristicsFile) -> Self {
        let defaults = Heuristics::default();
        let merge = |set: Option<HeuristicFile>, default: HeuristicSetting| match set {
            None => default,
            Some(set) => HeuristicSetting {
                enabled: set.enabled.unwrap_or(default.enabled),
                severity: set.severity.unwrap_or(default.severity),
                actions: set.actions.unwrap_or(default.actions),
            },
        };
        Heuristics {
            script_engine_network: merge(
                file.script_engine_network,
                defaults.script_engine_network,
            ),
            script_engine_background: merge(
                file.script_engine_background,
                defaults.script_engine_background,
            ),
        }
    }
}
