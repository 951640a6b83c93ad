//! Network: every connect()/sendto() seen at the cgroup sock_addr hooks, the syscall's return
//! value, and TCP outcomes from socket state changes. The hooks allow everything except
//! destinations in the block tries (`BLOCK_ANY_PORT`, `BLOCK_PORT`), which they refuse
//! (EPERM); the collector's own traffic is never refused.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, gen},
    macros::{cgroup_sock_addr, tracepoint},
    maps::lpm_trie::Key,
    programs::{SockAddrContext, TracePointContext},
};
use sensor_common::*;

use crate::{
    kernel::{current_task, is_collector, offset, read, read_ptr},
    maps::{
        self, BLOCK_ANY_PORT, BLOCK_PORT, CONNECT_INFLIGHT, EVENTS, TCP_OPEN, TCP_TRACKED, UDP_SEEN,
    },
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: u32 = 1;
const TCP_SYN_SENT: u32 = 2;
const TCP_FIN_WAIT1: u32 = 4;
const TCP_FIN_WAIT2: u32 = 5;
const TCP_CLOSE: u32 = 7;
const TCP_LAST_ACK: u32 = 9;
const TCP_CLOSING: u32 = 11;
/// `enum sock_flags`: set by `tcp_fin` when the peer's FIN arrives, and by nothing else in TCP.
const SOCK_DONE: u64 = 1;

/// Allow the operation.
const ALLOW: i32 = 1;
/// Refuse it: the syscall fails with EPERM.
const DENY: i32 = 0;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct UdpKey {
    sock: u64,
    addr: [u8; 16],
    port: u16,
    _pad: [u8; 6],
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    observe(&ctx, AF_INET, HOOK_CONNECT)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    observe(&ctx, AF_INET6, HOOK_CONNECT)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    observe(&ctx, AF_INET, HOOK_SENDMSG)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    observe(&ctx, AF_INET6, HOOK_SENDMSG)
}

/// Whether a destination is in the block tries. `addr` is IPv4 in its first 4 bytes for
/// `AF_INET`, else IPv6.
#[inline(always)]
fn is_blocked(family: u16, addr: &[u8; 16], port: u16) -> bool {
    let mut v6 = [0u8; 16];
    if family == AF_INET {
        v6[10] = 0xff;
        v6[11] = 0xff;
        v6[12] = addr[0];
        v6[13] = addr[1];
        v6[14] = addr[2];
        v6[15] = addr[3];
    } else {
        v6 = *addr;
    }
    if BLOCK_ANY_PORT.get(&Key::new(128, v6)).is_some() {
        return true;
    }
    let mut data = [0u8; 20];
    let p = port.to_be_bytes();
    data[0] = p[0];
    data[1] = p[1];
    let mut i = 0;
    while i < 16 {
        data[2 + i] = v6[i];
        i += 1;
    }
    BLOCK_PORT.get(&Key::new(144, data)).is_some()
}

/// Reports the attempt; returns the verdict for the kernel.
#[inline(always)]
fn observe(ctx: &SockAddrContext, family: u16, hook: u8) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let pid = (pid_tgid >> 32) as u32;
    if is_collector(pid) {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the program's context; each field is read with its own aligned 4-byte
    // load, the only width the verifier accepts for some of them.
    unsafe {
        let sock_type = core::ptr::read_volatile(&(*sa).type_);
        let protocol = core::ptr::read_volatile(&(*sa).protocol);
        let port = u16::from_be(core::ptr::read_volatile(&(*sa).user_port) as u16);
        let sock = (*sa).__bindgen_anon_1.sk as u64;
        let mut addr = [0u8; 16];
        if family == AF_INET {
            let ip4 = core::ptr::read_volatile(&(*sa).user_ip4);
            addr[..4].copy_from_slice(&ip4.to_ne_bytes());
        } else {
            let mut i = 0;
            while i < 4 {
                let word = core::ptr::read_volatile(&(*sa).user_ip6[i]);
                addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
                i += 1;
            }
        }

        let blocked = is_blocked(family, &addr, port);
        let verdict = if blocked { DENY } else { ALLOW };

        if hook == HOOK_SENDMSG {
            if sock_type != SOCK_DGRAM {
                return verdict;
            }
            let key = UdpKey {
                sock,
                addr,
                port,
                _pad: [0; 6],
            };
            if UDP_SEEN.get_ptr(&key).is_some() {
                return verdict;
            }
            if !blocked {
                let _ = UDP_SEEN.insert(&key, &1, 0);
            }
        }

        let Some(mut entry) = EVENTS.reserve::<ConnectAttemptRecord>(0) else {
            maps::count_drop(DropKind::Connect);
            return verdict;
        };
        entry.write(ConnectAttemptRecord {
            header: RecordHeader {
                kind: RecordKind::ConnectAttempt as u32,
                tid,
                pid,
                _pad: 0,
                boot_ns: gen::bpf_ktime_get_boot_ns(),
            },
            sock,
            family,
            port,
            sock_type: sock_type as u8,
            protocol: protocol as u8,
            hook,
            blocked: blocked as u8,
            addr,
        });
        entry.submit(0);
        let now = gen::bpf_ktime_get_boot_ns();
        // A blocked connect never reaches SYN_SENT: only its syscall's EPERM is awaited.
        let tracked_sock = if !blocked && hook == HOOK_CONNECT && sock_type == SOCK_STREAM {
            let tracked = TrackedSock {
                reset: 0,
                pid,
                since_ns: now,
                start_boottime: read(
                    read_ptr(current_task(), offset!(task_group_leader)),
                    offset!(task_start_boottime),
                ),
            };
            if TCP_TRACKED.insert(&sock, &tracked, 0).is_err() {
                maps::count_drop(DropKind::ConnectTracking);
            }
            sock
        } else {
            0
        };
        // The syscall's return value completes the attempt (EPERM of a block: `denied`).
        let inflight = InflightConnect {
            sock: tracked_sock,
            since_ns: now,
        };
        if CONNECT_INFLIGHT.insert(&tid, &inflight, 0).is_err() {
            maps::count_drop(DropKind::ConnectTracking);
        }
        verdict
    }
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    syscall_result(&ctx, SYSCALL_CONNECT)
}

#[tracepoint]
pub fn sys_exit_sendto(ctx: TracePointContext) -> u32 {
    syscall_result(&ctx, SYSCALL_SENDTO)
}

#[tracepoint]
pub fn sys_exit_sendmsg(ctx: TracePointContext) -> u32 {
    syscall_result(&ctx, SYSCALL_SENDMSG)
}

#[tracepoint]
pub fn sys_exit_sendmmsg(ctx: TracePointContext) -> u32 {
    syscall_result(&ctx, SYSCALL_SENDMMSG)
}

/// `connect()` returns this while a non-blocking TCP connect goes on.
const EINPROGRESS: i64 = 115;

/// Reports the return value of a syscall whose attempt was reported by this thread.
#[inline(always)]
fn syscall_result(ctx: &TracePointContext, syscall: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(inflight) = CONNECT_INFLIGHT.get_ptr(&tid) else {
        return 0;
    };
    // SAFETY: a value pointer the map just returned.
    let sock = unsafe { (*inflight).sock };
    let _ = CONNECT_INFLIGHT.remove(&tid);
    let ret: i64 = unsafe { ctx.read_at(offset!(tp_sys_exit_ret)).unwrap_or(0) };
    if sock != 0 && ret < 0 && ret != -EINPROGRESS {
        // Failed before the socket reached SYN_SENT (no route, no buffer, a signal): no
        // state change will ever untrack it.
        let _ = TCP_TRACKED.remove(&sock);
    }
    let rec = SyscallResultRecord {
        header: RecordHeader {
            kind: RecordKind::SyscallResult as u32,
            tid,
            pid: (pid_tgid >> 32) as u32,
            _pad: 0,
            boot_ns: unsafe { gen::bpf_ktime_get_boot_ns() },
        },
        ret,
        syscall,
        _pad: 0,
    };
    maps::emit(&rec, DropKind::ConnectResult);
    0
}

/// A tracked socket leaving SYN_SENT, or an established one closing. This can run in softirq
/// context, where the current task is unrelated: records are keyed by the socket, not by pid.
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    unsafe {
        let protocol: u16 = ctx.read_at(offset!(tp_sk_state_protocol)).unwrap_or(0);
        if protocol != IPPROTO_TCP {
            return 0;
        }
        let old: u32 = ctx.read_at(offset!(tp_sk_state_oldstate)).unwrap_or(0);
        let new: u32 = ctx.read_at(offset!(tp_sk_state_newstate)).unwrap_or(0);
        let sock: u64 = ctx.read_at(offset!(tp_sk_state_skaddr)).unwrap_or(0);
        if new == TCP_CLOSE && old != TCP_SYN_SENT {
            closed(&ctx, sock, old);
            return 0;
        }
        if old != TCP_SYN_SENT || (new != TCP_ESTABLISHED && new != TCP_CLOSE) {
            return 0;
        }
        let Some(tracked) = TCP_TRACKED.get_ptr(&sock) else {
            return 0;
        };
        let reset = (*tracked).reset;
        let owner = *tracked;
        let _ = TCP_TRACKED.remove(&sock);
        if new == TCP_ESTABLISHED {
            let open = OpenConn {
                established_ns: gen::bpf_ktime_get_boot_ns(),
                owner_start_boottime: owner.start_boottime,
                owner_pid: owner.pid,
                _pad: 0,
            };
            if TCP_OPEN.insert(&sock, &open, 0).is_err() {
                maps::count_drop(DropKind::ConnectTracking);
            }
        }
        let family: u16 = ctx.read_at(offset!(tp_sk_state_family)).unwrap_or(0);
        let mut source_addr = [0u8; 16];
        if family == AF_INET {
            let a: [u8; 4] = ctx.read_at(offset!(tp_sk_state_saddr)).unwrap_or([0; 4]);
            source_addr[..4].copy_from_slice(&a);
        } else {
            source_addr = ctx
                .read_at(offset!(tp_sk_state_saddr_v6))
                .unwrap_or([0; 16]);
        }
        let pid_tgid = bpf_get_current_pid_tgid();
        let rec = TcpOutcomeRecord {
            header: RecordHeader {
                kind: RecordKind::TcpOutcome as u32,
                tid: pid_tgid as u32,
                pid: (pid_tgid >> 32) as u32,
                _pad: 0,
                boot_ns: gen::bpf_ktime_get_boot_ns(),
            },
            sock,
            new_state: new,
            sk_err: if new == TCP_CLOSE {
                read::<u32>(sock as *const u8, offset!(sock_sk_err))
            } else {
                0
            },
            reset,
            source_port: ctx.read_at(offset!(tp_sk_state_sport)).unwrap_or(0),
            _pad: 0,
            source_addr,
        };
        maps::emit(&rec, DropKind::ConnectResult);
    }
    0
}

