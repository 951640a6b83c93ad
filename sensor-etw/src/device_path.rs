//! NT device paths (`\Device\HarddiskVolume3\Windows\System32\cmd.exe`, what the kernel
//! process provider reports as `ImageName`) to the drive-letter paths that rules, operators and
//! `QueryFullProcessImageNameW` use (`C:\Windows\System32\cmd.exe`).
//!
//! The table comes from `QueryDosDeviceW` for each drive letter (`DeviceMap::from_system`);
//! the mapping itself is plain Rust so it is tested everywhere. A volume without a drive letter
//! (mounted in a folder, or attached after the table was read) becomes
//! `\\?\GLOBALROOT\Device\...`: a Win32 path that still opens the same file, and visibly not a
//! drive path, rather than a guess.

/// Drive letters and the NT devices behind them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceMap {
    /// (`\Device\HarddiskVolume3`, `C:`), in drive-letter order.
    drives: Vec<(String, String)>,
    /// `%SystemRoot%` (e.g. `C:\Windows`), for `\SystemRoot\...` paths (smss.exe starts as one).
    system_root: Option<String>,
}

/// The result of mapping one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedPath {
    pub path: String,
    /// False when the path named a `\Device\...` the table does not know: the caller may
    /// reload the table (a volume was attached) and try again.
    pub volume_known: bool,
}

