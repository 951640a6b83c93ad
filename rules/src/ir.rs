//! The rule form both front ends (Sigma, policy) produce and the matcher compiles.

use std::{path::PathBuf, sync::Arc};

use ipnet::IpNet;
use protocol::{ActionKind, Detector, Severity};

use crate::{field::Field, input::SubjectKind};

/// What a finding needs to know about the rule that raised it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    pub detector: Detector,
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    /// Sigma rule author: the Detection Rule License requires it in every alert.
    pub author: Option<String>,
    pub severity: Severity,
    /// MITRE ATT&CK and other tags, e.g. `attack.execution`, `attack.t1059.004`.
    pub tags: Vec<String>,
    /// Recommended actions (policy rules; Sigma rules recommend none).
    pub actions: Vec<ActionKind>,
    /// The file the rule came from.
    pub source: PathBuf,
}

/// How a literal must sit in the field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LitKind {
    Exact,
    Prefix,
    Suffix,
    Contains,
}

/// One value test on one field.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Pattern {
    /// Case-insensitive literal; `text` is already lowercased.
    Literal {
        kind: LitKind,
        text: String,
    },
    /// A regular expression (flags inline), tested against the original text anywhere in it.
    Regex(String),
    Cidr(IpNet),
    /// The field's value, read as an integer, lies in `lo..=hi`.
    Range {
        lo: i128,
        hi: i128,
    },
    /// The field is absent or empty.
    Null,
    /// The field is present (`true`) or absent (`false`).
    Exists(bool),
}

/// A field and its values: any one matches, or all must with `all`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Item {
    pub field: Field,
    pub patterns: Vec<Pattern>,
    pub all: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    /// At least `n` of the conditions hold (Sigma `2 of selection_*`).
    AtLeast(usize, Vec<Cond>),
    Item(Item),
}

impl Cond {
    /// The values the matcher will hold for this condition (an item without values counts
    /// one): what a condition costs to compile and keep.
    pub(crate) fn size(&self) -> usize {
        match self {
            Cond::And(all) | Cond::Or(all) | Cond::AtLeast(_, all) => {
                all.iter().map(Cond::size).sum()
            }
            Cond::Not(inner) => inner.size(),
            Cond::Item(item) => item.patterns.len().max(1),
        }
    }
}

/// A rule ready for the matcher.
#[derive(Clone, Debug)]
pub(crate) struct RuleIr {
    pub info: Arc<RuleInfo>,
    /// Sigma `product` (lowercase); `None` applies to every platform.
    pub product: Option<String>,
    pub subjects: Vec<SubjectKind>,
    pub cond: Cond,
}
