//! Hot reload of the policy file and Sigma rules: on a change of any of their files (polled,
//! no dependency on inotify) and on request (SIGHUP).
//!
//! Loading runs on its own thread, never on the event path. A load that fails leaves the
//! running engine in force and logs exactly one error line naming every problem's file and
//! line; a load that succeeds replaces the engine atomically (see [`super::rules`]).

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{mpsc, Arc},
    thread,
    time::{Duration, SystemTime},
};

use rules::Engine;
use tokio::sync::watch;

use super::rules::{load, one_line, summary};

/// How long a changed file must stay unchanged before it is loaded (an editor or `cp` may
/// still be writing it).
const SETTLE: Duration = Duration::from_millis(100);
/// Directories nest this deep at most (the loader's own limit).
const MAX_DEPTH: usize = 32;

/// Asks the reload thread to reload now; dropping it stops the thread.
pub struct ReloadHandle {
    requests: mpsc::Sender<()>,
}

impl ReloadHandle {
    /// Reload now (SIGHUP), whether or not a file changed.
    pub fn request(&self) {
        let _ = self.requests.send(());
    }
}

/// Publishes `initial` and starts the reload thread, which looks at `paths` every `poll`.
/// Returns the channel the detectors read the current engine from.
pub fn start(
    paths: Vec<PathBuf>,
    initial: Engine,
    poll: Duration,
) -> std::io::Result<(watch::Receiver<Arc<Engine>>, ReloadHandle)> {
    let (engines, receiver) = watch::channel(Arc::new(initial));
    let (requests, incoming) = mpsc::channel();
    let mut seen = Fingerprint::of(&paths);
    thread::Builder::new()
        .name("osprey-reload".into())
        .spawn(move || loop {
            let reason = match incoming.recv_timeout(poll) {
                Ok(()) => {
                    seen = Fingerprint::of(&paths);
                    "SIGHUP"
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let mut now = Fingerprint::of(&paths);
                    if now == seen {
                        continue;
                    }
                    loop {
                        thread::sleep(SETTLE);
                        let again = Fingerprint::of(&paths);
                        if again == now {
                            break;
                        }
                        now = again;
                    }
                    // Remembered whether or not the load succeeds: a broken file is reported
                    // once, not at every poll.
                    seen = now;
                    "file change"
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            reload(&paths, &engines, reason);
        })?;
    Ok((receiver, ReloadHandle { requests }))
}

fn reload(paths: &[PathBuf], engines: &watch::Sender<Arc<Engine>>, reason: &str) {
    match load(paths) {
        Ok(engine) => {
            tracing::info!("rules reloaded ({reason}): {}", summary(&engine));
            engines.send_replace(Arc::new(engine));
        }
        Err(e) => tracing::error!(
            "rules not reloaded ({reason}), the running rules stay in force: {}",
            one_line(&e)
        ),
    }
}

/// What the rule files look like on disk: each file's modification time, size and inode (an
/// atomic rename gives a new inode even within one timestamp tick).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, Option<Stamp>)>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        }
    }
}

impl Fingerprint {
    fn of(paths: &[PathBuf]) -> Self {
        let mut out = Vec::new();
        for path in paths {
            match fs::metadata(path) {
                Ok(meta) if meta.is_dir() => walk(path, 0, &mut out),
                Ok(meta) => out.push((path.clone(), Some(Stamp::of(&meta)))),
                Err(_) => out.push((path.clone(), None)),
            }
        }
        Fingerprint(out)
    }
}

/// The files the loader would read under `dir`: `*.yml` / `*.yaml`, hidden entries skipped.
fn walk(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, Option<Stamp>)>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        out.push((dir.to_path_buf(), None));
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => walk(&path, depth + 1, out),
            Ok(meta) if name.ends_with(".yml") || name.ends_with(".yaml") => {
                out.push((path, Some(Stamp::of(&meta))))
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(id: &str) -> String {
        format!(
            "rules:\n  - id: {id}\n    title: T\n    severity: low\n    match:\n      name: {id}\n"
        )
    }

    fn wait_for(rx: &mut watch::Receiver<Arc<Engine>>, id: &str) -> bool {
        for _ in 0..100 {
            if rx
                .borrow_and_update()
                .report()
                .rules
                .first()
                .is_some_and(|r| r.id == id)
            {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_running_engine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        fs::write(&path, policy("first")).unwrap();
        let paths = vec![path.clone()];
        let (mut rx, handle) = start(
            paths.clone(),
            load(&paths).unwrap(),
            Duration::from_millis(20),
        )
        .unwrap();
        assert!(wait_for(&mut rx, "first"));

        fs::write(&path, "rules: [\n").unwrap();
        thread::sleep(Duration::from_millis(300));
        assert!(
            !rx.has_changed().unwrap(),
            "a broken file publishes nothing"
        );
        assert!(wait_for(&mut rx, "first"));

        fs::write(&path, policy("second")).unwrap();
        assert!(
            wait_for(&mut rx, "second"),
            "the next valid file takes effect"
        );
        drop(handle);
    }

    #[test]
    fn a_request_reloads_without_waiting_for_the_poll() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        fs::write(&path, policy("first")).unwrap();
        let paths = vec![path.clone()];
        let (mut rx, handle) = start(
            paths.clone(),
            load(&paths).unwrap(),
            Duration::from_secs(3600),
        )
        .unwrap();
        fs::write(&path, policy("second")).unwrap();
        handle.request();
        assert!(wait_for(&mut rx, "second"));
    }

    #[test]
    fn directories_are_watched_for_new_and_changed_rule_files() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let before = Fingerprint::of(&[dir.path().to_path_buf()]);
        fs::write(sub.join("notes.txt"), "not a rule").unwrap();
        fs::write(dir.path().join(".hidden.yml"), "x").unwrap();
        assert_eq!(Fingerprint::of(&[dir.path().to_path_buf()]), before);
        fs::write(sub.join("r.yml"), "x").unwrap();
        let with_rule = Fingerprint::of(&[dir.path().to_path_buf()]);
        assert_ne!(with_rule, before);
        fs::write(sub.join("r.yml"), "xy").unwrap();
        assert_ne!(Fingerprint::of(&[dir.path().to_path_buf()]), with_rule);
    }
}
