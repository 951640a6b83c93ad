//! `osprey`: the operator's command line for Osprey.

mod audit;
mod baseline;
mod commands;
mod creds;
mod history;
mod investigations;
mod operator;
mod ps;
mod render;
mod respond;
mod rules;
mod scan;
mod tail;
mod top;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "osprey",
    version,
    about = "Osprey host security sensor: operator tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Follow findings (and optionally events) as collectors publish them.
    Tail(tail::TailArgs),
    /// A live terminal console: hosts, processes at risk, findings, approvals, kill switch.
    Top(top::TopArgs),
    /// One snapshot of a host's live processes, as a table or JSON.
    Ps(ps::PsArgs),
    /// Judge every process on this machine once (hash, intel, memory, risk), print a table
    /// and exit; `--apply` runs the policy's actions once (runs `osprey-collector --scan`).
    Scan(scan::ScanArgs),
    /// Kill a process on a host (signed, checked and audited by the host).
    Kill(commands::KillArgs),
    /// Suspend a process on a host (stopped and frozen in a cgroup).
    Suspend(commands::SuspendArgs),
    /// Resume a suspended process on a host.
    Resume(commands::ResumeArgs),
    /// Quarantine a process's executable on a host; `list`, `restore ID` on this host.
    Quarantine(respond::QuarantineArgs),
    /// Put a quarantined file back on a host (its original path, mode and owner).
    Release(commands::ReleaseArgs),
    /// Refuse connects to a destination on a host, in the kernel.
    Block(commands::BlockArgs),
    /// Lift a block on a host.
    Unblock(commands::UnblockArgs),
    /// The audit trail: every decision of the responder and every command a host handled.
    Audit(audit::AuditArgs),
    /// Actions awaiting an operator's approval; `approve ID`, `deny ID`.
    Approvals(audit::ApprovalsArgs),
    /// AI investigations of findings (osprey-investigator); `show ID` for one in full.
    Investigations(investigations::InvestigationsArgs),
    /// Approve an action awaiting approval (signed with an operator key).
    Approve(audit::ApprovalArgs),
    /// Deny an action awaiting approval.
    Deny(audit::ApprovalArgs),
    /// Policy and Sigma rules: `osprey rules check PATH...`.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Signing keys: `osprey keys generate`.
    #[command(subcommand)]
    Keys(respond::KeysCommand),
    /// This host's behaviour history: `export`, `query`, `status`.
    #[command(subcommand)]
    History(history::HistoryCommand),
    /// This host's learned baselines: `status`, `show EXE`, `accept FINDING_ID`, `forget EXE`.
    #[command(subcommand)]
    Baseline(baseline::BaselineCommand),
    /// NATS credentials (NKeys) for hosts, the responder and operators, and the server's
    /// users.conf: `osprey creds host NAME`.
    Creds(creds::CredsArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // Diagnostics go to stderr so stdout stays clean for lines and JSON (`osprey top` keeps
    // them off the screen it draws: see top::run).
    if !matches!(cli.command, Command::Top(_)) {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(
                EnvFilter::try_from_env("OSPREY_LOG")
                    .unwrap_or_else(|_| EnvFilter::new("warn,osprey=info")),
            )
            .init();
    }
    match cli.command {
        Command::Tail(args) => tail::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Top(args) => top::run(args).await,
        Command::Ps(args) => ps::run(args).await,
        Command::Scan(args) => scan::run(args),
        Command::Kill(args) => commands::kill(args).await,
        Command::Suspend(args) => commands::suspend(args).await,
        Command::Resume(args) => commands::resume(args).await,
        Command::Quarantine(args) => respond::quarantine(args).await,
        Command::Release(args) => commands::release(args).await,
        Command::Block(args) => commands::block(args).await,
        Command::Unblock(args) => commands::unblock(args).await,
        Command::Audit(args) => audit::run(args).await,
        Command::Approvals(args) => audit::approvals(args).await,
        Command::Investigations(args) => investigations::run(args).await,
        Command::Approve(args) => audit::approval(args, protocol::Verdict::Approve).await,
        Command::Deny(args) => audit::approval(args, protocol::Verdict::Deny).await,
        Command::Rules(command) => Ok(rules::run(command)),
        Command::Keys(command) => respond::keys(command).map(|()| ExitCode::SUCCESS),
        Command::History(command) => history::run(command).map(|()| ExitCode::SUCCESS),
        Command::Baseline(command) => baseline::run(command).map(|()| ExitCode::SUCCESS),
        Command::Creds(args) => creds::run(args).map(|()| ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let parsed = Cli::try_parse_from(["osprey", "quarantine", "restore", "abc", "--dir", "/q"]);
        assert!(matches!(
            parsed.unwrap().command,
            Command::Quarantine(respond::QuarantineArgs {
                command: Some(_),
                ..
            })
        ));
        let parsed =
            Cli::try_parse_from(["osprey", "quarantine", "c64a9ee2-1-24-0", "--host", "h"]);
        assert!(matches!(
            parsed.unwrap().command,
            Command::Quarantine(respond::QuarantineArgs {
                exec_id: Some(_),
                command: None,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["osprey", "block", "10.0.0.0/8:x", "--host", "h"]).is_err());
    }
}
