//! Which executables are script engines (interpreters and shells), by file name: the
//! heuristics score them, and the actuator refuses to kill-on-exec or quarantine them (that
//! would take the interpreter away from the whole host).

/// Names from `heuristics.script_engines`: exact names, and prefixes written `name*`.
#[derive(Clone, Debug, Default)]
pub struct ScriptEngines {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl ScriptEngines {
    pub fn new(names: &[String]) -> Self {
        let (prefixes, exact): (Vec<&String>, Vec<&String>) =
            names.iter().partition(|s| s.ends_with('*'));
        ScriptEngines {
            exact: exact.into_iter().map(|s| s.to_ascii_lowercase()).collect(),
            prefixes: prefixes
                .into_iter()
                .map(|s| s.trim_end_matches('*').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether the file name `name` (no directory) is a script engine: `python3.11` matches
    /// `python*`, `pythonista` does not.
    pub fn matches(&self, name: &str) -> bool {
        // No lowercase copy: this runs for every event and every process a query lists.
        self.exact.iter().any(|e| e.eq_ignore_ascii_case(name))
            || self.prefixes.iter().any(|pre| {
                name.get(..pre.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(pre))
                    && name[pre.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| c.is_ascii_digit() || c == '.' || c == '-')
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_and_versioned_prefixes() {
        let e = ScriptEngines::new(&["bash".into(), "python*".into()]);
        for yes in [
            "bash",
            "BASH",
            "python",
            "python3",
            "python3.11",
            "python-3",
        ] {
            assert!(e.matches(yes), "{yes}");
        }
        for no in ["bashful", "pythonista", "sh"] {
            assert!(!e.matches(no), "{no}");
        }
    }
}
