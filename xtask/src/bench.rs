//! `cargo xtask bench`: builds the release binaries and runs `osprey-bench` (tests crate)
//! against them. Figures are printed; nothing is asserted.

use anyhow::bail;

use crate::util::{cargo, is_root, run, workspace_root};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Instead of the default figures, run the workloads under Osprey and under this
    /// monitor and compare them (the monitor is installed from Debian if missing).
    #[arg(long, value_enum)]
    peer: Option<Peer>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Peer {
    /// bpftrace, with a script printing execs (pid, comm, argv) and connects.
    Bpftrace,
}

impl Peer {
    /// Its name on osprey-bench's command line and its Debian package.
    fn name(self) -> &'static str {
        match self {
            Peer::Bpftrace => "bpftrace",
        }
    }

    /// A file that shows the package is installed.
    fn installed_file(self) -> &'static str {
        match self {
            Peer::Bpftrace => "/usr/bin/bpftrace",
        }
    }
}

pub fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    if !is_root() {
        bail!("cargo xtask bench loads the eBPF programs and must run as root");
    }
    crate::setup::all()?;
    if let Some(peer) = args.peer {
        crate::setup::packages(&[(peer.name(), peer.installed_file())])?;
    }
    let root = workspace_root();
    run(cargo().current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "osprey-collector",
        "-p",
        "osprey-cli",
        "-p",
        "osprey-tests",
        "--bins",
    ]))?;
    let mut bench = std::process::Command::new(root.join("target/release/osprey-bench"));
    bench
        .current_dir(&root)
        .env("OSPREY_BIN_DIR", root.join("target/release"));
    if let Some(peer) = args.peer {
        bench.args(["--peer", peer.name()]);
    }
    run(&mut bench)
}
