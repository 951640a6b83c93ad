//! `osprey-console`: the fleet's web console and HTTP API (docs/console.md).

use std::{io::BufRead, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use console::config::ConsoleConfig;

#[derive(Parser, Debug)]
#[command(version, about = "Osprey's web console and HTTP API")]
struct Args {
    /// Configuration file (YAML).
    #[arg(long, default_value = "/etc/osprey/console.yaml", global = true)]
    config: PathBuf,
    /// Listen here instead of the configured `listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// NATS server URL instead of the configured `nats.url`.
    #[arg(long, env = "OSPREY_NATS_URL")]
    nats: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the console (the default).
    Run,
    /// Read a password from the first line of stdin and print its argon2 hash for `users`.
    HashPassword,
    /// Make a random API token; prints it once, and the `tokens` entry (its SHA-256) for the
    /// configuration.
    Token {
        /// Whose token it is (audited as the operator's name).
        #[arg(long)]
        name: String,
        /// `operator` (may act) or `viewer` (read-only).
        #[arg(long, default_value = "operator")]
        role: String,
    },
}

fn hash_password() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "no password on stdin");
    let hash = console::auth::hash_password(password).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{hash}");
    Ok(())
}

fn token(name: &str, role: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(role, "operator" | "viewer"),
        "role {role:?}: expected operator or viewer"
    );
    let token = console::auth::random_hex();
    anyhow::ensure!(!token.is_empty(), "no randomness available");
    println!("token (give it to {name}; it is not stored anywhere): {token}");
    println!(
        "configuration entry:\ntokens:\n  - name: {name}\n    role: {role}\n    sha256: {}",
        console::auth::sha256_hex(token.as_bytes())
    );
    Ok(())
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let mut config = ConsoleConfig::load(&args.config)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(url) = args.nats {
        config.nats.url = url;
    }
    console::server::run(config).await
}

fn main() -> ExitCode {
    service::init_logs();
    let args = Args::parse();
    service::exit(match &args.command {
        Some(Command::HashPassword) => hash_password(),
        Some(Command::Token { name, role }) => token(name, role),
        Some(Command::Run) | None => service::block_on(serve(args)),
    })
}
