//! Resolves the [`KernelOffsets`] handed to the eBPF programs.

use std::path::Path;

use sensor_common::KernelOffsets;

use super::{
    btf::{Btf, BtfError},
    tracefs::{Format, FormatError},
};

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Format(#[from] FormatError),
}

pub fn resolve(btf_path: &Path, tracefs: &Path) -> Result<KernelOffsets, OffsetsError> {
    let btf = Btf::from_file(btf_path)?;
    let m = |s: &str, f: &str| btf.member_offset(s, f);
    let exec = Format::read(tracefs, "sched", "sched_process_exec")?;
    let exit = Format::read(tracefs, "sched", "sched_process_exit")?;
    let sys_exit = Format::read(tracefs, "syscalls", "sys_exit_connect")?;
    let sk_state = Format::read(tracefs, "sock", "inet_sock_set_state")?;
    let reset = Format::read(tracefs, "tcp", "tcp_receive_reset")?;
    Ok(KernelOffsets {
        task_real_parent: m("task_struct", "real_parent")?,
        task_group_leader: m("task_struct", "group_leader")?,
        task_tgid: m("task_struct", "tgid")?,
        task_start_boottime: m("task_struct", "start_boottime")?,
        task_exit_code: m("task_struct", "exit_code")?,
        task_signal: m("task_struct", "signal")?,
        task_mm: m("task_struct", "mm")?,
        task_fs: m("task_struct", "fs")?,
        task_cred: m("task_struct", "cred")?,
        // Only with CONFIG_AUDIT; 0 tells the programs it is absent.
        task_loginuid: m("task_struct", "loginuid").unwrap_or(0),
        mm_arg_start: m("mm_struct", "arg_start")?,
        mm_arg_end: m("mm_struct", "arg_end")?,
        mm_start_stack: m("mm_struct", "start_stack")?,
        signal_tty: m("signal_struct", "tty")?,
        tty_name: m("tty_struct", "name")?,
        cred_euid: m("cred", "euid")?,
        mm_exe_file: m("mm_struct", "exe_file")?,
        file_f_path: m("file", "f_path")?,
        file_f_inode: m("file", "f_inode")?,
        inode_i_ino: m("inode", "i_ino")?,
        inode_i_sb: m("inode", "i_sb")?,
        sb_s_dev: m("super_block", "s_dev")?,
        fs_pwd: m("fs_struct", "pwd")?,
        path_mnt: m("path", "mnt")?,
        path_dentry: m("path", "dentry")?,
        dentry_d_parent: m("dentry", "d_parent")?,
        dentry_d_name: m("dentry", "d_name")?,
        qstr_name: m("qstr", "name")?,
        mount_mnt: m("mount", "mnt")?,
        mount_mnt_parent: m("mount", "mnt_parent")?,
        mount_mnt_mountpoint: m("mount", "mnt_mountpoint")?,
        vfsmount_mnt_root: m("vfsmount", "mnt_root")?,
        sock_sk_err: m("sock", "sk_err")?,
        tcp_bytes_acked: m("tcp_sock", "bytes_acked")?,
        tcp_bytes_received: m("tcp_sock", "bytes_received")?,
        tcp_snd_una: m("tcp_sock", "snd_una")?,
        tcp_write_seq: m("tcp_sock", "write_seq")?,
        // `sk_flags` is a macro for `__sk_common.skc_flags`.
        sock_sk_flags: m("sock", "__sk_common")? + m("sock_common", "skc_flags")?,
        tp_exec_filename: exec.offset("filename")?,
        tp_exit_group_dead: exit.offset("group_dead")?,
        tp_sys_exit_ret: sys_exit.offset("ret")?,
        tp_sk_state_skaddr: sk_state.offset("skaddr")?,
        tp_sk_state_newstate: sk_state.offset("newstate")?,
        tp_sk_state_oldstate: sk_state.offset("oldstate")?,
        tp_sk_state_protocol: sk_state.offset("protocol")?,
        tp_sk_state_sport: sk_state.offset("sport")?,
        tp_sk_state_dport: sk_state.offset("dport")?,
        tp_sk_state_daddr: sk_state.offset("daddr")?,
        tp_sk_state_daddr_v6: sk_state.offset("daddr_v6")?,
        tp_sk_state_saddr: sk_state.offset("saddr")?,
        tp_sk_state_saddr_v6: sk_state.offset("saddr_v6")?,
        tp_sk_state_family: sk_state.offset("family")?,
        tp_reset_skaddr: reset.offset("skaddr")?,
    })
}
