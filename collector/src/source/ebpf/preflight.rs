//! What the eBPF source needs from the host, checked before loading so a missing piece is
//! reported as one sentence naming it: capabilities, the bpf() syscall, kernel BTF, tracefs,
//! bpffs and the cgroup v2 mount.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use crate::source::SourceError;

pub const TRACEFS: &str = "/sys/kernel/tracing";
pub const BPFFS: &str = "/sys/fs/bpf";
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability set of this process, from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn check_capabilities() -> Result<(), SourceError> {
    let caps = effective_caps();
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let missing: Vec<&str> = [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ]
    .iter()
    .filter(|(cap, _)| !has(*cap))
    .map(|(_, name)| *name)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(SourceError::Unsupported(format!(
        "osprey-collector lacks the capability {} needed to load its eBPF programs: run it as root",
        missing.join(" and ")
    )))
}

/// Probes the bpf() syscall with a tiny map: ENOSYS means a kernel built without BPF.
pub fn check_bpf_syscall() -> Result<(), SourceError> {
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        _rest: [u8; 112],
    }
    let attr = MapCreate {
        map_type: 2, /* ARRAY */
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        _rest: [0; 112],
    };
    // SAFETY: BPF_MAP_CREATE with a valid, fully initialised attribute block of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0, /* BPF_MAP_CREATE */
            &attr as *const MapCreate,
            std::mem::size_of::<MapCreate>(),
        )
    };
    if fd >= 0 {
        // SAFETY: fd was just returned to us and is closed once.
        unsafe { libc::close(fd as i32) };
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(SourceError::Unsupported(match err.raw_os_error() {
        Some(libc::ENOSYS) => "this kernel does not support eBPF: the bpf() system call is \
                               missing (kernel built without CONFIG_BPF_SYSCALL)"
            .to_string(),
        Some(libc::EPERM) => "the kernel refused the bpf() system call (EPERM): run as root, \
                              and check kernel.unprivileged_bpf_disabled and any seccomp policy"
            .to_string(),
        _ => format!("the bpf() system call failed: {err}"),
    }))
}

pub fn check_kernel_btf() -> Result<(), SourceError> {
    if Path::new(KERNEL_BTF).exists() {
        Ok(())
    } else {
        Err(SourceError::Unsupported(format!(
            "this kernel exposes no BTF at {KERNEL_BTF} (it needs CONFIG_DEBUG_INFO_BTF), which \
             the sensor needs to find kernel structure offsets"
        )))
    }
}

fn mounted_types() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            // "36 35 98:0 / /mnt rw - ext3 /dev/root rw": mount point is field 5, fs type
            // follows the " - " separator.
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            let fs_type = right.split_whitespace().next()?;
            Some((mount_point.to_string(), fs_type.to_string()))
        })
        .collect()
}

fn ensure_mounted(fs_type: &str, target: &str, what: &str) -> Result<(), SourceError> {
    if mounted_types()
        .iter()
        .any(|(mp, ty)| mp == target && ty == fs_type)
    {
        return Ok(());
    }
    let c = |s: &str| CString::new(s).expect("static strings have no NUL");
    let (src, tgt, ty) = (c(fs_type), c(target), c(fs_type));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 {
        tracing::info!(target, "mounted {fs_type}");
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(SourceError::Unsupported(format!(
        "{what} is not mounted at {target} and mounting it failed ({err}): run \
         `mount -t {fs_type} {fs_type} {target}` as root"
    )))
}

pub fn ensure_tracefs() -> Result<PathBuf, SourceError> {
    ensure_mounted("tracefs", TRACEFS, "tracefs (needed for tracepoints)")?;
    Ok(PathBuf::from(TRACEFS))
}

pub fn ensure_bpffs() -> Result<PathBuf, SourceError> {
    ensure_mounted("bpf", BPFFS, "the BPF filesystem (needed for pinned maps)")?;
    Ok(PathBuf::from(BPFFS))
}

/// The cgroup v2 mount: `/sys/fs/cgroup` on pure-v2 hosts, `/sys/fs/cgroup/unified` on hybrid.
pub fn cgroup2_root() -> Result<PathBuf, SourceError> {
    let mounts = mounted_types();
    let mut v2: Vec<&String> = mounts
        .iter()
        .filter(|(_, ty)| ty == "cgroup2")
        .map(|(mp, _)| mp)
        .collect();
    v2.sort_by_key(|mp| mp.len());
    v2.first()
        .map(|mp| PathBuf::from(mp.as_str()))
        .ok_or_else(|| {
            SourceError::Unsupported(
                "no cgroup v2 filesystem is mounted, which the connect hooks attach to: mount one \
             with `mount -t cgroup2 none /sys/fs/cgroup/unified`"
                    .to_string(),
            )
        })
}
