//! `osprey-investigator`: optional AI triage (docs/investigator.md). For findings matching a
//! selector it runs a bounded reason-and-act loop against an OpenAI-compatible
//! chat-completions endpoint, with read-only tools on the finding's host, publishes an
//! investigation record, and sends the actions it proposes — signed — to the responder,
//! which alone decides. Its own service: the model's latency, egress and failures never
//! share a failure domain with detection or the deterministic responder.

pub mod config;
pub mod investigate;
pub mod llm;
pub mod memory;
pub mod redact;
pub mod tools;
