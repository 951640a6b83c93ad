//! Response tools: `osprey keys generate`, `osprey quarantine EXECID --host H` (on a host,
//! through its actuator) and `osprey quarantine list|restore` (on the host itself).

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use protocol::{signing, ExecId};

use crate::commands;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Make an ed25519 key pair: `PREFIX.key` (secret, mode 600) and `PREFIX.pub` (the public
    /// key, base64: put it in a collector's `actuator.trusted_keys` or a responder's
    /// `operator_keys`).
    Generate {
        /// Output path prefix.
        #[arg(long, default_value = "osprey")]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct QuarantineArgs {
    #[command(subcommand)]
    pub command: Option<QuarantineCommand>,
    /// The process whose executable to quarantine on `--host` (found in the process's own
    /// mount namespace, by the identity the kernel reported at exec).
    pub exec_id: Option<ExecId>,
    /// A file on `--host` to quarantine instead (no symbolic link is followed).
    #[arg(long, conflicts_with = "exec_id")]
    pub path: Option<String>,
    /// The host (as its collector names itself); required with EXECID or --path.
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: crate::operator::NatsArgs,
    #[command(flatten)]
    pub key: crate::operator::KeyArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum QuarantineCommand {
    /// Quarantined files on this host with their original path, hash and time.
    List {
        #[arg(long, default_value = "/var/lib/osprey/quarantine")]
        dir: PathBuf,
    },
    /// Moves a quarantined file on this host back to its original path with its original
    /// mode and owner (as `osprey release ID --host H` does through the host's actuator).
    Restore {
        id: String,
        #[arg(long, default_value = "/var/lib/osprey/quarantine")]
        dir: PathBuf,
    },
}

pub fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Generate { out } => {
            let pair = signing::KeyPair::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
            let secret = out.with_extension("key");
            let public = out.with_extension("pub");
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options
                .open(&secret)
                .and_then(|mut f| {
                    std::io::Write::write_all(
                        &mut f,
                        format!("{}\n", pair.secret_base64()).as_bytes(),
                    )
                })
                .with_context(|| format!("cannot write {}", secret.display()))?;
            std::fs::write(&public, format!("{}\n", pair.public_base64()))
                .with_context(|| format!("cannot write {}", public.display()))?;
            println!(
                "secret key: {}\npublic key: {} ({})",
                secret.display(),
                public.display(),
                pair.public_base64()
            );
            Ok(())
        }
    }
}

pub async fn quarantine(args: QuarantineArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(local) => local_quarantine(local).map(|()| ExitCode::SUCCESS),
        None => {
            let common = commands::Common {
                host: args.host.context("--host is required")?,
                json: args.json,
                nats: args.nats,
                key: args.key,
            };
            commands::quarantine(args.exec_id, args.path, &common).await
        }
    }
}

#[cfg(target_os = "linux")]
fn local_quarantine(command: QuarantineCommand) -> anyhow::Result<()> {
    use collector::actuator::{release, ActionError};
    match command {
        QuarantineCommand::List { dir } => {
            for r in release::records(&dir).map_err(anyhow::Error::msg)? {
                println!(
                    "{}  {}  {}  sha256:{}",
                    r.id, r.time, r.original_path, r.sha256
                );
            }
            Ok(())
        }
        QuarantineCommand::Restore { id, dir } => match release::release(&dir, &id) {
            Ok(rec) => {
                println!("restored {} (sha256 {})", rec.original_path, rec.sha256);
                Ok(())
            }
            Err(ActionError::Refused(why) | ActionError::Failed(why)) => anyhow::bail!(why),
        },
    }
}

#[cfg(not(target_os = "linux"))]
fn local_quarantine(_: QuarantineCommand) -> anyhow::Result<()> {
    anyhow::bail!("quarantine on this machine is Linux only: use `osprey release ID --host H`")
}
