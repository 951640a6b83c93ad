//! A cgroup v2 of the test's own: the collector's connect hooks attach to it
//! (`sensor.cgroup_root`) and the test's processes run inside it, so a block can never cut
//! this machine off the network.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
};

pub struct TestCgroup {
    pub path: PathBuf,
    root: PathBuf,
}

/// The cgroup v2 mount (`/sys/fs/cgroup/unified` on hybrid hosts, `/sys/fs/cgroup` on pure v2).
fn cgroup2_root() -> PathBuf {
    let hybrid = Path::new("/sys/fs/cgroup/unified");
    if hybrid.join("cgroup.procs").exists() {
        hybrid.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

impl TestCgroup {
    pub fn create(tag: &str) -> TestCgroup {
        let root = cgroup2_root();
        let path = root.join(crate::marker(tag));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        TestCgroup { path, root }
    }

    /// The cgroup's id, as the kernel reports it for tasks inside (`bpf_get_current_cgroup_id`):
    /// the inode number of its directory.
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path)
            .expect("the test cgroup exists")
            .ino()
    }

    /// Makes `cmd`'s process start inside this cgroup.
    pub fn enter<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let procs = self.path.join("cgroup.procs");
        // SAFETY: the closure only writes a file (async-signal-safe enough for a test helper:
        // no locks are taken between fork and exec in this single write).
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, b"0"));
        }
        cmd
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in text.lines() {
                // SAFETY: killing processes the test put into its own cgroup.
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!(
            "warning: cannot remove cgroup {} (under {})",
            self.path.display(),
            self.root.display()
        );
    }
}
