//! Joins a connect attempt (seen at the cgroup hook, before the kernel acts) with its
//! outcome: the syscall's return value, or for a non-blocking TCP connect the socket leaving
//! SYN_SENT. An attempt whose outcome doesn't arrive within the configured wait is reported
//! as pending; if its outcome arrives later still, it is reported again, marked late.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use protocol::{ConnectHook, Outcome, SocketFamily, Timestamp, TransportProtocol};
use sensor_common::{ConnectAttemptRecord, SyscallResultRecord, TcpOutcomeRecord, HOOK_SENDMSG};

use super::decode;
use crate::source::ConnectRecord;

const SOCK_STREAM: u8 = 1;
const TCP_ESTABLISHED: u32 = 1;
const EINPROGRESS: i64 = 115;
/// How long an attempt reported as pending is remembered for a late outcome.
const LATE_OUTCOME_HORIZON: Duration = Duration::from_secs(180);

struct Pending {
    record: ConnectRecord,
    seen: Instant,
    reported_pending: bool,
}

pub struct ConnectJoiner {
    wait: Duration,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    by_tid: HashMap<u32, u64>,
    by_sock: HashMap<u64, u64>,
}

fn outcome_of_errno(errno: i32) -> Outcome {
    match errno {
        libc::ECONNREFUSED => Outcome::Refused,
        libc::ETIMEDOUT => Outcome::TimedOut,
        libc::EPERM | libc::EACCES => Outcome::Denied,
        _ => Outcome::Error,
    }
}

impl ConnectJoiner {
    pub fn new(wait: Duration) -> Self {
        ConnectJoiner {
            wait,
            next_id: 0,
            pending: HashMap::new(),
            by_tid: HashMap::new(),
            by_sock: HashMap::new(),
        }
    }

    pub fn attempt(&mut self, rec: &ConnectAttemptRecord, time: Timestamp, now: Instant) {
        let id = self.next_id;
        self.next_id += 1;
        let is_tcp = rec.sock_type == SOCK_STREAM;
        let record = ConnectRecord {
            time,
            pid: rec.header.pid,
            family: if rec.family == 2 {
                SocketFamily::Ipv4
            } else {
                SocketFamily::Ipv6
            },
            protocol: if is_tcp {
                TransportProtocol::Tcp
            } else {
                TransportProtocol::Udp
            },
            destination_ip: decode::ip(rec.family, &rec.addr),
            destination_port: rec.port,
            source_ip: None,
            source_port: None,
            outcome: Outcome::Pending,
            errno: None,
            hook: if rec.hook == HOOK_SENDMSG {
                ConnectHook::Sendmsg
            } else {
                ConnectHook::Connect
            },
            late_outcome: false,
        };
        self.pending.insert(
            id,
            Pending {
                record,
                seen: now,
                reported_pending: false,
            },
        );
        self.by_tid.insert(rec.header.tid, id);
        if is_tcp && rec.hook != HOOK_SENDMSG {
            self.by_sock.insert(rec.sock, id);
        }
    }

    pub fn syscall_result(&mut self, rec: &SyscallResultRecord, out: &mut Vec<ConnectRecord>) {
        let Some(id) = self.by_tid.remove(&rec.header.tid) else {
            return;
        };
        let Some(p) = self.pending.get(&id) else {
            return;
        };
        let is_tcp = p.record.protocol == TransportProtocol::Tcp;
        if rec.ret == -EINPROGRESS && is_tcp {
            return; // the socket state change will tell
        }
        let (outcome, errno) = if rec.ret >= 0 {
            (Outcome::Ok, None)
        } else {
            let errno = (-rec.ret) as i32;
            (outcome_of_errno(errno), Some(errno))
        };
        self.finish(id, outcome, errno, None, out);
    }

    pub fn tcp_outcome(&mut self, rec: &TcpOutcomeRecord, out: &mut Vec<ConnectRecord>) {
        let Some(id) = self.by_sock.remove(&rec.sock) else {
            return;
        };
        let (outcome, errno) = if rec.new_state == TCP_ESTABLISHED {
            (Outcome::Ok, None)
        } else if rec.reset != 0 {
            (Outcome::Refused, Some(libc::ECONNREFUSED))
        } else if rec.sk_err == 0 {
            // Closed before any outcome (e.g. a non-blocking connect abandoned).
            (Outcome::Pending, None)
        } else {
            (outcome_of_errno(rec.sk_err as i32), Some(rec.sk_err as i32))
        };
        let family = self.pending.get(&id).map(|p| p.record.family);
        let source = family.map(|f| {
            let fam = if f == SocketFamily::Ipv4 { 2 } else { 10 };
            (decode::ip(fam, &rec.source_addr), rec.source_port)
        });
        self.finish(id, outcome, errno, source, out);
    }

