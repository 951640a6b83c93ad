//! The kernel↔userspace ABI of the Linux sensor.
//!
//! Every record the eBPF programs write into the `EVENTS` ring buffer starts with a
//! [`RecordHeader`]; its `kind` says which `#[repr(C)]` struct follows. The collector decodes
//! them in `collector/src/source/ebpf/decode.rs`. Nothing but layout lives here.
#![no_std]

/// Bytes of argv (NUL-separated, as the kernel laid them out for the new image) kept per exec.
pub const ARGV_MAX_BYTES: usize = 4096;
/// Bytes for the path as invoked (the exec tracepoint's `filename`).
pub const FILENAME_MAX_BYTES: usize = 256;
/// Bytes for a path rebuilt from dentries (resolved exe, cwd); components are stored
/// leaf first, each NUL-terminated, and reversed in userspace.
pub const PATH_MAX_BYTES: usize = 1024;
/// Deepest directory nesting walked when rebuilding a path.
pub const PATH_MAX_DEPTH: usize = 32;
/// Bytes of the controlling terminal's name (`tty_struct.name`).
pub const TTY_NAME_BYTES: usize = 32;

/// What follows a [`RecordHeader`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
    /// A connect()/sendto() seen by a cgroup sock_addr hook, before the kernel acts on it.
    ConnectAttempt = 4,
    /// The syscall that carried a [`RecordKind::ConnectAttempt`] returned.
    SyscallResult = 5,
    /// A tracked TCP socket left SYN_SENT (established, or closed with an error).
    TcpOutcome = 6,
    /// An established outbound TCP connection closed: its lifetime and bytes.
    TcpClose = 7,
}

impl RecordKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Exec,
            2 => Self::Fork,
            3 => Self::Exit,
            4 => Self::ConnectAttempt,
            5 => Self::SyscallResult,
            6 => Self::TcpOutcome,
            7 => Self::TcpClose,
            _ => return None,
        })
    }
}

/// Index of each per-type drop counter in the `DROPS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropKind {
    Exec = 0,
    Fork = 1,
    Exit = 2,
    Connect = 3,
    ConnectResult = 4,
    /// A connect could not be tracked until its outcome (`CONNECT_INFLIGHT` or
    /// `TCP_TRACKED` full): it is still reported, with outcome `pending`.
    ConnectTracking = 5,
}

pub const DROP_KINDS: usize = 6;

impl DropKind {
    pub const ALL: [DropKind; DROP_KINDS] = [
        DropKind::Exec,
        DropKind::Fork,
        DropKind::Exit,
        DropKind::Connect,
        DropKind::ConnectResult,
        DropKind::ConnectTracking,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropKind::Exec => "exec",
            DropKind::Fork => "fork",
            DropKind::Exit => "exit",
            DropKind::Connect => "connect",
            DropKind::ConnectResult => "connect_result",
            DropKind::ConnectTracking => "connect_tracking",
        }
    }
}

/// Drops per kind of one cgroup (the value of `CGROUP_DROPS`, keyed by cgroup v2 id): which
/// workload lost records, not only how many were lost on the host.
pub type CgroupDrops = [u64; DROP_KINDS];
/// Cgroups whose drops are counted one by one; drops of further cgroups are counted under
/// cgroup id 0.
pub const CGROUP_DROPS_MAX_ENTRIES: u32 = 1024;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    pub kind: u32,
    /// Thread id of the current task (for fork: of the parent).
    pub tid: u32,
    /// Process id (tgid) of the current task.
    pub pid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME, converted to wall clock in userspace.
    pub boot_ns: u64,
}

/// Exec flags.
pub const EXEC_EXE_TRUNCATED: u32 = 1 << 2;
pub const EXEC_CWD_TRUNCATED: u32 = 1 << 3;
pub const EXEC_HAS_TTY: u32 = 1 << 4;

/// How argv was captured: read at `sched_process_exec` from the new image's argument area
/// (`mm->arg_start..arg_end`), which holds exactly what the kernel handed the program.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgvStatus {
    /// The whole argument area was read.
    Complete = 0,
    /// The area is longer than [`ARGV_MAX_BYTES`]: the first bytes were read.
    TooLong = 1,
    /// Reading the area failed (user memory not readable at that moment).
    Unreadable = 2,
    /// The task had no argument area to read (no mm, or empty bounds).
    Unavailable = 3,
}

impl ArgvStatus {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Complete,
            1 => Self::TooLong,
            2 => Self::Unreadable,
            3 => Self::Unavailable,
            _ => return None,
        })
    }
}

/// A path rebuilt from dentries: `len` bytes of NUL-terminated components, leaf first.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DentryPath {
    pub len: u32,
    pub depth: u32,
    pub buf: [u8; PATH_MAX_BYTES],
}

