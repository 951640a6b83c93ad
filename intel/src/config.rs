//! The `intel:` section of collector.yaml: VirusTotal, offline feeds, the verdict cache.
//! Every key has a default (docs/intel.md); [`IntelConfig::validate`] checks what serde cannot.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{ApiKey, FeedKind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("intel.{field}: {problem}")]
pub struct ConfigError {
    /// The key, as a path below `intel` (`virustotal.per_minute`, `feeds[2].url`).
    pub field: String,
    pub problem: String,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        problem: problem.into(),
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntelConfig {
    /// VirusTotal lookups of executables' hashes; absent: no lookups.
    pub virustotal: Option<VirusTotalConfig>,
    /// Offline IP/CIDR and SHA-256 lists.
    pub feeds: Vec<FeedConfig>,
    /// The SQLite file holding the verdict cache (table `intel_verdicts`), when the host's
    /// history store is off; with history on, the collector passes the history database.
    pub cache: PathBuf,
    /// Where the last good copy of each URL feed is kept, so a restart without network
    /// still has it.
    pub feeds_dir: PathBuf,
}

impl Default for IntelConfig {
    fn default() -> Self {
        IntelConfig {
            virustotal: None,
            feeds: Vec::new(),
            cache: PathBuf::from("/var/lib/osprey/intel.db"),
            feeds_dir: PathBuf::from("/var/lib/osprey/feeds"),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VirusTotalConfig {
    /// The key itself. Prefer `api_key_env`: a key in a file is one more copy to protect.
    pub api_key: Option<ApiKey>,
    /// The environment variable holding the key, read when `api_key` is absent.
    pub api_key_env: String,
    /// Scheme, host and optional port (tests point it at a local stand-in).
    pub base_url: String,
    /// Requests (lookups, uploads, analysis polls) per `minute_window`.
    pub per_minute: u32,
    /// Requests per `day_window`.
    pub per_day: u32,
    #[serde(with = "span")]
    pub minute_window: Duration,
    #[serde(with = "span")]
    pub day_window: Duration,
    /// How long a verdict about a file VirusTotal knows stays fresh in the cache.
    #[serde(with = "span")]
    pub ttl_known: Duration,
    /// How long "VirusTotal does not know this file" stays fresh.
    #[serde(with = "span")]
    pub ttl_unknown: Duration,
    /// First wait after a 429, a 5xx or an unreachable server; doubled per failure in a row
    /// up to `retry_max`. A `Retry-After` header overrides it.
    #[serde(with = "span")]
    pub retry_initial: Duration,
    #[serde(with = "span")]
    pub retry_max: Duration,
    /// One request, connect to last byte.
    #[serde(with = "span")]
    pub timeout: Duration,
    /// Distinct hashes waiting for a lookup at most; beyond, requests are refused and counted.
    pub max_pending: usize,
    pub upload: UploadConfig,
}

impl Default for VirusTotalConfig {
    fn default() -> Self {
        VirusTotalConfig {
            api_key: None,
            api_key_env: "VT_API_KEY".into(),
            base_url: "https://www.virustotal.com".into(),
            // The public API's quota.
            per_minute: 4,
            per_day: 500,
            minute_window: Duration::from_secs(60),
            day_window: Duration::from_secs(24 * 3600),
            ttl_known: Duration::from_secs(7 * 24 * 3600),
            ttl_unknown: Duration::from_secs(24 * 3600),
            retry_initial: Duration::from_secs(2),
            retry_max: Duration::from_secs(10 * 60),
            timeout: Duration::from_secs(30),
            max_pending: 10_000,
            upload: UploadConfig::default(),
        }
    }
}

/// Uploading executables VirusTotal does not know. Off by default: an upload shares the file
/// with VirusTotal's community.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    pub enabled: bool,
    /// Larger files are not uploaded. At most 32 MiB (VirusTotal's limit for a direct upload).
    pub max_bytes: u64,
    /// Files under these directories are never uploaded (the collector adds its safe paths).
    pub exclude: Vec<PathBuf>,
    /// Between two polls of an upload's analysis.
    #[serde(with = "span")]
    pub poll_interval: Duration,
    /// An analysis not completed within this is given up (the file stays "unknown").
    #[serde(with = "span")]
    pub poll_timeout: Duration,
}

/// VirusTotal refuses direct uploads above this (larger ones need an upload URL).
pub const MAX_UPLOAD_BYTES: u64 = 32 * 1024 * 1024;

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            enabled: false,
            max_bytes: MAX_UPLOAD_BYTES,
            exclude: Vec::new(),
            poll_interval: Duration::from_secs(60),
            poll_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// One offline list.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Named in findings; letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// A local file (re-read when it changes) ...
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// ... or an HTTP(S) URL (downloaded every `refresh`).
    #[serde(default)]
    pub url: Option<String>,
    pub kind: FeedKind,
    /// For a CSV of hashes: the column holding them, by header name or 1-based number.
    #[serde(default)]
    pub column: Option<Column>,
    /// How often a file is checked for changes (default 10 s) or a URL downloaded
    /// (default 1 h).
    #[serde(default, with = "span::option")]
    pub refresh: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Column {
    /// 1-based.
    Number(usize),
    Name(String),
}

impl FeedConfig {
    pub fn refresh(&self) -> Duration {
        self.refresh.unwrap_or(if self.url.is_some() {
            Duration::from_secs(3600)
        } else {
            Duration::from_secs(10)
        })
    }
}

impl IntelConfig {
    /// Everything serde cannot check, named by key. Reads the API key's environment
    /// variable: a configured VirusTotal section without a key is an error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(vt) = &self.virustotal {
            vt.validate()?;
        }
        if self.virustotal.is_some() && self.cache.as_os_str().is_empty() {
            return Err(invalid("cache", "is an empty path"));
        }
        let mut names = HashSet::new();
        for (i, feed) in self.feeds.iter().enumerate() {
            feed.validate(&format!("feeds[{i}]"))?;
            if !names.insert(feed.name.as_str()) {
                return Err(invalid(
                    format!("feeds[{i}].name"),
                    format!("{:?} names two feeds", feed.name),
                ));
            }
        }
        if self.feeds.iter().any(|f| f.url.is_some()) && self.feeds_dir.as_os_str().is_empty() {
            return Err(invalid("feeds_dir", "is an empty path"));
        }
        Ok(())
    }
}

impl VirusTotalConfig {
    /// The key from `api_key`, else from the variable `api_key_env` names.
    pub fn api_key(&self) -> Result<ApiKey, ConfigError> {
        let key = match &self.api_key {
            Some(key) => key.clone(),
            None => match std::env::var(&self.api_key_env) {
                Ok(value) => ApiKey::new(value),
                Err(_) => {
                    return Err(invalid(
                        "virustotal.api_key",
                        format!(
                            "no API key: set api_key, or the environment variable {} \
                             (api_key_env)",
                            self.api_key_env
                        ),
                    ))
                }
            },
        };
        if key.is_empty() {
            return Err(invalid("virustotal.api_key", "is empty"));
        }
        Ok(key)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.api_key()?;
        let field = |key: &str| format!("virustotal.{key}");
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(invalid(
                field("base_url"),
                format!("{:?} is not an http(s) URL", self.base_url),
            ));
        }
        // A premium quota can be large, but the limiter remembers each request of the window.
        for (key, value) in [("per_minute", self.per_minute), ("per_day", self.per_day)] {
            if !(1..=1_000_000).contains(&value) {
                return Err(invalid(
                    field(key),
                    format!("{value} is not within 1..=1000000"),
                ));
            }
        }
        for (key, value) in [
            ("minute_window", self.minute_window),
            ("day_window", self.day_window),
            ("ttl_known", self.ttl_known),
            ("ttl_unknown", self.ttl_unknown),
            ("retry_initial", self.retry_initial),
            ("timeout", self.timeout),
            ("upload.poll_interval", self.upload.poll_interval),
        ] {
            if value.is_zero() {
                return Err(invalid(field(key), "must be longer than 0"));
            }
        }
        if self.retry_max < self.retry_initial {
            return Err(invalid(
                field("retry_max"),
                "must not be shorter than retry_initial",
            ));
        }
        if self.max_pending == 0 {
            return Err(invalid(field("max_pending"), "must be at least 1"));
        }
        if self.upload.max_bytes > MAX_UPLOAD_BYTES {
            return Err(invalid(
                field("upload.max_bytes"),
                format!(
                    "{} is above VirusTotal's direct upload limit of {MAX_UPLOAD_BYTES} bytes",
                    self.upload.max_bytes
                ),
            ));
        }
        if let Some(i) = self.upload.exclude.iter().position(|p| !p.is_absolute()) {
            return Err(invalid(
                format!("virustotal.upload.exclude[{i}]"),
                format!(
                    "{} is not an absolute path",
                    self.upload.exclude[i].display()
                ),
            ));
        }
        Ok(())
    }

