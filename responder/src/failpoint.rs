//! Crash points for tests: with `OSPREY_FAILPOINT=<name>` in its environment, the responder
//! kills itself with SIGKILL the first time it reaches the point `<name>` — as abruptly as a
//! crash or an OOM kill, with no chance to clean up. Points:
//!
//! - `decided`: a decision to send a command is committed to the journal, nothing of it
//!   carried out yet;
//! - `sent`: a command was sent and answered, the answer not yet audited.
//!
//! Unset (always, outside tests) this costs one cached environment lookup.

use std::sync::OnceLock;

pub const VARIABLE: &str = "OSPREY_FAILPOINT";

pub fn reached(point: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var(VARIABLE).ok());
    if armed.as_deref() == Some(point) {
        tracing::warn!(point, "failpoint reached: killing this process (SIGKILL)");
        // SAFETY: signalling this very process; SIGKILL cannot be caught.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
