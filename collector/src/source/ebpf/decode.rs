//! Decoding ring-buffer records into typed values.
//!
//! The fuzz target `ring_record` compiles this file on its own (`fuzz/src/ring.rs`, without the
//! collector's dependencies): it may use only `sensor_common`, `protocol`, `libc` and
//! `thiserror`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use protocol::ArgvTruncation;
use sensor_common::*;

/// A record from the ring buffer, copied out of it (an exec record into a reused buffer: at
/// 6 KiB it is the one worth not allocating and copying per event).
pub enum Record<'a> {
    Exec(&'a ExecRecord),
    Fork(ForkRecord),
    Exit(ExitRecord),
    ConnectAttempt(ConnectAttemptRecord),
    SyscallResult(SyscallResultRecord),
    TcpOutcome(TcpOutcomeRecord),
    TcpClose(TcpCloseRecord),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {len} bytes is too short for a header")]
    Short { len: usize },
    #[error("ring buffer record has unknown kind {0}")]
    UnknownKind(u32),
    #[error("{kind:?} record of {len} bytes is shorter than its {need} fixed bytes")]
    Truncated {
        kind: RecordKind,
        len: usize,
        need: usize,
    },
}

/// Reads a `T` from the start of `bytes`; the caller checked the length.
fn read<T: Copy>(bytes: &[u8]) -> T {
    debug_assert!(bytes.len() >= std::mem::size_of::<T>());
    // SAFETY: `T` is a `#[repr(C)]` plain-old-data record and `bytes` holds at least
    // `size_of::<T>()` bytes; `read_unaligned` copes with the ring buffer's 8-byte alignment.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) }
}

fn fixed<T: Copy>(bytes: &[u8], kind: RecordKind) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Truncated {
            kind,
            len: bytes.len(),
            need,
        });
    }
    Ok(read(bytes))
}

pub fn decode<'a>(bytes: &[u8], exec_buf: &'a mut ExecRecord) -> Result<Record<'a>, DecodeError> {
    if bytes.len() < std::mem::size_of::<RecordHeader>() {
        return Err(DecodeError::Short { len: bytes.len() });
    }
    let header: RecordHeader = read(bytes);
    let kind = RecordKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    Ok(match kind {
        RecordKind::Exec => {
            // Only the used part of argv is sent; `argv_len` (clamped to what arrived) says how
            // much of the buffer's argv is this record's.
            if bytes.len() < EXEC_RECORD_FIXED {
                return Err(DecodeError::Truncated {
                    kind,
                    len: bytes.len(),
                    need: EXEC_RECORD_FIXED,
                });
            }
            let n = bytes.len().min(std::mem::size_of::<ExecRecord>());
            // SAFETY: `ExecRecord` is `#[repr(C)]` plain old data, valid for any bytes, and
            // `n` is at most its size.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    exec_buf as *mut ExecRecord as *mut u8,
                    n,
                )
            };
            exec_buf.argv_len = exec_buf.argv_len.min((n - EXEC_RECORD_FIXED) as u32);
            Record::Exec(exec_buf)
        }
        RecordKind::Fork => Record::Fork(fixed(bytes, kind)?),
        RecordKind::Exit => Record::Exit(fixed(bytes, kind)?),
        RecordKind::ConnectAttempt => Record::ConnectAttempt(fixed(bytes, kind)?),
        RecordKind::SyscallResult => Record::SyscallResult(fixed(bytes, kind)?),
        RecordKind::TcpOutcome => Record::TcpOutcome(fixed(bytes, kind)?),
        RecordKind::TcpClose => Record::TcpClose(fixed(bytes, kind)?),
    })
}

/// A zeroed exec record to decode into, allocated once per reader.
pub fn new_exec_buffer() -> Box<ExecRecord> {
    // SAFETY: all-zero bytes are a valid `ExecRecord` (integers and byte arrays only).
    Box::new(unsafe { std::mem::zeroed() })
}

