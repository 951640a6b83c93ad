//! Message ids of findings (`Nats-Msg-Id`) that no other host can pre-empt.
//!
//! JetStream de-duplicates by message id across the whole stream, whatever the subject. Were
//! the id the finding id alone — which anyone can compute from a host name, an `ExecId` and a
//! rule — a compromised host could publish another host's next finding id on its own subject
//! first, and the real finding would be dropped as a duplicate. So the id is the finding id
//! followed by a keyed tag: HMAC-SHA256 of the finding id under a random key that only this
//! host holds (`<spool dir>/message-id.key`, mode 600, made on first start). The same finding
//! keeps the same message id across retries and restarts (de-duplication still works), and no
//! other host can produce it.

use std::{
    fs, io,
    io::Write,
    path::{Path, PathBuf},
};

use hmac::{Hmac, Mac};
use protocol::FindingId;
use sha2::Sha256;

const KEY_FILE: &str = "message-id.key";
const KEY_BYTES: usize = 32;
/// 128 bits of tag are plenty against guessing.
const TAG_BYTES: usize = 16;

pub struct MessageIds {
    key: [u8; KEY_BYTES],
}

#[derive(Debug, thiserror::Error)]
#[error("message id key {path}: {problem}")]
pub struct KeyError {
    path: PathBuf,
    problem: String,
}

impl MessageIds {
    /// Loads the key from `dir`, making it the first time.
    pub fn open(dir: &Path) -> Result<MessageIds, KeyError> {
        let path = dir.join(KEY_FILE);
        let error = |problem: String| KeyError {
            path: path.clone(),
            problem,
        };
        match fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; KEY_BYTES] = bytes.try_into().map_err(|bytes: Vec<u8>| {
                    error(format!(
                        "{} bytes, expected {KEY_BYTES} (delete it to make a new one)",
                        bytes.len()
                    ))
                })?;
                Ok(MessageIds { key })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_BYTES];
                getrandom::getrandom(&mut key)
                    .map_err(|e| error(format!("no randomness for a new key: {e}")))?;
                write_new(&path, &key).map_err(|e| error(format!("cannot write it: {e}")))?;
                Ok(MessageIds { key })
            }
            Err(e) => Err(error(format!("cannot read it: {e}"))),
        }
    }

    /// `<finding id>.<hex tag>`.
    pub fn for_finding(&self, id: &FindingId) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC accepts a key of any length");
        mac.update(id.0.as_bytes());
        let tag = mac.finalize().into_bytes();
        let hex: String = tag[..TAG_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{id}.{hex}")
    }
}

fn write_new(path: &Path, key: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(key)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_key_and_differ_between_keys() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let id = FindingId("deadbeef-1-2-0-0123456789abcdef".into());
        let first = MessageIds::open(a.path()).unwrap().for_finding(&id);
        assert!(first.starts_with("deadbeef-1-2-0-0123456789abcdef."));
        assert_eq!(first.len(), id.0.len() + 1 + 2 * TAG_BYTES);
        assert_eq!(MessageIds::open(a.path()).unwrap().for_finding(&id), first);
        assert_ne!(MessageIds::open(b.path()).unwrap().for_finding(&id), first);
        let other = FindingId("deadbeef-1-2-0-0123456789abcdee".into());
        assert_ne!(
            MessageIds::open(a.path()).unwrap().for_finding(&other),
            first
        );
    }

    #[test]
    fn a_damaged_key_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        let error = MessageIds::open(dir.path()).err().unwrap().to_string();
        assert!(error.contains("5 bytes, expected 32"), "{error}");
    }
}
