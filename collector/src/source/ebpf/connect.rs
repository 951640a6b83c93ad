//! Joins a connect attempt (seen at the cgroup hook, before the kernel acts) with its
//! outcome: the syscall's return value, or for a non-blocking TCP connect the socket leaving
//! SYN_SENT. An attempt whose outcome doesn't arrive within the configured wait is reported
//! as pending; if its outcome arrives later still, it is reported again, marked late.
//!
//! One syscall can carry many attempts (`sendmmsg` to N destinations: N attempts, one
//! return value), so a thread's attempts are kept in order until its syscall returns. The
//! joiner is bounded: past [`MAX_PENDING`] attempts the oldest is reported as pending at
//! once and counted, never kept forever.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use protocol::{ConnectHook, Outcome, SocketFamily, Timestamp, TransportProtocol};
use sensor_common::{
    ConnectAttemptRecord, SyscallResultRecord, TcpOutcomeRecord, HOOK_SENDMSG, SYSCALL_SENDMMSG,
};

use super::decode;
use crate::source::ConnectRecord;

const SOCK_STREAM: u8 = 1;
const TCP_ESTABLISHED: u32 = 1;
const EINPROGRESS: i64 = 115;
/// How long an attempt reported as pending is remembered for a late outcome.
const LATE_OUTCOME_HORIZON: Duration = Duration::from_secs(180);
/// Attempts awaiting an outcome (or remembered for a late one) at most.
pub const MAX_PENDING: usize = 65_536;

struct Pending {
    record: ConnectRecord,
    seen: Instant,
    reported_pending: bool,
    tid: u32,
    /// The socket whose state change completes it (non-blocking TCP connects).
    sock: Option<u64>,
}

pub struct ConnectJoiner {
    wait: Duration,
    capacity: usize,
    next_id: u64,
    /// By id, which grows with arrival: the first entry is the oldest.
    pending: BTreeMap<u64, Pending>,
    /// A thread's attempts in flight, in order (a `sendmmsg` has several).
    by_tid: HashMap<u32, Vec<u64>>,
    by_sock: HashMap<u64, u64>,
    evicted: u64,
}

fn outcome_of_errno(errno: i32) -> Outcome {
    match errno {
        libc::ECONNREFUSED => Outcome::Refused,
        libc::ETIMEDOUT => Outcome::TimedOut,
        libc::EPERM | libc::EACCES => Outcome::Denied,
        _ => Outcome::Error,
    }
}

/// The outcome a syscall's return value gives an attempt, `None` when the socket's state
/// change will tell (a non-blocking TCP connect).
fn outcome_of_return(ret: i64, is_tcp: bool) -> Option<(Outcome, Option<i32>)> {
    if ret == -EINPROGRESS && is_tcp {
        return None;
    }
    Some(if ret >= 0 {
        (Outcome::Ok, None)
    } else {
        // A kernel errno is small; anything else is kept recognisably out of range.
        let errno = i32::try_from(ret.unsigned_abs()).unwrap_or(i32::MAX);
        (outcome_of_errno(errno), Some(errno))
    })
}

impl ConnectJoiner {
    pub fn new(wait: Duration) -> Self {
        Self::with_capacity(wait, MAX_PENDING)
    }

    pub fn with_capacity(wait: Duration, capacity: usize) -> Self {
        ConnectJoiner {
            wait,
            capacity: capacity.max(1),
            next_id: 0,
            pending: BTreeMap::new(),
            by_tid: HashMap::new(),
            by_sock: HashMap::new(),
            evicted: 0,
        }
    }

