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

/// One value of a field: text, or the address or number it is made of, so that CIDR and
/// range tests need no formatting and re-parsing.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Value<'a> {
    Text(&'a str),
    Ip(IpAddr),
    Number(u64),
}

impl Value<'_> {
    /// Calls `f` with the text form (formatted on the stack for addresses and numbers).
    pub(crate) fn with_text<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match *self {
            Value::Text(text) => f(text),
            Value::Number(n) => {
                let mut buf = [0u8; 20];
                f(format_number(n, &mut buf))
            }
            Value::Ip(ip) => {
                let mut text = StackStr::default();
                // An address's text always fits the buffer; an error leaves it empty.
                let _ = write!(text, "{ip}");
                f(text.as_str())
            }
        }
    }

    pub(crate) fn ip(&self) -> Option<IpAddr> {
        match *self {
            Value::Ip(ip) => Some(ip),
            Value::Text(text) => text.parse::<IpAddr>().ok().map(protocol::net::canonical_ip),
            Value::Number(_) => None,
        }
    }

    pub(crate) fn number(&self) -> Option<i128> {
        match *self {
            Value::Number(n) => Some(i128::from(n)),
            Value::Text(text) => text.parse().ok(),
            Value::Ip(_) => None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Value::Text(""))
    }
}

impl Field {
    /// Whether the field holds addresses (literal addresses in rules become CIDRs on it).
    pub(crate) fn is_address(self) -> bool {
        matches!(self, Field::DestinationIp | Field::SourceIp)
    }

    /// Calls `f` with each value of the field in `input`; not at all when it has none.
    /// `scratch` holds joined command lines, so one buffer serves a whole evaluation.
    pub(crate) fn each_value(
        self,
        input: &MatchInput<'_>,
        scratch: &mut String,
        f: &mut dyn FnMut(Value<'_>),
    ) {
        let process = input.process;
        let connect = match input.subject {
            Subject::Connect(connect) => Some(connect),
            _ => None,
        };
        let parent = input.ancestry.first();
        let mut text = |t: &str| f(Value::Text(t));
        match self {
            Field::Image => {
                text(&process.exe);
                if let Some(invoked) = &process.invoked_path {
                    if *invoked != process.exe {
                        text(invoked);
                    }
                }
            }
            Field::ImageResolved => text(&process.exe),
            Field::ImageInvoked => {
                if let Some(invoked) = &process.invoked_path {
                    text(invoked)
                }
            }
            Field::Name => text(&process.name),
            Field::CommandLine => text(join(&process.argv, scratch)),
            Field::ParentImage => {
                if let Some(parent) = parent {
                    text(&parent.exe)
                }
            }
            Field::ParentName => {
                if let Some(parent) = parent {
                    text(&parent.name)
                }
            }
            Field::ParentCommandLine => {
                if let Some(parent) = parent {
                    text(join(&parent.argv, scratch))
                }
            }
            Field::AncestorName => {
                for ancestor in input.ancestry {
                    text(&ancestor.name)
                }
            }
            Field::User => {
                if let Some(user) = &process.user {
                    text(user)
                }
            }
            Field::CurrentDirectory => {
                if let Some(cwd) = &process.cwd {
                    text(cwd)
                }
            }
            Field::DestinationIsIpv6 => {
                if let Some(connect) = connect {
                    text(
                        if protocol::net::canonical_ip(connect.destination_ip).is_ipv6() {
                            "true"
                        } else {
                            "false"
                        },
                    )
                }
            }
            Field::Protocol => {
                if let Some(connect) = connect {
                    text(connect.protocol.as_str())
                }
            }
            Field::Initiated => {
                if connect.is_some() {
                    text("true")
                }
            }
            Field::Uid => f(Value::Number(u64::from(process.uid))),
            Field::ProcessId => f(Value::Number(u64::from(process.pid))),
            Field::ParentProcessId => f(Value::Number(u64::from(process.ppid))),
            Field::DestinationIp => {
                if let Some(connect) = connect {
                    f(Value::Ip(protocol::net::canonical_ip(
                        connect.destination_ip,
                    )))
                }
            }
            Field::DestinationPort => {
                if let Some(connect) = connect {
                    f(Value::Number(u64::from(connect.destination_port)))
                }
            }
            Field::SourceIp => {
                if let Some(ip) = connect.and_then(|c| c.source_ip) {
                    f(Value::Ip(protocol::net::canonical_ip(ip)))
                }
            }
            Field::SourcePort => {
                if let Some(port) = connect.and_then(|c| c.source_port) {
                    f(Value::Number(u64::from(port)))
                }
            }
            Field::RssBytes => {
                if let Some(bytes) = input.rss_bytes {
                    f(Value::Number(bytes))
                }
            }
            Field::IntelDetections => {
                if let Some(intel) = input.intel {
                    f(Value::Number(u64::from(intel.detections)))
                }
            }
        }
    }
}

/// argv joined by single spaces (Sigma's `CommandLine`), into `buf`.
fn join<'b>(argv: &[String], buf: &'b mut String) -> &'b str {
    buf.clear();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            buf.push(' ');
        }
        buf.push_str(arg);
    }
    buf
}

/// Decimal digits of `n` at the end of `buf`, without the formatting machinery.
fn format_number(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[at..]).unwrap_or("")
}

/// A fixed buffer long enough for any IP address's text form.
struct StackStr {
    buf: [u8; 48],
    len: usize,
}

impl Default for StackStr {
    fn default() -> Self {
        StackStr {
            buf: [0; 48],
            len: 0,
        }
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

    fn text(v: Value<'_>) -> String {
        v.with_text(str::to_string)
    }

    #[test]
    fn numbers_and_mapped_addresses_render_as_rules_expect() {
        assert_eq!(text(Value::Number(0)), "0");
        assert_eq!(text(Value::Number(4444)), "4444");
        assert_eq!(text(Value::Number(u64::MAX)), u64::MAX.to_string());
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(
            text(Value::Ip(protocol::net::canonical_ip(mapped))),
            "127.0.0.1"
        );
        assert_eq!(Value::Text("::ffff:10.0.0.1").ip(), "10.0.0.1".parse().ok());
        assert_eq!(Value::Text("42").number(), Some(42));
    }
}
