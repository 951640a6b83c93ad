//! A real terminal for console tests: a tmux server of the test's own (its own socket), a
//! program running in a session of a given size, keys sent with `send-keys` and the screen
//! read with `capture-pane`. The server is killed on drop.

use std::{process::Command, time::Duration};

pub struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    /// Runs `command` (a shell command line) in a new `width`×`height` session; `env` is set
    /// for it.
    pub fn start(command: &str, width: u16, height: u16, env: &[(&str, &str)]) -> Tmux {
        let tmux = Tmux {
            socket: crate::marker("tmux"),
            session: "console".into(),
        };
        let mut line = String::new();
        for (k, v) in env {
            line.push_str(&format!("{k}='{v}' "));
        }
        // The program's exit status stays on screen for the test to read.
        line.push_str(&format!(
            "{command}; echo \"exited with status $?\"; sleep 600"
        ));
        let status = tmux
            .command()
            .args(["new-session", "-d", "-s", &tmux.session, "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg(line)
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux runs (apt-get install tmux; cargo xtask setup installs it)");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn command(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// Sends keys as tmux names them (`Enter`, `Escape`, `BSpace`, `Down`, or literal text).
    pub fn keys(&self, keys: &[&str]) {
        let status = self
            .command()
            .args(["send-keys", "-t", &self.session])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success(), "tmux send-keys {keys:?} failed");
    }

    /// The screen as text; with `colour`, with its SGR escape sequences.
    pub fn screen(&self, colour: bool) -> String {
        let mut c = self.command();
        c.args(["capture-pane", "-p", "-t", &self.session]);
        if colour {
            c.arg("-e");
        }
        let out = c.output().expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows a line for which `pred` holds; returns that line.
    pub async fn wait_line(&self, what: &str, colour: bool, pred: impl Fn(&str) -> bool) -> String {
        crate::eventually(Duration::from_secs(30), || {
            self.screen(colour)
                .lines()
                .find(|l| pred(l))
                .map(String::from)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "the screen never showed {what}; it shows:\n{}",
                self.screen(false)
            )
        })
    }

    /// The pid of the program named `name` the session's shell runs.
    pub fn program_pid(&self, name: &str) -> Option<u32> {
        let out = self
            .command()
            .args(["display-message", "-p", "-t", &self.session, "#{pane_pid}"])
            .output()
            .ok()?;
        let shell: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let comm = &stat[stat.find('(')? + 1..stat.rfind(')')?];
            let ppid: u32 = stat[stat.rfind(')')? + 2..]
                .split(' ')
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == shell && comm == name).then_some(pid)
        })
    }

    pub fn resize(&self, width: u16, height: u16) {
        let status = self
            .command()
            .args(["resize-window", "-t", &self.session, "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .status()
            .expect("tmux resize-window");
        assert!(status.success(), "tmux resize-window failed");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}
