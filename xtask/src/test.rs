//! `cargo xtask test`: every test, in the order that fails fastest.

use std::process::Command;

use anyhow::bail;

use crate::util::{cargo, is_root, run as run_cmd, workspace_root};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip the Windows cross-build and wine tests.
    #[arg(long)]
    skip_windows: bool,
}

pub fn run(args: TestArgs) -> anyhow::Result<()> {
    if !is_root() {
        bail!("cargo xtask test loads eBPF programs in the end-to-end tests and must run as root");
    }
    crate::setup::all()?;
    let root = workspace_root();
    // The default members are the host crates (the eBPF crate is built by the collector's
    // build script). Build every binary the end-to-end tests spawn, then run every test; the
    // end-to-end tests each load the sensor, so tests run one at a time.
    run_cmd(cargo().current_dir(&root).args(["build", "--bins"]))?;
    run_cmd(
        cargo()
            .current_dir(&root)
            .args(["test", "--no-fail-fast", "--", "--test-threads=1"])
            .env("OSPREY_BIN_DIR", root.join("target/debug")),
    )?;
    crate::fuzz::run(crate::fuzz::FuzzArgs::default())?;
    if !args.skip_windows {
        run_cmd(
            Command::new("bash")
                .arg(root.join(".ci/windows.sh"))
                .current_dir(&root),
        )?;
    }
    Ok(())
}
