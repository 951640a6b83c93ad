//! Writes the committed seed corpora (`fuzz/seeds/<target>/`): real ring-buffer records built
//! from sensor-common's structs, commands and approvals signed by the targets' trusted key, the
//! example policy and a few rules of the Sigma corpus.
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example write_seeds
//! ```
//!
//! The output is deterministic (fixed key, fixed times), so running it again changes nothing
//! unless the record layouts or the wire model changed.

use std::{
    fs,
    path::{Path, PathBuf},
};

use osprey_fuzz::fixtures::{exec_id, signer, ISSUED_AT};
use protocol::{Action, Approval, Command, FindingId, Verdict};
use sensor_common::*;

fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: the records are `#[repr(C)]` plain old data; reading their bytes is what the
    // kernel side does when it submits them.
    unsafe { std::slice::from_raw_parts(value as *const T as *const u8, std::mem::size_of::<T>()) }
        .to_vec()
}

fn zeroed<T: Copy>() -> T {
    // SAFETY: every record is integers and byte arrays, for which zero is valid.
    unsafe { std::mem::zeroed() }
}

fn header(kind: RecordKind, pid: u32) -> RecordHeader {
    RecordHeader {
        kind: kind as u32,
        tid: pid,
        pid,
        _pad: 0,
        boot_ns: 5_000_000_000,
    }
}

fn put(buf: &mut [u8], text: &[u8]) -> u32 {
    buf[..text.len()].copy_from_slice(text);
    text.len() as u32
}

fn dentry(leaf_first: &[&str]) -> DentryPath {
    let mut path: DentryPath = zeroed();
    let mut at = 0;
    for c in leaf_first {
        at += put(&mut path.buf[at..], c.as_bytes()) as usize + 1;
    }
    path.len = at as u32;
    path.depth = leaf_first.len() as u32;
    path
}

/// `/bin/true marker-42` run from a shell in /home/alice, as the kernel sends it: the fixed
/// part plus only the used argv bytes.
fn exec_record() -> Vec<u8> {
    let mut r: ExecRecord = zeroed();
    r.header = header(RecordKind::Exec, 4242);
    r.ppid = 4000;
    r.uid = 1000;
    r.euid = 1000;
    r.gid = 1000;
    r.loginuid = 1000;
    r.flags = EXEC_HAS_TTY;
    r.start_boottime = 4_900_000_000;
    r.cgroup_id = 1;
    r.exe_dev = (8 << 20) | 1;
    r.exe_ino = 131_074;
    put(&mut r.comm, b"true");
    put(&mut r.tty, b"pts0");
    put(&mut r.filename, b"/bin/true");
    r.exe = dentry(&["true", "bin", "usr"]);
    r.cwd = dentry(&["alice", "home"]);
    r.argv_len = put(&mut r.argv, b"/bin/true\0marker-42\0");
    r.argc = 2;
    let mut bytes = bytes_of(&r);
    bytes.truncate(EXEC_RECORD_FIXED + r.argv_len as usize);
    bytes
}

fn ring_records() -> Vec<(&'static str, Vec<u8>)> {
    let mut fork: ForkRecord = zeroed();
    fork.header = header(RecordKind::Fork, 4000);
    fork.child_pid = 4242;
    fork.child_start_boottime = 4_900_000_000;
    let mut exit: ExitRecord = zeroed();
    exit.header = header(RecordKind::Exit, 4242);
    exit.exit_code = 9;
    exit.start_boottime = 4_900_000_000;
    let mut connect4: ConnectAttemptRecord = zeroed();
    connect4.header = header(RecordKind::ConnectAttempt, 4242);
    connect4.sock = 0xffff_8880_0000_1000;
    connect4.family = libc::AF_INET as u16;
    connect4.port = 4444;
    connect4.sock_type = libc::SOCK_STREAM as u8;
    connect4.protocol = libc::IPPROTO_TCP as u8;
    connect4.hook = HOOK_CONNECT;
    connect4.addr[..4].copy_from_slice(&[203, 0, 113, 7]);
    let mut connect6 = connect4;
    connect6.family = libc::AF_INET6 as u16;
    connect6.hook = HOOK_SENDMSG;
    connect6.sock_type = libc::SOCK_DGRAM as u8;
    connect6.protocol = libc::IPPROTO_UDP as u8;
    connect6.addr = "::ffff:203.0.113.7"
        .parse::<std::net::Ipv6Addr>()
        .expect("an address")
        .octets();
    let mut result: SyscallResultRecord = zeroed();
    result.header = header(RecordKind::SyscallResult, 4242);
    result.ret = -(libc::ECONNREFUSED as i64);
    let mut tcp: TcpOutcomeRecord = zeroed();
    tcp.header = header(RecordKind::TcpOutcome, 4242);
    tcp.sock = connect4.sock;
    tcp.reset = 1;
    tcp.source_port = 51234;
    tcp.source_addr[..4].copy_from_slice(&[192, 0, 2, 10]);
    let mut close: TcpCloseRecord = zeroed();
    close.header = header(RecordKind::TcpClose, 4242);
    close.sock = connect4.sock;
    close.established_ns = 1_000_000_000;
    close.bytes_acked = 1234;
    close.bytes_received = 5678;
    close.owner_pid = 4242;
    close.family = libc::AF_INET as u16;
    close.source_port = 51234;
    close.destination_port = 443;
    close.destination_addr[..4].copy_from_slice(&[203, 0, 113, 7]);
    vec![
        ("exec", exec_record()),
        ("fork", bytes_of(&fork)),
        ("exit", bytes_of(&exit)),
        ("connect4", bytes_of(&connect4)),
        ("sendmsg6", bytes_of(&connect6)),
        ("syscall_result", bytes_of(&result)),
        ("tcp_outcome", bytes_of(&tcp)),
        ("tcp_close", bytes_of(&close)),
    ]
}

