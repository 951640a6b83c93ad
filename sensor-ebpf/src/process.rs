//! Process lifecycle: exec (with argv as the new image received it), fork, exit.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, gen},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};
use core::ffi::c_void;
use sensor_common::*;

use crate::{
    kernel::{self, current_task, is_collector, offset, read, read_dentry_path, read_ptr},
    maps::{self, EXEC_SCRATCH, KILL_ON_EXEC},
};

#[inline(always)]
fn header(kind: RecordKind) -> RecordHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    RecordHeader {
        kind: kind as u32,
        tid: pid_tgid as u32,
        pid: (pid_tgid >> 32) as u32,
        _pad: 0,
        boot_ns: unsafe { gen::bpf_ktime_get_boot_ns() },
    }
}

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let _ = try_exec(&ctx);
    0
}

#[inline(always)]
fn try_exec(ctx: &TracePointContext) -> Option<()> {
    let hdr = header(RecordKind::Exec);
    if is_collector(hdr.pid) {
        return None;
    }
    let rec = EXEC_SCRATCH.get_ptr_mut(0)?;
    unsafe {
        let task = current_task();
        (*rec).header = hdr;
        let uid_gid = bpf_get_current_uid_gid();
        (*rec).uid = uid_gid as u32;
        (*rec).gid = (uid_gid >> 32) as u32;
        (*rec).ppid = kernel::parent_tgid(task);
        let cred = read_ptr(task, offset!(task_cred));
        (*rec).euid = read::<u32>(cred, offset!(cred_euid));
        let loginuid_off = offset!(task_loginuid);
        (*rec).loginuid = if loginuid_off == 0 {
            u32::MAX
        } else {
            read::<u32>(task, loginuid_off)
        };
        (*rec).start_boottime = read::<u64>(task, offset!(task_start_boottime));
        (*rec).cgroup_id = gen::bpf_get_current_cgroup_id();
        (*rec).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        let mut flags = 0u32;

        // Controlling terminal.
        let signal = read_ptr(task, offset!(task_signal));
        let tty = read_ptr(signal, offset!(signal_tty));
        (*rec).tty[0] = 0;
        if !tty.is_null() {
            flags |= EXEC_HAS_TTY;
            gen::bpf_probe_read_kernel_str(
                (*rec).tty.as_mut_ptr() as *mut c_void,
                TTY_NAME_BYTES as u32,
                tty.wrapping_add(offset!(tty_name)) as *const c_void,
            );
        }

        // Path as invoked: a __data_loc string in the tracepoint record.
        (*rec).filename[0] = 0;
        if let Ok(loc) = ctx.read_at::<u32>(offset!(tp_exec_filename)) {
            let at = (loc & 0xffff) as usize;
            gen::bpf_probe_read_kernel_str(
                (*rec).filename.as_mut_ptr() as *mut c_void,
                FILENAME_MAX_BYTES as u32,
                (ctx.as_ptr() as *const u8).wrapping_add(at) as *const c_void,
            );
        }

        // Resolved executable, its identity, and the working directory.
        let mm = read_ptr(task, offset!(task_mm));
        let exe_file = read_ptr(mm, offset!(mm_exe_file));
        (*rec).exe.len = 0;
        (*rec).exe.depth = 0;
        if !exe_file.is_null() {
            let inode = read_ptr(exe_file, offset!(file_f_inode));
            (*rec).exe_ino = read::<u64>(inode, offset!(inode_i_ino));
            let sb = read_ptr(inode, offset!(inode_i_sb));
            (*rec).exe_dev = read::<u32>(sb, offset!(sb_s_dev));
            if read_dentry_path(exe_file.wrapping_add(offset!(file_f_path)), &mut (*rec).exe) {
                flags |= EXEC_EXE_TRUNCATED;
            }
        }
        let fs = read_ptr(task, offset!(task_fs));
        (*rec).cwd.len = 0;
        (*rec).cwd.depth = 0;
        if !fs.is_null() && read_dentry_path(fs.wrapping_add(offset!(fs_pwd)), &mut (*rec).cwd) {
            flags |= EXEC_CWD_TRUNCATED;
        }

        // argv as the new image received it: the kernel copied the strings into the
        // argument area of the new stack before this tracepoint, so neither the caller's
        // threads nor the new program can have changed them, whatever pages the caller's
        // pointers lived on and whichever syscall (execve, execveat, 32-bit) was used.
        let (argv_len, status, argc) = read_argv(mm, (*rec).argv.as_mut_ptr());
        (*rec).argc = argc;
        (*rec).argv_status = status as u32;
        (*rec).argv_len = argv_len;
        (*rec).flags = flags;

        let size = EXEC_RECORD_FIXED + argv_len as usize;
        let size = if size > core::mem::size_of::<ExecRecord>() {
            core::mem::size_of::<ExecRecord>()
        } else {
            size
        };
        let bytes = core::slice::from_raw_parts(rec as *const u8, size);
        maps::emit_bytes(bytes, DropKind::Exec);
    }
    Some(())
}

