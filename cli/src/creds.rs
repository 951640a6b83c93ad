//! `osprey creds`: NKey credentials for the NATS deployment (docs/nats.md).

use std::path::PathBuf;

use bus::creds::{CredsDir, Principal};

#[derive(Debug, clap::Args)]
pub struct CredsArgs {
    #[command(subcommand)]
    pub who: Who,
    /// The credentials directory: where nats-server.conf is (users.conf and roles.conf are
    /// written beside it, keys under keys/).
    #[arg(long, global = true, default_value = "/etc/nats")]
    pub dir: PathBuf,
    /// Replace an existing key (the old one stops working once the server reloads).
    #[arg(long, global = true)]
    pub force: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Who {
    /// A host's key: it may publish only its own events, findings, heartbeats and audit
    /// records, and receive only its own commands and queries.
    Host {
        /// The host name, as its collector names itself (`host:` in collector.yaml, else the
        /// system host name).
        name: String,
    },
    /// The responder's key.
    Responder,
    /// The AI investigator's key (osprey-investigator): read-only queries, proposals.
    Investigator,
    /// An operator's key (osprey tail/top/ps, approvals, the console).
    Operator { name: String },
    /// Rewrite users.conf and roles.conf from the public keys in keys/ (after an upgrade,
    /// or after deleting a key to revoke it).
    Sync,
}

pub fn run(args: CredsArgs) -> anyhow::Result<()> {
    let dir = CredsDir::new(&args.dir);
    let who = match args.who {
        Who::Host { name } => Principal::Host(name),
        Who::Responder => Principal::Responder,
        Who::Investigator => Principal::Investigator,
        Who::Operator { name } => Principal::Operator(name),
        Who::Sync => {
            let users = dir.write_config()?;
            println!("{} rewritten; reload nats-server", users.display());
            return Ok(());
        }
    };
    let issued = dir.issue(&who, args.force)?;
    let config_key = match who {
        Principal::Host(_) => "collector.yaml",
        Principal::Responder => "responder.yaml",
        Principal::Investigator => "investigator.yaml",
        Principal::Operator(_) => "--creds (or OSPREY_NATS_CREDS)",
    };
    println!(
        "{who}\n  seed (secret): {seed}\n    give it to its owner (mode 600) and point {config_key} at it:\n    nats:\n      credentials: /etc/osprey/nats.nk\n  public key: {public}\n  server: {users} now lists it; reload nats-server (nats-server --signal reload)\n\n{entry}",
        who = who.describe(),
        seed = issued.seed_file.display(),
        public = issued.public_key,
        users = issued.users_conf.display(),
        entry = issued.user_entry,
    );
    Ok(())
}
