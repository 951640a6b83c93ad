//! The processes running now, from a Toolhelp32 snapshot: for the scan right after the
//! sessions start (processes that predate the sensor) and for periodic reconciliation.
//!
//! Per process, with `PROCESS_QUERY_LIMITED_INFORMATION` only (granted even for most protected
//! processes): the image as a drive-letter path (`QueryFullProcessImageNameW`), the creation
//! FILETIME (`GetProcessTimes`, the same value as ETW's `CreateTime`), the logon session, and
//! the command line (`NtQueryInformationProcess(ProcessCommandLineInformation)`, Windows 8.1+).
//! That command line is read from the process's memory now: a process may have rewritten it,
//! which is why live starts take it from the kernel logger instead (see [`crate::join`]).

use crate::EtwError;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// The parent pid recorded at creation. The parent may have exited since, and its pid
    /// been reused: ancestry built from a snapshot is a best effort.
    pub ppid: u32,
    /// The image file name from the snapshot (`svchost.exe`).
    pub name: String,
    pub exe: Option<String>,
    /// Creation time, FILETIME ticks; `None` when the process could not be opened.
    pub create_time: Option<u64>,
    pub session_id: Option<u32>,
    pub command_line: Option<String>,
}

impl ProcessInfo {
    pub fn argv(&self) -> Option<Vec<String>> {
        self.command_line.as_deref().map(crate::command_line::split)
    }

    pub fn terminal(&self) -> Option<String> {
        self.session_id.and_then(crate::record::session_terminal)
    }
}

/// Every process but the idle process (pid 0), with as much detail as access allows.
pub fn processes() -> Result<Vec<ProcessInfo>, EtwError> {
    #[cfg(windows)]
    {
        imp::processes(true)
    }
    #[cfg(not(windows))]
    {
        Err(EtwError::Unsupported)
    }
}

/// Pid and creation time of every process (the cheap subset of [`processes`]).
pub fn live() -> Result<Vec<(u32, Option<u64>)>, EtwError> {
    #[cfg(windows)]
    {
        Ok(imp::processes(false)?
            .into_iter()
            .map(|p| (p.pid, p.create_time))
            .collect())
    }
    #[cfg(not(windows))]
    {
        Err(EtwError::Unsupported)
    }
}

/// The command line of process `pid`, only if that pid still names the process created at
/// `create_time` (the fallback when the kernel's copy did not arrive).
pub fn command_line(pid: u32, create_time: u64) -> Option<String> {
    #[cfg(windows)]
    {
        let handle = imp::Handle::open(pid)?;
        (handle.create_time()? == create_time)
            .then(|| handle.command_line())
            .flatten()
    }
    #[cfg(not(windows))]
    {
        let _ = (pid, create_time);
        None
    }
}

#[cfg(windows)]
mod imp {
    use windows::core::PWSTR;
    use windows::Wdk::System::Threading::{
        NtQueryInformationProcess, ProcessCommandLineInformation,
    };
    use windows::Win32::Foundation::{CloseHandle, FILETIME, HANDLE, UNICODE_STRING};
    use windows::Win32::System::Diagnostics::ToolHelp::{
        CreateToolhelp32Snapshot, Process32FirstW, Process32NextW, PROCESSENTRY32W,
        TH32CS_SNAPPROCESS,
    };
    use windows::Win32::System::RemoteDesktop::ProcessIdToSessionId;
    use windows::Win32::System::Threading::{
        GetProcessTimes, OpenProcess, QueryFullProcessImageNameW, PROCESS_NAME_WIN32,
        PROCESS_QUERY_LIMITED_INFORMATION,
    };

    use super::ProcessInfo;
    use crate::EtwError;

    /// An owned handle, closed on drop.
    pub struct Handle(HANDLE);

    impl Drop for Handle {
        fn drop(&mut self) {
            // SAFETY: the handle is owned and closed exactly once.
            let _ = unsafe { CloseHandle(self.0) };
        }
    }

