//! `/etc/osprey/responder.yaml`: read, defaulted and validated at load.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponderConfig {
    pub nats: NatsSection,
    /// The response policy (docs/responder.md).
    pub policy: PathBuf,
    /// This responder's secret key (as `osprey keys generate` writes it); hosts trust its
    /// public half.
    pub signing_key: PathBuf,
    /// Operators' public keys (base64) whose approvals count.
    pub operator_keys: Vec<String>,
    /// JSON lines, one per decision (also published on `osprey.audit._responder`).
    pub audit_file: PathBuf,
    /// The journal: decisions before they are acted on, findings already handled, actions
    /// awaiting approval (all survive restarts).
    pub state_dir: PathBuf,
    /// Decide and audit, but send nothing.
    pub dry_run: bool,
    /// Durable JetStream consumer name (the NATS permissions of deploy/nats name
    /// `osprey-responder`: change both together).
    pub consumer: String,
    /// Seconds to wait for a host's answer to a command.
    pub command_timeout_secs: u64,
    /// Seconds an action awaits approval before it expires (audited as expired).
    pub approval_timeout_secs: u64,
    /// Actions awaiting approval at most; beyond, a new one is refused (and audited).
    pub max_pending_approvals: usize,
    /// Actions per host and action kind per hour (0: unlimited), with per-action overrides.
    pub rate_limit_per_hour: u32,
    pub rate_limits: std::collections::BTreeMap<String, u32>,
    /// A host whose heartbeat stops for this long raises a finding (0: off).
    pub heartbeat_timeout_secs: u64,
    /// Slack-compatible webhook for `notify` (http:// only).
    pub notify_webhook: Option<String>,
    /// Executables (full paths) the responder never targets, on top of the built-in set.
    pub protected_executables: Vec<String>,
    /// Destinations (CIDRs) never blocked, on top of the NATS servers.
    pub protected_networks: Vec<String>,
    /// Serve Prometheus `/metrics` on this address (off when absent).
    pub metrics_address: Option<std::net::SocketAddr>,
    /// AI investigators' proposals (docs/investigator.md): whose are heard, and how far the
    /// responder goes with them. Set here, on the responder, so a compromised investigator
    /// cannot raise its own autonomy.
    pub ai: AiSection,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AiSection {
    /// Investigators' public keys (base64, `osprey keys generate`); proposals signed by any
    /// other key are refused. Empty: every proposal is refused.
    pub investigator_keys: Vec<String>,
    pub autonomy: Autonomy,
    /// Proposals awaiting approval at most (within `max_pending_approvals`): a misbehaving
    /// investigator cannot crowd out the policy's own approvals.
    pub max_pending_approvals: usize,
}

impl Default for AiSection {
    fn default() -> Self {
        AiSection {
            investigator_keys: Vec::new(),
            autonomy: Autonomy::default(),
            max_pending_approvals: 20,
        }
    }
}

/// What the responder does with a verified proposal (every safety control applies first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Autonomy {
    /// Audited as a proposal; nothing else.
    #[default]
    Propose,
    /// Held for an operator's approval, exactly like a policy action in `approval_required`.
    Approval,
    /// Taken only if the response policy would have taken that action on that finding
    /// anyway (through the policy's own path: its approvals, dry run and rate limits).
    WithinPolicy,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    /// One server, or a cluster's servers comma-separated.
    pub url: String,
    /// The responder's NKey seed (`osprey creds responder`) or a `.creds` file.
    pub credentials: Option<PathBuf>,
    /// Replicas of OSPREY_FINDINGS when the responder creates it: `auto` (3 in a cluster of
    /// at least 3 servers, else 1) or a number.
    pub stream_replicas: Replicas,
}

/// `auto` or a number of replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicas(pub bus::Replicas);

impl<'de> Deserialize<'de> for Replicas {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(usize),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n @ 1..=5) => Ok(Replicas(bus::Replicas::Exactly(n))),
            Raw::Word(w) if w == "auto" => Ok(Replicas(bus::Replicas::Auto)),
            Raw::Number(n) => Err(serde::de::Error::custom(format!(
                "stream_replicas: {n}: JetStream keeps 1 to 5 replicas"
            ))),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "stream_replicas: {w:?}: expected auto or a number from 1 to 5"
            ))),
        }
    }
}

impl Default for NatsSection {
    fn default() -> Self {
        NatsSection {
            url: "nats://127.0.0.1:4222".into(),
            credentials: None,
            stream_replicas: Replicas(bus::Replicas::Auto),
        }
    }
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            nats: NatsSection::default(),
            policy: PathBuf::from("/etc/osprey/response-policy.yaml"),
            signing_key: PathBuf::from("/etc/osprey/responder.key"),
            operator_keys: Vec::new(),
            audit_file: PathBuf::from("/var/log/osprey/responder-audit.jsonl"),
            state_dir: PathBuf::from("/var/lib/osprey/responder"),
            dry_run: false,
            consumer: bus::permissions::RESPONDER_CONSUMER.into(),
            command_timeout_secs: 10,
            approval_timeout_secs: 900,
            max_pending_approvals: 1000,
            rate_limit_per_hour: 20,
            rate_limits: Default::default(),
            heartbeat_timeout_secs: 30,
            notify_webhook: None,
            protected_executables: Vec::new(),
            protected_networks: Vec::new(),
            metrics_address: None,
            ai: AiSection::default(),
        }
    }
}

impl ResponderConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        let config: ResponderConfig = if text.trim().is_empty() {
            Self::default()
        } else {
            yaml_serde::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        };
        for (i, net) in config.protected_networks.iter().enumerate() {
            net.parse::<ipnet::IpNet>().map_err(|e| {
                anyhow::anyhow!("{}: protected_networks[{i}]: {net:?}: {e}", path.display())
            })?;
        }
        for (i, key) in config.operator_keys.iter().enumerate() {
            protocol::signing::PublicKey::from_base64(key)
                .map_err(|e| anyhow::anyhow!("{}: operator_keys[{i}]: {e}", path.display()))?;
        }
        for (i, key) in config.ai.investigator_keys.iter().enumerate() {
            protocol::signing::PublicKey::from_base64(key).map_err(|e| {
                anyhow::anyhow!("{}: ai.investigator_keys[{i}]: {e}", path.display())
            })?;
        }
        if config.max_pending_approvals == 0 {
            anyhow::bail!(
                "{}: max_pending_approvals: must be at least 1",
                path.display()
            );
        }
        if config.consumer.is_empty() || config.consumer.contains(['.', '*', '>', ' ']) {
            anyhow::bail!(
                "{}: consumer: {:?} is not a valid durable name",
                path.display(),
                config.consumer
            );
        }
        Ok(config)
    }

    /// The hourly limit for `action` (0: unlimited).
    pub fn rate_limit(&self, action: &str) -> u32 {
        self.rate_limits
            .get(action)
            .copied()
            .unwrap_or(self.rate_limit_per_hour)
    }
}
