//! Who is calling: users from the configuration (argon2 password hashes) who log in for a
//! session cookie (HttpOnly, SameSite=Strict) with a CSRF token, or API clients with a bearer
//! token (stored as its SHA-256). Sessions live in memory: a restarted console asks everyone
//! to log in again.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::{ConsoleConfig, Role};

pub const SESSION_COOKIE: &str = "osprey_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Failed logins per user name within [`FAILURE_WINDOW`] before further attempts are refused.
const MAX_FAILURES: usize = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// An authenticated caller of the API.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// The session's CSRF token; `None` for bearer tokens, which browsers never send on
    /// their own, so they need none.
    pub csrf: Option<String>,
}

#[derive(Clone, Debug)]
struct Session {
    name: String,
    role: Role,
    csrf: String,
    expires: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("wrong user name or password")]
    Wrong,
    #[error("too many failed logins for this user; try again in {0} s")]
    Throttled(u64),
}

pub struct Auth {
    users: HashMap<String, (String, Role)>,
    /// SHA-256 (hex, lower case) → (name, role).
    tokens: HashMap<String, (String, Role)>,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
    ttl: Duration,
    /// Verified for unknown user names, so a wrong name takes as long as a wrong password.
    dummy_hash: String,
}

/// A new session: the cookie value and the CSRF token the page must send back.
pub struct NewSession {
    pub id: String,
    pub csrf: String,
    pub role: Role,
    pub ttl: Duration,
}

impl Auth {
    pub fn new(config: &ConsoleConfig) -> Auth {
        Auth {
            users: config
                .users
                .iter()
                .map(|u| (u.name.clone(), (u.password_hash.clone(), u.role)))
                .collect(),
            tokens: config
                .tokens
                .iter()
                .map(|t| {
                    (
                        t.sha256.trim().to_ascii_lowercase(),
                        (t.name.clone(), t.role),
                    )
                })
                .collect(),
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            ttl: Duration::from_secs(config.session_ttl_secs),
            dummy_hash: hash_password("not a password").unwrap_or_default(),
        }
    }

    /// Checks a password (argon2 runs on a blocking thread) and opens a session.
    pub async fn login(&self, name: &str, password: &str) -> Result<NewSession, LoginError> {
        if let Some(wait) = self.throttled(name) {
            return Err(LoginError::Throttled(wait.as_secs().max(1)));
        }
        let (hash, role, known) = match self.users.get(name) {
            Some((hash, role)) => (hash.clone(), *role, true),
            None => (self.dummy_hash.clone(), Role::Viewer, false),
        };
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        if !(ok && known) {
            self.failed(name);
            return Err(LoginError::Wrong);
        }
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let session = Session {
            name: name.to_string(),
            role,
            csrf: random_hex(),
            expires: Instant::now() + self.ttl,
        };
        let id = random_hex();
        let csrf = session.csrf.clone();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(id.clone(), session);
        Ok(NewSession {
            id,
            csrf,
            role,
            ttl: self.ttl,
        })
    }

    pub fn logout(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            self.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
    }

    /// The caller a request carries: a bearer token, else a live session cookie.
    pub fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        if let Some(token) = bearer(headers) {
            let digest = sha256_hex(token.as_bytes());
            return self.tokens.get(&digest).map(|(name, role)| Caller {
                name: name.clone(),
                role: *role,
                csrf: None,
            });
        }
        let id = cookie(headers, SESSION_COOKIE)?;
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let s = sessions.get(&id)?;
        (s.expires > Instant::now()).then(|| Caller {
            name: s.name.clone(),
            role: s.role,
            csrf: Some(s.csrf.clone()),
        })
    }

    fn throttled(&self, name: &str) -> Option<Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let list = failures.get_mut(name)?;
        while list.front().is_some_and(|t| t.elapsed() > FAILURE_WINDOW) {
            list.pop_front();
        }
        (list.len() >= MAX_FAILURES)
            .then(|| {
                list.front()
                    .map(|t| FAILURE_WINDOW.saturating_sub(t.elapsed()))
            })
            .flatten()
    }

    fn failed(&self, name: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: names nobody logs in with must not grow the map without end.
        if failures.len() > 10_000 {
            failures.retain(|_, l| l.back().is_some_and(|t| t.elapsed() < FAILURE_WINDOW));
        }
        failures
            .entry(name.to_string())
            .or_default()
            .push_back(Instant::now());
    }
}

/// The CSRF check for a state change: sessions must send their token in `X-CSRF-Token`.
pub fn csrf_ok(caller: &Caller, headers: &HeaderMap) -> bool {
    match &caller.csrf {
        None => true,
        Some(expected) => headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|sent| constant_time_eq(sent.as_bytes(), expected.as_bytes())),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// An argon2id PHC string for `password` (default parameters, random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks that `hash` is an argon2 PHC string (`$argon2id$v=19$...`).
pub fn check_password_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("not a PHC string: {e}"))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "algorithm {} is not argon2 (use `osprey-console hash-password`)",
            parsed.algorithm
        ));
    }
    Ok(())
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 32 random bytes as hex: session ids, CSRF tokens, API tokens.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::getrandom(&mut bytes).is_err() {
        // Without randomness no secret can be made: fail closed with an unusable value.
        return String::new();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Token, User};

    fn config() -> ConsoleConfig {
        ConsoleConfig {
            users: vec![User {
                name: "alice".into(),
                password_hash: hash_password("s3cret").unwrap(),
                role: Role::Operator,
            }],
            tokens: vec![Token {
                name: "ci".into(),
                sha256: sha256_hex(b"tok"),
                role: Role::Viewer,
            }],
            ..ConsoleConfig::default()
        }
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[tokio::test]
    async fn passwords_sessions_tokens_and_csrf() {
        let auth = Auth::new(&config());
        assert!(matches!(
            auth.login("alice", "wrong").await,
            Err(LoginError::Wrong)
        ));
        assert!(matches!(
            auth.login("nobody", "s3cret").await,
            Err(LoginError::Wrong)
        ));
        let s = auth.login("alice", "s3cret").await.unwrap();
        let h = headers(&[("cookie", format!("a=b; {SESSION_COOKIE}={}", s.id))]);
        let caller = auth.caller(&h).unwrap();
        assert_eq!(caller.name, "alice");
        assert!(!csrf_ok(&caller, &h));
        let with_csrf = headers(&[
            ("cookie", format!("{SESSION_COOKIE}={}", s.id)),
            (CSRF_HEADER, s.csrf.clone()),
        ]);
        assert!(csrf_ok(&caller, &with_csrf));
        let t = auth
            .caller(&headers(&[("authorization", "Bearer tok".into())]))
            .unwrap();
        assert_eq!((t.name.as_str(), t.role), ("ci", Role::Viewer));
        assert!(csrf_ok(&t, &HeaderMap::new()));
        assert!(auth
            .caller(&headers(&[("authorization", "Bearer nope".into())]))
            .is_none());
        auth.logout(&h);
        assert!(auth.caller(&h).is_none());
    }

    #[tokio::test]
    async fn repeated_failures_are_throttled() {
        let auth = Auth::new(&config());
        for _ in 0..MAX_FAILURES {
            let _ = auth.login("alice", "wrong").await;
        }
        assert!(matches!(
            auth.login("alice", "s3cret").await,
            Err(LoginError::Throttled(_))
        ));
    }
}
