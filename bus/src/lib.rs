//! Osprey on NATS: what every part that talks to the bus shares (docs/nats.md).
//!
//! - [`connect`]: connect options for a role (host, responder, operator): its own reply
//!   inbox and its credentials (an NKey seed from `osprey creds`, or a `.creds` file).
//! - [`stream`]: the `OSPREY_FINDINGS` stream: its configuration when Osprey creates it, the
//!   check an existing one must pass before anyone publishes to or reads from it.
//! - [`permissions`]: what each role may publish and subscribe to — the server's permissions.
//! - [`creds`]: NKey credentials and the `users.conf` that lists them.
//! - [`intake`]: a service's durable consumer of findings (responder, investigator).

pub mod connect;
pub mod creds;
pub mod intake;
pub mod permissions;
pub mod stream;

pub use connect::{options, servers, CredentialsError, Role};
pub use intake::{Intake, IntakeError};
pub use stream::{FindingsStream, IfMissing, OpenError, Replicas, WrongStream};