    /// Attempts awaiting an outcome or remembered for a late one.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Attempts pushed out by a full joiner since start (each was reported as pending).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn attempt(
        &mut self,
        rec: &ConnectAttemptRecord,
        time: Timestamp,
        now: Instant,
        out: &mut Vec<ConnectRecord>,
    ) {
        if self.pending.len() >= self.capacity {
            self.evict_oldest(out);
        }
        let id = self.next_id;
        self.next_id += 1;
        let is_tcp = rec.sock_type == SOCK_STREAM;
        let tracks_sock = is_tcp && rec.hook != HOOK_SENDMSG;
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
                tid: rec.header.tid,
                sock: tracks_sock.then_some(rec.sock),
            },
        );
        self.by_tid.entry(rec.header.tid).or_default().push(id);
        if tracks_sock {
            self.by_sock.insert(rec.sock, id);
        }
    }

    fn evict_oldest(&mut self, out: &mut Vec<ConnectRecord>) {
        let Some((id, p)) = self.pending.pop_first() else {
            return;
        };
        self.unlink(id, &p);
        self.evicted += 1;
        if !p.reported_pending {
            out.push(p.record);
        }
    }

    /// Removes the thread and socket links of a forgotten attempt.
    fn unlink(&mut self, id: u64, p: &Pending) {
        if let Some(ids) = self.by_tid.get_mut(&p.tid) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.by_tid.remove(&p.tid);
            }
        }
        if let Some(sock) = p.sock {
            if self.by_sock.get(&sock) == Some(&id) {
                self.by_sock.remove(&sock);
            }
        }
    }

    pub fn syscall_result(&mut self, rec: &SyscallResultRecord, out: &mut Vec<ConnectRecord>) {
        let Some(ids) = self.by_tid.remove(&rec.header.tid) else {
            return;
        };
        for (i, id) in ids.into_iter().enumerate() {
            let Some(p) = self.pending.get(&id) else {
                continue;
            };
            let is_tcp = p.record.protocol == TransportProtocol::Tcp;
            let outcome = if rec.syscall == SYSCALL_SENDMMSG && rec.ret >= 0 {
                // The first `ret` messages went out; the next one failed (its error is not
                // returned) and the rest were never tried.
                Some(if (i as i64) < rec.ret {
                    (Outcome::Ok, None)
                } else {
                    (Outcome::Error, None)
                })
            } else {
                outcome_of_return(rec.ret, is_tcp)
            };
            if let Some((outcome, errno)) = outcome {
                self.finish(id, outcome, errno, None, out);
            }
        }
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
        self.unlink(id, &p);
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

    /// Reports attempts that waited too long as pending, and forgets very old ones. Attempts
    /// are visited oldest first and only as far as some are due.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<ConnectRecord>) {
        let mut forget = Vec::new();
        for (id, p) in self.pending.iter_mut() {
            let age = now.saturating_duration_since(p.seen);
            if age < self.wait {
                break;
            }
            if !p.reported_pending {
                p.reported_pending = true;
                out.push(p.record.clone());
            } else if age >= LATE_OUTCOME_HORIZON {
                forget.push(*id);
            }
        }
        for id in forget {
            if let Some(p) = self.pending.remove(&id) {
                self.unlink(id, &p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_common::{RecordHeader, HOOK_CONNECT, SYSCALL_CONNECT, SYSCALL_SENDTO};

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

    fn udp_send(tid: u32, sock: u64, last_octet: u8) -> ConnectAttemptRecord {
        let mut a = attempt(tid, sock, 2);
        a.hook = HOOK_SENDMSG;
        a.addr[3] = last_octet;
        a
    }

    fn result(tid: u32, ret: i64, syscall: u32) -> SyscallResultRecord {
        SyscallResultRecord {
            header: header(tid),
            ret,
            syscall,
            _pad: 0,
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
        j.attempt(&attempt(7, 0xa, 1), Timestamp::default(), now, &mut out);
        j.tcp_outcome(&tcp(0xa, 1, 0, 0), &mut out);
        j.syscall_result(&result(7, 0, SYSCALL_CONNECT), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].outcome, Outcome::Ok);
        assert_eq!(out[0].destination_port, 443);
        assert_eq!(out[0].source_port, Some(5555));
        assert_eq!(j.pending(), 0);
        assert!(j.by_tid.is_empty() && j.by_sock.is_empty());
    }

    #[test]
    fn refused_denied_and_nonblocking_outcomes() {
        let now = Instant::now();
        let mut j = ConnectJoiner::new(Duration::from_secs(1));
        let mut out = Vec::new();
        j.attempt(&attempt(1, 0x1, 1), Timestamp::default(), now, &mut out);
        j.syscall_result(&result(1, -111, SYSCALL_CONNECT), &mut out);
        j.attempt(&attempt(2, 0x2, 1), Timestamp::default(), now, &mut out);
        j.syscall_result(&result(2, -1, SYSCALL_CONNECT), &mut out);
        j.attempt(&attempt(3, 0x3, 1), Timestamp::default(), now, &mut out);
        j.syscall_result(&result(3, -115, SYSCALL_CONNECT), &mut out);
        assert_eq!(out.len(), 2, "EINPROGRESS waits for the socket");
        j.tcp_outcome(&tcp(0x3, 7, 0, 1), &mut out);
        let outcomes: Vec<_> = out.iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            [Outcome::Refused, Outcome::Denied, Outcome::Refused]
        );
        assert_eq!(j.pending(), 0);
    }

    #[test]
    fn slow_outcome_is_pending_then_late() {
        let now = Instant::now();
        let mut j = ConnectJoiner::new(Duration::from_millis(10));
        let mut out = Vec::new();
        j.attempt(&attempt(4, 0x4, 1), Timestamp::default(), now, &mut out);
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
        j.attempt(&udp_send(5, 0x5, 1), Timestamp::default(), now, &mut out);
        j.syscall_result(&result(5, 12, SYSCALL_SENDTO), &mut out);
        assert_eq!(out[0].protocol, TransportProtocol::Udp);
        assert_eq!(out[0].outcome, Outcome::Ok);
    }

    #[test]
    fn one_sendmmsg_to_many_destinations_completes_every_attempt() {
        let now = Instant::now();
        let mut j = ConnectJoiner::new(Duration::from_secs(1));
        let mut out = Vec::new();
        for d in 1..=50 {
            j.attempt(&udp_send(9, 0x9, d), Timestamp::default(), now, &mut out);
        }
        // 48 messages went out; the 49th failed after its hook ran, the 50th never did.
        j.syscall_result(&result(9, 48, SYSCALL_SENDMMSG), &mut out);
        assert_eq!(out.len(), 50);
        assert!(out[..48].iter().all(|r| r.outcome == Outcome::Ok));
        assert!(out[48..].iter().all(|r| r.outcome == Outcome::Error));
        let octets: Vec<_> = out
            .iter()
            .map(|r| match r.destination_ip {
                std::net::IpAddr::V4(a) => a.octets()[3],
                _ => 0,
            })
            .collect();
        assert_eq!(octets, (1..=50).collect::<Vec<u8>>(), "in order");
        assert_eq!(j.pending(), 0, "nothing left pending");
        j.attempt(&udp_send(9, 0x9, 1), Timestamp::default(), now, &mut out);
        j.syscall_result(
            &result(9, -(libc::ENETUNREACH as i64), SYSCALL_SENDMMSG),
            &mut out,
        );
        assert_eq!(out[50].errno, Some(libc::ENETUNREACH));
    }

    #[test]
    fn a_full_joiner_reports_its_oldest_attempt_as_pending_and_counts_it() {
        let now = Instant::now();
        let mut j = ConnectJoiner::with_capacity(Duration::from_secs(1), 4);
        let mut out = Vec::new();
        for tid in 1..=6 {
            j.attempt(
                &attempt(tid, tid as u64, 1),
                Timestamp::default(),
                now,
                &mut out,
            );
        }
        assert_eq!(j.pending(), 4);
        assert_eq!(j.evicted(), 2);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|r| r.outcome == Outcome::Pending));
        assert_eq!(j.by_tid.len(), 4, "no links left to evicted attempts");
        assert_eq!(j.by_sock.len(), 4);
    }

    #[test]
    fn forgotten_attempts_leave_no_links_behind() {
        let now = Instant::now();
        let mut j = ConnectJoiner::new(Duration::from_millis(10));
        let mut out = Vec::new();
        j.attempt(&attempt(3, 0x3, 1), Timestamp::default(), now, &mut out);
        j.expire(now + Duration::from_millis(20), &mut out);
        j.expire(
            now + LATE_OUTCOME_HORIZON + Duration::from_secs(1),
            &mut out,
        );
        assert_eq!(j.pending(), 0);
        assert!(j.by_tid.is_empty() && j.by_sock.is_empty());
    }
}
