//! Process events: Microsoft-Windows-Kernel-Process start (1) and stop (2), and the kernel
//! logger's Process/Start, which carries the command line.
//!
//! Property names and types are those of the providers' manifests (Kernel-Process
//! `ProcessStartArgs`/`ProcessStopArgs`, the kernel logger's `Process_V4_TypeGroup1` class);
//! later template versions only append properties, and properties are read by name.

use protocol::{ExitEvent, Timestamp};

use crate::device_path::DeviceMap;
use crate::properties::{EventProperties, PropertyError};
use crate::record::{KernelProcessStart, ProcessStart, ProcessStop};

/// Kernel-Process event 1. Returns the record and whether the image's volume was in `devices`
/// (when it was not, the caller may reload the table and map again with [`remap_image`]).
pub fn start(
    time: Timestamp,
    creator_pid: u32,
    props: &dyn EventProperties,
    devices: &DeviceMap,
) -> Result<(ProcessStart, bool), PropertyError> {
    let image_nt_path = props.utf16("ImageName")?;
    let mut record = ProcessStart {
        time,
        pid: props.u32("ProcessID")?,
        create_time: props.filetime("CreateTime")?,
        ppid: props.u32("ParentProcessID")?,
        creator_pid,
        session_id: props.u32("SessionID")?,
        image_nt_path,
        exe: None,
        comm: String::new(),
        command_line: None,
        argv: None,
    };
    let known = remap_image(&mut record, devices);
    Ok((record, known))
}

/// Sets `exe` and `comm` from `image_nt_path`; returns whether the volume was known.
pub fn remap_image(record: &mut ProcessStart, devices: &DeviceMap) -> bool {
    if record.image_nt_path.is_empty() {
        // Minimal processes (Registry, MemCompression) have no image file.
        record.exe = None;
        record.comm = String::new();
        return true;
    }
    let mapped = devices.map(&record.image_nt_path);
    record.comm = file_name(&mapped.path).to_string();
    record.exe = Some(mapped.path);
    mapped.volume_known
}

/// Kernel-Process event 2.
pub fn stop(time: Timestamp, props: &dyn EventProperties) -> Result<ProcessStop, PropertyError> {
    let code = props.u32("ExitCode")?;
    Ok(ProcessStop {
        time,
        pid: props.u32("ProcessID")?,
        create_time: props.filetime("CreateTime")?,
        exit: ExitEvent {
            // Same bits, signed: NTSTATUS exit codes read as negative numbers, as everywhere
            // else on Windows.
            exit_code: Some(code as i32),
            signal: None,
            core_dumped: false,
        },
    })
}

/// The kernel logger's Process/Start (opcode 1).
pub fn kernel_start(
    time: Timestamp,
    props: &dyn EventProperties,
) -> Result<KernelProcessStart, PropertyError> {
    Ok(KernelProcessStart {
        time,
        pid: props.u32("ProcessId")?,
        ppid: props.u32("ParentId")?,
        command_line: props.utf16("CommandLine")?,
    })
}