/// Copies the argument area of `mm` (at most [`ARGV_MAX_BYTES`]) into `out`. Returns the
/// bytes copied, how complete they are, and argc from the top of the new stack.
#[inline(always)]
unsafe fn read_argv(mm: *const u8, out: *mut u8) -> (u32, ArgvStatus, u32) {
    if mm.is_null() {
        return (0, ArgvStatus::Unavailable, 0);
    }
    // argc sits at the top of the new stack (`mm->start_stack`), below argv's pointers.
    let mut argc: u64 = 0;
    let stack = read::<u64>(mm, offset!(mm_start_stack));
    if gen::bpf_probe_read_user(
        &mut argc as *mut u64 as *mut c_void,
        8,
        stack as *const c_void,
    ) != 0
    {
        argc = 0;
    }
    let argc = if argc > u32::MAX as u64 {
        0
    } else {
        argc as u32
    };
    let start = read::<u64>(mm, offset!(mm_arg_start));
    let end = read::<u64>(mm, offset!(mm_arg_end));
    if start == 0 || end <= start {
        return (0, ArgvStatus::Unavailable, argc);
    }
    let (len, status) = if end - start > ARGV_MAX_BYTES as u64 {
        (ARGV_MAX_BYTES as u32, ArgvStatus::TooLong)
    } else {
        ((end - start) as u32, ArgvStatus::Complete)
    };
    // black_box + mask: a bound the verifier can see on the size it is handed.
    let len = core::hint::black_box(len) & (2 * ARGV_MAX_BYTES as u32 - 1);
    let len = if len > ARGV_MAX_BYTES as u32 {
        ARGV_MAX_BYTES as u32
    } else {
        len
    };
    if gen::bpf_probe_read_user(out as *mut c_void, len, start as *const c_void) != 0 {
        return (0, ArgvStatus::Unreadable, argc);
    }
    (len, status, argc)
}

/// Kill-on-exec: by the executable's identity, whatever path reached it; the signal is
/// delivered before the new program runs its first instruction. A program of its own, on a
/// raw tracepoint, because its link is pinned so enforcement goes on while the collector
/// restarts (perf-event links, which classic tracepoints use, cannot be pinned).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn enforce_exec(_ctx: RawTracePointContext) -> i32 {
    unsafe {
        let mm = read_ptr(current_task(), offset!(task_mm));
        let exe_file = read_ptr(mm, offset!(mm_exe_file));
        if exe_file.is_null() {
            return 0;
        }
        let inode = read_ptr(exe_file, offset!(file_f_inode));
        let key = FileKey {
            dev: read::<u32>(read_ptr(inode, offset!(inode_i_sb)), offset!(sb_s_dev)),
            _pad: 0,
            ino: read::<u64>(inode, offset!(inode_i_ino)),
        };
        if KILL_ON_EXEC.get_ptr(&key).is_some() {
            gen::bpf_send_signal(9);
        }
    }
    0
}

/// `sched_process_fork` as a raw tracepoint: its arguments are the parent and child tasks,
/// which lets us tell a new process from a new thread (`child->tgid == child->pid`).
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    unsafe {
        let args = ctx.as_ptr() as *const u8 as *const u64;
        let child = *args.add(1) as *const u8;
        let child_tgid: u32 = read(child, offset!(task_tgid));
        // A new thread shares its creator's tgid; only new processes are reported.
        let hdr = header(RecordKind::Fork);
        if child_tgid == hdr.pid {
            return 0;
        }
        let rec = ForkRecord {
            header: RecordHeader {
                pid: kernel::parent_tgid(child),
                ..hdr
            },
            child_pid: child_tgid,
            _pad: 0,
            child_start_boottime: read(child, offset!(task_start_boottime)),
        };
        maps::emit(&rec, DropKind::Fork);
    }
    0
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    unsafe {
        // Only the last thread of a process ends the process.
        let group_dead: u8 = ctx.read_at(offset!(tp_exit_group_dead)).unwrap_or(0);
        if group_dead == 0 {
            return 0;
        }
        let hdr = header(RecordKind::Exit);
        if is_collector(hdr.pid) {
            return 0;
        }
        let task = current_task();
        let rec = ExitRecord {
            header: hdr,
            exit_code: read(task, offset!(task_exit_code)),
            _pad: 0,
            // The process's start time is its leader's, whichever thread exits last.
            start_boottime: read(
                read_ptr(task, offset!(task_group_leader)),
                offset!(task_start_boottime),
            ),
        };
        maps::emit(&rec, DropKind::Exit);
    }
    0
}
