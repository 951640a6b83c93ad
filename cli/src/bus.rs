//! Where the operator's tools find NATS and the operator's key: flags, then environment
//! (`OSPREY_NATS_URL`, `OSPREY_NATS_CREDS`, `OSPREY_OPERATOR_KEY`), then the session file
//! `cargo xtask run` writes while it runs ([`SESSION_FILE`]), then `nats://127.0.0.1:4222`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
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
        let servers: Vec<async_nats::ServerAddr> = url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .with_context(|| format!("invalid NATS server address {s:?}"))
            })
            .collect::<anyhow::Result<_>>()?;
        anyhow::ensure!(!servers.is_empty(), "no NATS server address given");
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .max_reconnects(None);
        // `nats://user:password@host`: the client library does not log in with a URL's
        // user by itself.
        if let Some(first) = servers.iter().find(|s| s.has_user_pass()) {
            if let (Some(user), Some(password)) = (first.username(), first.password()) {
                options = options.user_and_password(user.to_string(), password.to_string());
            }
        }
        if wait {
            options = options.retry_on_initial_connect();
        }
        if let Some(creds) = &self.creds {
            options = options
                .credentials_file(creds)
                .await
                .with_context(|| format!("cannot read NATS credentials {}", creds.display()))?;
        }
        options
            .connect(servers)
            .await
            .with_context(|| format!("cannot connect to NATS at {url}"))
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
        load_key(&path)
    }
}

pub fn load_key(path: &Path) -> anyhow::Result<protocol::signing::KeyPair> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the operator key {}", path.display()))?;
    protocol::signing::KeyPair::from_secret_base64(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// This machine's host name, as its collector names itself by default.
pub fn local_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
