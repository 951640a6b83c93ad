//! ed25519 signing of commands, approvals, responder control messages and investigators'
//! proposals.
//!
//! The signed bytes are the MessagePack encoding ([`crate::encode`]) of the value with its
//! `signature` field absent, so signer and verifier agree byte for byte. Keys travel as
//! base64: a secret key file holds the 32-byte seed, a public key file the 32-byte key, and
//! a signed value's `key_id` is the signer's public key.

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::{Approval, Command, Proposal, ResponderControl};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("unsigned")]
    Unsigned,
    #[error("signed by an unknown key")]
    UnknownKey,
    #[error("malformed signature")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("invalid key: {0}")]
    InvalidKey(String),
}

/// A value carrying an ed25519 signature over the rest of itself.
pub trait Signed: serde::Serialize + Clone {
    fn key_id_mut(&mut self) -> &mut String;
    fn key_id(&self) -> &str;
    fn signature_mut(&mut self) -> &mut Option<String>;
    fn signature(&self) -> Option<&str>;
}

/// Implements [`Signed`] for types with `key_id: String` and `signature: Option<String>`.
macro_rules! signed {
    ($($ty:ty),*) => {$(
        impl Signed for $ty {
            fn key_id_mut(&mut self) -> &mut String {
                &mut self.key_id
            }
            fn key_id(&self) -> &str {
                &self.key_id
            }
            fn signature_mut(&mut self) -> &mut Option<String> {
                &mut self.signature
            }
            fn signature(&self) -> Option<&str> {
                self.signature.as_deref()
            }
        }
    )*};
}

signed!(Command, Approval, ResponderControl, Proposal);

/// A secret key and its public half.
pub struct KeyPair {
    key: SigningKey,
}

impl KeyPair {
    pub fn generate() -> Result<Self, SignError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| SignError::InvalidKey(format!("no randomness: {e}")))?;
        Ok(KeyPair {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Reads a secret key as written by [`KeyPair::secret_base64`] (surrounding whitespace ignored).
    pub fn from_secret_base64(text: &str) -> Result<Self, SignError> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|e| SignError::InvalidKey(e.to_string()))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SignError::InvalidKey("a secret key is 32 bytes".into()))?;
        Ok(KeyPair {
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn secret_base64(&self) -> String {
        B64.encode(self.key.to_bytes())
    }

    /// The public key, base64: the `key_id` of everything this key signs.
    pub fn public_base64(&self) -> String {
        B64.encode(self.key.verifying_key().to_bytes())
    }

    /// Sets `key_id` and `signature` of `value`.
    pub fn sign<T: Signed>(&self, value: &mut T) {
        *value.key_id_mut() = self.public_base64();
        *value.signature_mut() = None;
        let bytes = crate::encode(value).expect("a signed value encodes");
        *value.signature_mut() = Some(B64.encode(self.key.sign(&bytes).to_bytes()));
    }
}

/// A public key a host or responder trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    pub fn from_base64(text: &str) -> Result<Self, SignError> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|e| SignError::InvalidKey(e.to_string()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SignError::InvalidKey("a public key is 32 bytes".into()))?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|e| SignError::InvalidKey(e.to_string()))
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.0.to_bytes())
    }
}

/// Checks that `value` is signed by one of `trusted`.
pub fn verify<T: Signed>(value: &T, trusted: &[PublicKey]) -> Result<(), SignError> {
    let sig_text = value.signature().ok_or(SignError::Unsigned)?;
    let key = PublicKey::from_base64(value.key_id()).map_err(|_| SignError::UnknownKey)?;
    if !trusted.contains(&key) {
        return Err(SignError::UnknownKey);
    }
    let sig_bytes = B64.decode(sig_text).map_err(|_| SignError::Malformed)?;
    let sig = Signature::from_slice(&sig_bytes).map_err(|_| SignError::Malformed)?;
    let mut unsigned = value.clone();
    *unsigned.signature_mut() = None;
    let bytes = crate::encode(&unsigned).map_err(|_| SignError::Malformed)?;
    key.0
        .verify(&bytes, &sig)
        .map_err(|_| SignError::BadSignature)
}

/// 16 random bytes as hex: a nonce or an id.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // Fall back on the clock: unique enough for ids, never used for keys.
        let t = crate::Timestamp::now().unix_nanos() as u128;
        bytes = t.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Timestamp};

    fn command() -> Command {
        Command {
            id: random_id(),
            nonce: random_id(),
            issued_at: Timestamp::now(),
            host: "h".into(),
            action: Action::Kill {
                target: "0000abcd-10-20-1".parse().unwrap(),
                tree: false,
            },
            finding_id: None,
            operator: Some("alice".into()),
            key_id: String::new(),
            signature: None,
        }
    }

    #[test]
    fn signed_commands_verify_and_tampering_is_caught() {
        let pair = KeyPair::generate().unwrap();
        let trusted = vec![PublicKey::from_base64(&pair.public_base64()).unwrap()];
        let mut c = command();
        assert_eq!(verify(&c, &trusted), Err(SignError::Unsigned));
        pair.sign(&mut c);
        assert_eq!(verify(&c, &trusted), Ok(()));
        let back: Command = crate::decode(&crate::encode(&c).unwrap()).unwrap();
        assert_eq!(verify(&back, &trusted), Ok(()));
        let mut tampered = c.clone();
        tampered.host = "other".into();
        assert_eq!(verify(&tampered, &trusted), Err(SignError::BadSignature));
        let mut renamed = c.clone();
        renamed.operator = Some("mallory".into());
        assert_eq!(verify(&renamed, &trusted), Err(SignError::BadSignature));
        let other = KeyPair::generate().unwrap();
        let mut foreign = command();
        other.sign(&mut foreign);
        assert_eq!(verify(&foreign, &trusted), Err(SignError::UnknownKey));
        let again = KeyPair::from_secret_base64(&pair.secret_base64()).unwrap();
        assert_eq!(again.public_base64(), pair.public_base64());
    }
}