fn file_name(path: &str) -> &str {
    path.rsplit(['\\', '/']).next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filetime::UNIX_EPOCH_AS_FILETIME;
    use crate::fixture::{utf16z, Fixture};

    const CREATE: u64 = UNIX_EPOCH_AS_FILETIME + 1_700_000_000 * 10_000_000 + 5;

    fn devices() -> DeviceMap {
        DeviceMap::new([("C:", r"\Device\HarddiskVolume3")], None)
    }

    fn start_fixture(image: &str) -> Fixture {
        Fixture::new()
            .with("ProcessID", 4242u32.to_le_bytes().to_vec())
            .with("CreateTime", CREATE.to_le_bytes().to_vec())
            .with("ParentProcessID", 1000u32.to_le_bytes().to_vec())
            .with("SessionID", 1u32.to_le_bytes().to_vec())
            .with("Flags", 0u32.to_le_bytes().to_vec())
            .with("ImageName", utf16z(image))
    }

    #[test]
    fn start_reads_ids_times_and_maps_the_image() {
        let t = Timestamp::from_unix_nanos(1_700_000_000_000_001_000);
        let props = start_fixture(r"\Device\HarddiskVolume3\Windows\System32\cmd.exe");
        let (rec, known) = start(t, 999, &props, &devices()).expect("valid");
        assert!(known);
        assert_eq!(rec.pid, 4242);
        assert_eq!(rec.ppid, 1000);
        assert_eq!(rec.creator_pid, 999);
        assert_eq!(rec.create_time, CREATE);
        assert_eq!(
            rec.start_time(),
            Some(Timestamp::from_unix_nanos(1_700_000_000_000_000_500))
        );
        assert_eq!(rec.exe.as_deref(), Some(r"C:\Windows\System32\cmd.exe"));
        assert_eq!(rec.comm, "cmd.exe");
        assert_eq!(rec.terminal().as_deref(), Some("session1"));
        assert_eq!(rec.argv, None);
    }

    #[test]
    fn start_on_unknown_volume_says_so() {
        let props = start_fixture(r"\Device\HarddiskVolume9\x\y.exe");
        let (rec, known) = start(Timestamp::default(), 1, &props, &devices()).expect("valid");
        assert!(!known);
        assert_eq!(
            rec.exe.as_deref(),
            Some(r"\\?\GLOBALROOT\Device\HarddiskVolume9\x\y.exe")
        );
        assert_eq!(rec.comm, "y.exe");
        // After a reload that learned the volume, the same record maps to a drive letter.
        let mut rec = rec;
        let reloaded = DeviceMap::new([("E:", r"\Device\HarddiskVolume9")], None);
        assert!(remap_image(&mut rec, &reloaded));
        assert_eq!(rec.exe.as_deref(), Some(r"E:\x\y.exe"));
    }

    #[test]
    fn start_without_image_has_no_exe() {
        let props = start_fixture("");
        let (rec, _) = start(Timestamp::default(), 4, &props, &devices()).expect("valid");
        assert_eq!(rec.exe, None);
        assert_eq!(rec.comm, "");
    }

    #[test]
    fn session_zero_has_no_terminal() {
        let props = start_fixture(r"C:\x.exe").with("SessionID", vec![0, 0, 0, 0]);
        let (rec, _) = start(Timestamp::default(), 4, &props, &devices()).expect("valid");
        assert_eq!(rec.terminal(), None);
    }

    #[test]
    fn start_missing_a_property_is_an_error() {
        let props = Fixture::new().with("ProcessID", vec![1, 0, 0, 0]);
        assert!(start(Timestamp::default(), 4, &props, &devices()).is_err());
    }

    #[test]
    fn stop_reads_exit_codes_including_ntstatus() {
        let props = Fixture::new()
            .with("ProcessID", 4242u32.to_le_bytes().to_vec())
            .with("CreateTime", CREATE.to_le_bytes().to_vec())
            .with("ExitTime", (CREATE + 10).to_le_bytes().to_vec())
            .with("ExitCode", 3u32.to_le_bytes().to_vec())
            .with("ImageName", b"cmd.exe\0".to_vec());
        let rec = stop(Timestamp::default(), &props).expect("valid");
        assert_eq!((rec.pid, rec.create_time), (4242, CREATE));
        assert_eq!(
            rec.exit,
            ExitEvent {
                exit_code: Some(3),
                signal: None,
                core_dumped: false
            }
        );

        let crashed = props.with("ExitCode", 0xC000_0005u32.to_le_bytes().to_vec());
        let rec = stop(Timestamp::default(), &crashed).expect("valid");
        assert_eq!(rec.exit.exit_code, Some(-1_073_741_819));
    }

    #[test]
    fn kernel_start_reads_the_command_line() {
        let props = Fixture::new()
            .with("UniqueProcessKey", vec![0; 8])
            .with("ProcessId", 4242u32.to_le_bytes().to_vec())
            .with("ParentId", 1000u32.to_le_bytes().to_vec())
            .with("ImageFileName", b"cmd.exe\0".to_vec())
            .with("CommandLine", utf16z(r#"cmd.exe /c "echo hi""#));
        let rec = kernel_start(Timestamp::default(), &props).expect("valid");
        assert_eq!((rec.pid, rec.ppid), (4242, 1000));
        assert_eq!(rec.command_line, r#"cmd.exe /c "echo hi""#);
    }
}
