//! Quarantine of an executable, on file descriptors: nothing a local user can do to the
//! path while it runs — a symbolic link at the end or on the way, a directory swapped for
//! another, a name replaced by another file, a hard link to a system file — makes it act on
//! any file but the one it verified.
//!
//! The path is resolved in the target process's own mount namespace (`/proc/<pid>/root`)
//! with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)`; the file is opened without
//! following a final link, checked (regular, the (device, inode) the kernel reported at exec,
//! no other hard links unless allowed, not protected), hashed and made mode 000 through its
//! descriptor, and moved with `renameat` from the directory descriptor; the moved entry is
//! checked again and put back if it is not the verified file.

use std::{
    ffi::CString,
    io::{Read, Seek, SeekFrom, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
};

use protocol::{FindingId, QuarantineRecord, Timestamp};
use sha2::{Digest, Sha256};

use super::ActionError;
pub use crate::config::HardLinks;
use crate::source::FileId;

/// The file to quarantine: a path in the mount namespace whose root is `root`.
pub struct Target<'a> {
    /// `/proc/<pid>/root` of the process, or `/` for a path on the host.
    pub root: PathBuf,
    pub path: &'a str,
    /// The identity the kernel reported at exec, which the file must have.
    pub expect: Option<FileId>,
    /// The path is in another mount namespace than the collector's.
    pub foreign_namespace: bool,
}

pub(super) fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

pub(super) fn c_path(p: &Path) -> Result<CString, ActionError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| ActionError::Refused(format!("{} contains a NUL byte", p.display())))
}