/// A NUL-terminated string from a fixed buffer (lossy UTF-8).
pub fn c_str(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// At most `max` NUL-terminated strings (the last one may lack its NUL when the area was
/// cut); an empty area is no arguments at all.
pub fn split_argv(area: &[u8], max: usize) -> Vec<String> {
    if area.is_empty() {
        return Vec::new();
    }
    area.strip_suffix(&[0])
        .unwrap_or(area)
        .split(|&b| b == 0)
        .take(max)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// argv of an exec record and why it is incomplete, if it is. The argument area holds
/// exactly the strings the new image received.
pub fn exec_argv(rec: &ExecRecord) -> (Vec<String>, Option<ArgvTruncation>) {
    let used = &rec.argv[..(rec.argv_len as usize).min(rec.argv.len())];
    let argv = split_argv(used, usize::MAX);
    let truncation = match ArgvStatus::from_u32(rec.argv_status) {
        Some(ArgvStatus::Complete) => None,
        Some(ArgvStatus::TooLong) => Some(ArgvTruncation::TooLong),
        Some(ArgvStatus::Unreadable) => Some(ArgvTruncation::Unreadable),
        Some(ArgvStatus::Unavailable) | None => Some(ArgvTruncation::Unavailable),
    };
    (argv, truncation)
}

/// A path rebuilt in the kernel: components leaf first, NUL-terminated.
pub fn dentry_path(path: &DentryPath) -> Option<String> {
    if path.depth == 0 {
        return None;
    }
    let used = &path.buf[..(path.len as usize).min(path.buf.len())];
    let mut components: Vec<&[u8]> = used.split(|&b| b == 0).filter(|c| !c.is_empty()).collect();
    components.truncate(path.depth as usize);
    components.reverse();
    let mut out = String::new();
    for c in components {
        out.push('/');
        out.push_str(&String::from_utf8_lossy(c));
    }
    Some(out)
}

/// An address from a record, canonical (`::ffff:a.b.c.d` from a dual-stack socket is IPv4).
pub fn ip(family: u16, addr: &[u8; 16]) -> IpAddr {
    if family == 2 {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        protocol::net::canonical_ip(IpAddr::V6(Ipv6Addr::from(*addr)))
    }
}

/// The kernel's internal `dev_t` (major << 20 | minor) as userspace `st_dev`.
pub fn kernel_dev_to_user(dev: u32) -> u64 {
    libc::makedev(dev >> 20, dev & 0xfffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilds_paths_leaf_first_and_argv() {
        let mut p = DentryPath {
            len: 0,
            depth: 3,
            buf: [0; PATH_MAX_BYTES],
        };
        let raw = b"python3.11\0bin\0usr\0";
        p.buf[..raw.len()].copy_from_slice(raw);
        p.len = raw.len() as u32;
        assert_eq!(dentry_path(&p).as_deref(), Some("/usr/bin/python3.11"));
        assert_eq!(split_argv(b"a\0b c\0", usize::MAX), ["a", "b c"]);
        assert_eq!(split_argv(b"a\0\0x\0", usize::MAX), ["a", "", "x"]);
        assert_eq!(
            split_argv(b"a\0b", usize::MAX),
            ["a", "b"],
            "a cut last string"
        );
        assert!(split_argv(b"", usize::MAX).is_empty());
        assert_eq!(split_argv(b"\0", usize::MAX), [""], "one empty argument");
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let mut buf = new_exec_buffer();
        assert_eq!(
            decode(&[0; 4], &mut buf).err(),
            Some(DecodeError::Short { len: 4 })
        );
        let mut bytes = [0u8; 32];
        bytes[0] = 99;
        assert_eq!(
            decode(&bytes, &mut buf).err(),
            Some(DecodeError::UnknownKind(99))
        );
    }

    #[test]
    fn an_exec_record_keeps_only_the_argv_that_arrived() {
        let mut buf = new_exec_buffer();
        let mut bytes = vec![0u8; EXEC_RECORD_FIXED + 6];
        bytes[0] = RecordKind::Exec as u8;
        let argv_len_at = EXEC_RECORD_FIXED - 8;
        bytes[argv_len_at..argv_len_at + 4].copy_from_slice(&4000u32.to_ne_bytes());
        bytes[EXEC_RECORD_FIXED..].copy_from_slice(b"ab\0cd\0");
        let Ok(Record::Exec(rec)) = decode(&bytes, &mut buf) else {
            panic!("an exec record")
        };
        assert_eq!(rec.argv_len, 6, "clamped to the bytes received");
        assert_eq!(exec_argv(rec), (vec!["ab".into(), "cd".into()], None));
    }

    #[test]
    fn an_incomplete_argv_says_why() {
        let mut rec = new_exec_buffer();
        rec.argv[..4].copy_from_slice(b"ab\0c");
        rec.argv_len = 4;
        rec.argc = 7;
        rec.argv_status = ArgvStatus::TooLong as u32;
        assert_eq!(
            exec_argv(&rec),
            (vec!["ab".into(), "c".into()], Some(ArgvTruncation::TooLong))
        );
        rec.argv_len = 0;
        rec.argv_status = ArgvStatus::Unreadable as u32;
        assert_eq!(exec_argv(&rec), (vec![], Some(ArgvTruncation::Unreadable)));
    }
}