    /// The URL of an API path (`/api/v3/...`).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim_end_matches('/'))
    }
}

impl FeedConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let field = |key: &str| format!("{at}.{key}");
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            || self.name.starts_with('.')
        {
            return Err(invalid(
                field("name"),
                format!(
                    "{:?}: use letters, digits, '.', '_' and '-' (not first)",
                    self.name
                ),
            ));
        }
        match (&self.path, &self.url) {
            (Some(_), Some(_)) => {
                return Err(invalid(at, "give either path or url, not both"));
            }
            (None, None) => return Err(invalid(at, "needs a path or a url")),
            (Some(path), None) if path.as_os_str().is_empty() => {
                return Err(invalid(field("path"), "is an empty path"));
            }
            (None, Some(url)) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return Err(invalid(
                    field("url"),
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
            _ => {}
        }
        match (&self.column, self.kind) {
            (Some(_), FeedKind::Ip) => {
                return Err(invalid(
                    field("column"),
                    "only sha256 feeds are read as CSV",
                ))
            }
            (Some(Column::Number(0)), _) => {
                return Err(invalid(field("column"), "columns are numbered from 1"))
            }
            (Some(Column::Name(name)), _) if name.trim().is_empty() => {
                return Err(invalid(field("column"), "is an empty name"))
            }
            _ => {}
        }
        if self.refresh.is_some_and(|r| r.is_zero()) {
            return Err(invalid(field("refresh"), "must be longer than 0"));
        }
        Ok(())
    }

    /// Where the origin of this feed is, for messages: the file, or the URL.
    pub(crate) fn origin(&self) -> String {
        match (&self.path, &self.url) {
            (Some(path), _) => path.display().to_string(),
            (None, Some(url)) => url.clone(),
            (None, None) => String::new(),
        }
    }

    /// The last good download of a URL feed.
    pub(crate) fn saved_copy(&self, feeds_dir: &Path) -> PathBuf {
        feeds_dir.join(format!("{}.{}", self.name, self.kind.as_str()))
    }
}

