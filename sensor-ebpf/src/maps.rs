//! Maps shared by the programs, and the record-delivery helpers that count drops.

use aya_ebpf::{
    helpers::gen,
    macros::map,
    maps::{lpm_trie::LpmTrie, Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use sensor_common::{
    BlockAnyPortData, BlockPortData, CgroupDrops, DropKind, ExecRecord, FileKey, InflightConnect,
    OpenConn, TrackedSock, BLOCK_MAX_ENTRIES, CGROUP_DROPS_MAX_ENTRIES,
    CONNECT_INFLIGHT_MAX_ENTRIES, DROP_KINDS, KILL_ON_EXEC_MAX_ENTRIES, TCP_OPEN_MAX_ENTRIES,
    TCP_TRACKED_MAX_ENTRIES,
};

/// Every record for userspace. The collector sets the size at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Until when (CLOCK_BOOTTIME, ns) the collector sleeps between two reads of [`EVENTS`]; it
/// reads all there is when it wakes, so a record sent before then need not wake it.
#[map]
pub static READER_ASLEEP_UNTIL: Array<u64> = Array::with_max_entries(1, 0);

/// `BPF_RB_NO_WAKEUP`: the record is committed without waking the ring's reader.
const BPF_RB_NO_WAKEUP: u64 = 1;

/// Records that could not be delivered, per [`DropKind`].
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_KINDS as u32, 0);

/// The same drops per cgroup v2 id of the task that lost them (0: cgroups beyond the map's
/// capacity), so a workload's own losses can be told from the host's.
#[map]
pub static CGROUP_DROPS: PerCpuHashMap<u64, CgroupDrops> =
    PerCpuHashMap::with_max_entries(CGROUP_DROPS_MAX_ENTRIES, 0);

/// Per-CPU workspace for building an [`ExecRecord`] (too large for the 512-byte stack).
#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecRecord> = PerCpuArray::with_max_entries(1, 0);

/// Threads inside a connect/sendto/sendmsg whose attempt was reported: their syscall's
/// return value is reported too. A plain hash (not LRU): a full map refuses and counts,
/// instead of silently evicting another thread's entry.
#[map]
pub static CONNECT_INFLIGHT: HashMap<u32, InflightConnect> =
    HashMap::with_max_entries(CONNECT_INFLIGHT_MAX_ENTRIES, 0);

/// Connecting TCP sockets (by kernel address) whose outcome is still to be reported.
#[map]
pub static TCP_TRACKED: HashMap<u64, TrackedSock> =
    HashMap::with_max_entries(TCP_TRACKED_MAX_ENTRIES, 0);

/// Established outbound TCP connections (by kernel address of the socket), until they close:
/// their close is reported with lifetime and bytes. Entries leave only at TCP_CLOSE, which
/// every socket reaches; a full map refuses and counts.
#[map]
pub static TCP_OPEN: HashMap<u64, OpenConn> = HashMap::with_max_entries(TCP_OPEN_MAX_ENTRIES, 0);

/// Unconnected-UDP destinations already reported per socket, so a chatty sender reports
/// each destination once. A cache: an eviction only means a destination is reported again.
#[map]
pub static UDP_SEEN: LruHashMap<crate::network::UdpKey, u8> =
    LruHashMap::with_max_entries(16384, 0);

/// Destinations refused for every port (filled by the collector's actuator). Pinned under
/// the collector's bpffs directory: blocks outlive a collector restart.
#[map]
pub static BLOCK_ANY_PORT: LpmTrie<BlockAnyPortData, u32> = LpmTrie::pinned(BLOCK_MAX_ENTRIES, 0);

/// Destinations refused for one port (pinned, like [`BLOCK_ANY_PORT`]).
#[map]
pub static BLOCK_PORT: LpmTrie<BlockPortData, u32> = LpmTrie::pinned(BLOCK_MAX_ENTRIES, 0);

/// Executables killed as they start, by (device, inode) (pinned, like [`BLOCK_ANY_PORT`]).
#[map]
pub static KILL_ON_EXEC: HashMap<FileKey, u32> = HashMap::pinned(KILL_ON_EXEC_MAX_ENTRIES, 0);

const BPF_NOEXIST: u64 = 1;
/// `-EEXIST`: the key was inserted by another CPU meanwhile.
const ALREADY_THERE: i64 = -17;

/// Counts a record that could not be delivered, on the host and for the current cgroup.
#[inline(always)]
pub fn count_drop(kind: DropKind) {
    if let Some(counter) = DROPS.get_ptr_mut(kind as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *counter += 1 };
    }
    // SAFETY: a helper without arguments.
    let cgroup = unsafe { gen::bpf_get_current_cgroup_id() };
    if !count_cgroup_drop(cgroup, kind) {
        count_cgroup_drop(0, kind);
    }
}

/// Adds one drop of `kind` to `cgroup`'s counters; false when the map has no room for it.
#[inline(always)]
fn count_cgroup_drop(cgroup: u64, kind: DropKind) -> bool {
    for _ in 0..2 {
        if let Some(counts) = CGROUP_DROPS.get_ptr_mut(&cgroup) {
            // SAFETY: per-CPU value, no concurrent writer on this CPU while the program runs.
            unsafe { (*counts)[kind as usize] += 1 };
            return true;
        }
        let mut counts: CgroupDrops = [0; DROP_KINDS];
        counts[kind as usize] = 1;
        match CGROUP_DROPS.insert(&cgroup, &counts, BPF_NOEXIST) {
            Ok(()) => return true,
            // Created by another CPU meanwhile: count into it on the next turn.
            Err(ALREADY_THERE) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// Whether committing a record should wake the reader: not while it sleeps on purpose (a
/// wake-up then only costs it a context switch), at once otherwise.
#[inline(always)]
fn wakeup_flags() -> u64 {
    let until = READER_ASLEEP_UNTIL.get(0).copied().unwrap_or(0);
    // SAFETY: a helper without arguments.
    if until != 0 && unsafe { gen::bpf_ktime_get_boot_ns() } < until {
        BPF_RB_NO_WAKEUP
    } else {
        0
    }
}

/// Sends a fixed-size record, counting a drop when the ring buffer is full.
#[inline(always)]
pub fn emit<T>(record: &T, kind: DropKind) {
    if EVENTS.output(record, wakeup_flags()).is_err() {
        count_drop(kind);
    }
}

/// Sends a record of runtime length (the exec record's argv tail is sent only as far as used).
#[inline(always)]
pub fn emit_bytes(record: &[u8], kind: DropKind) {
    if EVENTS.output(record, wakeup_flags()).is_err() {
        count_drop(kind);
    }
}
