//! `/etc/osprey/collector.yaml`: read, defaulted and validated at load.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("{path}: {field}: {problem}")]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
    },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Host name in subjects and findings (default: the system host name).
    pub host: Option<String>,
    pub nats: NatsSection,
    pub output: OutputSection,
    pub spool: SpoolSection,
    pub sensor: SensorSection,
    pub process_table: ProcessTableSection,
    pub heuristics: HeuristicsSection,
    /// Seconds between heartbeats.
    pub heartbeat_interval_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    /// `None` disables NATS (use `output.jsonl`).
    pub url: Option<String>,
    /// A `.creds` file (JWT + NKey seed) for deployments with per-host accounts.
    pub credentials: Option<PathBuf>,
    /// Publish every event on `osprey.events.<host>.<kind>`.
    pub publish_events: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
    /// Print findings (and events, see `jsonl_events`) as JSON lines on stdout.
    pub jsonl: bool,
    pub jsonl_events: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSection {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub max_findings: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SensorSection {
    /// Kernel→collector ring buffer, bytes (a power of two, at least one page).
    pub ring_buffer_bytes: u32,
    /// How long a connect waits for its outcome before it is reported as pending.
    pub connect_outcome_wait_ms: u64,
    /// cgroup v2 mount to attach the connect hooks to (autodetected when absent).
    pub cgroup_root: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessTableSection {
    pub capacity: usize,
    pub reconcile_interval_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeuristicsSection {
    pub enabled: bool,
    /// Executables under these directories are exempt.
    pub safe_paths: Vec<PathBuf>,
    /// Executables (full paths) that are exempt.
    pub ignored_executables: Vec<PathBuf>,
    /// Destinations that count as local (not "internet"); CIDR notation.
    pub local_networks: Vec<String>,
    /// Executable names (or name prefixes ending in `*`) that count as script engines.
    pub script_engines: Vec<String>,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            host: None,
            nats: NatsSection::default(),
            output: OutputSection::default(),
            spool: SpoolSection::default(),
            sensor: SensorSection::default(),
            process_table: ProcessTableSection::default(),
            heuristics: HeuristicsSection::default(),
            heartbeat_interval_secs: 5,
        }
    }
}

impl Default for NatsSection {
    fn default() -> Self {
        NatsSection {
            url: Some("nats://127.0.0.1:4222".into()),
            credentials: None,
            publish_events: true,
        }
    }
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection {
            dir: PathBuf::from("/var/lib/osprey/spool"),
            max_bytes: 256 * 1024 * 1024,
            max_findings: 100_000,
        }
    }
}

impl Default for SensorSection {
    fn default() -> Self {
        SensorSection {
            ring_buffer_bytes: 16 * 1024 * 1024,
            connect_outcome_wait_ms: 1000,
            cgroup_root: None,
        }
    }
}

impl Default for ProcessTableSection {
    fn default() -> Self {
        ProcessTableSection { capacity: 65_536, reconcile_interval_secs: 30 }
    }
}

/// The script engines of DESIGN.md: interpreters an attacker reaches for first.
pub const DEFAULT_SCRIPT_ENGINES: &[&str] = &[
    "python*", "perl*", "ruby*", "node", "nodejs", "php*", "bash", "sh", "dash", "zsh", "ksh",
    "pwsh", "powershell", "powershell.exe", "pwsh.exe", "cmd.exe",
];

impl Default for HeuristicsSection {
    fn default() -> Self {
        HeuristicsSection {
            enabled: true,
            safe_paths: Vec::new(),
            ignored_executables: Vec::new(),
            local_networks: ["127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10"]
                .map(String::from)
                .to_vec(),
            script_engines: DEFAULT_SCRIPT_ENGINES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl CollectorConfig {
    /// Reads `path`; a missing file at the default location means "all defaults".
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::default());
            }
            Err(source) => return Err(ConfigError::Read { path: path.to_path_buf(), source }),
        };
        let config: CollectorConfig = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_yaml::from_str(&text)
                .map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })?
        };
        config.validate(path)?;
        Ok(config)
    }

    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field: field.to_string(),
            problem,
        };
        let ring = self.sensor.ring_buffer_bytes;
        if !ring.is_power_of_two() || ring < 4096 {
            return Err(invalid(
                "sensor.ring_buffer_bytes",
                format!("{ring} must be a power of two of at least 4096"),
            ));
        }
        self.local_networks().map_err(|p| invalid("heuristics.local_networks", p))?;
        if self.spool.max_findings == 0 {
            return Err(invalid("spool.max_findings", "must be at least 1".into()));
        }
        if self.heartbeat_interval_secs == 0 {
            return Err(invalid("heartbeat_interval_secs", "must be at least 1".into()));
        }
        if self.process_table.capacity < 16 {
            return Err(invalid("process_table.capacity", "must be at least 16".into()));
        }
        if self.nats.url.is_none() && !self.output.jsonl {
            return Err(invalid(
                "nats.url",
                "no output: set a NATS URL or enable output.jsonl".into(),
            ));
        }
        Ok(())
    }

    pub fn local_networks(&self) -> Result<Vec<IpNet>, String> {
        self.heuristics
            .local_networks
            .iter()
            .map(|s| s.parse::<IpNet>().map_err(|e| format!("{s:?} is not a CIDR: {e}")))
            .collect()
    }

    pub fn connect_outcome_wait(&self) -> Duration {
        Duration::from_millis(self.sensor.connect_outcome_wait_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CollectorConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collector.yaml");
        std::fs::write(&path, text).unwrap();
        CollectorConfig::load(&path, true)
    }

    #[test]
    fn defaults_and_overrides() {
        let c = parse("heuristics:\n  local_networks: []\nsensor:\n  ring_buffer_bytes: 8192\n").unwrap();
        assert!(c.local_networks().unwrap().is_empty());
        assert_eq!(c.sensor.ring_buffer_bytes, 8192);
        assert_eq!(c.nats.url.as_deref(), Some("nats://127.0.0.1:4222"));
    }

    #[test]
    fn errors_name_the_field_and_the_line() {
        let e = parse("sensor:\n  ring_buffer_bytes: 5000\n").unwrap_err().to_string();
        assert!(e.contains("sensor.ring_buffer_bytes") && e.contains("5000"), "{e}");
        let e = parse("heuristics:\n  local_networks: [\"10.0.0.0/33\"]\n").unwrap_err().to_string();
        assert!(e.contains("heuristics.local_networks"), "{e}");
        let e = parse("nats:\n  url: x\n  colour: red\n").unwrap_err().to_string();
        assert!(e.contains("colour") && e.contains("line 3"), "{e}");
    }
}
