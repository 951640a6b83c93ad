//! Memory dumps: every readable mapping of a process streamed from `/proc/<pid>/mem` into a
//! directory, one file per region, in fixed-size chunks (memory use does not grow with the
//! process), within a size budget and a time limit. A region larger than what is left of the
//! budget is skipped and the dump goes on; what was skipped, and why, is in `manifest.json`
//! and in the result.

use std::{
    fs::File,
    io::Write,
    os::unix::fs::{FileExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Instant,
};

use protocol::{ExecId, Timestamp};
use serde::Serialize;

/// Bytes read from the process at a time.
const CHUNK: usize = 1024 * 1024;

#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub start: u64,
    pub end: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DumpReport {
    pub dir: PathBuf,
    pub regions: usize,
    pub bytes: u64,
    pub skipped: Vec<Skipped>,
    /// The time limit ended the dump early.
    pub timed_out: bool,
}

impl DumpReport {
    /// One sentence for the command's answer and the audit.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} bytes in {} regions dumped to {}",
            self.bytes,
            self.regions,
            self.dir.display()
        );
        if !self.skipped.is_empty() {
            s.push_str(&format!(
                "; {} region(s) skipped ({})",
                self.skipped.len(),
                self.skipped
                    .iter()
                    .take(3)
                    .map(|k| format!("{:x}-{:x}: {}", k.start, k.end, k.reason))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if self.timed_out {
            s.push_str("; stopped at the time limit");
        }
        s
    }
}

struct Region {
    start: u64,
    end: u64,
}

fn readable_regions(maps: &str) -> Vec<Region> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            if !perms.starts_with('r') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(Region {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
            })
        })
        .filter(|r| r.end > r.start)
        .collect()
}

/// Dumps `target`'s memory into a new directory under `dir`.
pub fn dump(
    target: &ExecId,
    dir: &Path,
    max_bytes: u64,
    deadline: Instant,
) -> Result<DumpReport, String> {
    let pid = target.pid;
    let out = dir.join(format!("{target}-{}", Timestamp::now().unix_nanos()));
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("cannot read maps of {pid}: {e}"))?;
    std::fs::write(out.join("maps"), &maps).map_err(|e| format!("cannot write maps: {e}"))?;
    let mem = File::open(format!("/proc/{pid}/mem"))
        .map_err(|e| format!("cannot open memory of {pid}: {e}"))?;
    let mut report = DumpReport {
        dir: out.clone(),
        regions: 0,
        bytes: 0,
        skipped: Vec::new(),
        timed_out: false,
    };
    let mut buf = vec![0u8; CHUNK];
    for region in readable_regions(&maps) {
        let len = region.end - region.start;
        let skip = |reason: String| Skipped {
            start: region.start,
            end: region.end,
            reason,
        };
        if report.timed_out || Instant::now() >= deadline {
            report.timed_out = true;
            report.skipped.push(skip("time limit reached".into()));
            continue;
        }
        if report.bytes + len > max_bytes {
            report.skipped.push(skip(format!(
                "{len} bytes, over what is left of the {max_bytes}-byte budget"
            )));
            continue;
        }
        let path = out.join(format!("{:x}-{:x}.bin", region.start, region.end));
        let mut file =
            File::create(&path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let mut at = region.start;
        while at < region.end {
            if Instant::now() >= deadline {
                report.timed_out = true;
                report
                    .skipped
                    .push(skip(format!("time limit reached at {at:x}")));
                break;
            }
            let n = ((region.end - at) as usize).min(CHUNK);
            match mem.read_at(&mut buf[..n], at) {
                Ok(0) => break,
                Ok(read) => {
                    file.write_all(&buf[..read])
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    report.bytes += read as u64;
                    at += read as u64;
                }
                // [vvar] and guard pages cannot be read: keep what was read, note the rest.
                Err(e) => {
                    report
                        .skipped
                        .push(skip(format!("unreadable from {at:x}: {e}")));
                    break;
                }
            }
        }
        if at > region.start {
            report.regions += 1;
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    let manifest = out.join("manifest.json");
    let text = serde_json::to_vec_pretty(&report)
        .map_err(|e| format!("cannot render the manifest: {e}"))?;
    std::fs::write(&manifest, text)
        .map_err(|e| format!("cannot write {}: {e}", manifest.display()))?;
    tracing::info!(pid, regions = report.regions, bytes = report.bytes, skipped = report.skipped.len(), dir = %out.display(), "memory dumped");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memory_is_dumped_within_budget_and_skips_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let marker = b"osprey-dump-marker-in-the-heap".to_vec();
        let me = ExecId {
            boot: protocol::BootId(1),
            pid: std::process::id(),
            start_ticks: 0,
            seq: 0,
        };
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let report = dump(&me, dir.path(), 64 * 1024 * 1024, far).unwrap();
        assert!(report.regions > 0 && report.bytes <= 64 * 1024 * 1024);
        let found = std::fs::read_dir(&report.dir).unwrap().any(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap_or_default();
            bytes.windows(marker.len()).any(|w| w == marker.as_slice())
        });
        assert!(found, "the heap marker is in the dump");
        assert!(report.dir.join("manifest.json").exists());

        let tiny = dump(&me, dir.path(), 4096, far).unwrap();
        assert!(
            !tiny.skipped.is_empty(),
            "regions over the budget are skipped"
        );
        assert!(tiny.summary().contains("skipped"));
        drop(marker);
    }
}
