//! `/etc/osprey/console.yaml`: read, defaulted and validated at load (docs/console.md).

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Where the page and the API listen. Loopback by default: expose it on purpose, with TLS.
    pub listen: SocketAddr,
    /// TLS certificate and key (PEM); plain HTTP without them.
    pub tls: Option<TlsSection>,
    pub nats: NatsSection,
    /// Durable JetStream consumer on `OSPREY_FINDINGS`.
    pub consumer: String,
    /// The console's SQLite database.
    pub database: PathBuf,
    pub retention: Retention,
    /// Also keep every published event (`osprey.events.>`, when collectors publish them) for
    /// the finding pages; otherwise only the events that triggered findings are kept.
    pub store_events: bool,
    /// The console's operator key (as `osprey keys generate` writes it): it signs commands,
    /// approvals and responder control. Without it the console is read-only.
    pub operator_key: Option<PathBuf>,
    /// Seconds to wait for a host's or the responder's answer.
    pub command_timeout_secs: u64,
    /// A session ends this long after login.
    pub session_ttl_secs: u64,
    /// A host without a heartbeat for this long is shown as silent.
    pub host_silent_secs: u64,
    pub users: Vec<User>,
    pub tokens: Vec<Token>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    pub url: String,
    pub credentials: Option<PathBuf>,
}

impl Default for NatsSection {
    fn default() -> Self {
        NatsSection {
            url: "nats://127.0.0.1:4222".into(),
            credentials: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Findings, audit records and events older than this are deleted.
    pub max_age_days: u64,
    /// Heartbeats (the host charts) older than this are deleted.
    pub heartbeat_max_age_hours: u64,
    /// The database is kept below this size: the oldest rows go first.
    pub max_bytes: u64,
    pub check_interval_secs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age_days: 30,
            heartbeat_max_age_hours: 48,
            max_bytes: 1 << 30,
            check_interval_secs: 60,
        }
    }
}

/// What a user or token may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read everything; change nothing.
    Viewer,
    /// Also act: commands, approvals, responder mode.
    #[default]
    Operator,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// Argon2 PHC string (`osprey-console hash-password`).
    pub password_hash: String,
    #[serde(default)]
    pub role: Role,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Who the token belongs to (audited as the operator's name).
    pub name: String,
    /// SHA-256 of the token, hex (`osprey-console token` prints both).
    pub sha256: String,
    #[serde(default)]
    pub role: Role,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8470)),
            tls: None,
            nats: NatsSection::default(),
            consumer: "osprey-console".into(),
            database: PathBuf::from("/var/lib/osprey/console.db"),
            retention: Retention::default(),
            store_events: false,
            operator_key: None,
            command_timeout_secs: 10,
            session_ttl_secs: 12 * 3600,
            host_silent_secs: 30,
            users: Vec::new(),
            tokens: Vec::new(),
        }
    }
}

impl ConsoleConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: ConsoleConfig = if text.trim().is_empty() {
            Self::default()
        } else {
            yaml_serde::from_str(text)?
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.users.is_empty() && self.tokens.is_empty() {
            anyhow::bail!(
                "no users and no tokens: nobody could log in (add users with \
                 `osprey-console hash-password`, or tokens with `osprey-console token`)"
            );
        }
        let mut names = HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            if user.name.trim().is_empty() {
                anyhow::bail!("users[{i}]: name is empty");
            }
            if !names.insert(user.name.as_str()) {
                anyhow::bail!("users[{i}]: user {:?} appears twice", user.name);
            }
            crate::auth::check_password_hash(&user.password_hash)
                .map_err(|e| anyhow::anyhow!("users[{i}] ({}): password_hash: {e}", user.name))?;
        }
        for (i, token) in self.tokens.iter().enumerate() {
            if token.name.trim().is_empty() {
                anyhow::bail!("tokens[{i}]: name is empty");
            }
            let hex = token.sha256.trim();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!(
                    "tokens[{i}] ({}): sha256 must be 64 hex digits (the SHA-256 of the token)",
                    token.name
                );
            }
        }
        if self.consumer.is_empty() || self.consumer.contains(['.', '*', '>', ' ']) {
            anyhow::bail!("consumer: {:?} is not a valid durable name", self.consumer);
        }
        let r = &self.retention;
        if r.max_age_days == 0 || r.heartbeat_max_age_hours == 0 || r.check_interval_secs == 0 {
            anyhow::bail!(
                "retention: max_age_days, heartbeat_max_age_hours and check_interval_secs must be above 0"
            );
        }
        if r.max_bytes < 1 << 20 {
            anyhow::bail!("retention: max_bytes must be at least 1 MiB (1048576)");
        }
        if self.command_timeout_secs == 0 || self.session_ttl_secs == 0 {
            anyhow::bail!("command_timeout_secs and session_ttl_secs must be above 0");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3tB4Wbl8ZK0t0oO5WHBt1ByC5cI3u2G8Z5hKqgSOb8E";

    /// deploy/console.yaml shows the defaults (with a user added, as it asks).
    #[test]
    fn the_example_configuration_holds_the_defaults() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/console.yaml"
        ))
        .unwrap();
        let text = text.replacen(
            "users: []",
            &format!("users:\n  - name: a\n    password_hash: \"{HASH}\"\n"),
            1,
        );
        let c = ConsoleConfig::parse(&text).unwrap();
        let d = ConsoleConfig::default();
        assert_eq!(
            (c.listen, c.consumer, c.database, c.store_events),
            (d.listen, d.consumer, d.database, d.store_events)
        );
        assert_eq!(
            (
                c.retention.max_age_days,
                c.retention.heartbeat_max_age_hours
            ),
            (
                d.retention.max_age_days,
                d.retention.heartbeat_max_age_hours
            )
        );
        assert_eq!(c.retention.max_bytes, d.retention.max_bytes);
        assert_eq!(
            (
                c.command_timeout_secs,
                c.session_ttl_secs,
                c.host_silent_secs
            ),
            (
                d.command_timeout_secs,
                d.session_ttl_secs,
                d.host_silent_secs
            )
        );
        assert_eq!(c.nats.url, d.nats.url);
    }

    #[test]
    fn defaults_and_validation() {
        let c = ConsoleConfig::parse(&format!(
            "users:\n  - name: alice\n    password_hash: \"{HASH}\"\n"
        ))
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8470");
        assert_eq!(c.users[0].role, Role::Operator);
        let err = ConsoleConfig::parse("").unwrap_err().to_string();
        assert!(err.contains("nobody could log in"), "{err}");
        let err = ConsoleConfig::parse("users:\n  - name: a\n    password_hash: plain\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("users[0] (a): password_hash"), "{err}");
        let err = ConsoleConfig::parse("tokens:\n  - name: ci\n    sha256: abc\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        let err = ConsoleConfig::parse("listn: 1.2.3.4:1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listn"), "{err}");
    }
}
