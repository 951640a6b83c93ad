//! `cargo xtask bench`: builds the release binaries and runs `osprey-bench` (tests crate)
//! against them. Figures are printed; nothing is asserted.

use anyhow::bail;

use crate::util::{cargo, is_root, run, workspace_root};

#[derive(clap::Args)]
pub struct BenchArgs {}

pub fn run_bench(_args: BenchArgs) -> anyhow::Result<()> {
    if !is_root() {
        bail!("cargo xtask bench loads the eBPF programs and must run as root");
    }
    crate::setup::all()?;
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
    run(
        std::process::Command::new(root.join("target/release/osprey-bench"))
            .current_dir(&root)
            .env("OSPREY_BIN_DIR", root.join("target/release")),
    )
}
