//! Response tools: `osprey keys generate`, `osprey approve|deny ID`,
//! `osprey quarantine list|restore`.

use std::{
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::Context;
use protocol::{signing, Approval, QuarantineRecord, Timestamp, Verdict};

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
pub struct ApprovalArgs {
    /// The pending action's id (from its `awaiting_approval` audit record).
    pub id: String,
    /// The operator's secret key.
    #[arg(long, env = "OSPREY_OPERATOR_KEY")]
    pub key: PathBuf,
    #[arg(long, env = "OSPREY_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// NATS credentials: the operator's NKey seed (`osprey creds operator NAME`) or a .creds
    /// file.
    #[arg(long, env = "OSPREY_NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// Seconds to wait for a responder to listen (e.g. while it restarts).
    #[arg(long, default_value_t = 10)]
    pub wait_secs: u64,
}

#[derive(Debug, clap::Subcommand)]
pub enum QuarantineCommand {
    /// Quarantined files with their original path, hash and time.
    List {
        #[arg(long, default_value = "/var/lib/osprey/quarantine")]
        dir: PathBuf,
    },
    /// Moves a quarantined file back to its original path with its original mode.
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
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
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

pub async fn approval(args: ApprovalArgs, verdict: Verdict) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.key)
        .with_context(|| format!("cannot read {}", args.key.display()))?;
    let pair = signing::KeyPair::from_secret_base64(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.key.display()))?;
    let mut approval = Approval {
        pending_id: args.id.clone(),
        verdict,
        nonce: signing::random_id(),
        issued_at: Timestamp::now(),
        key_id: String::new(),
        signature: None,
    };
    pair.sign(&mut approval);
    let client = bus::options(bus::Role::Operator, args.creds.as_deref())?
        .name("osprey-approve")
        .connect(bus::servers(&args.nats))
        .await
        .with_context(|| format!("cannot connect to {}", args.nats))?;
    let payload = protocol::encode(&approval)?;
    // The responder answers with what became of the approval. Nobody listening yet (a
    // responder starting) is worth waiting for; no answer is not: the approval may have been
    // taken, and sending it again would be refused as a replay.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.wait_secs);
    let reply = loop {
        let request = client.send_request(
            protocol::subject::APPROVALS,
            async_nats::Request::new()
                .payload(payload.clone().into())
                .timeout(Some(std::time::Duration::from_secs(10))),
        );
        match request.await {
            Ok(reply) => break reply,
            Err(e)
                if e.kind() == async_nats::client::RequestErrorKind::NoResponders
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
                anyhow::bail!("no responder listens on {} (is osprey-responder running?)", protocol::subject::APPROVALS)
            }
            Err(e) => anyhow::bail!(
                "no answer from the responder ({e}): the {verdict:?} may or may not have been taken; see its audit trail"
            ),
        }
    };
    let answer = String::from_utf8_lossy(&reply.payload);
    println!("{}: {answer}", args.id);
    if !(answer.starts_with("approved:") || answer.starts_with("denied:")) {
        anyhow::bail!("the responder did not carry it out");
    }
    Ok(())
}

fn records(dir: &Path) -> anyhow::Result<Vec<QuarantineRecord>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let rec: QuarantineRecord = serde_json::from_slice(&std::fs::read(&path)?)
                .with_context(|| format!("{} is not a quarantine sidecar", path.display()))?;
            out.push(rec);
        }
    }
    out.sort_by_key(|r| r.time);
    Ok(out)
}

pub fn quarantine(command: QuarantineCommand) -> anyhow::Result<()> {
    match command {
        QuarantineCommand::List { dir } => {
            for r in records(&dir)? {
                println!(
                    "{}  {}  {}  sha256:{}",
                    r.id, r.time, r.original_path, r.sha256
                );
            }
            Ok(())
        }
        QuarantineCommand::Restore { id, dir } => {
            let rec = records(&dir)?
                .into_iter()
                .find(|r| r.id == id)
                .ok_or_else(|| anyhow::anyhow!("no quarantined file {id} in {}", dir.display()))?;
            let original = PathBuf::from(&rec.original_path);
            if original.exists() {
                anyhow::bail!("{} exists again; not overwriting it", original.display());
            }
            let from = dir.join(&rec.id);
            match std::fs::rename(&from, &original) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(18) => {
                    // EXDEV: copy, sync, remove.
                    std::fs::set_permissions(&from, std::fs::Permissions::from_mode(0o400))?;
                    let mut src = std::fs::File::open(&from)?;
                    let mut dst = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&original)?;
                    std::io::copy(&mut src, &mut dst)?;
                    dst.sync_all()?;
                    std::fs::remove_file(&from)?;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot move {} back", from.display()))
                }
            }
            std::fs::set_permissions(&original, std::fs::Permissions::from_mode(rec.mode))?;
            std::os::unix::fs::chown(&original, Some(rec.uid), Some(rec.gid))?;
            std::fs::remove_file(dir.join(format!("{}.json", rec.id)))?;
            println!("restored {} (sha256 {})", original.display(), rec.sha256);
            Ok(())
        }
    }
}