/// Durations as humans write them (`90s`, `15m`, `7d`, `500ms`) or as a number of seconds.
mod span {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Seconds(u64),
        Human(String),
    }

    fn parse(text: Text) -> Result<Duration, String> {
        match text {
            Text::Seconds(s) => Ok(Duration::from_secs(s)),
            Text::Human(s) => humantime::parse_duration(s.trim())
                .map_err(|e| format!("{s:?} is not a duration (like 90s, 15m, 24h, 7d): {e}")),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(Text::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<Text>::deserialize(d)?
                .map(parse)
                .transpose()
                .map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<IntelConfig, String> {
        let config: IntelConfig = yaml_serde::from_str(yaml).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn defaults_are_the_public_api_quota_and_no_lookups() {
        let c = parse("{}").unwrap();
        assert!(c.virustotal.is_none() && c.feeds.is_empty());
        assert_eq!(c.cache, PathBuf::from("/var/lib/osprey/intel.db"));
        let vt = parse("virustotal:\n  api_key: k\n")
            .unwrap()
            .virustotal
            .unwrap();
        assert_eq!((vt.per_minute, vt.per_day), (4, 500));
        assert_eq!(vt.minute_window, Duration::from_secs(60));
        assert_eq!(vt.ttl_known, Duration::from_secs(7 * 86_400));
        assert_eq!(vt.ttl_unknown, Duration::from_secs(86_400));
        assert_eq!(vt.base_url, "https://www.virustotal.com");
        assert!(!vt.upload.enabled);
        assert_eq!(vt.upload.max_bytes, MAX_UPLOAD_BYTES);
    }

    #[test]
    fn every_documented_key_parses() {
        let yaml = r#"
virustotal:
  api_key: abc
  api_key_env: VT_KEY
  base_url: http://127.0.0.1:8080/
  per_minute: 1000
  per_day: 100000
  minute_window: 2s
  day_window: 1h
  ttl_known: 30d
  ttl_unknown: 12h
  retry_initial: 500ms
  retry_max: 5m
  timeout: 10
  max_pending: 50
  upload:
    enabled: true
    max_bytes: 1048576
    exclude: [/usr/bin, /usr/sbin]
    poll_interval: 30s
    poll_timeout: 15m
feeds:
  - name: firehol_level1
    path: /var/lib/osprey/feeds/firehol_level1.netset
    kind: ip
  - name: bazaar-recent
    url: https://example.org/export/csv/recent/
    kind: sha256
    column: sha256_hash
    refresh: 1h
  - name: third
    path: /etc/osprey/hashes.csv
    kind: sha256
    column: 2
cache: /var/lib/osprey/history.db
feeds_dir: /var/lib/osprey/feeds
"#;
        let c = parse(yaml).unwrap();
        let vt = c.virustotal.as_ref().unwrap();
        assert_eq!(vt.minute_window, Duration::from_secs(2));
        assert_eq!(vt.ttl_known, Duration::from_secs(30 * 86_400));
        assert_eq!(vt.retry_initial, Duration::from_millis(500));
        assert_eq!(vt.timeout, Duration::from_secs(10));
        assert_eq!(
            vt.url("/api/v3/files"),
            "http://127.0.0.1:8080/api/v3/files"
        );
        assert_eq!(c.feeds[1].column, Some(Column::Name("sha256_hash".into())));
        assert_eq!(c.feeds[2].column, Some(Column::Number(2)));
        assert_eq!(c.feeds[0].refresh(), Duration::from_secs(10));
        assert_eq!(c.feeds[1].refresh(), Duration::from_secs(3600));
    }

    #[test]
    fn mistakes_are_named_by_key() {
        let cases = [
            (
                "virustotal:\n  api_key: k\n  per_minte: 4\n",
                "unknown field `per_minte`",
            ),
            (
                "virustotal:\n  api_key: k\n  ttl_known: 7 dayz\n",
                "\"7 dayz\" is not a duration",
            ),
            (
                "virustotal:\n  api_key: \" \"\n",
                "intel.virustotal.api_key: is empty",
            ),
            (
                "virustotal:\n  api_key_env: OSPREY_TEST_UNSET_VARIABLE\n",
                "intel.virustotal.api_key: no API key: set api_key, or the environment \
                 variable OSPREY_TEST_UNSET_VARIABLE (api_key_env)",
            ),
            (
                "virustotal:\n  api_key: k\n  per_minute: 0\n",
                "intel.virustotal.per_minute: 0 is not",
            ),
            (
                "virustotal:\n  api_key: k\n  base_url: www.virustotal.com\n",
                "not an http(s) URL",
            ),
            (
                "virustotal:\n  api_key: k\n  upload:\n    max_bytes: 100000000\n",
                "intel.virustotal.upload.max_bytes: 100000000 is above",
            ),
            (
                "virustotal:\n  api_key: k\n  upload:\n    exclude: [usr/bin]\n",
                "intel.virustotal.upload.exclude[0]: usr/bin is not an absolute path",
            ),
            (
                "feeds:\n  - {name: a, kind: ip}\n",
                "intel.feeds[0]: needs a path or a url",
            ),
            (
                "feeds:\n  - {name: a, kind: ip, path: /x, url: http://y}\n",
                "intel.feeds[0]: give either path or url, not both",
            ),
            (
                "feeds:\n  - {name: a/b, kind: ip, path: /x}\n",
                "intel.feeds[0].name: \"a/b\"",
            ),
            (
                "feeds:\n  - {name: a, kind: ip, path: /x}\n  - {name: a, kind: ip, path: /y}\n",
                "intel.feeds[1].name: \"a\" names two feeds",
            ),
            (
                "feeds:\n  - {name: a, kind: ip, path: /x, column: 2}\n",
                "intel.feeds[0].column: only sha256 feeds are read as CSV",
            ),
            (
                "feeds:\n  - {name: a, kind: sha256, path: /x, column: 0}\n",
                "columns are numbered from 1",
            ),
            (
                "feeds:\n  - {name: a, kind: md5, path: /x}\n",
                "unknown variant `md5`",
            ),
            (
                "feeds:\n  - {name: a, kind: ip, url: ftp://x}\n",
                "intel.feeds[0].url: \"ftp://x\"",
            ),
        ];
        for (yaml, expected) in cases {
            let err = parse(yaml).unwrap_err();
            assert!(
                err.contains(expected),
                "{yaml}\n  gave: {err}\n  expected: {expected}"
            );
        }
    }
}
