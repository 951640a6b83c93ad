//! `HistoryConfig`: the `history:` section of collector.yaml. Every key is optional; the
//! defaults are documented in docs/history.md and in each `Default` below.

use std::path::PathBuf;

use protocol::Severity;
use serde::Deserialize;

/// Where the host's history lives by default.
pub const DEFAULT_PATH: &str = "/var/lib/osprey/history.db";

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Off: the collector does not open the history (no store, baselines or scores).
    pub enabled: bool,
    /// The SQLite file (created with its directory when missing).
    pub path: PathBuf,
    /// Records waiting for the writer thread; beyond it records are dropped and counted.
    pub queue_capacity: usize,
    /// Most records written in one transaction.
    pub batch_max: usize,
    /// How long the writer gathers records before committing a batch.
    pub batch_interval_ms: u64,
    pub retention: RetentionConfig,
    pub udp: UdpConfig,
    /// TCP connections waiting for their close record (their connect-time features are kept
    /// to score them at close); the oldest is evicted and counted beyond it.
    pub max_open_connections: usize,
    pub baseline: BaselineConfig,
    pub scoring: ScoringConfig,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Rows older than this are deleted (processes, connections, UDP flows, samples,
    /// findings). 0 = no age limit.
    pub max_age_days: u64,
    /// The file is kept under this size: the oldest rows go first. 0 = no size limit.
    pub max_size_mb: f64,
    /// How often the writer thread enforces both.
    pub check_interval_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpConfig {
    /// A flow with no datagram for this long is written (and scored) and forgotten.
    pub idle_secs: u64,
    /// Flows held in memory; the least recently active is written early and counted beyond it.
    pub max_flows: usize,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    pub enabled: bool,
    /// How long each program (and each parent, each path) learns before novelty is reported.
    pub learning_period_hours: f64,
    /// Learned entries not seen for this long are forgotten. 0 = never.
    pub expire_after_days: f64,
    /// IPv4 destinations are learned as networks of this prefix length (32 = exact address).
    pub prefix_v4: u8,
    /// IPv6 destinations are learned as networks of this prefix length (128 = exact address).
    pub prefix_v6: u8,
    /// How often changed baseline entries are written to the store.
    pub flush_interval_secs: u64,
    /// How often the writer looks for `osprey baseline accept|forget` in the store.
    pub overrides_poll_secs: u64,
    /// Programs held in memory; beyond it new programs are not learned (counted).
    pub max_identities: usize,
    /// Learned items per program, parent or path; beyond it new items are not learned (counted).
    pub max_entries_per_owner: usize,
    pub new_destination: CheckConfig,
    pub new_child: CheckConfig,
    pub changed_hash: CheckConfig,
}

/// One baseline check: on or off, and the severity of what it reports.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub severity: Severity,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    pub enabled: bool,
    /// Connections scoring above it are tagged `suspicious` and raise an `anomaly` detection.
    pub threshold: f32,
    pub severity: Severity,
    /// The built-in model is trained when the host's first learning period ends and retrained
    /// this often, on the rows of the last `training_window_days`.
    pub retrain_interval_hours: f64,
    pub training_window_days: f64,
    /// Fewer rows than this: no model yet (connections stay unscored).
    pub min_training_rows: usize,
    /// At most this many rows (the most recent) feed a training run.
    pub max_training_rows: usize,
    /// Isolation forest: number of trees and rows per tree.
    pub trees: usize,
    pub sample_size: usize,
    /// A user-trained ONNX model on the same feature vector replaces the built-in one.
    pub model: Option<PathBuf>,
    /// The threshold for the ONNX model's output (its scale is the model's own).
    pub model_threshold: f32,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            enabled: true,
            path: PathBuf::from(DEFAULT_PATH),
            queue_capacity: 16_384,
            batch_max: 4_096,
            batch_interval_ms: 200,
            retention: RetentionConfig::default(),
            udp: UdpConfig::default(),
            max_open_connections: 65_536,
            baseline: BaselineConfig::default(),
            scoring: ScoringConfig::default(),
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age_days: 30,
            max_size_mb: 512.0,
            check_interval_secs: 60,
        }
    }
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            idle_secs: 60,
            max_flows: 16_384,
        }
    }
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            enabled: true,
            learning_period_hours: 24.0,
            expire_after_days: 30.0,
            prefix_v4: 24,
            prefix_v6: 64,
            flush_interval_secs: 60,
            overrides_poll_secs: 5,
            max_identities: 65_536,
            max_entries_per_owner: 4_096,
            new_destination: CheckConfig {
                enabled: true,
                severity: Severity::Medium,
            },
            new_child: CheckConfig {
                enabled: true,
                severity: Severity::High,
            },
            changed_hash: CheckConfig {
                enabled: true,
                severity: Severity::Medium,
            },
        }
    }
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            enabled: true,
            threshold: 0.62,
            severity: Severity::Low,
            retrain_interval_hours: 24.0,
            training_window_days: 14.0,
            min_training_rows: 256,
            max_training_rows: 50_000,
            trees: 100,
            sample_size: 256,
            model: None,
            model_threshold: 0.5,
        }
    }
}

