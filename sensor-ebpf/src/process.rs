//! Process lifecycle: exec (with argv captured at syscall entry), fork, exit.

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
    maps::{self, ARGV_SCRATCH, ARGV_STAGE, EXEC_SCRATCH, KILL_ON_EXEC},
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
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    stage_argv(&ctx, offset!(tp_execve_argv));
    0
}

#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    stage_argv(&ctx, offset!(tp_execveat_argv));
    0
}

/// Copies argv out of the caller's memory now: once the exec succeeds the old image (and
/// with it the pointers) is gone, and the new program may overwrite its own argv at once.
#[inline(always)]
fn stage_argv(ctx: &TracePointContext, argv_offset: usize) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(stage) = ARGV_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    unsafe {
        let argv: u64 = match ctx.read_at::<u64>(argv_offset) {
            Ok(p) => p,
            Err(_) => return,
        };
        let argv = argv as *const u64;
        let buf = (*stage).buf.as_mut_ptr();
        let mut len: u32 = 0;
        let mut argc: u32 = 0;
        let mut truncated: u32 = 0;
        for i in 0..ARGV_MAX_ARGS {
            let mut arg: u64 = 0;
            if gen::bpf_probe_read_user(
                &mut arg as *mut u64 as *mut c_void,
                8,
                argv.add(i) as *const c_void,
            ) != 0
                || arg == 0
            {
                break;
            }
            if len >= ARGV_MAX_BYTES as u32 {
                truncated = 1;
                break;
            }
            // black_box: keep the mask the verifier needs, which LLVM would drop as redundant.
            let at = (core::hint::black_box(len) & (ARGV_MAX_BYTES as u32 - 1)) as usize;
            let n = gen::bpf_probe_read_user_str(
                buf.add(at) as *mut c_void,
                ARGV_MAX_BYTES as u32,
                arg as *const c_void,
            );
            if n <= 0 {
                break;
            }
            len += n as u32;
            argc += 1;
        }
        if argc as usize == ARGV_MAX_ARGS {
            // More arguments than we copy?
            let mut arg: u64 = 0;
            if gen::bpf_probe_read_user(
                &mut arg as *mut u64 as *mut c_void,
                8,
                argv.add(ARGV_MAX_ARGS) as *const c_void,
            ) == 0
                && arg != 0
            {
                truncated = 1;
            }
        }
        if len > ARGV_MAX_BYTES as u32 {
            len = ARGV_MAX_BYTES as u32;
            truncated = 1;
        }
        (*stage).len = len;
        (*stage).argc = argc;
        (*stage).truncated = truncated;
        if ARGV_STAGE.insert(&tid, &*stage, 0).is_err() {
            maps::count_drop(DropKind::ArgvStaging);
        }
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
            // Kill-on-exec: by the file's identity, whatever path reached it. The signal is
            // delivered before the new program runs its first instruction.
            let key = FileKey {
                dev: (*rec).exe_dev,
                _pad: 0,
                ino: (*rec).exe_ino,
            };
            if KILL_ON_EXEC.get_ptr(&key).is_some() {
                gen::bpf_send_signal(9);
            }
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

        // argv staged by the thread that called execve (old_pid: before de_thread).
        let old_pid = ctx
            .read_at::<u32>(offset!(tp_exec_old_pid))
            .unwrap_or(hdr.tid);
        let mut argv_len: u32 = 0;
        (*rec).argc = 0;
        if let Some(stage) = ARGV_STAGE.get_ptr(&old_pid) {
            argv_len = (*stage).len;
            if argv_len > ARGV_MAX_BYTES as u32 {
                argv_len = ARGV_MAX_BYTES as u32;
            }
            gen::bpf_probe_read_kernel(
                (*rec).argv.as_mut_ptr() as *mut c_void,
                ARGV_MAX_BYTES as u32,
                (*stage).buf.as_ptr() as *const c_void,
            );
            (*rec).argc = (*stage).argc;
            flags |= EXEC_ARGV_FROM_KERNEL;
            if (*stage).truncated != 0 {
                flags |= EXEC_ARGV_TRUNCATED;
            }
            let _ = ARGV_STAGE.remove(&old_pid);
        }
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
