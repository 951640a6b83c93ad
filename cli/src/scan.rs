//! `osprey scan`: one snapshot of this machine judged once — every running process with its
//! hash, threat-intelligence verdict, memory and risk — and, with `--apply`, the policy's
//! actions run once. The collector does the work (`osprey-collector --scan`: the same rules,
//! hashing, intel and actuator as when it runs continuously); this prints its answer.

use std::{
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
};

use anyhow::Context;
use protocol::Snapshot;

use crate::ps::{self, Columns};

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// At most this many processes, riskiest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Run the actions the policy recommends (through the actuator's safety controls,
    /// audited); without it they are decided and audited as a dry run.
    #[arg(long)]
    pub apply: bool,
    /// The snapshot (`Snapshot`) as JSON.
    #[arg(long)]
    pub json: bool,
    /// The collector's configuration (policy, Sigma rules, intel, actuator).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/osprey/collector.yaml"
    )]
    pub config: PathBuf,
    /// At most this many seconds for every executable to be hashed (and judged) before the
    /// snapshot is taken.
    #[arg(long, default_value_t = 30)]
    pub wait_secs: u64,
    /// The collector binary (default: `osprey-collector` beside this one, else on PATH).
    #[arg(long, env = "OSPREY_COLLECTOR", value_name = "PATH")]
    pub collector: Option<PathBuf>,
}

fn collector_binary(args: &ScanArgs) -> PathBuf {
    if let Some(path) = &args.collector {
        return path.clone();
    }
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("osprey-collector"))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("osprey-collector"))
}

pub fn run(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let binary = collector_binary(&args);
    let mut command = Command::new(&binary);
    command
        .arg("--config")
        .arg(&args.config)
        .args(["--scan", "--limit", &args.limit.to_string()])
        .args(["--wait-secs", &args.wait_secs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if args.apply {
        command.arg("--apply");
    }
    let output = command
        .output()
        .with_context(|| format!("cannot run {} (set --collector)", binary.display()))?;
    if !output.status.success() {
        anyhow::bail!(
            "{} --scan failed ({}); its messages are above",
            binary.display(),
            output.status
        );
    }
    let snapshot: Snapshot = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("{} --scan printed no snapshot", binary.display()))?;
    ps::print(&snapshot, Columns::Intel, args.json)?;
    if args.json {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{} of {} processes on {}{}",
        snapshot.processes.len(),
        snapshot.total,
        snapshot.host,
        if args.apply {
            "; the policy's actions were run (see the actuator's audit file)"
        } else {
            "; actions decided as a dry run only (--apply runs them)"
        }
    );
    Ok(ExitCode::SUCCESS)
}
