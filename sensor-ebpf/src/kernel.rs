//! Reading kernel memory at offsets resolved from BTF at load time.

use aya_ebpf::helpers::gen;
use core::ffi::c_void;
use sensor_common::{DentryPath, KernelOffsets, PATH_MAX_BYTES, PATH_MAX_DEPTH};

/// Field offsets, filled in by the collector (`EbpfLoader::set_global`).
#[no_mangle]
static OFFSETS: KernelOffsets = KernelOffsets {
    task_real_parent: 0,
    task_group_leader: 0,
    task_tgid: 0,
    task_start_boottime: 0,
    task_exit_code: 0,
    task_signal: 0,
    task_mm: 0,
    task_fs: 0,
    task_cred: 0,
    task_loginuid: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    mm_start_stack: 0,
    signal_tty: 0,
    tty_name: 0,
    cred_euid: 0,
    mm_exe_file: 0,
    file_f_path: 0,
    file_f_inode: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    sb_s_dev: 0,
    fs_pwd: 0,
    path_mnt: 0,
    path_dentry: 0,
    dentry_d_parent: 0,
    dentry_d_name: 0,
    qstr_name: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    vfsmount_mnt_root: 0,
    sock_sk_err: 0,
    tcp_bytes_acked: 0,
    tcp_bytes_received: 0,
    tcp_snd_una: 0,
    tcp_write_seq: 0,
    sock_sk_flags: 0,
    tp_exec_filename: 0,
    tp_exit_group_dead: 0,
    tp_sys_exit_ret: 0,
    tp_sk_state_skaddr: 0,
    tp_sk_state_newstate: 0,
    tp_sk_state_oldstate: 0,
    tp_sk_state_protocol: 0,
    tp_sk_state_sport: 0,
    tp_sk_state_dport: 0,
    tp_sk_state_daddr: 0,
    tp_sk_state_daddr_v6: 0,
    tp_sk_state_saddr: 0,
    tp_sk_state_saddr_v6: 0,
    tp_sk_state_family: 0,
    tp_reset_skaddr: 0,
};

/// The collector's own pid: its activity is not reported.
#[no_mangle]
static COLLECTOR_TGID: u32 = 0;

/// Reads one offset. Volatile so the compiler keeps the load from the global (the loader
/// rewrites it) instead of folding the zero initialiser.
macro_rules! offset {
    ($field:ident) => {
        $crate::kernel::load_offset(&$crate::kernel::offsets().$field)
    };
}
pub(crate) use offset;

#[inline(always)]
pub fn load_offset(field: &u32) -> usize {
    // SAFETY: a valid reference to a field of a global.
    unsafe { core::ptr::read_volatile(field) as usize }
}

#[inline(always)]
pub fn offsets() -> &'static KernelOffsets {
    &OFFSETS
}

#[inline(always)]
pub fn is_collector(tgid: u32) -> bool {
    tgid == unsafe { core::ptr::read_volatile(&COLLECTOR_TGID) }
}

/// Reads a `T` at `base + offset` in kernel memory; zero when unreadable.
#[inline(always)]
pub unsafe fn read<T: Copy + Default>(base: *const u8, offset: usize) -> T {
    let mut out = T::default();
    if base.is_null() {
        return out;
    }
    let ret = gen::bpf_probe_read_kernel(
        &mut out as *mut T as *mut c_void,
        core::mem::size_of::<T>() as u32,
        base.wrapping_add(offset) as *const c_void,
    );
    if ret != 0 {
        return T::default();
    }
    out
}

/// Reads a kernel pointer at `base + offset`; null when unreadable.
#[inline(always)]
pub unsafe fn read_ptr(base: *const u8, offset: usize) -> *const u8 {
    read::<u64>(base, offset) as *const u8
}

#[inline(always)]
pub fn current_task() -> *const u8 {
    unsafe { gen::bpf_get_current_task() as *const u8 }
}

/// `task->real_parent->tgid`.
#[inline(always)]
pub unsafe fn parent_tgid(task: *const u8) -> u32 {
    let parent = read_ptr(task, offset!(task_real_parent));
    read::<u32>(parent, offset!(task_tgid))
}

/// Longest name component copied; NAME_MAX is 255.
const COMPONENT_MAX: u32 = 256;
/// Components start below this offset, so that a full-length read still fits the buffer.
const COMPONENT_START_LIMIT: u32 = (PATH_MAX_BYTES as u32) / 2;

/// Rebuilds the path of a `struct path` by walking dentries up to the root of the mount
/// namespace, crossing mount points. Components are written leaf first, NUL-terminated.
/// Returns true when the path did not fit (depth or bytes).
///
/// The running length lives in `out` (map memory), not in a register: the verifier then sees
/// an unknown value that the mask bounds, instead of a precise one that differs on every
/// path and defeats state pruning.
#[inline(always)]
pub unsafe fn read_dentry_path(path: *const u8, out: *mut DentryPath) -> bool {
    let mut vfsmnt = read_ptr(path, offset!(path_mnt));
    let mut dentry = read_ptr(path, offset!(path_dentry));
    let mut mount = vfsmnt.wrapping_sub(offset!(mount_mnt));
    core::ptr::write_volatile(&mut (*out).len, 0);
    core::ptr::write_volatile(&mut (*out).depth, 0);
    let mut truncated = true;
    let buf = (*out).buf.as_mut_ptr();
    for _ in 0..PATH_MAX_DEPTH {
        if dentry.is_null() {
            truncated = false;
            break;
        }
        let mnt_root = read_ptr(vfsmnt, offset!(vfsmount_mnt_root));
        let parent = read_ptr(dentry, offset!(dentry_d_parent));
        if dentry == mnt_root || dentry == parent {
            let mount_parent = read_ptr(mount, offset!(mount_mnt_parent));
            if mount_parent.is_null() || mount_parent == mount {
                truncated = false;
                break;
            }
            dentry = read_ptr(mount, offset!(mount_mnt_mountpoint));
            mount = mount_parent;
            vfsmnt = mount.wrapping_add(offset!(mount_mnt));
            continue;
        }
        let len = core::ptr::read_volatile(&(*out).len);
        if len >= COMPONENT_START_LIMIT {
            break;
        }
        let name = read_ptr(dentry, offset!(dentry_d_name) + offset!(qstr_name));
        let at = (len & (COMPONENT_START_LIMIT - 1)) as usize;
        let n = gen::bpf_probe_read_kernel_str(
            buf.add(at) as *mut c_void,
            COMPONENT_MAX,
            name as *const c_void,
        );
        if n <= 0 {
            break;
        }
        core::ptr::write_volatile(&mut (*out).len, len + n as u32);
        let depth = core::ptr::read_volatile(&(*out).depth);
        core::ptr::write_volatile(&mut (*out).depth, depth + 1);
        dentry = parent;
    }
    truncated
}
