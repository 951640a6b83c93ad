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
        source: yaml_serde::Error,
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
    /// The policy file (docs/policy.md): site rules and the built-in heuristics' settings.
    /// Hot-reloaded on change and on SIGHUP.
    pub policy: Option<PathBuf>,
    /// Sigma rule files or directories (searched recursively for `*.yml` / `*.yaml`).
    /// Hot-reloaded like the policy.
    pub sigma: Vec<PathBuf>,
    /// Seconds between CPU and resident-memory samples: of every live process while a loaded
    /// policy rule looks at memory (`rss_above_mb`), else of the processes with network
    /// activity or findings (host state queries show them). Formerly
    /// `memory_sample_interval_secs`, still accepted.
    #[serde(alias = "memory_sample_interval_secs")]
    pub resource_sample_interval_secs: u64,
    /// Host state queries on `osprey.query.<host>` (`osprey ps`, `osprey top`).
    pub query: QuerySection,
    /// The actuator: signed commands on `osprey.cmd.<host>` (docs/responder.md).
    pub actuator: ActuatorSection,
    /// Threat intelligence: VirusTotal lookups and offline feeds (docs/intel.md).
    pub intel: intel::IntelConfig,
    /// Who acts on the actions findings recommend (docs/responder.md).
    pub response: ResponseSection,
    /// The host's behaviour history, learned baselines and anomaly scoring (docs/history.md).
    pub history: history::HistoryConfig,
    /// Where to serve Prometheus `/metrics` (docs/metrics.md); off when absent.
    pub metrics_address: Option<std::net::SocketAddr>,
}

/// Who acts on findings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    /// Findings go to NATS; the responder decides and sends signed commands.
    #[default]
    Responder,
    /// This host runs the actions its policy recommends itself, through the actuator's
    /// safety controls, rate limits and audit: no NATS, responder or keys needed.
    Local,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseSection {
    pub mode: ResponseMode,
    /// Local mode: decide and audit (`dry_run`), but do nothing.
    pub dry_run: bool,
    /// Local mode: only findings at least this severe are acted on.
    pub min_severity: protocol::Severity,
    /// Local mode: how long blocks, suspensions and kill-on-exec entries last (none: until
    /// undone by a command).
    pub ttl_secs: Option<u64>,
}

