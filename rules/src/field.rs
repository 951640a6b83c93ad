//! The fields rules can test, and how each is read from a [`MatchInput`].
//!
//! Sigma names (Sysmon-for-Linux convention) and policy keys both map onto these; the
//! matcher reads each field once per input, whatever number of rules test it.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::input::{MatchInput, Subject};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Field {
    /// Both the invoked and the resolved executable path: many Debian binaries are symlinks
    /// (`/usr/bin/nc` → `/usr/bin/nc.openbsd`), and rules name either.
    Image,
    ImageResolved,
    ImageInvoked,
    /// The executable's file name.
    Name,
    /// argv joined by single spaces.
    CommandLine,
    ParentImage,
    ParentName,
    ParentCommandLine,
    /// The name of every ancestor (a multi-valued field).
    AncestorName,
    User,
    Uid,
    CurrentDirectory,
    ProcessId,
    ParentProcessId,
    DestinationIp,
    DestinationPort,
    DestinationIsIpv6,
    SourceIp,
    SourcePort,
    Protocol,
    /// Always "true" on connect events: the sensor reports outbound connects.
    Initiated,
    RssBytes,
    IntelDetections,
}

impl Field {
    /// Calls `f` with each value of the field in `input`; not at all when it has none.
    pub(crate) fn each_value(self, input: &MatchInput<'_>, f: &mut dyn FnMut(&str)) {
        let process = input.process;
        let connect = match input.subject {
            Subject::Connect(connect) => Some(connect),
            _ => None,
        };
        let parent = input.ancestry.first();
        match self {
            Field::Image => {
                f(&process.exe);
                if let Some(invoked) = &process.invoked_path {
                    if *invoked != process.exe {
                        f(invoked);
                    }
                }
            }
            Field::ImageResolved => f(&process.exe),
            Field::ImageInvoked => {
                if let Some(invoked) = &process.invoked_path {
                    f(invoked)
                }
            }
            Field::Name => f(&process.name),
            Field::CommandLine => f(&process.argv.join(" ")),
            Field::ParentImage => {
                if let Some(parent) = parent {
                    f(&parent.exe)
                }
            }
            Field::ParentName => {
                if let Some(parent) = parent {
                    f(&parent.name)
                }
            }
            Field::ParentCommandLine => {
                if let Some(parent) = parent {
                    f(&parent.argv.join(" "))
                }
            }
            Field::AncestorName => {
                for ancestor in input.ancestry {
                    f(&ancestor.name)
                }
            }
            Field::User => {
                if let Some(user) = &process.user {
                    f(user)
                }
            }
            Field::Uid => with_number(u64::from(process.uid), f),
            Field::CurrentDirectory => {
                if let Some(cwd) = &process.cwd {
                    f(cwd)
                }
            }
            Field::ProcessId => with_number(u64::from(process.pid), f),
            Field::ParentProcessId => with_number(u64::from(process.ppid), f),
            Field::DestinationIp => {
                if let Some(connect) = connect {
                    with_ip(connect.destination_ip, f)
                }
            }
            Field::DestinationPort => {
                if let Some(connect) = connect {
                    with_number(u64::from(connect.destination_port), f)
                }
            }
            Field::DestinationIsIpv6 => {
                if let Some(connect) = connect {
                    f(if canonical(connect.destination_ip).is_ipv6() { "true" } else { "false" })
                }
            }
            Field::SourceIp => {
                if let Some(ip) = connect.and_then(|c| c.source_ip) {
                    with_ip(ip, f)
                }
            }
            Field::SourcePort => {
                if let Some(port) = connect.and_then(|c| c.source_port) {
                    with_number(u64::from(port), f)
                }
            }
            Field::Protocol => {
                if let Some(connect) = connect {
                    f(connect.protocol.as_str())
                }
            }
            Field::Initiated => {
                if connect.is_some() {
                    f("true")
                }
            }
            Field::RssBytes => {
                if let Some(bytes) = input.rss_bytes {
                    with_number(bytes, f)
                }
            }
            Field::IntelDetections => {
                if let Some(intel) = input.intel {
                    with_number(u64::from(intel.detections), f)
                }
            }
        }
    }
}

/// An IPv4 peer reached through a dual-stack IPv6 socket shows up as `::ffff:a.b.c.d`; rules
/// written for `127.0.0.1` or `10.0.0.0/8` must still see it as the IPv4 address it is.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Formats without allocating: the hot path renders ports and pids for every event.
fn with_number(n: u64, f: &mut dyn FnMut(&str)) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    if let Ok(text) = std::str::from_utf8(&buf[at..]) {
        f(text)
    }
}

fn with_ip(ip: IpAddr, f: &mut dyn FnMut(&str)) {
    let mut text = StackStr::default();
    if write!(text, "{}", canonical(ip)).is_ok() {
        f(text.as_str())
    }
}

/// A fixed buffer long enough for any IP address's text form.
struct StackStr {
    buf: [u8; 48],
    len: usize,
}

impl Default for StackStr {
    fn default() -> Self {
        StackStr { buf: [0; 48], len: 0 }
    }
}

impl StackStr {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so the prefix is valid UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(n: u64) -> String {
        let mut out = String::new();
        with_number(n, &mut |s| out.push_str(s));
        out
    }

    #[test]
    fn numbers_and_mapped_addresses_render_as_rules_expect() {
        assert_eq!(collect(0), "0");
        assert_eq!(collect(4444), "4444");
        assert_eq!(collect(u64::MAX), u64::MAX.to_string());
        let mut out = String::new();
        with_ip("::ffff:127.0.0.1".parse().unwrap(), &mut |s| out.push_str(s));
        assert_eq!(out, "127.0.0.1");
    }
}
