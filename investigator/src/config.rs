//! `/etc/osprey/investigator.yaml`: read, defaulted and validated at load. Without an `llm`
//! section the investigator is off (it says so and exits).

use std::path::{Path, PathBuf};

use protocol::Severity;
use serde::Deserialize;

use crate::redact::{Redactor, DEFAULT_PATTERNS};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvestigatorConfig {
    pub nats: NatsSection,
    /// The chat-completions endpoint; absent: AI triage is off.
    pub llm: Option<LlmSection>,
    /// This investigator's secret key (`osprey keys generate`); the responder's
    /// `ai.investigator_keys` lists its public half.
    pub signing_key: PathBuf,
    /// Durable JetStream consumer name (named in the NATS permissions: change both together).
    pub consumer: String,
    /// Which findings are investigated.
    pub select: Selector,
    pub budgets: Budgets,
    /// Secret patterns redacted before anything is sent to the model (regular expressions;
    /// the first capture group is replaced, or the whole match when there is none). Absent:
    /// the built-in set (docs/investigator.md).
    pub redact: Option<Vec<String>>,
    /// Findings kept per host for the `related_findings` tool, and audit records per host
    /// for `actions_taken`.
    pub kept_per_host: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    pub url: String,
    /// The investigator's NKey seed (`osprey creds investigator`) or a `.creds` file.
    pub credentials: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSection {
    /// e.g. `https://api.openai.com/v1`; requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    pub model: String,
    /// The environment variable holding the API key (sent as `Authorization: Bearer`);
    /// absent or unset: no key is sent (a local endpoint).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Longest one chat-completions request may take.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
}

fn default_request_timeout() -> u64 {
    60
}

/// A finding is investigated when its severity is at least `min_severity` and, when `tags`
/// is not empty, it carries one of them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Selector {
    pub min_severity: Severity,
    pub tags: Vec<String>,
}

impl Default for Selector {
    fn default() -> Self {
        Selector {
            min_severity: Severity::High,
            tags: Vec::new(),
        }
    }
}

impl Selector {
    pub fn matches(&self, finding: &protocol::Finding) -> bool {
        finding.severity >= self.min_severity
            && (self.tags.is_empty() || self.tags.iter().any(|t| finding.tags.contains(t)))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budgets {
    /// Model turns per investigation.
    pub max_steps: u32,
    /// Tokens per investigation, as the endpoint reports them.
    pub max_tokens: u64,
    /// Wall time per investigation.
    pub wall_secs: u64,
    pub max_concurrent: usize,
    /// Investigations started per hour; findings beyond get a record saying so.
    pub max_per_hour: u32,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            max_steps: 8,
            max_tokens: 30_000,
            wall_secs: 120,
            max_concurrent: 2,
            max_per_hour: 30,
        }
    }
}

impl Default for NatsSection {
    fn default() -> Self {
        NatsSection {
            url: "nats://127.0.0.1:4222".into(),
            credentials: None,
        }
    }
}

impl Default for InvestigatorConfig {
    fn default() -> Self {
        InvestigatorConfig {
            nats: NatsSection::default(),
            llm: None,
            signing_key: PathBuf::from("/etc/osprey/investigator.key"),
            consumer: bus::permissions::INVESTIGATOR_CONSUMER.into(),
            select: Selector::default(),
            budgets: Budgets::default(),
            redact: None,
            kept_per_host: 50,
        }
    }
}

impl InvestigatorConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        let config: InvestigatorConfig = if text.trim().is_empty() {
            Self::default()
        } else {
            yaml_serde::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        };
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.redactor()?;
        let b = &self.budgets;
        if b.max_steps == 0 || b.max_tokens == 0 || b.wall_secs == 0 || b.max_concurrent == 0 {
            anyhow::bail!(
                "budgets: max_steps, max_tokens, wall_secs and max_concurrent must be at least 1"
            );
        }
        if self.consumer.is_empty() || self.consumer.contains(['.', '*', '>', ' ']) {
            anyhow::bail!("consumer: {:?} is not a valid durable name", self.consumer);
        }
        if let Some(llm) = &self.llm {
            if !(llm.base_url.starts_with("http://") || llm.base_url.starts_with("https://")) {
                anyhow::bail!("llm.base_url: {:?} is not an http(s) URL", llm.base_url);
            }
            if llm.model.is_empty() {
                anyhow::bail!("llm.model: empty");
            }
        }
        Ok(())
    }

    /// The configured patterns, or the built-in ones.
    pub fn redactor(&self) -> anyhow::Result<Redactor> {
        match &self.redact {
            Some(patterns) => Redactor::new(patterns),
            None => Redactor::new(DEFAULT_PATTERNS),
        }
        .map_err(|e| anyhow::anyhow!("redact: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deploy_example_loads_and_bad_settings_are_refused() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let config = InvestigatorConfig::load(&root.join("investigator.yaml")).unwrap();
        assert!(config.llm.is_some());
        assert_eq!(config.budgets.max_steps, 8);
        let dir = tempfile::tempdir().unwrap();
        for (yaml, needle) in [
            ("redact: ['(']\n", "redact"),
            ("budgets: {max_steps: 0}\n", "max_steps"),
            ("llm: {base_url: ftp://x, model: m}\n", "base_url"),
            ("surprise: 1\n", "unknown field"),
        ] {
            let path = dir.path().join("c.yaml");
            std::fs::write(&path, yaml).unwrap();
            let e = InvestigatorConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
    }
}