    fn finish(
        &mut self,
        id: u64,
        outcome: Outcome,
        errno: Option<i32>,
        source: Option<(std::net::IpAddr, u16)>,
        out: &mut Vec<ConnectRecord>,
    ) {
        let Some(mut p) = self.pending.remove(&id) else {
            return;
        };
        p.record.outcome = outcome;
        p.record.errno = errno;
        if let Some((ip, port)) = source {
            p.record.source_ip = Some(ip);
            p.record.source_port = Some(port);
        }
        p.record.late_outcome = p.reported_pending;
        if p.reported_pending && outcome == Outcome::Pending {
            return; // nothing new to say
        }
        out.push(p.record);
    }

    /// Reports attempts that waited too long as pending, and forgets very old ones.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<ConnectRecord>) {
        let wait = self.wait;
        let mut forget = Vec::new();
        for (id, p) in self.pending.iter_mut() {
            let age = now.saturating_duration_since(p.seen);
            if !p.reported_pending && age >= wait {
                p.reported_pending = true;
                out.push(p.record.clone());
            } else if age >= LATE_OUTCOME_HORIZON {
                forget.push(*id);
            }
        }
        for id in forget {
            self.pending.remove(&id);
        }
        if !self.by_tid.is_empty() || !self.by_sock.is_empty() {
            let pending = &self.pending;
            self.by_tid.retain(|_, id| pending.contains_key(id));
            self.by_sock.retain(|_, id| pending.contains_key(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_common::{RecordHeader, HOOK_CONNECT};

    fn header(tid: u32) -> RecordHeader {
        RecordHeader {
            kind: 0,
            tid,
            pid: tid,
            _pad: 0,
            boot_ns: 0,
        }
    }

    fn attempt(tid: u32, sock: u64, sock_type: u8) -> ConnectAttemptRecord {
        ConnectAttemptRecord {
            header: header(tid),
            sock,
            family: 2,
            port: 443,
            sock_type,
            protocol: if sock_type == 1 { 6 } else { 17 },
            hook: HOOK_CONNECT,
            blocked: 0,
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    }

    fn tcp(sock: u64, state: u32, sk_err: u32, reset: u32) -> TcpOutcomeRecord {
        TcpOutcomeRecord {
            header: header(0),
            sock,
            new_state: state,
            sk_err,
            reset,
            source_port: 5555,
            _pad: 0,
            source_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    }

    #[test]
    fn blocking_connect_is_reported_once_with_its_outcome() {
        let now = Instant::now();
        let mut j = ConnectJoiner::new(Duration::from_secs(1));
        let mut out = Vec::new();
        j.attempt(&attempt(7, 0xa, 1), Timestamp::default(), now);
        j.tcp_outcome(&tcp(0xa, 1, 0, 0), &mut out);
        j.syscall_result(
            &SyscallResultRecord {
                header: header(7),
                ret: 0,
            },
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].outcome, Outcome::Ok);
        assert_eq!(out[0].destination_port, 443);
        assert_eq!(out[0].source_port, Some(5555));
    }

    #[test]
    fn refused_denied_and_nonblocking_outcomes() {
        let now = Instant::now();
        let mut j = ConnectJoiner::new(Duration::from_secs(1));
        let mut out = Vec::new();
        j.attempt(&attempt(1, 0x1, 1), Timestamp::default(), now);
        j.syscall_result(
            &SyscallResultRecord {
                header: header(1),
                ret: -111,
            },
            &mut out,
        );
        j.attempt(&attempt(2, 0x2, 1), Timestamp::default(), now);
        j.syscall_result(
            &SyscallResultRecord {
                header: header(2),
                ret: -1,
            },
            &mut out,
        );
        j.attempt(&attempt(3, 0x3, 1), Timestamp::default(), now);
        j.syscall_result(
            &SyscallResultRecord {
                header: header(3),
                ret: -115,
            },
            &mut out,
        );
        assert_eq!(out.len(), 2, "EINPROGRESS waits for the socket");
        j.tcp_outcome(&tcp(0x3, 7, 0, 1), &mut out);
        let outcomes: Vec<_> = out.iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            [Outcome::Refused, Outcome::Denied, Outcome::Refused]
        );
    }

    #[test]
    fn slow_outcome_is_pending_then_late() {
        let now = Instant::now();
        let mut j = ConnectJoiner::new(Duration::from_millis(10));
        let mut out = Vec::new();
        j.attempt(&attempt(4, 0x4, 1), Timestamp::default(), now);
        j.expire(now + Duration::from_millis(20), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].outcome, Outcome::Pending);
        j.tcp_outcome(&tcp(0x4, 7, libc::ETIMEDOUT as u32, 0), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].outcome, Outcome::TimedOut);
        assert!(out[1].late_outcome);
    }

    #[test]
    fn udp_send_is_ok_on_success() {
        let now = Instant::now();
        let mut j = ConnectJoiner::new(Duration::from_secs(1));
        let mut out = Vec::new();
        j.attempt(&attempt(5, 0x5, 2), Timestamp::default(), now);
        j.syscall_result(
            &SyscallResultRecord {
                header: header(5),
                ret: 12,
            },
            &mut out,
        );
        assert_eq!(out[0].protocol, TransportProtocol::Udp);
        assert_eq!(out[0].outcome, Outcome::Ok);
    }
}
