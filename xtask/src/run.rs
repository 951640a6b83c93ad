//! `cargo xtask run`: the whole pipeline on this machine.

use std::{
    process::{Child, Command},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{bail, Context};

use crate::util::{cargo, free_port, is_root, run as run_cmd, workspace_root};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Don't start the demo workload (a background script engine connecting out).
    #[arg(long)]
    no_demo: bool,
    /// Also show raw events in `osprey tail`.
    #[arg(long)]
    events: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Children stopped in reverse order of start when dropped.
struct Processes(Vec<(&'static str, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (name, child) in self.0.iter_mut().rev() {
            if let Ok(None) = child.try_wait() {
                // SAFETY: signalling a child we spawned and have not reaped.
                unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
                for _ in 0..50 {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                if let Ok(None) = child.try_wait() {
                    let _ = child.kill();
                }
                let _ = child.wait();
                eprintln!("xtask: stopped {name}");
            }
        }
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    if !is_root() {
        bail!("cargo xtask run loads eBPF programs and must run as root");
    }
    crate::setup::all()?;
    let root = workspace_root();
    run_cmd(cargo().current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "osprey-collector",
        "-p",
        "osprey-cli",
    ]))?;
    let bin = root.join("target/release");
    let state = root.join("target/osprey-run");
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create {}", state.display()))?;

    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let port = free_port()?;
    let url = format!("nats://127.0.0.1:{port}");
    let mut procs = Processes(Vec::new());
    procs.0.push((
        "nats-server",
        Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(state.join("jetstream"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start nats-server")?,
    ));
    wait_for_port(port)?;
    eprintln!("xtask: nats-server with JetStream on {url}");

    let mut collector = Command::new(bin.join("osprey-collector"));
    collector.args([
        "--config",
        "deploy/collector.yaml",
        "--nats",
        &url,
        "--policy",
        "deploy/policy.yaml",
    ]);
    // The reference Sigma corpus, when the shared folder is beside the checkout.
    let sigma = root.join("../shared/sigma/rules/linux");
    if sigma.is_dir() {
        collector.arg("--sigma").arg(&sigma);
    }
    procs.0.push((
        "osprey-collector",
        collector
            .arg("--spool-dir")
            .arg(state.join("spool"))
            // The demo counts loopback as "internet" so its connection is scored.
            .args(["--local-networks", "169.254.0.0/16,fe80::/10"])
            .current_dir(&root)
            .spawn()
            .context("cannot start osprey-collector")?,
    ));
    let mut tail = Command::new(bin.join("osprey"));
    tail.args(["tail", "--nats", &url]);
    if args.events {
        tail.arg("--events");
    }
    procs.0.push((
        "osprey tail",
        tail.spawn().context("cannot start osprey tail")?,
    ));

    if !args.no_demo {
        std::thread::sleep(Duration::from_secs(3));
        eprintln!(
            "xtask: demo: a background python3 connects to 127.0.0.1:{port} (Ctrl-C to stop)"
        );
        demo(port);
    }
    while !STOP.load(Ordering::SeqCst) {
        for (name, child) in procs.0.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("xtask: {name} exited ({status}); stopping");
                STOP.store(true, Ordering::SeqCst);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(procs);
    Ok(())
}

/// A script engine in its own session (no terminal) connecting out: the built-in heuristics
/// report it as medium (background) and high (network).
fn demo(port: u16) {
    let script = format!("import socket; socket.create_connection(('127.0.0.1', {port})).close()");
    let spawned = Command::new("setsid")
        .args(["python3", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if let Err(e) = spawned {
        eprintln!("xtask: demo skipped: {e}");
    }
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("nats-server did not start listening on port {port}")
}