/// `sched_process_exec`, with argv read from the new image's argument area.
///
/// Written with a variable length: only `argv_len` bytes of `argv` are sent.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    pub header: RecordHeader,
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    /// `u32::MAX` when the kernel has no audit loginuid.
    pub loginuid: u32,
    pub flags: u32,
    /// `task_struct.start_boottime` of the process (ns since boot).
    pub start_boottime: u64,
    pub cgroup_id: u64,
    /// Device and inode of the executable (`mm->exe_file->f_inode`).
    pub exe_dev: u32,
    /// argc as the new image's stack holds it (0 when unreadable): tells how many arguments
    /// a cut argument area had.
    pub argc: u32,
    pub exe_ino: u64,
    pub comm: [u8; 16],
    pub tty: [u8; TTY_NAME_BYTES],
    pub filename: [u8; FILENAME_MAX_BYTES],
    pub exe: DentryPath,
    pub cwd: DentryPath,
    pub argv_len: u32,
    /// An [`ArgvStatus`].
    pub argv_status: u32,
    pub argv: [u8; ARGV_MAX_BYTES],
}

/// Bytes of an [`ExecRecord`] before `argv`.
pub const EXEC_RECORD_FIXED: usize = core::mem::size_of::<ExecRecord>() - ARGV_MAX_BYTES;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord {
    pub header: RecordHeader,
    pub child_pid: u32,
    pub _pad: u32,
    /// `start_boottime` of the child.
    pub child_start_boottime: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub header: RecordHeader,
    /// `task_struct.exit_code` as wait(2) would report it.
    pub exit_code: u32,
    pub _pad: u32,
    pub start_boottime: u64,
}

/// Which hook saw the attempt.
pub const HOOK_CONNECT: u8 = 1;
pub const HOOK_SENDMSG: u8 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectAttemptRecord {
    pub header: RecordHeader,
    /// Kernel address of the socket: joins [`TcpOutcomeRecord`]s.
    pub sock: u64,
    /// AF_INET / AF_INET6.
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    /// SOCK_STREAM / SOCK_DGRAM.
    pub sock_type: u8,
    /// IPPROTO_TCP / IPPROTO_UDP.
    pub protocol: u8,
    pub hook: u8,
    /// 1 when an enforcement rule refused it (returned 0 to the kernel).
    pub blocked: u8,
    /// Destination address: IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
}

/// Which syscall a [`SyscallResultRecord`] is the return of.
pub const SYSCALL_CONNECT: u32 = 1;
pub const SYSCALL_SENDTO: u32 = 2;
pub const SYSCALL_SENDMSG: u32 = 3;
/// `sendmmsg`: one syscall, one attempt per message; returns how many messages went out.
pub const SYSCALL_SENDMMSG: u32 = 4;

/// The return value of the connect/sendto/sendmsg/sendmmsg syscall that carried attempts.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallResultRecord {
    pub header: RecordHeader,
    pub ret: i64,
    /// `SYSCALL_*`.
    pub syscall: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpOutcomeRecord {
    pub header: RecordHeader,
    pub sock: u64,
    /// TCP state entered (TCP_ESTABLISHED = 1, TCP_CLOSE = 7).
    pub new_state: u32,
    /// `sk->sk_err` when the socket closed (ECONNREFUSED, ETIMEDOUT, ...).
    pub sk_err: u32,
    /// A RST arrived for this socket while it was connecting.
    pub reset: u32,
    pub source_port: u16,
    pub _pad: u16,
    pub source_addr: [u8; 16],
}

/// An outbound TCP connection closed (any path to TCP_CLOSE: FIN, RST, abort).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpCloseRecord {
    pub header: RecordHeader,
    pub sock: u64,
    /// When it was established (`bpf_ktime_get_boot_ns`).
    pub established_ns: u64,
    /// Payload bytes sent and acknowledged by the peer (`tcp_sock.bytes_acked` less the
    /// sequence numbers of the SYN and of an acknowledged FIN).
    pub bytes_acked: u64,
    /// Payload bytes received (`tcp_sock.bytes_received` less a received FIN).
    pub bytes_received: u64,
    /// The process that connected (the close may run in another's context), and its start
    /// (`task_struct.start_boottime` of its leader): together they name it after it exited.
    pub owner_start_boottime: u64,
    pub owner_pid: u32,
    pub family: u16,
    /// Host byte order.
    pub source_port: u16,
    pub destination_port: u16,
    pub _pad: [u16; 3],
    /// IPv4 in the first 4 bytes.
    pub destination_addr: [u8; 16],
}

/// Value of `TCP_OPEN`: an established outbound connection, until it closes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OpenConn {
    pub established_ns: u64,
    pub owner_start_boottime: u64,
    pub owner_pid: u32,
    pub _pad: u32,
}

