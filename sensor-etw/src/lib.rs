//! Osprey's Windows source: ETW kernel process and network events, translated into
//! platform-neutral records.
//!
//! Two real-time ETW sessions feed it (see [`session`]):
//! - `Osprey-Sensor`: Microsoft-Windows-Kernel-Process (process start/stop) and
//!   Microsoft-Windows-Kernel-Network (TCP connect/accept, IPv4 and IPv6);
//! - `Osprey-Sensor-CmdLine`: a system-logger session with the kernel's process flag, the only
//!   source of a new process's command line captured by the kernel at creation (the
//!   Kernel-Process provider has none). [`join`] pairs the two.
//!
//! Everything between "ETW handed us a property buffer" and "here is a record" is plain Rust
//! over the [`properties::EventProperties`] trait, so it is unit-tested on Linux with fixtures
//! that hold the raw bytes as ETW delivers them. Only [`session`] and [`snapshot`] touch
//! Windows APIs; elsewhere they are stubs that fail with [`EtwError::Unsupported`].

pub mod command_line;
pub mod device_path;
pub mod filetime;
pub mod join;
pub mod network;
pub mod process;
pub mod properties;
pub mod provider;
pub mod record;
pub mod session;
pub mod snapshot;
pub mod translate;

#[cfg(test)]
mod fixture;

pub use device_path::DeviceMap;
pub use join::CommandLineJoin;
pub use record::{Connection, Direction, EtwRecord, KernelProcessStart, ProcessStart, ProcessStop};
pub use session::{EtwSessions, SessionConfig, SessionHealth, SessionStats, Sink};
pub use snapshot::ProcessInfo;
pub use translate::{EventHeader, TranslateError, Translator};

/// Why the ETW source could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum EtwError {
    /// Not on Windows: the one sentence operators see when they run the Windows source elsewhere.
    #[error("ETW is only available on Windows")]
    Unsupported,
    /// A session could not be started, queried or stopped.
    #[error("ETW session {session:?}: {message}")]
    Session { session: String, message: String },
    /// A Windows API call failed.
    #[error("{context}: {source}")]
    Os {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Windows has no Unix uid/gid: records carry this in those fields (like Linux's
/// `(uid_t)-1`, "no id"), never 0, which would read as root.
pub const NO_UNIX_ID: u32 = u32::MAX;