/// `open(path, flags)` into an owned descriptor.
pub(super) fn open(path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a valid NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(dir, path)` resolving inside `dir` as the root, refusing every symbolic link.
pub(super) fn open_beneath(dir: &OwnedFd, path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: all-zero is a valid open_how (no flags, no mode, no resolve restrictions).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid descriptor, NUL-terminated path and an open_how of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub(super) fn openat(
    dir: &OwnedFd,
    name: &CString,
    flags: i32,
    mode: u32,
) -> std::io::Result<OwnedFd> {
    // SAFETY: valid descriptor and NUL-terminated name; the result is checked.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// (device, inode, is a regular file, link count) of what `name` in `dir` is, not following
/// a symbolic link.
pub(super) fn identity_at(dir: &OwnedFd, name: &CString) -> std::io::Result<(FileId, bool, u64)> {
    // SAFETY: an all-zero stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name, a stat to fill.
    if unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(errno());
    }
    Ok((
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        },
        st.st_mode & libc::S_IFMT == libc::S_IFREG,
        st.st_nlink,
    ))
}

pub(super) fn renameat(
    from_dir: &OwnedFd,
    from: &CString,
    to_dir: &OwnedFd,
    to: &CString,
) -> std::io::Result<()> {
    // SAFETY: valid descriptors and NUL-terminated names.
    let r = unsafe {
        libc::renameat(
            from_dir.as_raw_fd(),
            from.as_ptr(),
            to_dir.as_raw_fd(),
            to.as_ptr(),
        )
    };
    if r != 0 {
        return Err(errno());
    }
    Ok(())
}

fn sha256_of(file: &mut std::fs::File) -> std::io::Result<String> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
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

/// Moves the target file into `dir` (created 0700 if missing) with mode 000 and writes its
/// sidecar. `check` vets the opened file (protected executables, interpreters).
pub fn quarantine(
    target: &Target,
    dir: &Path,
    finding_id: Option<FindingId>,
    hard_links: HardLinks,
    check: impl Fn(&Path, FileId) -> Result<(), String>,
) -> Result<QuarantineRecord, ActionError> {
    let refused = |why: String| ActionError::Refused(why);
    let failed = |why: String| ActionError::Failed(why);
    let path = Path::new(target.path);
    let shown = path.display();
    if !path.is_absolute() {
        return Err(refused(format!("{shown} is not an absolute path")));
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(refused(format!("{shown} names no file")));
    };
    let name = c_path(Path::new(name))?;

    let root = open(&target.root, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| failed(format!("cannot open {}: {e}", target.root.display())))?;
    let parent_fd = open_beneath(&root, parent, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::EXDEV) => refused(format!(
                "a directory on the way to {shown} is a symbolic link: nothing is followed"
            )),
            _ => failed(format!("cannot open the directory of {shown}: {e}")),
        }
    })?;
    let file = openat(
        &parent_fd,
        &name,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        0,
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => refused(format!("{shown} is a symbolic link: it is not followed")),
        Some(libc::ENOENT) => refused(format!("{shown} is no longer there")),
        _ => failed(format!("cannot open {shown}: {e}")),
    })?;
    let mut file = std::fs::File::from(file);
    let meta = file
        .metadata()
        .map_err(|e| failed(format!("cannot stat {shown}: {e}")))?;
    let id = FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    };
    if !meta.is_file() {
        return Err(refused(format!("{shown} is not a regular file")));
    }
    if let Some(expect) = target.expect {
        if expect != id {
            return Err(refused(format!(
                "{shown} is not the file the process runs (it runs device {} inode {}, the \
                 path now names device {} inode {})",
                expect.dev, expect.ino, id.dev, id.ino
            )));
        }
    }
    let other_links = meta.nlink().saturating_sub(1);
    if other_links > 0 && hard_links == HardLinks::Refuse {
        return Err(refused(format!(
            "{shown} has {other_links} other hard link(s): they would keep the file and lose \
             their mode too (actuator.quarantine_hard_links: allow to quarantine anyway)"
        )));
    }
    check(path, id).map_err(refused)?;

    let sha256 = sha256_of(&mut file).map_err(|e| failed(format!("cannot hash {shown}: {e}")))?;
    // The inode stops being executable before anything else happens to it.
    // SAFETY: a valid descriptor.
    if unsafe { libc::fchmod(file.as_raw_fd(), 0) } != 0 {
        return Err(failed(format!("cannot make {shown} mode 000: {}", errno())));
    }

    std::fs::create_dir_all(dir)
        .and_then(|()| {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        })
        .map_err(|e| failed(format!("cannot prepare {}: {e}", dir.display())))?;
    let qdir = open(dir, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| failed(format!("cannot open {}: {e}", dir.display())))?;
    let time = Timestamp::now();
    let qid = format!("{}-{}", &sha256[..16], time.unix_nanos());
    let qname = c_path(Path::new(&qid))?;

    match renameat(&parent_fd, &name, &qdir, &qname) {
        Ok(()) => {
            // The name could have been swapped between our open and the rename: what moved
            // must be the verified file, else it goes back untouched.
            let moved = identity_at(&qdir, &qname).map(|(i, _, _)| i).ok();
            if moved != Some(id) {
                let back = renameat(&qdir, &qname, &parent_fd, &name);
                return Err(refused(format!(
                    "{shown} was replaced while it was being quarantined; the replacement was \
                     put back{}",
                    back.err()
                        .map(|e| format!(" (failed: {e})"))
                        .unwrap_or_default()
                )));
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy_then_unlink(&mut file, &parent_fd, &name, &qdir, &qname, id, &qid).map_err(
                |e| match e {
                    ActionError::Refused(w) => refused(format!("{shown}: {w}")),
                    ActionError::Failed(w) => failed(format!("{shown}: {w}")),
                },
            )?;
        }
        Err(e) => return Err(failed(format!("cannot move {shown} into quarantine: {e}"))),
    }

    let record = QuarantineRecord {
        id: qid.clone(),
        original_path: target.path.to_string(),
        sha256,
        time,
        finding_id,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.len(),
        foreign_namespace: target.foreign_namespace,
        other_links,
    };
    let sidecar = dir.join(format!("{qid}.json"));
    let text = serde_json::to_vec_pretty(&record)
        .map_err(|e| failed(format!("cannot render the quarantine record: {e}")))?;
    std::fs::write(&sidecar, text)
        .map_err(|e| failed(format!("cannot write {}: {e}", sidecar.display())))?;
    Ok(record)
}

/// Across filesystems: copy from the verified descriptor, then take the original name away
/// — first renamed aside in its own directory and checked, so a name swapped meanwhile is
/// never unlinked.
fn copy_then_unlink(
    file: &mut std::fs::File,
    parent: &OwnedFd,
    name: &CString,
    qdir: &OwnedFd,
    qname: &CString,
    id: FileId,
    qid: &str,
) -> Result<(), ActionError> {
    let failed = |why: String| ActionError::Failed(why);
    let dst = openat(
        qdir,
        qname,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        0,
    )
    .map_err(|e| failed(format!("cannot create the quarantine copy: {e}")))?;
    let mut dst = std::fs::File::from(dst);
    file.seek(SeekFrom::Start(0))
        .and_then(|_| std::io::copy(file, &mut dst))
        .and_then(|_| dst.flush())
        .and_then(|()| dst.sync_all())
        .map_err(|e| failed(format!("cannot copy into quarantine: {e}")))?;
    let aside = c_path(Path::new(&format!(".osprey-quarantine-{qid}")))?;
    renameat(parent, name, parent, &aside)
        .map_err(|e| failed(format!("cannot take the name away: {e}")))?;
    match identity_at(parent, &aside) {
        Ok((moved, _, _)) if moved == id => {}
        _ => {
            let _ = renameat(parent, &aside, parent, name);
            // SAFETY: valid descriptor and name.
            unsafe { libc::unlinkat(qdir.as_raw_fd(), qname.as_ptr(), 0) };
            return Err(ActionError::Refused(
                "was replaced while it was being quarantined; the replacement was put back".into(),
            ));
        }
    }
    // SAFETY: valid descriptor and name.
    if unsafe { libc::unlinkat(parent.as_raw_fd(), aside.as_ptr(), 0) } != 0 {
        return Err(failed(format!("cannot remove the original: {}", errno())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn host(path: &Path, expect: Option<FileId>) -> Target<'_> {
        Target {
            root: PathBuf::from("/"),
            path: path.to_str().unwrap(),
            expect,
            foreign_namespace: false,
        }
    }

    fn id_of(path: &Path) -> FileId {
        let m = std::fs::symlink_metadata(path).unwrap();
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    fn anything(_: &Path, _: FileId) -> Result<(), String> {
        Ok(())
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn moves_hashes_and_locks_the_verified_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad");
        std::fs::write(&file, b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        let q = dir.path().join("q");
        let rec = quarantine(
            &host(&file, Some(id_of(&file))),
            &q,
            None,
            HardLinks::Refuse,
            anything,
        )
        .unwrap();
        assert!(!file.exists());
        let moved = q.join(&rec.id);
        assert_eq!(mode(&moved), 0);
        assert_eq!(rec.mode, 0o755);
        let mut f = std::fs::File::open(&moved).unwrap();
        assert_eq!(rec.sha256, sha256_of(&mut f).unwrap());
        let sidecar: QuarantineRecord =
            serde_json::from_slice(&std::fs::read(q.join(format!("{}.json", rec.id))).unwrap())
                .unwrap();
        assert_eq!(sidecar, rec);
    }

    #[test]
    fn links_and_swaps_touch_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"system binary").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).unwrap();
        let victim_id = id_of(&victim);

        // A symbolic link in place of the file.
        let link = dir.path().join("evil");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = quarantine(
            &host(&link, Some(victim_id)),
            &q,
            None,
            HardLinks::Refuse,
            anything,
        )
        .unwrap_err();
        assert!(
            matches!(&e, ActionError::Refused(w) if w.contains("symbolic link")),
            "{e:?}"
        );

        // A directory on the way swapped for a link to another directory.
        let sub = dir.path().join("sub");
        std::os::unix::fs::symlink(dir.path(), &sub).unwrap();
        let e = quarantine(
            &host(&sub.join("victim"), Some(victim_id)),
            &q,
            None,
            HardLinks::Refuse,
            anything,
        )
        .unwrap_err();
        assert!(
            matches!(&e, ActionError::Refused(w) if w.contains("directory on the way")),
            "{e:?}"
        );

        // A hard link to the victim.
        let hard = dir.path().join("hard");
        std::fs::hard_link(&victim, &hard).unwrap();
        let e = quarantine(
            &host(&hard, Some(victim_id)),
            &q,
            None,
            HardLinks::Refuse,
            anything,
        )
        .unwrap_err();
        assert!(
            matches!(&e, ActionError::Refused(w) if w.contains("hard link")),
            "{e:?}"
        );

        // A name that now holds another file than the process runs.
        let other = dir.path().join("other");
        std::fs::write(&other, b"x").unwrap();
        let e = quarantine(
            &host(&other, Some(victim_id)),
            &q,
            None,
            HardLinks::Refuse,
            anything,
        )
        .unwrap_err();
        assert!(
            matches!(&e, ActionError::Refused(w) if w.contains("not the file the process runs")),
            "{e:?}"
        );

        assert_eq!(mode(&victim), 0o755, "the victim keeps its mode");
        assert!(victim.exists() && hard.exists() && other.exists());
        assert!(std::fs::read_dir(&q).map(|d| d.count()).unwrap_or(0) == 0);
    }
}
