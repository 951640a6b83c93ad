//! Enforcement that outlives the collector.
//!
//! The block and kill-on-exec maps are pinned under the bpffs directory `sensor.pin_dir`
//! (`maps/`): a starting collector reuses them, so it adopts what is enforced. The links of
//! the programs that enforce them (the cgroup connect and sendmsg hooks, the exec program
//! that kills on exec) are held by a small process of their own, `osprey-collector
//! --hold-enforcement <pin_dir>`, because this kernel refuses to pin programs and links
//! (BPF_OBJ_PIN gives EPERM for them; maps pin fine). While the collector restarts, the
//! holder keeps those programs attached, so blocked connects stay refused and listed
//! executables stay killed; a starting collector attaches its own programs, starts its own
//! holder, and only then stops the holders before it.
//!
//! A collector that stops with nothing enforced stops its holder and removes its pins:
//! nothing stays attached.

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
        unix::{ffi::OsStrExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::source::SourceError;

/// The hidden flag that turns `osprey-collector` into a holder.
pub const HOLD_FLAG: &str = "--hold-enforcement";

/// `bpf(2)` commands used here (uapi `enum bpf_cmd`).
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_LINK_CREATE: libc::c_long = 28;

/// `union bpf_attr` for `BPF_LINK_CREATE` (the fields used; the rest stays zero).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 4],
}

/// `union bpf_attr` for `BPF_RAW_TRACEPOINT_OPEN`.
#[repr(C)]
#[derive(Default)]
struct RawTracepointOpenAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
    cookie: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a zero-padded bpf_attr prefix of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// The links the collector attached for enforcement, and where its maps are pinned.
pub struct Persistence {
    dir: PathBuf,
    links: Vec<OwnedFd>,
    holder: Option<u32>,
}

impl Persistence {
    /// Creates `dir/maps` (the directory must be on bpffs).
    pub fn prepare(dir: &Path) -> Result<Persistence, SourceError> {
        let maps = dir.join("maps");
        std::fs::create_dir_all(&maps).map_err(|source| SourceError::Io {
            context: format!(
                "cannot create {} for pinned enforcement (sensor.pin_dir must be on bpffs)",
                maps.display()
            ),
            source,
        })?;
        Ok(Persistence {
            dir: dir.to_path_buf(),
            links: Vec::new(),
            holder: None,
        })
    }

    /// Where the enforcement maps are pinned (`EbpfLoader::map_pin_path`).
    pub fn maps_dir(&self) -> PathBuf {
        self.dir.join("maps")
    }

    /// Attaches `prog` to the cgroup `cgroup` with a bpf_link of `attach_type`
    /// (multi-attach: programs of other tools on the cgroup and its descendants are
    /// unaffected).
    pub fn attach_cgroup(
        &mut self,
        prog: BorrowedFd<'_>,
        cgroup: BorrowedFd<'_>,
        attach_type: u32,
    ) -> Result<(), String> {
        let mut attr = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            target_fd: cgroup.as_raw_fd() as u32,
            attach_type,
            ..Default::default()
        };
        let link = bpf(BPF_LINK_CREATE, &mut attr).map_err(|e| format!("bpf_link_create: {e}"))?;
        self.links.push(link);
        Ok(())
    }

    /// Attaches the raw tracepoint program `prog` to `tracepoint`.
    pub fn attach_raw_tracepoint(
        &mut self,
        prog: BorrowedFd<'_>,
        tracepoint: &str,
    ) -> Result<(), String> {
        let name =
            CString::new(tracepoint).map_err(|_| "a NUL in a tracepoint name".to_string())?;
        let mut attr = RawTracepointOpenAttr {
            name: name.as_ptr() as u64,
            prog_fd: prog.as_raw_fd() as u32,
            ..Default::default()
        };
        let link = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
            .map_err(|e| format!("bpf_raw_tracepoint_open({tracepoint}): {e}"))?;
        self.links.push(link);
        Ok(())
    }

    /// Starts this collector's holder with a copy of every link, then stops the holders of
    /// earlier collectors (whose programs detach: ours are attached already). Returns how
    /// many were stopped.
    pub fn hold(&mut self) -> Result<usize, SourceError> {
        let exe = std::env::current_exe().map_err(|source| SourceError::Io {
            context: "cannot find the collector's own executable for the enforcement holder".into(),
            source,
        })?;
        let fds: Vec<RawFd> = self.links.iter().map(|l| l.as_raw_fd()).collect();
        let count = fds.len();
        let mut cmd = Command::new(exe);
        cmd.arg(HOLD_FLAG)
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls: the links become fds
        // 3.. without close-on-exec, the holder gets a session of its own (no terminal's
        // Ctrl-C reaches it).
        unsafe {
            cmd.pre_exec(move || {
                for (i, &fd) in fds.iter().enumerate() {
                    // Above the range first, so no source is overwritten before it is moved.
                    if libc::dup2(fd, 1000 + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for i in 0..fds.len() {
                    if libc::dup2(1000 + i as RawFd, 3 + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| SourceError::Io {
            context: "cannot start the enforcement holder".into(),
            source,
        })?;
        tracing::debug!(
            pid = child.id(),
            links = count,
            "enforcement holder started"
        );
        self.holder = Some(child.id());
        // Reaped by init once we exit; never waited for.
        std::mem::forget(child);
        Ok(stop_holders(&self.dir, self.holder))
    }

    /// Keeps enforcement held (until the next collector takes over), or, with nothing
    /// enforced, stops this collector's holder and removes the pins so nothing stays
    /// attached.
    pub fn release(self, enforcing: bool) {
        if enforcing {
            tracing::info!(dir = %self.dir.display(), "enforcement stays attached until the collector returns");
            return;
        }
        stop_holders(&self.dir, None);
        if let Ok(entries) = std::fs::read_dir(self.maps_dir()) {
            for e in entries.filter_map(Result::ok) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(self.maps_dir());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Stops every holder of `dir` but `keep`. Returns how many were stopped.
pub fn stop_holders(dir: &Path, keep: Option<u32>) -> usize {
    let mut stopped = 0;
    for pid in super::procfs::pids() {
        if Some(pid) == keep || !is_holder(pid, dir) {
            continue;
        }
        // SAFETY: a plain kill(2) of a process verified to be a holder of this directory.
        if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
            stopped += 1;
        }
    }
    stopped
}

/// Whether `pid` is `osprey-collector --hold-enforcement <dir>`.
fn is_holder(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|&b| b == 0);
    let _program = args.next();
    let names_dir = args.next() == Some(HOLD_FLAG.as_bytes())
        && args.next() == Some(dir.as_os_str().as_bytes());
    names_dir
        && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
            exe.file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b"osprey-collector"))
        })
}

/// The holder's life: keep the inherited link descriptors open until killed.
pub fn hold_forever() -> ! {
    loop {
        // SAFETY: pause(2) only waits for a signal.
        unsafe { libc::pause() };
    }
}