/// A configuration value out of range, named by its key.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("history.{key}: {problem}")]
pub struct ConfigError {
    pub key: &'static str,
    pub problem: String,
}

impl HistoryConfig {
    /// Checks what serde cannot: ranges and relations between keys. Call it right after
    /// deserializing; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &'static str, problem: String| Err(ConfigError { key, problem });
        if self.path.as_os_str().is_empty() {
            return err("path", "must name a file".into());
        }
        for (key, value) in [
            ("queue_capacity", self.queue_capacity),
            ("batch_max", self.batch_max),
            ("udp.max_flows", self.udp.max_flows),
            ("max_open_connections", self.max_open_connections),
            ("baseline.max_identities", self.baseline.max_identities),
            (
                "baseline.max_entries_per_owner",
                self.baseline.max_entries_per_owner,
            ),
            ("scoring.trees", self.scoring.trees),
            ("scoring.min_training_rows", self.scoring.min_training_rows),
        ] {
            if value == 0 {
                return err(key, "must be at least 1".into());
            }
        }
        if self.scoring.sample_size < 2 {
            return err("scoring.sample_size", "must be at least 2".into());
        }
        if self.scoring.max_training_rows < self.scoring.min_training_rows {
            return err(
                "scoring.max_training_rows",
                format!(
                    "{} is below scoring.min_training_rows ({})",
                    self.scoring.max_training_rows, self.scoring.min_training_rows
                ),
            );
        }
        for (key, value) in [
            ("retention.max_size_mb", self.retention.max_size_mb),
            (
                "baseline.learning_period_hours",
                self.baseline.learning_period_hours,
            ),
            (
                "baseline.expire_after_days",
                self.baseline.expire_after_days,
            ),
            (
                "scoring.retrain_interval_hours",
                self.scoring.retrain_interval_hours,
            ),
            (
                "scoring.training_window_days",
                self.scoring.training_window_days,
            ),
        ] {
            if !value.is_finite() || value < 0.0 {
                return err(key, format!("{value} is not a duration/size >= 0"));
            }
        }
        if self.retention.max_size_mb > 0.0 && self.retention.max_size_mb < 0.25 {
            return err(
                "retention.max_size_mb",
                "below 0.25 MB the schema alone does not fit".into(),
            );
        }
        if self.scoring.retrain_interval_hours == 0.0 {
            return err("scoring.retrain_interval_hours", "must be above 0".into());
        }
        if self.baseline.prefix_v4 == 0 || self.baseline.prefix_v4 > 32 {
            return err(
                "baseline.prefix_v4",
                format!("{} is not a prefix length 1..=32", self.baseline.prefix_v4),
            );
        }
        if self.baseline.prefix_v6 == 0 || self.baseline.prefix_v6 > 128 {
            return err(
                "baseline.prefix_v6",
                format!("{} is not a prefix length 1..=128", self.baseline.prefix_v6),
            );
        }
        for (key, value) in [
            ("scoring.threshold", self.scoring.threshold),
            ("scoring.model_threshold", self.scoring.model_threshold),
        ] {
            if !value.is_finite() {
                return err(key, format!("{value} is not a number"));
            }
        }
        if !(0.0..=1.0).contains(&self.scoring.threshold) {
            return err(
                "scoring.threshold",
                format!(
                    "{} is outside 0..=1 (isolation forest scores are in 0..1)",
                    self.scoring.threshold
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HistoryConfig, String> {
        let config: HistoryConfig = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn an_empty_section_is_all_defaults_and_valid() {
        assert_eq!(parse("{}").unwrap(), HistoryConfig::default());
    }

    #[test]
    fn keys_override_single_values() {
        let c = parse(
            "path: /tmp/h.db\nbaseline:\n  learning_period_hours: 0.5\n  prefix_v4: 32\n  \
             new_child: {severity: critical}\nscoring: {threshold: 0.7}\n",
        )
        .unwrap();
        assert_eq!(c.path, PathBuf::from("/tmp/h.db"));
        assert_eq!(c.baseline.learning_period_hours, 0.5);
        assert_eq!(c.baseline.prefix_v4, 32);
        assert_eq!(c.baseline.new_child.severity, Severity::Critical);
        assert!(c.baseline.new_child.enabled);
        assert_eq!(c.scoring.threshold, 0.7);
        assert_eq!(c.retention, RetentionConfig::default());
    }

    #[test]
    fn mistakes_are_named() {
        let unknown = parse("retension: {}\n").unwrap_err();
        assert!(unknown.contains("retension"), "{unknown}");
        let prefix = parse("baseline: {prefix_v4: 33}\n").unwrap_err();
        assert_eq!(
            prefix,
            "history.baseline.prefix_v4: 33 is not a prefix length 1..=32"
        );
        let severity = parse("baseline: {new_child: {severity: severe}}\n").unwrap_err();
        assert!(severity.contains("severe"), "{severity}");
        let threshold = parse("scoring: {threshold: 2}\n").unwrap_err();
        assert!(
            threshold.starts_with("history.scoring.threshold"),
            "{threshold}"
        );
        let queue = parse("queue_capacity: 0\n").unwrap_err();
        assert_eq!(queue, "history.queue_capacity: must be at least 1");
    }
}
