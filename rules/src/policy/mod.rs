//! The Osprey policy file: site rules over process, network, memory and threat-intel
//! attributes, plus the built-in heuristics' settings. Format: `docs/policy.md`.

mod compile;
mod file;
mod heuristics;

pub(crate) use compile::{compile_rule, PolicyRule};
pub(crate) use file::PolicyFile;
pub use heuristics::{HeuristicSetting, Heuristics};
