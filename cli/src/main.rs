//! `osprey`: the operator's command line for Osprey.

mod render;
mod tail;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
        Command::Tail(args) => tail::run(args).await,
    }
}
