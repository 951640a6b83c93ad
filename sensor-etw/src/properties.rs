//! Reading one event's properties from their raw bytes.
//!
//! [`EventProperties::raw`] is the only thing a property source implements: the bytes of a
//! named property exactly as they sit in the event's user data. The typed readers decode those
//! bytes here, in plain Rust, so the Linux tests exercise the same decoding that runs on
//! Windows. What ETW delivers:
//! - integers (`win:UInt16/32/64`, `win:FILETIME`) in the machine's order, little-endian on
//!   every Windows target;
//! - TCP ports in network byte order inside a `win:UInt16` (port 443 arrives as `01 BB`);
//! - IPv4 addresses as a `win:UInt32` holding the `in_addr` bytes in network order (so the
//!   first byte is the first octet), IPv6 addresses as 16 raw bytes;
//! - `win:UnicodeString` as NUL-terminated UTF-16LE, `win:AnsiString` as NUL-terminated bytes.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use protocol::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    #[error("property {0} is missing")]
    Missing(String),
    #[error("property {name} has {actual} bytes, expected {expected}")]
    Length {
        name: String,
        expected: usize,
        actual: usize,
    },
    #[error("property {0} is not valid UTF-16")]
    InvalidUtf16(String),
    #[error("property {0} holds a time before 1970 or past 2262")]
    Time(String),
}

/// Raw access to the properties of one event.
pub trait EventProperties {
    /// The bytes of property `name` as ETW delivered them.
    fn raw(&self, name: &str) -> Result<Cow<'_, [u8]>, PropertyError>;

    /// Whether the event carries property `name` (templates grow between Windows versions).
    fn has(&self, name: &str) -> bool {
        self.raw(name).is_ok()
    }

    fn u16(&self, name: &str) -> Result<u16, PropertyError> {
        Ok(u16::from_le_bytes(fixed(name, &self.raw(name)?)?))
    }

    fn u32(&self, name: &str) -> Result<u32, PropertyError> {
        Ok(u32::from_le_bytes(fixed(name, &self.raw(name)?)?))
    }

    fn u64(&self, name: &str) -> Result<u64, PropertyError> {
        Ok(u64::from_le_bytes(fixed(name, &self.raw(name)?)?))
    }

    /// A port stored in network byte order (the bytes as they were on the wire).
    fn port(&self, name: &str) -> Result<u16, PropertyError> {
        Ok(u16::from_be_bytes(fixed(name, &self.raw(name)?)?))
    }

    fn ipv4(&self, name: &str) -> Result<Ipv4Addr, PropertyError> {
        Ok(Ipv4Addr::from(fixed::<4>(name, &self.raw(name)?)?))
    }

    fn ipv6(&self, name: &str) -> Result<Ipv6Addr, PropertyError> {
        Ok(Ipv6Addr::from(fixed::<16>(name, &self.raw(name)?)?))
    }

    /// A raw FILETIME value (kept as ticks where it serves as an identity, e.g. `CreateTime`).
    fn filetime(&self, name: &str) -> Result<u64, PropertyError> {
        self.u64(name)
    }

    /// A FILETIME property as a Unix timestamp.
    fn time(&self, name: &str) -> Result<Timestamp, PropertyError> {
        crate::filetime::to_timestamp(self.filetime(name)?)
            .ok_or_else(|| PropertyError::Time(name.to_string()))
    }

    /// `win:UnicodeString`: UTF-16LE up to the first NUL (or the end of the property).
    fn utf16(&self, name: &str) -> Result<String, PropertyError> {
        decode_utf16(name, &self.raw(name)?)
    }

    /// `win:AnsiString`: bytes up to the first NUL, decoded lossily (the kernel's short image
    /// names are ASCII in practice; a stray byte must not drop the event).
    fn ansi(&self, name: &str) -> Result<String, PropertyError> {
        let raw = self.raw(name)?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        Ok(String::from_utf8_lossy(&raw[..end]).into_owned())
    }
}

fn fixed<const N: usize>(name: &str, raw: &[u8]) -> Result<[u8; N], PropertyError> {
    raw.try_into().map_err(|_| PropertyError::Length {
        name: name.to_string(),
        expected: N,
        actual: raw.len(),
    })
}

fn decode_utf16(name: &str, raw: &[u8]) -> Result<String, PropertyError> {
    if raw.len() % 2 != 0 {
        return Err(PropertyError::Length {
            name: name.to_string(),
            expected: raw.len() + 1,
            actual: raw.len(),
        });
    }
    let units = raw
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .take_while(|&unit| unit != 0);
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| PropertyError::InvalidUtf16(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{utf16z, Fixture};

    #[test]
    fn ports_are_read_in_network_order() {
        let props = Fixture::new().with("dport", vec![0x01, 0xBB]);
        assert_eq!(props.port("dport"), Ok(443));
        // Reading the same bytes as a machine-order integer gives the byte-swapped value:
        // the bug this reader exists to avoid.
        assert_eq!(props.u16("dport"), Ok(0xBB01));
    }

    #[test]
    fn integers_are_little_endian() {
        let props = Fixture::new().with("PID", vec![0x92, 0x10, 0, 0]).with(
            "CreateTime",
            0x0102_0304_0506_0708u64.to_le_bytes().to_vec(),
        );
        assert_eq!(props.u32("PID"), Ok(4242));
        assert_eq!(props.filetime("CreateTime"), Ok(0x0102_0304_0506_0708));
    }

    #[test]
    fn ipv4_keeps_wire_order_of_octets() {
        let props = Fixture::new().with("daddr", vec![93, 184, 216, 34]);
        assert_eq!(props.ipv4("daddr"), Ok(Ipv4Addr::new(93, 184, 216, 34)));
    }

    #[test]
    fn wrong_lengths_are_errors_not_panics() {
        let props = Fixture::new()
            .with("dport", vec![1])
            .with("daddr", vec![1, 2, 3]);
        assert_eq!(
            props.port("dport"),
            Err(PropertyError::Length {
                name: "dport".into(),
                expected: 2,
                actual: 1
            })
        );
        assert!(props.ipv6("daddr").is_err());
        assert_eq!(
            props.u32("absent"),
            Err(PropertyError::Missing("absent".into()))
        );
    }

    #[test]
    fn utf16_stops_at_nul_and_rejects_lone_surrogates() {
        let props = Fixture::new()
            .with("ImageName", utf16z("C:\\Temp\\é.exe"))
            .with(
                "NoNul",
                "abc".encode_utf16().flat_map(u16::to_le_bytes).collect(),
            )
            .with("Odd", vec![0x41, 0x00, 0x42])
            .with("Bad", vec![0x00, 0xD8, 0x41, 0x00]);
        assert_eq!(props.utf16("ImageName").as_deref(), Ok("C:\\Temp\\é.exe"));
        assert_eq!(props.utf16("NoNul").as_deref(), Ok("abc"));
        assert!(matches!(
            props.utf16("Odd"),
            Err(PropertyError::Length { .. })
        ));
        assert_eq!(
            props.utf16("Bad"),
            Err(PropertyError::InvalidUtf16("Bad".into()))
        );
    }

    #[test]
    fn ansi_stops_at_nul() {
        let props = Fixture::new().with("ImageFileName", b"cmd.exe\0junk".to_vec());
        assert_eq!(props.ansi("ImageFileName").as_deref(), Ok("cmd.exe"));
    }
}