fn command(action: Action, signed: bool) -> Vec<u8> {
    let mut c = Command {
        id: "cmd-0001".into(),
        nonce: "6f2d1c0e9b8a7f6e5d4c3b2a19081716".into(),
        issued_at: ISSUED_AT,
        host: "web-1".into(),
        action,
        finding_id: Some(FindingId(format!("{}-00deadbeef00cafe", exec_id(4242)))),
        operator: Some("alice".into()),
        key_id: String::new(),
        signature: None,
    };
    if signed {
        signer().sign(&mut c);
    }
    protocol::encode(&c).expect("a command encodes")
}

fn commands() -> Vec<(&'static str, Vec<u8>)> {
    let target = exec_id(4242);
    vec![
        (
            "kill",
            command(
                Action::Kill {
                    target,
                    tree: true,
                },
                true,
            ),
        ),
        (
            "suspend",
            command(
                Action::Suspend {
                    target,
                    ttl_secs: Some(600),
                },
                true,
            ),
        ),
        (
            "block",
            command(
                Action::Block {
                    cidr: "203.0.113.0/24".into(),
                    port: Some(4444),
                    ttl_secs: Some(3600),
                },
                true,
            ),
        ),
        (
            "quarantine_path",
            command(
                Action::Quarantine {
                    target: None,
                    path: Some("/tmp/.x/payload".into()),
                },
                true,
            ),
        ),
        (
            "kill_on_exec",
            command(
                Action::KillOnExec {
                    path: Some("/tmp/.x/payload".into()),
                    target: Some(target),
                    ttl_secs: None,
                },
                true,
            ),
        ),
        ("dump_unsigned", command(Action::Dump { target }, false)),
    ]
}

fn approval(verdict: Verdict) -> Vec<u8> {
    let mut a = Approval {
        pending_id: "pending-0001".into(),
        verdict,
        nonce: "0a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
        issued_at: ISSUED_AT,
        operator: None,
        key_id: String::new(),
        signature: None,
    };
    signer().sign(&mut a);
    protocol::encode(&a).expect("an approval encodes")
}

/// Rules of the shared Sigma corpus that use the features the loader compiles: modifiers
/// (`|contains|all`, `|re`, `|endswith`, `|cidr`), `1 of`/`all of` conditions, both
/// `process_creation` and `network_connection`.
const SIGMA_RULES: &[&str] = &[
    "process_creation/proc_creation_lnx_base64_decode.yml",
    "process_creation/proc_creation_lnx_curl_wget_exec_tmp.yml",
    "process_creation/proc_creation_lnx_susp_inod_listing.yml",
    "process_creation/proc_creation_lnx_ruby_reverse_shell.yml",
    "process_creation/proc_creation_lnx_webshell_detection.yml",
    "network_connection/net_connection_lnx_back_connect_shell_dev.yml",
    "network_connection/net_connection_lnx_susp_malware_callback_port.yml",
];

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn copy(from: &Path, dir: &Path, name: &str) {
    let bytes = fs::read(from).unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
    write(dir, name, &bytes);
}

fn main() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let seeds = fuzz.join("seeds");
    for (name, bytes) in ring_records() {
        write(&seeds.join("ring_record"), name, &bytes);
    }
    for (name, bytes) in commands() {
        write(&seeds.join("command"), name, &bytes);
    }
    write(
        &seeds.join("approval"),
        "approve",
        &approval(Verdict::Approve),
    );
    write(&seeds.join("approval"), "deny", &approval(Verdict::Deny));
    copy(
        &fuzz.join("../deploy/policy.yaml"),
        &seeds.join("policy"),
        "policy.yaml",
    );
    let sigma = std::env::var_os("OSPREY_SIGMA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| fuzz.join("../../shared/sigma/rules/linux"));
    for rule in SIGMA_RULES {
        let name = Path::new(rule).file_name().expect("a file name");
        copy(
            &sigma.join(rule),
            &seeds.join("sigma"),
            &name.to_string_lossy(),
        );
    }
    println!("seeds written under {}", seeds.display());
}
