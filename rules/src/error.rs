//! Load errors: every problem found in the rule files, each naming where it is.

use std::{fmt, path::PathBuf};

/// What kind of problem a [`Problem`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// A file or directory could not be read.
    Read,
    /// The YAML is malformed or does not have the expected shape.
    Syntax,
    /// The YAML is well-formed but a rule is wrong (bad regex, CIDR, unknown selection, ...).
    Invalid,
    /// Two rules share an id.
    Duplicate,
    /// The rules were valid one by one but could not be compiled together.
    Build,
}

/// One problem, located as precisely as the source allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub path: Option<PathBuf>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The rule id, when the problem is inside a rule.
    pub rule: Option<String>,
    /// The rule field (e.g. `argv_regex`, `CommandLine|re`), when the problem is in one.
    pub field: Option<String>,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(kind: ProblemKind, message: impl Into<String>) -> Self {
        Problem {
            kind,
            path: None,
            line: None,
            column: None,
            rule: None,
            field: None,
            message: message.into(),
        }
    }

    pub(crate) fn at(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    pub(crate) fn line(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }

    pub(crate) fn rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    pub(crate) fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// A yaml_serde error, with its location moved from the message into the fields.
    pub(crate) fn yaml(path: impl Into<PathBuf>, err: &yaml_serde::Error) -> Self {
        let mut message = err.to_string();
        // yaml_serde appends " at line L column C"; we print the location up front instead,
        // the way compilers do, so editors can jump to it.
        if let Some(cut) = message.find(" at line ") {
            message.truncate(cut);
        }
        let mut problem = Problem::new(ProblemKind::Syntax, message).at(path);
        if let Some(location) = err.location() {
            problem.line = Some(location.line());
            problem.column = Some(location.column());
        }
        problem
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write!(f, "{}", path.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(column) = self.column {
                    write!(f, ":{column}")?;
                }
            }
            f.write_str(": ")?;
        }
        if let Some(rule) = &self.rule {
            write!(f, "rule {rule:?}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field {field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Loading failed; `problems` lists everything found, not just the first.
#[derive(Debug, thiserror::Error)]
pub struct LoadError {
    pub problems: Vec<Problem>,
}

impl LoadError {
    pub(crate) fn single(problem: Problem) -> Self {
        LoadError {
            problems: vec![problem],
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems in the rules:", many.len())?;
                for problem in many {
                    write!(f, "\n  {problem}")?;
                }
                Ok(())
            }
        }
    }
}
