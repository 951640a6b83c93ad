//! What each fuzz target does with its input: the same steps the collector, the actuator and
//! the responder take with bytes from outside the process, before they act on them.
//!
//! Every function here must return normally for any input; a panic, an allocation over
//! libFuzzer's `-malloc_limit_mb` or a run over its `-timeout` is a bug in the code under test.
//! The targets in `fuzz_targets/` are one line each, so the steps are shared with the seed
//! writer (`examples/write_seeds.rs`).

pub mod fixtures;
pub mod ring;
pub mod rules_text;
pub mod signed;