    impl Handle {
        pub fn open(pid: u32) -> Option<Self> {
            // SAFETY: plain call; the returned handle is owned by `Handle`.
            unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, false, pid) }
                .ok()
                .map(Handle)
        }

        pub fn create_time(&self) -> Option<u64> {
            let mut times = [FILETIME::default(); 4];
            let [created, exited, kernel, user] = &mut times;
            // SAFETY: four valid out-pointers.
            unsafe { GetProcessTimes(self.0, created, exited, kernel, user) }.ok()?;
            Some(u64::from(times[0].dwHighDateTime) << 32 | u64::from(times[0].dwLowDateTime))
        }

        pub fn image(&self) -> Option<String> {
            let mut buf = vec![0u16; 32_768];
            let mut len = buf.len() as u32;
            // SAFETY: `buf` holds `len` units; the call writes at most that many and updates
            // `len` to the count written.
            unsafe {
                QueryFullProcessImageNameW(
                    self.0,
                    PROCESS_NAME_WIN32,
                    PWSTR(buf.as_mut_ptr()),
                    &mut len,
                )
            }
            .ok()?;
            buf.truncate(len as usize);
            Some(String::from_utf16_lossy(&buf))
        }

        pub fn command_line(&self) -> Option<String> {
            const STATUS_INFO_LENGTH_MISMATCH: i32 = 0xC000_0004_u32 as i32;
            const STATUS_BUFFER_TOO_SMALL: i32 = 0xC000_0023_u32 as i32;
            // u64 elements: the UNICODE_STRING at the start needs pointer alignment.
            let mut buf = vec![0u64; 1024];
            let mut needed = 0u32;
            let mut ok = false;
            for _ in 0..3 {
                let bytes = (buf.len() * 8) as u32;
                // SAFETY: `buf` is valid for `bytes`; `needed` is a valid out-pointer.
                let status = unsafe {
                    NtQueryInformationProcess(
                        self.0,
                        ProcessCommandLineInformation,
                        buf.as_mut_ptr().cast(),
                        bytes,
                        &mut needed,
                    )
                };
                if status.is_ok() {
                    ok = true;
                    break;
                }
                if status.0 != STATUS_INFO_LENGTH_MISMATCH && status.0 != STATUS_BUFFER_TOO_SMALL {
                    return None;
                }
                buf = vec![0u64; (needed as usize).div_ceil(8) + 1];
            }
            if !ok {
                return None;
            }
            // SAFETY: on success the buffer starts with a UNICODE_STRING; it is aligned (u64
            // buffer) and the buffer is larger than the struct.
            let text = unsafe { &*(buf.as_ptr() as *const UNICODE_STRING) };
            let units = usize::from(text.Length) / 2;
            let start = buf.as_ptr() as usize;
            let end = start + buf.len() * 8;
            let ptr = text.Buffer.0 as usize;
            // The string's characters follow the header inside our buffer; anything else is a
            // malformed answer, not memory to read.
            if units == 0 || ptr < start || ptr.checked_add(units * 2)? > end {
                return (units == 0).then(String::new);
            }
            // SAFETY: bounds checked just above; u16 alignment holds for a UTF-16 buffer the
            // kernel wrote.
            let slice = unsafe { std::slice::from_raw_parts(ptr as *const u16, units) };
            Some(String::from_utf16_lossy(slice))
        }
    }

    pub fn processes(detail: bool) -> Result<Vec<ProcessInfo>, EtwError> {
        // SAFETY: plain call; the handle is owned below.
        let snapshot = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) }
            .map(Handle)
            .map_err(|err| EtwError::Os {
                context: "CreateToolhelp32Snapshot".into(),
                source: std::io::Error::from_raw_os_error(err.code().0),
            })?;
        let mut entry = PROCESSENTRY32W {
            dwSize: std::mem::size_of::<PROCESSENTRY32W>() as u32,
            ..Default::default()
        };
        let mut out = Vec::new();
        // SAFETY: `entry` is a valid PROCESSENTRY32W with dwSize set.
        let mut more = unsafe { Process32FirstW(snapshot.0, &mut entry) }.is_ok();
        while more {
            if entry.th32ProcessID != 0 {
                out.push(describe(&entry, detail));
            }
            // SAFETY: as above.
            more = unsafe { Process32NextW(snapshot.0, &mut entry) }.is_ok();
        }
        Ok(out)
    }

    fn describe(entry: &PROCESSENTRY32W, detail: bool) -> ProcessInfo {
        let name_len = entry
            .szExeFile
            .iter()
            .position(|&unit| unit == 0)
            .unwrap_or(entry.szExeFile.len());
        let mut info = ProcessInfo {
            pid: entry.th32ProcessID,
            ppid: entry.th32ParentProcessID,
            name: String::from_utf16_lossy(&entry.szExeFile[..name_len]),
            ..ProcessInfo::default()
        };
        let Some(handle) = Handle::open(info.pid) else {
            return info;
        };
        info.create_time = handle.create_time();
        if detail {
            info.exe = handle.image();
            info.command_line = handle.command_line();
            let mut session = 0u32;
            // SAFETY: valid out-pointer.
            if unsafe { ProcessIdToSessionId(info.pid, &mut session) }.is_ok() {
                info.session_id = Some(session);
            }
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_and_terminal_follow_the_command_line_and_session() {
        let info = ProcessInfo {
            pid: 7,
            command_line: Some(r#""C:\Program Files\x.exe" -y"#.into()),
            session_id: Some(2),
            ..ProcessInfo::default()
        };
        assert_eq!(
            info.argv(),
            Some(vec![r"C:\Program Files\x.exe".into(), "-y".into()])
        );
        assert_eq!(info.terminal().as_deref(), Some("session2"));
        assert_eq!(
            ProcessInfo {
                session_id: Some(0),
                ..info
            }
            .terminal(),
            None
        );
    }

    /// Runs the real Windows calls (under wine in CI): the snapshot finds this test process,
    /// with the command line it was started with and a creation time that identifies it.
    #[cfg(windows)]
    #[test]
    fn own_process_is_in_the_snapshot_with_its_command_line() {
        let me = std::process::id();
        let all = processes().expect("snapshot");
        let mine = all
            .iter()
            .find(|p| p.pid == me)
            .expect("this process is listed");
        assert!(mine.name.to_ascii_lowercase().ends_with(".exe"), "{mine:?}");
        let exe = mine.exe.as_deref().expect("image path");
        assert!(exe.contains(":\\") && exe.ends_with(&mine.name), "{exe}");
        let created = mine.create_time.expect("creation time");
        let started = crate::filetime::to_timestamp(created).expect("after 1970");
        let age = protocol::Timestamp::now().unix_nanos() - started.unix_nanos();
        assert!((0..3_600_000_000_000).contains(&age), "started {started}");
        assert!(live().expect("live").contains(&(me, Some(created))));
        // A different creation time is a different process: no answer.
        assert_eq!(command_line(me, created + 1), None);
        if is_wine() {
            // Wine 8 does not implement ProcessCommandLineInformation: only Windows can
            // check the command line (docs/windows.md).
            assert_eq!(mine.command_line, None);
            return;
        }
        let line = mine.command_line.as_deref().expect("command line");
        assert!(line.contains("sensor_etw"), "{line}");
        assert_eq!(command_line(me, created).as_deref(), Some(line));
    }

    #[cfg(windows)]
    fn is_wine() -> bool {
        use windows::core::{s, w};
        use windows::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
        // SAFETY: plain lookups of a loaded module and one of its exports.
        unsafe {
            GetModuleHandleW(w!("ntdll.dll"))
                .map(|ntdll| GetProcAddress(ntdll, s!("wine_get_version")).is_some())
                .unwrap_or(false)
        }
    }

    #[cfg(not(windows))]
    #[test]
    fn elsewhere_snapshots_say_they_need_windows() {
        assert!(matches!(processes(), Err(EtwError::Unsupported)));
        assert!(matches!(live(), Err(EtwError::Unsupported)));
        assert_eq!(command_line(1, 1), None);
    }
}
