//! The responder (or another service: the investigator) under test, stopped when dropped.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

pub struct Responder {
    child: Child,
}

impl Responder {
    pub fn start(config: &Path, extra: &[&str]) -> Responder {
        Self::start_with_env(config, extra, &[])
    }

    /// [`Responder::start`] with extra environment variables (e.g. a failpoint).
    pub fn start_with_env(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> Responder {
        Self::start_program("osprey-responder", config, extra, env)
    }

    /// Another service taking `--config` the same way (`osprey-investigator`).
    pub fn start_program(
        program: &str,
        config: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Responder {
        let child = Command::new(crate::bin_dir().join(program))
            .arg("--config")
            .arg(config)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} is built (cargo build --workspace --bins): {e}"));
        Responder { child }
    }

    /// Waits up to `within` for the responder to exit on its own; its status if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Runs the responder to completion (for start-up failures).
    pub fn run_to_exit(config: &Path, extra: &[&str]) -> std::process::Output {
        Command::new(crate::bin_dir().join("osprey-responder"))
            .arg("--config")
            .arg(config)
            .args(extra)
            .output()
            .expect("osprey-responder runs")
    }

    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.terminate();
    }
}
