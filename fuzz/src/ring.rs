//! Ring-buffer records: what the eBPF source does with each record the kernel hands it.

use protocol::ExitEvent;

/// The collector's own decoder, compiled here from its source: depending on the collector
/// crate would build its whole runtime (tokio, NATS, aya) with sanitizers, tripling the fuzz
/// build for code the target never calls.
#[path = "../../collector/src/source/ebpf/decode.rs"]
#[allow(dead_code)] // what only the collector's connect joiner reads
mod decode;

use decode::Record;

/// Decodes `bytes` as one ring-buffer record and turns the result into what the source builds
/// from it: argv, paths, names and addresses as strings.
pub fn record(bytes: &[u8]) {
    // The source reuses one exec buffer for every record; stale bytes from an earlier, longer
    // record must never leak into a later one. Fill it with a marker to make that visible.
    let mut exec_buf = decode::new_exec_buffer();
    fill(&mut exec_buf, STALE);
    let Ok(record) = decode::decode(bytes, &mut exec_buf) else {
        return;
    };
    match record {
        Record::Exec(r) => exec(r, bytes.len()),
        Record::Exit(r) => {
            ExitEvent::from_wait_status(r.exit_code);
        }
        Record::ConnectAttempt(r) => {
            decode::ip(r.family, &r.addr);
        }
        Record::TcpOutcome(r) => {
            // The outcome's family is the attempt's; the joiner decodes the source address
            // with either.
            decode::ip(libc::AF_INET as u16, &r.source_addr);
            decode::ip(libc::AF_INET6 as u16, &r.source_addr);
        }
        Record::TcpClose(r) => {
            decode::ip(r.family, &r.destination_addr);
        }
        Record::Fork(_) | Record::SyscallResult(_) => {}
    }
}

/// Marks bytes that did not come from the record being decoded.
const STALE: u8 = 0xa5;

fn fill(rec: &mut sensor_common::ExecRecord, byte: u8) {
    // SAFETY: `ExecRecord` is `#[repr(C)]` plain old data (integers and byte arrays), valid
    // for any bytes.
    unsafe {
        std::ptr::write_bytes(
            rec as *mut sensor_common::ExecRecord as *mut u8,
            byte,
            std::mem::size_of::<sensor_common::ExecRecord>(),
        )
    };
}

/// What `Translator::exec` makes of an exec record (except the /proc fallback, which reads
/// the live system rather than the record).
fn exec(r: &sensor_common::ExecRecord, received: usize) {
    let (argv, _truncation) = decode::exec_argv(r);
    // Every argv character comes from a byte of this record: at most one character per byte
    // (a lossy replacement stands for at least one byte), plus nothing from the stale fill.
    let argv_bytes = received.saturating_sub(sensor_common::EXEC_RECORD_FIXED);
    let chars: usize = argv.iter().map(|a| a.chars().count()).sum();
    assert!(
        chars <= argv_bytes,
        "argv of {chars} characters from {argv_bytes} received bytes"
    );
    decode::c_str(&r.comm);
    decode::c_str(&r.filename);
    decode::c_str(&r.tty);
    decode::dentry_path(&r.exe);
    decode::dentry_path(&r.cwd);
    decode::kernel_dev_to_user(r.exe_dev);
}
