//! NKey credentials for the deployment and the server configuration that lists them
//! (`osprey creds`).
//!
//! A credentials directory (the one holding deploy/nats's `nats-server.conf`) contains:
//! - `keys/<who>.nk`: the NKey user seed (mode 600): the only thing a host, the responder or
//!   an operator needs (`nats.credentials` in their configuration). Copy it to its owner and
//!   delete it here if the server should not keep it.
//! - `keys/<who>.pub`: the public key. `users.conf` is rebuilt from these files alone.
//! - `roles.conf`: the responder's and operators' permissions ([`crate::permissions`]).
//! - `users.conf`: one entry per public key with its permissions; included by
//!   `nats-server.conf`. The server refuses to start without it (no users, no access).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use protocol::subject::{host_from_token, host_token};

use crate::permissions::{self, OPERATOR_VARIABLE, RESPONDER_VARIABLE};

/// Who a key belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Principal {
    Responder,
    /// The AI investigator (osprey-investigator).
    Investigator,
    /// An operator (or an operator tool such as the console), by name.
    Operator(String),
    /// A host, by the host name its collector uses.
    Host(String),
}

impl Principal {
    /// The key files' name: `responder`, `operator-<token>`, `host-<token>` (tokens are
    /// injective and file-name safe).
    pub fn file_stem(&self) -> String {
        match self {
            Principal::Responder => "responder".to_string(),
            Principal::Investigator => "investigator".to_string(),
            Principal::Operator(name) => format!("operator-{}", host_token(name)),
            Principal::Host(name) => format!("host-{}", host_token(name)),
        }
    }

    fn from_file_stem(stem: &str) -> Option<Principal> {
        if stem == "responder" {
            return Some(Principal::Responder);
        }
        if stem == "investigator" {
            return Some(Principal::Investigator);
        }
        if let Some(token) = stem.strip_prefix("operator-") {
            return host_from_token(token).map(Principal::Operator);
        }
        stem.strip_prefix("host-")
            .and_then(host_from_token)
            .map(Principal::Host)
    }

    /// For humans and comments; names are escaped, so no name can break the config file.
    pub fn describe(&self) -> String {
        match self {
            Principal::Responder => "responder".to_string(),
            Principal::Investigator => "investigator".to_string(),
            Principal::Operator(name) => format!("operator {}", name.escape_debug()),
            Principal::Host(name) => {
                format!("host {} (token {})", name.escape_debug(), host_token(name))
            }
        }
    }

