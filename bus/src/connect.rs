//! Connecting as one of the deployment's roles: the role's reply inbox and its credentials.
//!
//! Each role gets an inbox prefix of its own, and the permissions of deploy/nats let a role
//! subscribe to its own inbox only: a host cannot read the replies (JetStream deliveries,
//! command results) meant for the responder, an operator or another host.

use std::{
    io,
    path::{Path, PathBuf},
};

use async_nats::ConnectOptions;
use protocol::subject;

/// Who is connecting; decides the inbox prefix (and, on the server, the permissions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role<'a> {
    /// A host's collector (publisher, actuator, query responder), by host name.
    Host(&'a str),
    Responder,
    /// The AI investigator (osprey-investigator).
    Investigator,
    /// `osprey` CLI, console, any operator tool.
    Operator,
}

impl Role<'_> {
    /// `_INBOX.host.<host token>`, `_INBOX.responder`, `_INBOX.investigator`,
    /// `_INBOX.operator`.
    pub fn inbox_prefix(&self) -> String {
        match self {
            Role::Host(host) => format!("_INBOX.host.{}", subject::host_token(host)),
            Role::Responder => "_INBOX.responder".to_string(),
            Role::Investigator => "_INBOX.investigator".to_string(),
            Role::Operator => "_INBOX.operator".to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read NATS credentials {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("NATS credentials {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// The marker of a `.creds` file (a user JWT and its seed, for operator/JWT deployments).
const JWT_MARKER: &str = "-----BEGIN NATS USER JWT-----";

/// Connect options for `role`, authenticated with `credentials` when given: either an NKey
/// user seed file (`SU...`, as `osprey creds` writes it) or a `.creds` file (JWT + seed).
pub fn options(
    role: Role<'_>,
    credentials: Option<&Path>,
) -> Result<ConnectOptions, CredentialsError> {
    let options = ConnectOptions::new().custom_inbox_prefix(role.inbox_prefix());
    match credentials {
        None => Ok(options),
        Some(path) => authenticate(options, path),
    }
}

fn authenticate(options: ConnectOptions, path: &Path) -> Result<ConnectOptions, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    warn_if_readable_by_others(path);
    let invalid = |problem: String| CredentialsError::Invalid {
        path: path.to_path_buf(),
        problem,
    };
    if text.contains(JWT_MARKER) {
        return options
            .credentials(&text)
            .map_err(|e| invalid(format!("not a valid .creds file: {e}")));
    }
    let seed = text.trim();
    if !seed.starts_with("SU") {
        return Err(invalid(
            "neither an NKey user seed (one line starting with SU, as `osprey creds` writes) \
             nor a .creds file (JWT and seed)"
                .to_string(),
        ));
    }
    nkeys::KeyPair::from_seed(seed)
        .map_err(|e| invalid(format!("not a valid NKey user seed: {e}")))?;
    Ok(options.nkey(seed.to_string()))
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "NATS credentials are readable by other users: chmod 600 them"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// `a,b,c` → the servers of a cluster (a client learns the others from any one of them).
pub fn servers(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inboxes_of_hosts_are_disjoint_from_each_other_and_the_services() {
        assert_eq!(Role::Host("web.1").inbox_prefix(), "_INBOX.host.web_2e1");
        assert_eq!(Role::Host("web_1").inbox_prefix(), "_INBOX.host.web_5f1");
        assert_eq!(Role::Responder.inbox_prefix(), "_INBOX.responder");
        assert_eq!(Role::Investigator.inbox_prefix(), "_INBOX.investigator");
        assert_eq!(Role::Operator.inbox_prefix(), "_INBOX.operator");
    }

    #[test]
    fn credentials_are_recognised_or_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let good = dir.path().join("host.nk");
        std::fs::write(&good, format!("{seed}\n")).unwrap();
        assert!(options(Role::Operator, Some(&good)).is_ok());

        let bad = dir.path().join("bad.nk");
        std::fs::write(&bad, "password123").unwrap();
        let error = options(Role::Operator, Some(&bad)).unwrap_err().to_string();
        assert!(error.contains("neither an NKey user seed"), "{error}");

        let broken = dir.path().join("broken.nk");
        std::fs::write(&broken, "SUAAAA").unwrap();
        let error = options(Role::Operator, Some(&broken))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a valid NKey user seed"), "{error}");

        let missing = dir.path().join("missing.nk");
        let error = options(Role::Operator, Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot read NATS credentials"), "{error}");
    }

    #[test]
    fn server_lists_are_split_on_commas() {
        assert_eq!(
            servers("nats://a:4222, nats://b:4222,,"),
            ["nats://a:4222", "nats://b:4222"]
        );
        assert!(servers(" ").is_empty());
    }
}
