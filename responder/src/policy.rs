//! The response policy: which findings get which actions.
//!
//! ```yaml
//! approval_required: [quarantine, kill_on_exec]   # high-impact actions wait for an operator
//! rules:
//!   - name: kill-script-engines-phoning-out
//!     match:
//!       rule_ids: [osprey.script-engine-network]  # exact, or a prefix ending in `*`
//!       min_severity: high
//!       tags: [attack.execution]                  # any of them
//!       hosts: [web-*]                            # exact, or a prefix ending in `*`
//!     actions: [kill, block]
//!     follow_recommendations: false   # also take the rule's recommended actions
//!     ttl_secs: 3600                  # for block, suspend and kill_on_exec
//!     dry_run: false                  # per rule, on top of the global setting
//! ```
//! The first matching rule decides; a finding no rule matches gets no action.

use std::path::Path;

use protocol::{ActionKind, Finding, Severity};
use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsePolicy {
    pub approval_required: Vec<ActionKind>,
    pub rules: Vec<PolicyRule>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    pub name: String,
    #[serde(default, rename = "match")]
    pub matcher: Match,
    #[serde(default)]
    pub actions: Vec<ActionKind>,
    #[serde(default)]
    pub follow_recommendations: bool,
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    #[serde(default)]
    pub dry_run: bool,
    /// Block the destination's port only (default: every port of the address).
    #[serde(default)]
    pub block_port: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Match {
    pub rule_ids: Vec<String>,
    pub min_severity: Option<Severity>,
    pub tags: Vec<String>,
    pub hosts: Vec<String>,
}

fn glob(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

impl Match {
    pub fn matches(&self, f: &Finding) -> bool {
        (self.rule_ids.is_empty() || self.rule_ids.iter().any(|p| glob(p, &f.rule_id)))
            && self.min_severity.is_none_or(|s| f.severity >= s)
            && (self.tags.is_empty() || self.tags.iter().any(|t| f.tags.contains(t)))
            && (self.hosts.is_empty() || self.hosts.iter().any(|p| glob(p, &f.host)))
    }
}

/// What the policy decided for one finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub rule: String,
    pub actions: Vec<ActionKind>,
    pub ttl_secs: Option<u64>,
    pub dry_run: bool,
    pub block_port: bool,
}

impl ResponsePolicy {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read response policy {}: {e}", path.display()))?;
        let policy: ResponsePolicy =
            yaml_serde::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for (i, r) in policy.rules.iter().enumerate() {
            if r.actions.is_empty() && !r.follow_recommendations {
                anyhow::bail!(
                    "{}: rules[{i}] ({}): no actions and follow_recommendations is off",
                    path.display(),
                    r.name
                );
            }
        }
        Ok(policy)
    }

    pub fn plan(&self, finding: &Finding) -> Option<Plan> {
        let rule = self.rules.iter().find(|r| r.matcher.matches(finding))?;
        let mut actions = rule.actions.clone();
        if rule.follow_recommendations {
            for a in &finding.recommended_actions {
                if !actions.contains(a) {
                    actions.push(*a);
                }
            }
        }
        Some(Plan {
            rule: rule.name.clone(),
            actions,
            ttl_secs: rule.ttl_secs,
            dry_run: rule.dry_run,
            block_port: rule.block_port,
        })
    }

    pub fn needs_approval(&self, action: ActionKind) -> bool {
        self.approval_required.contains(&action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_decides_and_may_follow_recommendations() {
        let policy: ResponsePolicy = yaml_serde::from_str(
            "approval_required: [quarantine]\nrules:\n  - name: a\n    match: {rule_ids: ['osprey.host*'], min_severity: high, hosts: [web-*]}\n    actions: [kill]\n    follow_recommendations: true\n    ttl_secs: 5\n  - name: b\n    actions: [log]\n",
        )
        .unwrap();
        let web = crate::silence::finding("web-1", std::time::Duration::from_secs(60));
        let plan = policy.plan(&web).unwrap();
        assert_eq!((plan.rule.as_str(), plan.ttl_secs), ("a", Some(5)));
        assert_eq!(plan.actions, vec![ActionKind::Kill, ActionKind::Notify]);
        let db = crate::silence::finding("db-1", std::time::Duration::from_secs(60));
        assert_eq!(policy.plan(&db).unwrap().actions, vec![ActionKind::Log]);
        let mut low = web.clone();
        low.severity = Severity::Low;
        assert_eq!(policy.plan(&low).unwrap().rule, "b");
        assert!(
            policy.needs_approval(ActionKind::Quarantine)
                && !policy.needs_approval(ActionKind::Kill)
        );
    }

    #[test]
    fn the_deploy_examples_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let policy = ResponsePolicy::load(&root.join("response-policy.yaml")).unwrap();
        assert!(!policy.rules.is_empty());
        let config = crate::config::ResponderConfig::load(&root.join("responder.yaml")).unwrap();
        assert_eq!(config.rate_limit("kill"), 10);
        assert_eq!(config.rate_limit("dump"), 20);
    }
}