const GLOBALROOT: &str = r"\\?\GLOBALROOT";
/// Network redirectors: what follows is `server\share\...` (after `;`-prefixed components that
/// name the redirector and the logon session's drive mapping).
const REDIRECTORS: [&str; 2] = [r"\Device\Mup\", r"\Device\LanmanRedirector\"];

impl DeviceMap {
    /// Builds the table from `(drive, device)` pairs as `QueryDosDeviceW` reports them, e.g.
    /// `("C:", r"\Device\HarddiskVolume3")`. Targets that are not `\Device\...` paths (a `subst`
    /// drive points at `\??\C:\dir`) are skipped: the path they hide is already a drive path.
    pub fn new<I, D, T>(drives: I, system_root: Option<String>) -> Self
    where
        I: IntoIterator<Item = (D, T)>,
        D: Into<String>,
        T: Into<String>,
    {
        let mut drives: Vec<(String, String)> = drives
            .into_iter()
            .map(|(drive, device)| (device.into(), drive.into()))
            .filter(|(device, _)| starts_with_ignore_case(device, r"\Device\"))
            .map(|(device, drive)| (device.trim_end_matches('\\').to_string(), drive))
            .collect();
        drives.sort_by(|a, b| a.1.cmp(&b.1));
        Self {
            drives,
            system_root: system_root.map(|root| root.trim_end_matches('\\').to_string()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.drives.is_empty()
    }

    /// Maps an NT path to a Win32 path.
    pub fn map(&self, nt_path: &str) -> MappedPath {
        let known = |path: String| MappedPath {
            path,
            volume_known: true,
        };
        // Already Win32 (`C:\...`, `\\server\...`) or empty.
        if is_drive_path(nt_path) || nt_path.starts_with(r"\\") || nt_path.is_empty() {
            return known(nt_path.to_string());
        }
        // Object-manager aliases of drive paths: `\??\C:\x`, `\DosDevices\C:\x`, `\??\UNC\s\x`.
        for alias in [r"\??\", r"\DosDevices\", r"\GLOBAL??\"] {
            if let Some(rest) = strip_prefix_ignore_case(nt_path, alias) {
                if is_drive_path(rest) {
                    return known(rest.to_string());
                }
                if let Some(unc) = strip_prefix_ignore_case(rest, r"UNC\") {
                    return known(format!(r"\\{unc}"));
                }
            }
        }
        if let Some(rest) = strip_prefix_ignore_case(nt_path, r"\SystemRoot\") {
            if let Some(root) = &self.system_root {
                return known(format!(r"{root}\{rest}"));
            }
        }
        for redirector in REDIRECTORS {
            if let Some(rest) = strip_prefix_ignore_case(nt_path, redirector) {
                let mut parts = rest.split('\\').skip_while(|part| part.starts_with(';'));
                let unc: Vec<&str> = parts.by_ref().collect();
                return known(format!(r"\\{}", unc.join(r"\")));
            }
        }
        for (device, drive) in &self.drives {
            if let Some(rest) = strip_prefix_ignore_case(nt_path, device) {
                // Only at a component boundary: `\Device\HarddiskVolume1` must not claim
                // `\Device\HarddiskVolume10\...`.
                if rest.is_empty() {
                    return known(format!(r"{drive}\"));
                }
                if rest.starts_with('\\') {
                    return known(format!("{drive}{rest}"));
                }
            }
        }
        if starts_with_ignore_case(nt_path, r"\Device\") {
            return MappedPath {
                path: format!("{GLOBALROOT}{nt_path}"),
                volume_known: false,
            };
        }
        known(nt_path.to_string())
    }

    /// Reads the drive letters of this host.
    #[cfg(windows)]
    pub fn from_system() -> Result<Self, crate::EtwError> {
        use windows::core::PCWSTR;
        use windows::Win32::Storage::FileSystem::{GetLogicalDriveStringsW, QueryDosDeviceW};

        let mut buf = vec![0u16; 512];
        // SAFETY: the buffer is valid for its length; the call writes at most that many units.
        let len = unsafe { GetLogicalDriveStringsW(Some(&mut buf)) } as usize;
        if len == 0 || len > buf.len() {
            return Err(crate::EtwError::Os {
                context: "GetLogicalDriveStringsW".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        let mut drives = Vec::new();
        for root in buf[..len]
            .split(|&unit| unit == 0)
            .filter(|s| !s.is_empty())
        {
            // "C:\" → "C:": QueryDosDeviceW wants the name without the backslash.
            let name: Vec<u16> = root
                .iter()
                .copied()
                .take_while(|&unit| unit != u16::from(b'\\'))
                .chain(std::iter::once(0))
                .collect();
            let mut target = vec![0u16; 1024];
            // SAFETY: `name` is NUL-terminated; `target` is valid for its length.
            let written =
                unsafe { QueryDosDeviceW(PCWSTR::from_raw(name.as_ptr()), Some(&mut target)) };
            if written == 0 {
                // A drive that vanished between the two calls: skip it, the next reload sees
                // the new state.
                continue;
            }
            // The first string of the multi-string is the current mapping.
            let first: Vec<u16> = target
                .iter()
                .copied()
                .take_while(|&unit| unit != 0)
                .collect();
            let drive = String::from_utf16_lossy(&name[..name.len() - 1]);
            drives.push((drive, String::from_utf16_lossy(&first)));
        }
        let system_root = std::env::var("SystemRoot").ok();
        Ok(Self::new(drives, system_root))
    }
}

fn is_drive_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.len() >= 2
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && (bytes.len() == 2 || bytes[2] == b'\\')
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    strip_prefix_ignore_case(text, prefix).is_some()
}

/// NT object names compare case-insensitively.
fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> DeviceMap {
        DeviceMap::new(
            [
                ("D:", r"\Device\HarddiskVolume10"),
                ("C:", r"\Device\HarddiskVolume1"),
                ("S:", r"\??\C:\src"),
                (
                    "Z:",
                    r"\Device\LanmanRedirector\;Z:000000000001a2b3\fs01\share",
                ),
            ],
            Some(r"C:\Windows\".to_string()),
        )
    }

    fn mapped(path: &str) -> MappedPath {
        map().map(path)
    }

    #[test]
    fn volumes_map_to_their_drive_letters() {
        assert_eq!(
            mapped(r"\Device\HarddiskVolume1\Windows\System32\cmd.exe").path,
            r"C:\Windows\System32\cmd.exe"
        );
        assert_eq!(
            mapped(r"\Device\HarddiskVolume10\tools\x.exe").path,
            r"D:\tools\x.exe"
        );
    }

    #[test]
    fn prefix_match_respects_component_boundaries() {
        // Volume1 is listed and is a string prefix of Volume10/Volume11; only the exact
        // component may match.
        assert_eq!(mapped(r"\Device\HarddiskVolume10\a.exe").path, r"D:\a.exe");
        let unknown = mapped(r"\Device\HarddiskVolume11\a.exe");
        assert_eq!(
            unknown.path,
            r"\\?\GLOBALROOT\Device\HarddiskVolume11\a.exe"
        );
        assert!(!unknown.volume_known);
    }

    #[test]
    fn unknown_volumes_keep_an_openable_path_and_say_so() {
        let shadow = mapped(r"\Device\HarddiskVolumeShadowCopy4\Windows\evil.exe");
        assert_eq!(
            shadow.path,
            r"\\?\GLOBALROOT\Device\HarddiskVolumeShadowCopy4\Windows\evil.exe"
        );
        assert!(!shadow.volume_known);
        assert!(mapped(r"\Device\HarddiskVolume1\a.exe").volume_known);
    }

    #[test]
    fn matching_ignores_case_and_keeps_the_rest_verbatim() {
        assert_eq!(
            mapped(r"\DEVICE\harddiskvolume1\Users\Bob\A.EXE").path,
            r"C:\Users\Bob\A.EXE"
        );
    }

    #[test]
    fn aliases_system_root_and_network_paths() {
        assert_eq!(mapped(r"\??\C:\Windows\x.exe").path, r"C:\Windows\x.exe");
        assert_eq!(
            mapped(r"\??\UNC\fs01\share\x.exe").path,
            r"\\fs01\share\x.exe"
        );
        assert_eq!(
            mapped(r"\SystemRoot\System32\smss.exe").path,
            r"C:\Windows\System32\smss.exe"
        );
        assert_eq!(
            mapped(r"\Device\Mup\fs01\share\tool.exe").path,
            r"\\fs01\share\tool.exe"
        );
        assert_eq!(
            mapped(r"\Device\Mup\;LanmanRedirector\;Z:000000000001a2b3\fs01\share\t.exe").path,
            r"\\fs01\share\t.exe"
        );
    }

    #[test]
    fn win32_paths_and_non_device_targets_pass_through() {
        assert_eq!(mapped(r"C:\already\fine.exe").path, r"C:\already\fine.exe");
        assert_eq!(mapped("").path, "");
        // The subst drive S: was not taken as a device.
        assert_eq!(map().drives.len(), 3);
        // A device path to a volume exactly (no trailing component).
        assert_eq!(mapped(r"\Device\HarddiskVolume1").path, r"C:\");
    }

    /// Runs the real QueryDosDeviceW calls (under wine in CI): the system drive maps back to
    /// its own letter.
    #[cfg(windows)]
    #[test]
    fn system_table_maps_the_system_drive() {
        let map = DeviceMap::from_system().expect("drive table");
        let system_drive = std::env::var("SystemDrive").unwrap_or_else(|_| "C:".into());
        let (device, drive) = map
            .drives
            .iter()
            .find(|(_, drive)| drive.eq_ignore_ascii_case(&system_drive))
            .expect("system drive listed")
            .clone();
        assert_eq!(
            map.map(&format!(r"{device}\x\y.exe")).path,
            format!(r"{drive}\x\y.exe")
        );
    }

    #[test]
    fn non_ascii_paths_do_not_break_prefix_checks() {
        // `get(..n)` on a non-char boundary must not panic.
        assert_eq!(mapped("\\Dévice\\x").path, "\\Dévice\\x");
        assert_eq!(
            mapped(r"\Device\HarddiskVolume1\Users\Zoë\ü.exe").path,
            r"C:\Users\Zoë\ü.exe"
        );
    }
}
