//! Actions on files and memory: quarantine of an executable, memory dump of a process.

use std::{
    fs::File,
    io::{Read, Write},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use protocol::{ExecId, FindingId, QuarantineRecord, Timestamp};
use sha2::{Digest, Sha256};

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Renames `from` to `to`; across filesystems, copies (synced) and then removes the original.
pub fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let mut src = File::open(from)?;
            let mut dst = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(to)?;
            std::io::copy(&mut src, &mut dst)?;
            dst.sync_all()?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

/// Moves `path` into `dir` with mode 000 and writes its sidecar. Returns the record.
pub fn quarantine(
    path: &Path,
    dir: &Path,
    finding_id: Option<FindingId>,
) -> Result<QuarantineRecord, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot restrict {}: {e}", dir.display()))?;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let sha256 = sha256_file(path).map_err(|e| format!("cannot hash {}: {e}", path.display()))?;
    let time = Timestamp::now();
    let id = format!("{}-{}", &sha256[..16], time.unix_nanos());
    let dest = dir.join(&id);
    move_file(path, &dest)
        .map_err(|e| format!("cannot move {} into quarantine: {e}", path.display()))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o000))
        .map_err(|e| format!("cannot set mode 000 on {}: {e}", dest.display()))?;
    let record = QuarantineRecord {
        id: id.clone(),
        original_path: path.to_string_lossy().into_owned(),
        sha256,
        time,
        finding_id,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.len(),
    };
    let sidecar = dir.join(format!("{id}.json"));
    std::fs::write(
        &sidecar,
        serde_json::to_vec_pretty(&record).unwrap_or_default(),
    )
    .map_err(|e| format!("cannot write {}: {e}", sidecar.display()))?;
    Ok(record)
}

/// Copies every readable mapping of `target` (through `/proc/<pid>/mem`) and its maps file
/// into a new directory under `dir`: `maps`, and `<start>-<end>.bin` per region.
pub fn dump(target: &ExecId, dir: &Path, max_bytes: u64) -> Result<PathBuf, String> {
    let pid = target.pid;
    let out = dir.join(format!("{target}-{}", Timestamp::now().unix_nanos()));
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("cannot read maps of {pid}: {e}"))?;
    std::fs::write(out.join("maps"), &maps).map_err(|e| format!("cannot write maps: {e}"))?;
    let mem = File::open(format!("/proc/{pid}/mem"))
        .map_err(|e| format!("cannot open memory of {pid}: {e}"))?;
    let mut total = 0u64;
    let mut regions = 0usize;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let len = end.saturating_sub(start);
        if total + len > max_bytes {
            tracing::warn!(
                pid,
                "memory dump reached its size limit of {max_bytes} bytes"
            );
            break;
        }
        let mut buf = vec![0u8; len as usize];
        // [vvar] and similar regions cannot be read: skip them.
        if std::os::unix::fs::FileExt::read_exact_at(&mem, &mut buf, start).is_err() {
            continue;
        }
        let path = out.join(format!("{start:x}-{end:x}.bin"));
        File::create(&path)
            .and_then(|mut f| f.write_all(&buf))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        total += len;
        regions += 1;
    }
    tracing::info!(pid, regions, bytes = total, dir = %out.display(), "memory dumped");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_moves_hashes_and_locks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad");
        std::fs::write(&file, b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        let q = dir.path().join("q");
        let rec = quarantine(&file, &q, None).unwrap();
        assert!(!file.exists());
        let moved = q.join(&rec.id);
        assert_eq!(std::fs::metadata(&moved).unwrap().mode() & 0o777, 0);
        assert_eq!(rec.mode, 0o755);
        assert_eq!(rec.sha256, sha256_file(&moved).unwrap());
        let sidecar: QuarantineRecord =
            serde_json::from_slice(&std::fs::read(q.join(format!("{}.json", rec.id))).unwrap())
                .unwrap();
        assert_eq!(sidecar, rec);
    }
}
