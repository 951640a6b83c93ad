//! Release from quarantine: the quarantined file goes back to its original path with its
//! original mode and owner. One implementation for the actuator (`Action::Release`, sent by
//! `osprey release ID --host H`) and for `osprey quarantine restore` on the host itself.
//!
//! Like quarantine it works on descriptors: the original directory is reached without
//! following any symbolic link (a directory swapped for a link cannot make root write the file
//! elsewhere), nothing is ever overwritten (`renameat2(RENAME_NOREPLACE)`, or `O_EXCL` when
//! copying across filesystems), and the mode and owner are set on the restored file itself.

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::Path,
};

use protocol::QuarantineRecord;

use super::{
    quarantine::{c_path, errno, identity_at, open, open_beneath, openat},
    ActionError,
};
use crate::source::FileId;

/// The records in a quarantine directory, oldest first.
pub fn records(dir: &Path) -> Result<Vec<QuarantineRecord>, String> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "json") {
            let text =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let rec: QuarantineRecord = serde_json::from_slice(&text)
                .map_err(|e| format!("{} is not a quarantine record: {e}", path.display()))?;
            out.push(rec);
        }
    }
    out.sort_by_key(|r| r.time);
    Ok(out)
}

/// Puts quarantined file `id` of `dir` back; returns its record.
pub fn release(dir: &Path, id: &str) -> Result<QuarantineRecord, ActionError> {
    let refused = |why: String| ActionError::Refused(why);
    let failed = |why: String| ActionError::Failed(why);
    // Ids come from the network: a plain name, never a path.
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(refused(format!(
            "{id:?} is not a quarantine id (letters, digits and '-')"
        )));
    }
    let sidecar = dir.join(format!("{id}.json"));
    let text = match std::fs::read(&sidecar) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refused(format!(
                "no quarantined file {id} in {}",
                dir.display()
            )))
        }
        Err(e) => return Err(failed(format!("cannot read {}: {e}", sidecar.display()))),
    };
    let rec: QuarantineRecord = serde_json::from_slice(&text).map_err(|e| {
        failed(format!(
            "{} is not a quarantine record: {e}",
            sidecar.display()
        ))
    })?;
    let original = Path::new(&rec.original_path);
    let shown = original.display();
    if rec.foreign_namespace {
        return Err(refused(format!(
            "{shown} was quarantined from another mount namespace (a container): put {} back \
             into that container by hand",
            dir.join(id).display()
        )));
    }
    let (Some(parent), Some(name)) = (original.parent(), original.file_name()) else {
        return Err(refused(format!("{shown} names no file")));
    };
    if !original.is_absolute() {
        return Err(refused(format!("{shown} is not an absolute path")));
    }
    let name = c_path(Path::new(name))?;
    let qname = c_path(Path::new(id))?;

    let qdir = open(dir, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| failed(format!("cannot open {}: {e}", dir.display())))?;
    let file = openat(&qdir, &qname, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
        .map_err(|e| failed(format!("cannot open the quarantined file {id}: {e}")))?;
    let meta = std::fs::File::from(
        file.try_clone()
            .map_err(|e| failed(format!("cannot duplicate a descriptor: {e}")))?,
    )
    .metadata()
    .map_err(|e| failed(format!("cannot stat the quarantined file {id}: {e}")))?;
    if !meta.is_file() {
        return Err(refused(format!(
            "quarantined entry {id} is not a regular file"
        )));
    }
    let root = open(Path::new("/"), libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| failed(format!("cannot open /: {e}")))?;
    let parent_fd = open_beneath(&root, parent, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::EXDEV) => refused(format!(
                "a directory on the way to {shown} is a symbolic link now: nothing is followed"
            )),
            Some(libc::ENOENT) => refused(format!("{} no longer exists", parent.display())),
            _ => failed(format!("cannot open {}: {e}", parent.display())),
        }
    })?;
    if identity_at(&parent_fd, &name).is_ok() {
        return Err(refused(format!("{shown} exists again; not overwriting it")));
    }

    let restored = match rename_noreplace(&qdir, &qname, &parent_fd, &name) {
        Ok(()) => file,
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            return Err(refused(format!("{shown} exists again; not overwriting it")))
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy_back(file, &parent_fd, &name, &qdir, &qname, &shown.to_string())?
        }
        Err(e) => return Err(failed(format!("cannot move {id} back to {shown}: {e}"))),
    };
    let id_of = |fd: &OwnedFd| {
        std::fs::File::from(fd.try_clone().ok()?)
            .metadata()
            .ok()
            .map(|m| FileId {
                dev: m.dev(),
                ino: m.ino(),
            })
    };
    // The owner first: chown clears set-id bits, the mode puts them back.
    // SAFETY: a valid descriptor.
    if unsafe { libc::fchown(restored.as_raw_fd(), rec.uid, rec.gid) } != 0 {
        return Err(failed(format!(
            "{shown} is back, but cannot set its owner: {}",
            errno()
        )));
    }
    // SAFETY: a valid descriptor.
    if unsafe { libc::fchmod(restored.as_raw_fd(), rec.mode) } != 0 {
        return Err(failed(format!(
            "{shown} is back, but cannot set its mode: {}",
            errno()
        )));
    }
    if identity_at(&parent_fd, &name).ok().map(|(i, _, _)| i) != id_of(&restored) {
        tracing::warn!("{shown} was replaced right after its release");
    }
    std::fs::remove_file(&sidecar).map_err(|e| {
        failed(format!(
            "{shown} is back, but cannot remove {}: {e}",
            sidecar.display()
        ))
    })?;
    Ok(rec)
}

