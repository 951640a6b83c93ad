//! `osprey`: the operator's command line for Osprey.

mod creds;
mod render;
mod respond;
mod rules;
mod tail;

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
    /// Policy and Sigma rules: `osprey rules check PATH...`.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Signing keys: `osprey keys generate`.
    #[command(subcommand)]
    Keys(respond::KeysCommand),
    /// Approve an action awaiting approval (signed with an operator key).
    Approve(respond::ApprovalArgs),
    /// Deny an action awaiting approval.
    Deny(respond::ApprovalArgs),
    /// Quarantined files on this host: `list`, `restore ID`.
    #[command(subcommand)]
    Quarantine(respond::QuarantineCommand),
    /// NATS credentials (NKeys) for hosts, the responder and operators, and the server's
    /// users.conf: `osprey creds host NAME`.
    Creds(creds::CredsArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // Diagnostics go to stderr so stdout stays clean for lines and JSON.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("OSPREY_LOG")
                .unwrap_or_else(|_| EnvFilter::new("warn,osprey=info")),
        )
        .init();
    match cli.command {
        Command::Tail(args) => tail::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Rules(command) => Ok(rules::run(command)),
        Command::Keys(command) => respond::keys(command).map(|()| ExitCode::SUCCESS),
        Command::Approve(args) => respond::approval(args, protocol::Verdict::Approve)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Deny(args) => respond::approval(args, protocol::Verdict::Deny)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Quarantine(command) => respond::quarantine(command).map(|()| ExitCode::SUCCESS),
        Command::Creds(args) => creds::run(args).map(|()| ExitCode::SUCCESS),
    }
}