    /// Its `users.conf` entry.
    pub fn user_entry(&self, public_key: &str) -> String {
        let permissions = match self {
            Principal::Responder => format!("${RESPONDER_VARIABLE}"),
            // Inline, not a roles.conf variable: nats-server refuses a variable no user refers
            // to, and most deployments have no investigator.
            Principal::Investigator => permissions::investigator().render(2),
            Principal::Operator(_) => format!("${OPERATOR_VARIABLE}"),
            Principal::Host(name) => permissions::host(name).render(2),
        };
        format!(
            "  # {}\n  {{ nkey: \"{public_key}\", permissions: {permissions} }}\n",
            self.describe()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} exists: {who} already has a key (pass --force to replace it; the old key stops working once the server reloads)")]
    Exists { path: PathBuf, who: String },
    #[error("{path}: not an NKey user public key")]
    BadPublicKey { path: PathBuf },
    #[error("cannot make an NKey: {0}")]
    Key(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CredsError + '_ {
    move |source| CredsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What [`CredsDir::issue`] made.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The seed file to hand to its owner.
    pub seed_file: PathBuf,
    pub public_key: String,
    /// Its entry in `users.conf` (the server configuration snippet).
    pub user_entry: String,
    pub users_conf: PathBuf,
}

/// A credentials directory (see the module documentation).
pub struct CredsDir {
    dir: PathBuf,
}

impl CredsDir {
    pub fn new(dir: impl Into<PathBuf>) -> CredsDir {
        CredsDir { dir: dir.into() }
    }

    fn keys(&self) -> PathBuf {
        self.dir.join("keys")
    }

    /// Makes a key pair for `who` and rewrites `roles.conf` and `users.conf`.
    pub fn issue(&self, who: &Principal, replace: bool) -> Result<Issued, CredsError> {
        let keys = self.keys();
        fs::create_dir_all(&keys).map_err(io_error(&keys))?;
        let seed_file = keys.join(format!("{}.nk", who.file_stem()));
        let public_file = keys.join(format!("{}.pub", who.file_stem()));
        if !replace && (seed_file.exists() || public_file.exists()) {
            return Err(CredsError::Exists {
                path: public_file,
                who: who.describe(),
            });
        }
        let pair = nkeys::KeyPair::new_user();
        let seed = pair.seed().map_err(|e| CredsError::Key(e.to_string()))?;
        let public_key = pair.public_key();
        write_secret(&seed_file, &format!("{seed}\n"))?;
        write_atomic(&public_file, &format!("{public_key}\n"))?;
        let users_conf = self.write_config()?;
        Ok(Issued {
            seed_file,
            user_entry: who.user_entry(&public_key),
            public_key,
            users_conf,
        })
    }

    /// Everyone with a public key here, responder first, then the investigator, operators, hosts.
    pub fn principals(&self) -> Result<Vec<(Principal, String)>, CredsError> {
        let keys = self.keys();
        let mut found = Vec::new();
        let entries = match fs::read_dir(&keys) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(io_error(&keys)(e)),
        };
        for entry in entries {
            let path = entry.map_err(io_error(&keys))?.path();
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pub"))
            else {
                continue;
            };
            let Some(who) = Principal::from_file_stem(stem) else {
                continue;
            };
            let text = fs::read_to_string(&path).map_err(io_error(&path))?;
            let public_key = text.trim().to_string();
            let is_user = nkeys::KeyPair::from_public_key(&public_key)
                .is_ok_and(|k| k.key_pair_type() == nkeys::KeyPairType::User);
            if !is_user {
                return Err(CredsError::BadPublicKey { path });
            }
            found.push((who, public_key));
        }
        found.sort();
        Ok(found)
    }

    /// Rewrites `roles.conf` and `users.conf` from the public keys; returns users.conf's path.
    pub fn write_config(&self) -> Result<PathBuf, CredsError> {
        fs::create_dir_all(&self.dir).map_err(io_error(&self.dir))?;
        write_atomic(&self.dir.join("roles.conf"), &permissions::roles_conf())?;
        let mut text = String::from(
            "# Osprey's NATS users, written by `osprey creds` from keys/*.pub: regenerate it, don't edit.\n\
             # Included by nats-server.conf; reload the server after a change\n\
             # (nats-server --signal reload, or systemctl reload nats-server).\n\
             include ./roles.conf\n\
             OSPREY_USERS: [\n",
        );
        for (who, public_key) in self.principals()? {
            text.push_str(&who.user_entry(&public_key));
        }
        text.push_str("]\n");
        let users = self.dir.join("users.conf");
        write_atomic(&users, &text)?;
        Ok(users)
    }
}

fn write_atomic(path: &Path, text: &str) -> Result<(), CredsError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}

fn write_secret(path: &Path, text: &str) -> Result<(), CredsError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io_error(&tmp))?;
    file.write_all(text.as_bytes()).map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_are_listed_in_users_conf() {
        let dir = tempfile::tempdir().unwrap();
        let creds = CredsDir::new(dir.path());
        let host = creds
            .issue(&Principal::Host("web.1".into()), false)
            .unwrap();
        let responder = creds.issue(&Principal::Responder, false).unwrap();
        creds
            .issue(&Principal::Operator("alice".into()), false)
            .unwrap();
        let seed = std::fs::read_to_string(&host.seed_file).unwrap();
        let pair = nkeys::KeyPair::from_seed(seed.trim()).unwrap();
        assert_eq!(pair.public_key(), host.public_key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&host.seed_file)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let users = std::fs::read_to_string(dir.path().join("users.conf")).unwrap();
        assert!(users.contains(&host.public_key));
        assert!(users.contains(&responder.public_key));
        assert!(users.contains("osprey.findings.web_2e1.>"));
        assert!(users.contains("$OSPREY_RESPONDER_PERMISSIONS"));
        assert!(users.contains("$OSPREY_OPERATOR_PERMISSIONS"));
        assert!(users.find("# responder").unwrap() < users.find("# operator").unwrap());
        assert!(dir.path().join("roles.conf").exists());

        let again = creds.issue(&Principal::Host("web.1".into()), false);
        assert!(matches!(again, Err(CredsError::Exists { .. })));
        let rotated = creds.issue(&Principal::Host("web.1".into()), true).unwrap();
        let users = std::fs::read_to_string(dir.path().join("users.conf")).unwrap();
        assert!(users.contains(&rotated.public_key) && !users.contains(&host.public_key));
    }

    #[test]
    fn names_cannot_break_out_of_their_comment() {
        let who = Principal::Host("evil\n]\nOSPREY_USERS: [".into());
        let entry = who.user_entry("UABC");
        assert!(entry
            .lines()
            .next()
            .unwrap()
            .starts_with("  # host evil\\n]"));
        assert!(!entry
            .lines()
            .any(|l| l.trim_start().starts_with("OSPREY_USERS")));
    }
}