/// `renameat2(.., RENAME_NOREPLACE)`: fails with EEXIST rather than replace anything.
fn rename_noreplace(
    from_dir: &OwnedFd,
    from: &CString,
    to_dir: &OwnedFd,
    to: &CString,
) -> std::io::Result<()> {
    // SAFETY: valid descriptors and NUL-terminated names.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            from_dir.as_raw_fd(),
            from.as_ptr(),
            to_dir.as_raw_fd(),
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r != 0 {
        return Err(errno());
    }
    Ok(())
}

/// Across filesystems: a new file created exclusively at the original name, filled from the
/// quarantined descriptor and synced; then the quarantined copy goes. Returns the new file.
fn copy_back(
    from: OwnedFd,
    parent: &OwnedFd,
    name: &CString,
    qdir: &OwnedFd,
    qname: &CString,
    shown: &str,
) -> Result<OwnedFd, ActionError> {
    let failed = |why: String| ActionError::Failed(why);
    let dst = openat(
        parent,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o600,
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::EEXIST) => {
            ActionError::Refused(format!("{shown} exists again; not overwriting it"))
        }
        _ => failed(format!("cannot create {shown}: {e}")),
    })?;
    let mut src = std::fs::File::from(from);
    let mut out = std::fs::File::from(dst);
    std::io::copy(&mut src, &mut out)
        .and_then(|_| out.sync_all())
        .map_err(|e| failed(format!("cannot copy back to {shown}: {e}")))?;
    // SAFETY: valid descriptor and name.
    if unsafe { libc::unlinkat(qdir.as_raw_fd(), qname.as_ptr(), 0) } != 0 {
        return Err(failed(format!(
            "{shown} is back, but the quarantined copy cannot be removed: {}",
            errno()
        )));
    }
    Ok(OwnedFd::from(out))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::actuator::quarantine::{quarantine, Target};
    use crate::config::HardLinks;

    fn quarantined(dir: &Path, name: &str) -> (std::path::PathBuf, QuarantineRecord) {
        let file = dir.join(name);
        std::fs::write(&file, b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o751)).unwrap();
        let target = Target {
            root: "/".into(),
            path: file.to_str().unwrap(),
            expect: None,
            foreign_namespace: false,
        };
        let rec = quarantine(&target, &dir.join("q"), None, HardLinks::Refuse, |_, _| {
            Ok(())
        })
        .unwrap();
        (file, rec)
    }

    #[test]
    fn a_release_restores_path_mode_and_owner_once() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q");
        let (file, rec) = quarantined(dir.path(), "tool");
        assert!(!file.exists());
        assert_eq!(records(&q).unwrap(), std::slice::from_ref(&rec));
        let back = release(&q, &rec.id).unwrap();
        assert_eq!(back.original_path, file.to_str().unwrap());
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o7777, 0o751);
        assert_eq!(std::fs::read(&file).unwrap(), b"#!/bin/sh\necho hi\n");
        assert!(records(&q).unwrap().is_empty());
        let again = release(&q, &rec.id).unwrap_err();
        assert!(
            matches!(&again, ActionError::Refused(w) if w.contains("no quarantined file")),
            "{again:?}"
        );
    }

    #[test]
    fn nothing_is_overwritten_nor_reached_through_links_nor_named_by_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q");
        let (file, rec) = quarantined(dir.path(), "tool");
        std::fs::write(&file, b"new").unwrap();
        let e = release(&q, &rec.id).unwrap_err();
        assert!(
            matches!(&e, ActionError::Refused(w) if w.contains("exists again")),
            "{e:?}"
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        std::fs::remove_file(&file).unwrap();

        // The directory swapped for a link to another one.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let (in_sub, rec2) = quarantined(&sub, "tool2");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::rename(&sub, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &sub).unwrap();
        let e = release(&sub.join("q").canonicalize().unwrap(), &rec2.id).unwrap_err();
        assert!(
            matches!(&e, ActionError::Refused(w) if w.contains("symbolic link")),
            "{e:?}"
        );
        assert!(!elsewhere.join("tool2").exists() && !in_sub.exists());

        for bad in ["../x", "", "a/b", ".."] {
            let e = release(&q, bad).unwrap_err();
            assert!(
                matches!(&e, ActionError::Refused(w) if w.contains("not a quarantine id")),
                "{bad}: {e:?}"
            );
        }
        assert!(
            release(&q, &rec.id).is_ok(),
            "the record is untouched by the refusals"
        );
    }

    #[test]
    fn a_file_from_another_mount_namespace_stays_in_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q");
        let (file, mut rec) = quarantined(dir.path(), "tool");
        rec.foreign_namespace = true;
        std::fs::write(
            q.join(format!("{}.json", rec.id)),
            serde_json::to_vec(&rec).unwrap(),
        )
        .unwrap();
        let e = release(&q, &rec.id).unwrap_err();
        assert!(
            matches!(&e, ActionError::Refused(w) if w.contains("another mount namespace")),
            "{e:?}"
        );
        assert!(!file.exists() && q.join(&rec.id).exists());
    }
}
