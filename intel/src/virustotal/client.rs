//! VirusTotal API v3 over HTTP: file reports, uploads, analyses. Blocking (ureq): it runs on
//! the intel HTTP thread only.
//!
//! The key travels in the `x-apikey` header and nowhere else; ureq's own logging redacts
//! every header that is not on its short list of harmless ones.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;
use ureq::http::{header::RETRY_AFTER, HeaderMap, Response};

use crate::{verdict::Counts, ApiKey, Sha256, VirusTotalConfig};

/// Largest JSON answer read (a file object with every engine's result is ~100 KiB).
const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;
/// A server cannot make us wait longer than this with `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Why a request did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("VirusTotal rate limit (HTTP 429{})", retry_note(.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    #[error("VirusTotal server error (HTTP {status}{})", retry_note(.retry_after))]
    Server {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("VirusTotal refused the API key (HTTP {status}): {message}")]
    Unauthorized { status: u16, message: String },
    #[error("cannot reach VirusTotal at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("unexpected answer from VirusTotal (HTTP {status}): {problem}")]
    Unexpected { status: u16, problem: String },
}

fn retry_note(retry_after: &Option<Duration>) -> String {
    retry_after.map_or(String::new(), |d| format!(", retry after {}s", d.as_secs()))
}

impl ApiError {
    /// Worth retrying unchanged later (the server or the way to it is the problem).
    pub fn is_transient(&self) -> bool {
        !matches!(self, ApiError::Unexpected { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after } | ApiError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// What VirusTotal knows about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileReport {
    Known(Counts),
    Unknown,
}

/// Where an upload's analysis is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalysisState {
    Running,
    Completed(Counts),
}

pub struct Client {
    agent: ureq::Agent,
    key: ApiKey,
    config: VirusTotalConfig,
}

impl Client {
    pub fn new(config: &VirusTotalConfig, key: ApiKey) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The key header must never follow a redirect to another host.
            .max_redirects(0)
            .timeout_global(Some(config.timeout))
            .user_agent(concat!("osprey-intel/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client {
            agent,
            key,
            config: config.clone(),
        }
    }

    /// `GET /api/v3/files/{sha256}`.
    pub fn file(&self, sha256: &Sha256) -> Result<FileReport, ApiError> {
        let url = self.config.url(&format!("/api/v3/files/{sha256}"));
        let response = self
            .agent
            .get(&url)
            .header("x-apikey", self.key.expose())
            .header("accept", "application/json")
            .call();
        let (status, body) = answer(&url, response)?;
        if status == 404 {
            return Ok(FileReport::Unknown);
        }
        let (_, attributes): (_, FileAttributes) = parse(status, &body)?;
        Ok(FileReport::Known(counts(&attributes.last_analysis_stats)))
    }

    /// `POST /api/v3/files` (multipart/form-data, one part named `file`); returns the
    /// analysis id.
    pub fn upload(&self, file_name: &str, content: &[u8]) -> Result<String, ApiError> {
        let url = self.config.url("/api/v3/files");
        let (content_type, body) = multipart(file_name, content);
        let response = self
            .agent
            .post(&url)
            .header("x-apikey", self.key.expose())
            .header("accept", "application/json")
            .header("content-type", &content_type)
            .send(&body[..]);
        let (status, body) = answer(&url, response)?;
        let (id, _): (_, serde::de::IgnoredAny) = parse(status, &body)?;
        id.ok_or_else(|| ApiError::Unexpected {
            status,
            problem: "the upload answer has no analysis id (data.id)".into(),
        })
    }

    /// `GET /api/v3/analyses/{id}`.
    pub fn analysis(&self, id: &str) -> Result<AnalysisState, ApiError> {
        // The id is base64: `/`, `+` and `=` must not change the path.
        let url = self
            .config
            .url(&format!("/api/v3/analyses/{}", path_segment(id)));
        let response = self
            .agent
            .get(&url)
            .header("x-apikey", self.key.expose())
            .header("accept", "application/json")
            .call();
        let (status, body) = answer(&url, response)?;
        let (_, attributes): (_, AnalysisAttributes) = parse(status, &body)?;
        Ok(if attributes.status == "completed" {
            AnalysisState::Completed(counts(&attributes.stats))
        } else {
            AnalysisState::Running
        })
    }
}

#[derive(Deserialize)]
struct Document<A> {
    data: Data<A>,
}

#[derive(Deserialize)]
struct Data<A> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default = "Option::default")]
    attributes: Option<A>,
}

