//! What the collector says when it cannot run: one sentence naming what is missing.

use std::{os::unix::process::CommandExt, process::Command};

fn collector() -> Command {
    let mut c = Command::new(osprey_tests::bin_dir().join("osprey-collector"));
    c.args(["--config", "/dev/null", "--no-nats", "--output", "jsonl"]);
    c
}

fn error_line(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn without_root_it_names_the_missing_capability() {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(osprey_tests::bin_dir().join("osprey-collector"))
        .args(["--config", "/dev/null", "--no-nats", "--output", "jsonl"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let line = error_line(&out);
    assert_eq!(line.lines().count(), 1, "one sentence: {line}");
    assert!(line.contains("CAP_BPF") && line.contains("root"), "{line}");
}

/// A seccomp filter that makes bpf(2) fail with ENOSYS, as on a kernel built without it.
fn deny_bpf_syscall() -> std::io::Result<()> {
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let filter = [
        // A = arch; if not x86_64, allow (the test only runs there).
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 4,
        },
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 3,
            k: AUDIT_ARCH_X86_64,
        },
        // A = syscall number; bpf → ENOSYS.
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: libc::SYS_bpf as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: prctl with valid arguments; the filter outlives the call (the kernel copies it).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const _,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn on_a_kernel_without_bpf_it_names_the_kernel_feature() {
    let mut cmd = collector();
    // SAFETY: the hook only calls async-signal-safe prctl.
    unsafe { cmd.pre_exec(deny_bpf_syscall) };
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let line = error_line(&out);
    assert_eq!(line.lines().count(), 1, "one sentence: {line}");
    assert!(
        line.contains("does not support eBPF") && line.contains("CONFIG_BPF_SYSCALL"),
        "{line}"
    );
}
