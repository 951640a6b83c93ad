//! Osprey's wire model, shared by every producer and consumer.
//!
//! Payloads travel as MessagePack with named fields ([`codec`]), so readers ignore fields they
//! don't know and new fields can be added without breaking them. Addresses, times and ids have
//! explicit wire shapes (an IP is its text form, a time RFC 3339 UTC with nanoseconds, an
//! [`ExecId`] its `bootid-pid-ticks-seq` string), so the JSON rendering looks the same.

pub mod approval;
pub mod audit;
pub mod codec;
pub mod command;
pub mod control;
pub mod event;
pub mod finding;
pub mod heartbeat;
pub mod investigation;
pub mod net;
pub mod ocsf;
pub mod process;
pub mod quarantine;
pub mod query;
pub mod severity;
pub mod signing;
pub mod subject;
pub mod time;

pub use approval::{Approval, Verdict};
pub use audit::{Actor, AuditRecord, Decision};
pub use codec::{decode, encode, CodecError};
pub use command::{Action, Command, CommandResult, CommandStatus};
pub use control::{ControlReply, ResponderControl};
pub use event::{
    CloseEvent, ConnectEvent, ConnectHook, Event, EventDetail, EventKind, ExecEvent, ExitEvent,
    ForkEvent, IntelVerdictEvent, MemorySampleEvent, Outcome, SocketFamily, TransportProtocol,
};
pub use finding::{ActionKind, Detector, Finding, FindingId, Trigger};
pub use heartbeat::{Heartbeat, RingUse};
pub use investigation::{
    Assessment, Investigation, InvestigationOutcome, Proposal, ProposalReply, ProposedAction, Step,
};
pub use process::{
    Ancestor, ArgvSource, ArgvTruncation, BootId, ExecId, ExecIdParseError, Process,
};
pub use quarantine::QuarantineRecord;
pub use query::{
    ClosedConnection, ConnectionState, FindingSummary, ProcessFilter, ProcessState, Query,
    QueryKind, Risk, Snapshot, SortKey,
};
pub use severity::Severity;
pub use time::Timestamp;

/// Version of this wire model, carried in heartbeats.
pub const PROTOCOL_VERSION: u32 = 1;
