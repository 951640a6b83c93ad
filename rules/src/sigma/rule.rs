//! The Sigma rule document as it is written (only the parts the engine reads).

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SigmaDoc {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub level: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub logsource: Option<LogSource>,
    #[serde(default)]
    pub detection: Option<yaml_serde::Mapping>,
    /// Rule collections (`action: global`, `repeat`, ...): not supported.
    #[serde(default)]
    pub action: Option<String>,
    /// Correlation rules (Sigma v2): not supported.
    #[serde(default)]
    pub correlation: Option<yaml_serde::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogSource {
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub product: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
}