/// An established connection we followed reached TCP_CLOSE: its lifetime and bytes.
#[inline(always)]
unsafe fn closed(ctx: &TracePointContext, sock: u64, old: u32) {
    let Some(open) = TCP_OPEN.get_ptr(&sock) else {
        return;
    };
    let open = *open;
    let _ = TCP_OPEN.remove(&sock);
    let family: u16 = ctx.read_at(offset!(tp_sk_state_family)).unwrap_or(0);
    let mut destination_addr = [0u8; 16];
    if family == AF_INET {
        let a: [u8; 4] = ctx.read_at(offset!(tp_sk_state_daddr)).unwrap_or([0; 4]);
        destination_addr[..4].copy_from_slice(&a);
    } else {
        destination_addr = ctx
            .read_at(offset!(tp_sk_state_daddr_v6))
            .unwrap_or([0; 16]);
    }
    // The kernel's counters move with sequence numbers: the SYN counts one in `bytes_acked`,
    // so does our FIN once acknowledged (we sent one in these states; all we sent is acked
    // when snd_una reached write_seq), and the peer's FIN one in `bytes_received`.
    let base = sock as *const u8;
    let fin_acked = matches!(
        old,
        TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_CLOSING | TCP_LAST_ACK
    ) && read::<u32>(base, offset!(tcp_snd_una))
        == read::<u32>(base, offset!(tcp_write_seq));
    let fin_received = read::<u64>(base, offset!(sock_sk_flags)) & (1 << SOCK_DONE) != 0;
    let bytes_acked =
        read::<u64>(base, offset!(tcp_bytes_acked)).saturating_sub(1 + u64::from(fin_acked));
    let bytes_received =
        read::<u64>(base, offset!(tcp_bytes_received)).saturating_sub(u64::from(fin_received));
    let pid_tgid = bpf_get_current_pid_tgid();
    let rec = TcpCloseRecord {
        header: RecordHeader {
            kind: RecordKind::TcpClose as u32,
            tid: pid_tgid as u32,
            pid: (pid_tgid >> 32) as u32,
            _pad: 0,
            boot_ns: gen::bpf_ktime_get_boot_ns(),
        },
        sock,
        established_ns: open.established_ns,
        bytes_acked,
        bytes_received,
        owner_start_boottime: open.owner_start_boottime,
        owner_pid: open.owner_pid,
        family,
        source_port: ctx.read_at(offset!(tp_sk_state_sport)).unwrap_or(0),
        destination_port: ctx.read_at(offset!(tp_sk_state_dport)).unwrap_or(0),
        _pad: [0; 3],
        destination_addr,
    };
    maps::emit(&rec, DropKind::ConnectResult);
}

/// A RST for a tracked connecting socket: its close is then a refusal.
#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    unsafe {
        let sock: u64 = ctx.read_at(offset!(tp_reset_skaddr)).unwrap_or(0);
        if let Some(tracked) = TCP_TRACKED.get_ptr_mut(&sock) {
            (*tracked).reset = 1;
        }
    }
    0
}