/// Established outbound connections followed until they close.
pub const TCP_OPEN_MAX_ENTRIES: u32 = 65536;

/// Value of `TCP_TRACKED`: what the outcome programs need to know about a connecting socket.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TrackedSock {
    pub reset: u32,
    /// The process that connects, and its start (its leader's `start_boottime`).
    pub pid: u32,
    /// When the connect started (`bpf_ktime_get_boot_ns`): entries whose socket never left
    /// SYN_SENT through a traced transition are swept by age.
    pub since_ns: u64,
    pub start_boottime: u64,
}

/// Value of `CONNECT_INFLIGHT` (keyed by thread id): a connect/sendto/sendmsg whose attempt
/// was reported and whose syscall has not returned yet.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InflightConnect {
    /// The socket of a TCP connect (0 otherwise): a connect that fails before the socket
    /// reaches SYN_SENT untracks it.
    pub sock: u64,
    pub since_ns: u64,
}

/// Tracking entries (`CONNECT_INFLIGHT`, `TCP_TRACKED`): a full map refuses new entries,
/// which is counted as [`DropKind::ConnectTracking`], never silently evicts.
pub const CONNECT_INFLIGHT_MAX_ENTRIES: u32 = 16384;
pub const TCP_TRACKED_MAX_ENTRIES: u32 = 65536;

/// Field offsets the programs read through `bpf_probe_read_kernel`, resolved from
/// `/sys/kernel/btf/vmlinux` (and tracefs `format` files) at load time and handed over as the
/// global `OFFSETS`. A zero offset for an optional field means "not available on this kernel".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    // task_struct
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_tgid: u32,
    pub task_start_boottime: u32,
    pub task_exit_code: u32,
    pub task_signal: u32,
    pub task_mm: u32,
    pub task_fs: u32,
    pub task_cred: u32,
    pub task_loginuid: u32,
    // mm_struct argument area and stack (argv of the new image)
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub mm_start_stack: u32,
    // signal_struct / tty_struct
    pub signal_tty: u32,
    pub tty_name: u32,
    // cred
    pub cred_euid: u32,
    // mm_struct / file / inode / super_block
    pub mm_exe_file: u32,
    pub file_f_path: u32,
    pub file_f_inode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    // fs_struct
    pub fs_pwd: u32,
    // path / dentry / qstr / mount
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name: u32,
    pub qstr_name: u32,
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub vfsmount_mnt_root: u32,
    // sock / tcp_sock
    pub sock_sk_err: u32,
    pub tcp_bytes_acked: u32,
    pub tcp_bytes_received: u32,
    pub tcp_snd_una: u32,
    pub tcp_write_seq: u32,
    pub sock_sk_flags: u32,
    // tracepoint record offsets (from tracefs format files)
    pub tp_exec_filename: u32,
    pub tp_exit_group_dead: u32,
    pub tp_sys_exit_ret: u32,
    pub tp_sk_state_skaddr: u32,
    pub tp_sk_state_newstate: u32,
    pub tp_sk_state_oldstate: u32,
    pub tp_sk_state_protocol: u32,
    pub tp_sk_state_sport: u32,
    pub tp_sk_state_dport: u32,
    pub tp_sk_state_daddr: u32,
    pub tp_sk_state_daddr_v6: u32,
    pub tp_sk_state_saddr: u32,
    pub tp_sk_state_saddr_v6: u32,
    pub tp_sk_state_family: u32,
    pub tp_reset_skaddr: u32,
}

/// Destination blocks (the cgroup connect/sendmsg hooks). Every address is kept as IPv6,
/// IPv4 as v4-mapped (`::ffff:a.b.c.d`, prefix length + 96), in two LPM tries:
/// `BLOCK_ANY_PORT` keyed by the address alone, `BLOCK_PORT` keyed by the destination port
/// (network byte order) followed by the address, prefix length 16 + address prefix bits.
pub const BLOCK_MAX_ENTRIES: u32 = 4096;
/// LPM data of an any-port rule: the 16-byte address.
pub type BlockAnyPortData = [u8; 16];
/// LPM data of a port rule: port (big endian), 16-byte address, 2 bytes of padding (zero).
pub type BlockPortData = [u8; 20];

/// Kill-on-exec entries: the executable's identity as the kernel sees it.
pub const KILL_ON_EXEC_MAX_ENTRIES: u32 = 1024;

/// Key of `KILL_ON_EXEC`: `dev` in the kernel's internal encoding (major << 20 | minor, as
/// `super_block.s_dev`), not userspace `st_dev`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: plain-old-data `#[repr(C)]` structs with no padding-dependent invariants.
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for TrackedSock {}
    unsafe impl aya::Pod for InflightConnect {}
    unsafe impl aya::Pod for OpenConn {}
    unsafe impl aya::Pod for FileKey {}
}
