//! The policy file as written: serde shapes, strict (unknown keys are errors with a line).

use protocol::{ActionKind, Severity};
use serde::{de, Deserialize, Deserializer};
use std::fmt;

use crate::input::SubjectKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    /// Format version; only 1 exists.
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub heuristics: Option<HeuristicsFile>,
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyRule {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    pub severity: Severity,
    /// MITRE ATT&CK tags (`attack.execution`, `attack.t1204.002`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Recommended actions; advice for the responder.
    #[serde(default)]
    pub actions: Vec<ActionKind>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Which inputs the rule applies to; derived from its conditions when absent.
    #[serde(default)]
    pub events: Option<Vec<SubjectKind>>,
    #[serde(rename = "match")]
    pub when: Conditions,
    #[serde(default)]
    pub unless: Option<Conditions>,
}

fn yes() -> bool {
    true
}

/// Conditions of a rule: all keys present must hold; a list under one key means any of it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Conditions {
    #[serde(default)]
    pub name: Option<Strings>,
    #[serde(default)]
    pub path: Option<Strings>,
    #[serde(default)]
    pub resolved_path: Option<Strings>,
    #[serde(default)]
    pub invoked_path: Option<Strings>,
    #[serde(default)]
    pub argv_contains: Option<Strings>,
    #[serde(default)]
    pub argv_regex: Option<Strings>,
    #[serde(default)]
    pub parent: Option<Strings>,
    #[serde(default)]
    pub ancestor: Option<Strings>,
    #[serde(default)]
    pub user: Option<Strings>,
    #[serde(default)]
    pub uid: Option<Strings>,
    #[serde(default)]
    pub cwd: Option<Strings>,
    #[serde(default)]
    pub destination: Option<Strings>,
    #[serde(default)]
    pub port: Option<Strings>,
    #[serde(default)]
    pub protocol: Option<Strings>,
    #[serde(default)]
    pub rss_above_mb: Option<u64>,
    #[serde(default)]
    pub intel: Option<IntelConditions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IntelConditions {
    #[serde(default)]
    pub detections_above: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeuristicsFile {
    #[serde(default)]
    pub script_engine_network: Option<HeuristicFile>,
    #[serde(default)]
    pub script_engine_background: Option<HeuristicFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeuristicFile {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default)]
    pub actions: Option<Vec<ActionKind>>,
}

/// One value or a list of values; numbers and booleans are taken as their text
/// (`port: 22`, `uid: [0, 1000]`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Strings(pub Vec<String>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct One;
        impl<'de> de::Visitor<'de> for One {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
                Ok(v.to_string())
            }
        }
        struct OneString(String);
        impl<'de> Deserialize<'de> for OneString {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(One).map(OneString)
            }
        }
        struct Many;
        impl<'de> de::Visitor<'de> for Many {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a number or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
                Ok(vec![v.to_string()])
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<String>, E> {
                Ok(vec![v.to_string()])
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<String>, E> {
                Ok(vec![v.to_string()])
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Vec<String>, E> {
                Ok(vec![v.to_string()])
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
                let mut out = Vec::new();
                while let Some(OneString(v)) = seq.next_element()? {
                    out.push(v);
                }
                Ok(out)
            }
        }
        d.deserialize_any(Many).map(Strings)
    }
}
