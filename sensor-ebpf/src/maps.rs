//! Maps shared by the programs, and the record-delivery helpers that count drops.

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::LpmTrie, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use sensor_common::{
    ArgvStage, BlockAnyPortData, BlockPortData, DropKind, ExecRecord, FileKey, TrackedSock,
    BLOCK_MAX_ENTRIES, DROP_KINDS, KILL_ON_EXEC_MAX_ENTRIES,
};

/// Every record for userspace. The collector sets the size at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Records that could not be delivered, per [`DropKind`].
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_KINDS as u32, 0);

/// argv copied at `sys_enter_execve(at)`, keyed by thread id, until `sched_process_exec`.
#[map]
pub static ARGV_STAGE: LruHashMap<u32, ArgvStage> = LruHashMap::with_max_entries(1024, 0);

/// Per-CPU workspace for building an [`ArgvStage`] (too large for the 512-byte stack).
#[map]
pub static ARGV_SCRATCH: PerCpuArray<ArgvStage> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU workspace for building an [`ExecRecord`].
#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecRecord> = PerCpuArray::with_max_entries(1, 0);

/// Threads inside a connect/sendto/sendmsg whose attempt was reported: their syscall's
/// return value is reported too.
#[map]
pub static CONNECT_INFLIGHT: LruHashMap<u32, u8> = LruHashMap::with_max_entries(8192, 0);

/// Connecting TCP sockets (by kernel address) whose outcome is still to be reported.
#[map]
pub static TCP_TRACKED: LruHashMap<u64, TrackedSock> = LruHashMap::with_max_entries(16384, 0);

/// Unconnected-UDP destinations already reported per socket, so a chatty sender reports
/// each destination once.
#[map]
pub static UDP_SEEN: LruHashMap<crate::network::UdpKey, u8> =
    LruHashMap::with_max_entries(16384, 0);

/// Destinations refused for every port (filled by the collector's actuator).
#[map]
pub static BLOCK_ANY_PORT: LpmTrie<BlockAnyPortData, u32> =
    LpmTrie::with_max_entries(BLOCK_MAX_ENTRIES, 0);

/// Destinations refused for one port.
#[map]
pub static BLOCK_PORT: LpmTrie<BlockPortData, u32> =
    LpmTrie::with_max_entries(BLOCK_MAX_ENTRIES, 0);

/// Executables killed as they start, by (device, inode).
#[map]
pub static KILL_ON_EXEC: HashMap<FileKey, u32> =
    HashMap::with_max_entries(KILL_ON_EXEC_MAX_ENTRIES, 0);

/// Counts a record that could not be delivered.
#[inline(always)]
pub fn count_drop(kind: DropKind) {
    if let Some(counter) = DROPS.get_ptr_mut(kind as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *counter += 1 };
    }
}

/// Sends a fixed-size record, counting a drop when the ring buffer is full.
#[inline(always)]
pub fn emit<T>(record: &T, kind: DropKind) {
    if EVENTS.output(record, 0).is_err() {
        count_drop(kind);
    }
}

/// Sends a record of runtime length (the exec record's argv tail is sent only as far as used).
#[inline(always)]
pub fn emit_bytes(record: &[u8], kind: DropKind) {
    if EVENTS.output(record, 0).is_err() {
        count_drop(kind);
    }
}