#[derive(Default, Deserialize)]
struct FileAttributes {
    #[serde(default)]
    last_analysis_stats: BTreeMap<String, u32>,
}

#[derive(Default, Deserialize)]
struct AnalysisAttributes {
    #[serde(default)]
    status: String,
    #[serde(default)]
    stats: BTreeMap<String, u32>,
}

/// VirusTotal's engine categories; `engines` counts every category, including `timeout`,
/// `failure` and `type-unsupported`.
fn counts(stats: &BTreeMap<String, u32>) -> Counts {
    let get = |name: &str| stats.get(name).copied().unwrap_or(0);
    Counts {
        malicious: get("malicious"),
        suspicious: get("suspicious"),
        harmless: get("harmless"),
        undetected: get("undetected"),
        engines: stats.values().fold(0u32, |sum, n| sum.saturating_add(*n)),
    }
}

/// The status and body of a response, or the error it stands for. 404 is an answer (the
/// caller decides what it means).
fn answer(
    url: &str,
    response: Result<Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, String), ApiError> {
    let mut response = response.map_err(|e| ApiError::Unreachable {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_string()
        .map_err(|e| ApiError::Unreachable {
            url: url.to_string(),
            reason: format!("reading the answer: {e}"),
        })?;
    match status {
        200..=299 | 404 => Ok((status, body)),
        429 => Err(ApiError::RateLimited { retry_after }),
        401 | 403 => Err(ApiError::Unauthorized {
            status,
            message: error_message(&body),
        }),
        500..=599 => Err(ApiError::Server {
            status,
            retry_after,
        }),
        _ => Err(ApiError::Unexpected {
            status,
            problem: error_message(&body),
        }),
    }
}

/// The `data` of a v3 object: its id and attributes.
fn parse<A: serde::de::DeserializeOwned + Default>(
    status: u16,
    body: &str,
) -> Result<(Option<String>, A), ApiError> {
    let document: Document<A> = serde_json::from_str(body).map_err(|e| ApiError::Unexpected {
        status,
        problem: format!("not a v3 object: {e}"),
    })?;
    Ok((
        document.data.id,
        document.data.attributes.unwrap_or_default(),
    ))
}

/// `{"error": {"code": ..., "message": ...}}`, or the start of whatever else came.
fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Wrapper {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_str::<Wrapper>(body) {
        Ok(w) => format!("{}: {}", w.error.code, w.error.message),
        Err(_) => body.chars().take(200).collect(),
    }
}

/// `Retry-After` as seconds or as an HTTP date, capped.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A single-file multipart/form-data body. The boundary is derived from the content's digest,
/// which the content cannot contain.
fn multipart(file_name: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = format!("osprey-{}", Sha256::digest(content));
    let name: String = file_name
        .chars()
        .map(|c| {
            if c.is_control() || c == '"' || c == '\\' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let mut body = Vec::with_capacity(content.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Percent-encodes everything but unreserved characters.
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_counts_sum_every_category() {
        let stats: BTreeMap<String, u32> = serde_json::from_str(
            r#"{"harmless":0,"type-unsupported":4,"suspicious":1,"confirmed-timeout":0,
                "timeout":2,"failure":1,"malicious":5,"undetected":60}"#,
        )
        .unwrap();
        let c = counts(&stats);
        assert_eq!(
            (c.malicious, c.suspicious, c.undetected, c.engines),
            (5, 1, 60, 73)
        );
    }

    #[test]
    fn errors_say_what_the_server_said() {
        let body = r#"{"error":{"code":"WrongCredentialsError","message":"Wrong API key"}}"#;
        assert_eq!(error_message(body), "WrongCredentialsError: Wrong API key");
        assert_eq!(path_segment("YWJj+/=="), "YWJj%2B%2F%3D%3D");
    }
}
