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
    /// Run the console `osprey top` here instead of `osprey tail` (the collector's log goes
    /// to target/osprey-run/collector.log).
    #[arg(long)]
    top: bool,
}

/// Where `osprey` finds this run's NATS URL and operator key (cli/src/bus.rs reads it).
const SESSION_FILE: &str = "/run/osprey/xtask-run.json";

/// The session file, removed when the run stops.
struct Session;

impl Session {
    fn write(url: &str, key: &std::path::Path) -> anyhow::Result<Session> {
        let path = std::path::Path::new(SESSION_FILE);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = serde_json::json!({ "nats_url": url, "operator_key": key });
        std::fs::write(path, text.to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Session)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(SESSION_FILE);
    }
}

/// The operator key pair of development runs (made once): its public half is trusted by the
/// collector this run starts, so the console's kill switch works out of the box.
fn operator_key(
    bin: &std::path::Path,
    state: &std::path::Path,
) -> anyhow::Result<std::path::PathBuf> {
    let prefix = state.join("operator");
    let (secret, public) = (prefix.with_extension("key"), prefix.with_extension("pub"));
    if !(secret.exists() && public.exists()) {
        let _ = std::fs::remove_file(&secret);
        let _ = std::fs::remove_file(&public);
        run_cmd(
            Command::new(bin.join("osprey"))
                .args(["keys", "generate", "--out"])
                .arg(&prefix),
        )?;
    }
    Ok(secret)
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

    let key = operator_key(&bin, &state)?;
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
    let _session = Session::write(&url, &key)?;
    eprintln!(
        "xtask: console: `{} top` (this run's NATS and operator key are in {SESSION_FILE}; \
         elsewhere: --nats {url} --key {})",
        bin.join("osprey").display(),
        key.display()
    );

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
            .arg("--history-db")
            .arg(state.join("history.db"))
            // The demo counts loopback as "internet" so its connection is scored.
            .args(["--local-networks", "169.254.0.0/16,fe80::/10"])
            .arg("--trusted-key-file")
            .arg(key.with_extension("pub"))
            .stderr(if args.top {
                std::process::Stdio::from(
                    std::fs::File::create(state.join("collector.log"))
                        .context("cannot create collector.log")?,
                )
            } else {
                std::process::Stdio::inherit()
            })
            .current_dir(&root)
            .spawn()
            .context("cannot start osprey-collector")?,
    ));
    let mut console = Command::new(bin.join("osprey"));
    let name = if args.top {
        console.args(["top", "--nats", &url]).arg("--key").arg(&key);
        "osprey top"
    } else {
        console.args(["tail", "--nats", &url]);
        if args.events {
            console.arg("--events");
        }
        "osprey tail"
    };
    procs.0.push((
        name,
        console
            .spawn()
            .with_context(|| format!("cannot start {name}"))?,
    ));

    let _demo = if args.no_demo {
        None
    } else {
        std::thread::sleep(Duration::from_secs(3));
        if !args.top {
            eprintln!(
                "xtask: demo: a background python3 connects to 127.0.0.1:{port} and stays \
                 (Ctrl-C to stop)"
            );
        }
        demo(port)
    };
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

/// A script engine in its own session (no terminal) connecting out, then staying (so the
/// console has something to kill): the built-in heuristics report it as medium (background)
/// and high (network). Killed when the run stops, if still there.
fn demo(port: u16) -> Option<Demo> {
    let script = format!(
        "import socket, time\ns = socket.create_connection(('127.0.0.1', {port}))\ntime.sleep(3600)"
    );
    match Command::new("setsid")
        .args(["python3", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => Some(Demo(child)),
        Err(e) => {
            eprintln!("xtask: demo skipped: {e}");
            None
        }
    }
}

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
