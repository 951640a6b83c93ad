//! Osprey's detection engine: Sigma rules (`process_creation`, `network_connection`) and the
//! Osprey policy file, compiled once per load into one matcher per kind of input.
//!
//! ```no_run
//! use rules::{Engine, MatchInput};
//! # fn run(event: &protocol::Event) -> Result<(), rules::LoadError> {
//! let engine = Engine::load(&["/etc/osprey/policy.yaml", "/etc/osprey/sigma"])?;
//! for hit in engine.evaluate(&MatchInput::from_event(event)) {
//!     println!("{} {} ({})", hit.severity, hit.title, hit.id);
//! }
//! # Ok(()) }
//! ```
//!
//! Loading is a pure function of the files: a failed [`Engine::load`] returns a [`LoadError`]
//! listing every problem (file, line, rule, field) and leaves whatever engine the caller
//! already runs untouched, which is what hot reload needs.

mod engine;
mod error;
mod expansion;
mod field;
mod input;
mod ir;
mod loader;
mod locate;
mod matcher;
mod pattern;
mod policy;
mod report;
mod sigma;

pub use engine::{check, Engine, Match};
pub use error::{LoadError, Problem, ProblemKind};
pub use input::{IntelVerdict, MatchInput, Platform, Subject, SubjectKind};
pub use ir::RuleInfo;
pub use policy::{HeuristicSetting, Heuristics};
pub use report::{Report, RuleState, RuleStatus};
