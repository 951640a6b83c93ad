//! Where the operator's tools find NATS and the operator's key: flags, then environment
//! (`OSPREY_NATS_URL`, `OSPREY_NATS_CREDS`, `OSPREY_OPERATOR_KEY`), then the session file
//! `cargo xtask run` writes while it runs ([`SESSION_FILE`]), then `nats://127.0.0.1:4222`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Written by `cargo xtask run` while it runs (removed when it stops): its NATS URL and the
/// operator key its collector trusts, so `osprey top` needs no flags on a development host.
pub const SESSION_FILE: &str = "/run/osprey/xtask-run.json";
const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub nats_url: String,
    pub operator_key: Option<PathBuf>,
}

impl Session {
    pub fn read() -> Option<Session> {
        let path = std::env::var_os("OSPREY_SESSION")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(SESSION_FILE));
        let text = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&text) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", path.display());
                None
            }
        }
    }
}

/// How to reach NATS.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL (comma-separated for a cluster). Default: the running
    /// `cargo xtask run`'s server, else nats://127.0.0.1:4222.
    #[arg(long = "nats", env = "OSPREY_NATS_URL")]
    pub url: Option<String>,
    /// NATS credentials file (.creds) of an operator user.
    #[arg(long, env = "OSPREY_NATS_CREDS")]
    pub creds: Option<PathBuf>,
}

impl NatsArgs {
    pub fn url(&self) -> String {
        self.url
            .clone()
            .or_else(|| Session::read().map(|s| s.nats_url))
            .unwrap_or_else(|| DEFAULT_URL.to_string())
    }

    /// Connects; `wait` retries until the server answers (a console), else the first failure
    /// is an error (a one-shot command).
    pub async fn connect(&self, name: &str, wait: bool) -> anyhow::Result<async_nats::Client> {
        let url = self.url();
        let target = client::NatsTarget {
            url: &url,
            credentials: self.creds.as_deref(),
            name,
        };
        Ok(if wait {
            client::connect_retrying(&target).await?
        } else {
            client::connect(&target).await?
        })
    }
}

/// The operator's signing key.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// The operator's secret key (`osprey keys generate`); its public half must be in the
    /// host's `actuator.trusted_keys`. Default: the running `cargo xtask run`'s key.
    #[arg(long, env = "OSPREY_OPERATOR_KEY")]
    pub key: Option<PathBuf>,
}

impl KeyArgs {
    pub fn path(&self) -> Option<PathBuf> {
        self.key
            .clone()
            .or_else(|| Session::read().and_then(|s| s.operator_key))
    }

    pub fn load(&self) -> anyhow::Result<protocol::signing::KeyPair> {
        let path = self.path().ok_or_else(|| {
            anyhow::anyhow!(
                "no operator key: pass --key PATH or set OSPREY_OPERATOR_KEY \
                 (make one with `osprey keys generate`)"
            )
        })?;
        Ok(client::load_key(&path)?)
    }

    /// The signer of this operator's commands: the key and, for the audit trail, who runs
    /// the tool (`$SUDO_USER`, else `$USER`).
    pub fn operator(key: &protocol::signing::KeyPair) -> client::Operator<'_> {
        static NAME: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let name = NAME.get_or_init(|| {
            std::env::var("SUDO_USER")
                .or_else(|_| std::env::var("USER"))
                .ok()
                .filter(|n| !n.is_empty())
        });
        client::Operator {
            key,
            name: name.as_deref(),
        }
    }
}

/// Signs `action` for `host` as this operator, sends it to the host's actuator and returns
/// its answer (executed, refused and why, failed and why).
pub async fn command(
    nats: &async_nats::Client,
    key: &protocol::signing::KeyPair,
    host: &str,
    action: protocol::Action,
) -> Result<protocol::CommandResult, client::ClientError> {
    let request = client::CommandRequest {
        host: host.to_string(),
        action,
        finding_id: None,
    };
    let (_, result) = client::send_command(
        nats,
        &KeyArgs::operator(key),
        request,
        client::COMMAND_TIMEOUT,
    )
    .await?;
    Ok(result)
}

/// This machine's host name, as its collector names itself by default.
pub fn local_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