impl Default for ResponseSection {
    fn default() -> Self {
        ResponseSection {
            mode: ResponseMode::Responder,
            dry_run: false,
            min_severity: protocol::Severity::Info,
            ttl_secs: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuerySection {
    /// Answer `osprey.query.<host>` (needs NATS; who may ask is set in the NATS server's
    /// permissions).
    pub enabled: bool,
    /// Processes whose connections, findings and CPU/RSS samples are kept for queries (the
    /// least recently active beyond this are forgotten, and counted).
    pub tracked_processes: usize,
}

impl Default for QuerySection {
    fn default() -> Self {
        QuerySection {
            enabled: true,
            tracked_processes: 4096,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActuatorSection {
    /// Serve `osprey.cmd.<host>` (needs NATS). Without trusted keys every command is refused.
    pub enabled: bool,
    /// Public keys (base64, as `osprey keys generate` writes them) whose commands are obeyed.
    pub trusted_keys: Vec<String>,
    /// Files holding one such public key each.
    pub trusted_key_files: Vec<PathBuf>,
    /// TTL state (active blocks, suspensions, kill-on-exec entries); survives restarts.
    pub state_dir: PathBuf,
    /// JSON lines, one per handled command (also published on `osprey.audit.<host>`).
    pub audit_file: PathBuf,
    pub quarantine_dir: PathBuf,
    pub dump_dir: PathBuf,
    /// Largest memory dump, bytes.
    pub dump_max_bytes: u64,
    /// Executables (paths; compared by device and inode too) no command may touch, on top
    /// of pid 1, the collector, nats-server, sshd and osprey-responder.
    pub protected_executables: Vec<PathBuf>,
    /// Destinations (CIDRs) that are never blocked, on top of the NATS servers.
    pub protected_networks: Vec<String>,
    /// Commands older (or further in the future) than this are refused as stale or replayed.
    pub command_window_secs: u64,
    /// Actions per kind per hour this host accepts (0: no limit).
    pub max_actions_per_hour: u32,
    /// The widest block accepted, as the shortest prefix: a block of a /8 is refused when
    /// this is 24 (the whole address space, the IPv4-mapped range and any range covering the
    /// NATS servers, resolvers or default gateways are always refused).
    pub block_min_prefix_v4: u8,
    pub block_min_prefix_v6: u8,
    /// resolv.conf-style files whose `nameserver`s are never blocked.
    pub resolver_files: Vec<PathBuf>,
    /// Allow kill-on-exec and quarantine of interpreters and shells (the heuristics'
    /// `script_engines`): off, because that takes them away from every script on the host.
    pub allow_interpreters: bool,
    /// A file to quarantine that has other hard links: `refuse` (default) or `allow`.
    pub quarantine_hard_links: HardLinks,
    /// Longest a memory dump may run, seconds; what is left is skipped and reported.
    pub dump_timeout_secs: u64,
}

impl Default for ActuatorSection {
    fn default() -> Self {
        ActuatorSection {
            enabled: true,
            trusted_keys: Vec::new(),
            trusted_key_files: Vec::new(),
            state_dir: PathBuf::from("/var/lib/osprey/actuator"),
            audit_file: PathBuf::from("/var/log/osprey/actuator-audit.jsonl"),
            quarantine_dir: PathBuf::from("/var/lib/osprey/quarantine"),
            dump_dir: PathBuf::from("/var/lib/osprey/dumps"),
            dump_max_bytes: 4 * 1024 * 1024 * 1024,
            protected_executables: Vec::new(),
            protected_networks: Vec::new(),
            command_window_secs: 60,
            max_actions_per_hour: 0,
            block_min_prefix_v4: 24,
            block_min_prefix_v6: 64,
            resolver_files: vec![
                PathBuf::from("/etc/resolv.conf"),
                PathBuf::from("/run/systemd/resolve/resolv.conf"),
            ],
            allow_interpreters: false,
            quarantine_hard_links: HardLinks::Refuse,
            dump_timeout_secs: 300,
        }
    }
}

/// What to do with a file to quarantine that has other names (hard links).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HardLinks {
    /// Refuse: the other names would keep the file, and its mode change would hit them too
    /// (a hard link to a system binary must never take the binary down).
    #[default]
    Refuse,
    /// Quarantine this name anyway; the record counts the others.
    Allow,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    /// `None` disables NATS (use `output.jsonl`).
    pub url: Option<String>,
    /// This host's NKey seed (`osprey creds host NAME`) or a `.creds` file (JWT + seed).
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
    /// Sync each spooled finding to disk before going on (survives power loss, not only a
    /// crash of the collector; costs a disk flush per finding).
    pub fsync: bool,
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
    /// bpffs directory where enforcement is pinned, so blocks and kill-on-exec keep working
    /// while the collector restarts (removed when it stops with nothing enforced).
    pub pin_dir: PathBuf,
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
            policy: None,
            sigma: Vec::new(),
            resource_sample_interval_secs: 5,
            query: QuerySection::default(),
            actuator: ActuatorSection::default(),
            intel: intel::IntelConfig::default(),
            response: ResponseSection::default(),
            history: history::HistoryConfig::default(),
            metrics_address: None,
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
            fsync: false,
        }
    }
}

impl Default for SensorSection {
    fn default() -> Self {
        SensorSection {
            // The ring is mapped twice (for wrap-around reads), so this costs twice its size in
            // resident memory; 8 MiB still holds ~3,000 exec records if the reader stalls.
            ring_buffer_bytes: 8 * 1024 * 1024,
            connect_outcome_wait_ms: 1000,
            cgroup_root: None,
            pin_dir: PathBuf::from("/sys/fs/bpf/osprey"),
        }
    }
}

impl Default for ProcessTableSection {
    fn default() -> Self {
        ProcessTableSection {
            capacity: 65_536,
            reconcile_interval_secs: 30,
        }
    }
}

/// The script engines of DESIGN.md: interpreters an attacker reaches for first.
pub const DEFAULT_SCRIPT_ENGINES: &[&str] = &[
    "python*",
    "perl*",
    "ruby*",
    "node",
    "nodejs",
    "php*",
    "bash",
    "sh",
    "dash",
    "zsh",
    "ksh",
    "pwsh",
    "powershell",
    "powershell.exe",
    "pwsh.exe",
    "cmd.exe",
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
            script_engines: DEFAULT_SCRIPT_ENGINES
                .iter()
                .map(|s| s.to_string())
                .collect(),
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
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let config: CollectorConfig = if text.trim().is_empty() {
            Self::default()
        } else {
            yaml_serde::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?
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
        self.local_networks()
            .map_err(|p| invalid("heuristics.local_networks", p))?;
        // bpffs refuses to create anything whose name has a dot in it.
        if let Some(name) = self
            .sensor
            .pin_dir
            .file_name()
            .filter(|n| n.to_string_lossy().contains('.'))
        {
            return Err(invalid(
                "sensor.pin_dir",
                format!(
                    "{:?}: bpffs refuses names with a dot",
                    name.to_string_lossy()
                ),
            ));
        }
        if self.spool.max_findings == 0 {
            return Err(invalid("spool.max_findings", "must be at least 1".into()));
        }
        if self.heartbeat_interval_secs == 0 {
            return Err(invalid(
                "heartbeat_interval_secs",
                "must be at least 1".into(),
            ));
        }
        if self.resource_sample_interval_secs == 0 {
            return Err(invalid(
                "resource_sample_interval_secs",
                "must be at least 1".into(),
            ));
        }
        if self
            .policy
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid(
                "policy",
                "is an empty path (leave it out for no policy)".into(),
            ));
        }
        if let Some(i) = self.sigma.iter().position(|p| p.as_os_str().is_empty()) {
            return Err(invalid(&format!("sigma[{i}]"), "is an empty path".into()));
        }
        for (i, key) in self.actuator.trusted_keys.iter().enumerate() {
            protocol::signing::PublicKey::from_base64(key)
                .map_err(|e| invalid(&format!("actuator.trusted_keys[{i}]"), e.to_string()))?;
        }
        for (i, net) in self.actuator.protected_networks.iter().enumerate() {
            net.parse::<IpNet>().map_err(|e| {
                invalid(
                    &format!("actuator.protected_networks[{i}]"),
                    format!("{net:?} is not a CIDR: {e}"),
                )
            })?;
        }
        if self.actuator.command_window_secs == 0 {
            return Err(invalid(
                "actuator.command_window_secs",
                "must be at least 1".into(),
            ));
        }
        if self.query.tracked_processes == 0 {
            return Err(invalid(
                "query.tracked_processes",
                "must be at least 1".into(),
            ));
        }
        if self.process_table.capacity < 16 {
            return Err(invalid(
                "process_table.capacity",
                "must be at least 16".into(),
            ));
        }
        let local = self.response.mode == ResponseMode::Local;
        if self.nats.url.is_none() && !self.output.jsonl && !local {
            return Err(invalid(
                "nats.url",
                "no output: set a NATS URL, enable output.jsonl or use response.mode: local".into(),
            ));
        }
        if local && !self.actuator.enabled {
            return Err(invalid(
                "response.mode",
                "local response acts through the actuator: actuator.enabled must be true".into(),
            ));
        }
        self.intel.validate().map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            field: format!("intel.{}", e.field),
            problem: e.problem,
        })?;
        if self.history.enabled {
            self.history.validate().map_err(|e| ConfigError::Invalid {
                path: path.to_path_buf(),
                field: format!("history.{}", e.key),
                problem: e.problem,
            })?;
        }
        Ok(())
    }

    /// The verdict cache's file: the history database when the history is on (one file
    /// per host), else `intel.cache`.
    pub fn intel_cache(&self) -> &Path {
        if self.history.enabled {
            &self.history.path
        } else {
            &self.intel.cache
        }
    }

    pub fn local_networks(&self) -> Result<Vec<IpNet>, String> {
        self.heuristics
            .local_networks
            .iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .map(protocol::net::canonical_net)
                    .map_err(|e| format!("{s:?} is not a CIDR: {e}"))
            })
            .collect()
    }

    pub fn resource_sample_interval(&self) -> Duration {
        Duration::from_secs(self.resource_sample_interval_secs)
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
        let c = parse("heuristics:\n  local_networks: []\nsensor:\n  ring_buffer_bytes: 8192\n")
            .unwrap();
        assert!(c.local_networks().unwrap().is_empty());
        assert_eq!(c.sensor.ring_buffer_bytes, 8192);
        assert_eq!(c.nats.url.as_deref(), Some("nats://127.0.0.1:4222"));
    }

    #[test]
    fn errors_name_the_field_and_the_line() {
        let e = parse("sensor:\n  ring_buffer_bytes: 5000\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sensor.ring_buffer_bytes") && e.contains("5000"),
            "{e}"
        );
        let e = parse("heuristics:\n  local_networks: [\"10.0.0.0/33\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("heuristics.local_networks"), "{e}");
        let e = parse("nats:\n  url: x\n  colour: red\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn the_example_config_loads_with_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/collector.yaml");
        let c = CollectorConfig::load(&path, true).unwrap();
        assert_eq!((c.policy, c.sigma.len()), (None, 0));
        assert_eq!(
            c.resource_sample_interval_secs,
            CollectorConfig::default().resource_sample_interval_secs
        );
    }

    #[test]
    fn rule_paths_and_memory_sampling() {
        let c = parse("policy: /etc/osprey/policy.yaml\nsigma: [/etc/osprey/sigma, /opt/x.yml]\n")
            .unwrap();
        assert_eq!(
            c.policy.as_deref(),
            Some(Path::new("/etc/osprey/policy.yaml"))
        );
        assert_eq!(
            c.sigma,
            [
                PathBuf::from("/etc/osprey/sigma"),
                PathBuf::from("/opt/x.yml")
            ]
        );
        assert_eq!(c.resource_sample_interval(), Duration::from_secs(5));
        let e = parse("memory_sample_interval_secs: 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("resource_sample_interval_secs"), "{e}");
        let c = parse("memory_sample_interval_secs: 7\n").unwrap();
        assert_eq!(c.resource_sample_interval(), Duration::from_secs(7));
        let e = parse("sigma: [/a, \"\"]\n").unwrap_err().to_string();
        assert!(e.contains("sigma[1]"), "{e}");
        let e = parse("sigma: /a\n").unwrap_err().to_string();
        assert!(e.contains("sigma") && e.contains("line 1"), "{e}");
    }
}
