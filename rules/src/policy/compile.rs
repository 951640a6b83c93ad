//! Validating a policy rule and turning it into the matcher's rule form.

use std::{path::Path, sync::Arc};

use protocol::Detector;

use super::file::{self, Conditions, Strings};
use crate::{
    error::{Problem, ProblemKind},
    field::Field,
    input::SubjectKind,
    ir::{Cond, Item, LitKind, Pattern, RuleInfo, RuleIr},
    locate,
    pattern::{self, ValueError},
};

/// A policy rule after validation.
pub(crate) enum PolicyRule {
    Ready(RuleIr),
    /// `enabled: false`: validated, reported, not compiled.
    Disabled(Arc<RuleInfo>),
}

const MIB: u64 = 1 << 20;

/// Validates `rule` from file `path` (text `text`, for error lines) and compiles it.
pub(crate) fn compile_rule(
    rule: file::PolicyRule,
    path: &Path,
    text: &str,
) -> Result<PolicyRule, Box<Problem>> {
    let rule_line = locate::rule_line(text, &rule.id);
    let problem = |field: &str, message: String| {
        // Point at the key itself when it can be found inside this rule, else at the rule.
        let key = field.rsplit('.').next().unwrap_or(field);
        let line = rule_line
            .and_then(|from| locate::key_line(text, from, key, true))
            .or(rule_line);
        Box::new(
            Problem::new(ProblemKind::Invalid, message)
                .at(path)
                .line(line)
                .rule(&rule.id)
                .field(field),
        )
    };
    if rule.id.trim().is_empty() {
        return Err(problem("id", "a rule id must not be empty".into()));
    }
    if rule.title.trim().is_empty() {
        return Err(problem("title", "a rule title must not be empty".into()));
    }

    let when = conditions(&rule.when, "match", &problem)?;
    if when.items.is_empty() {
        return Err(problem(
            "match",
            "a rule needs at least one condition (an empty match would fire on everything)".into(),
        ));
    }
    let mut cond = when.items;
    if let Some(unless) = &rule.unless {
        let unless = conditions(unless, "unless", &problem)?;
        if unless.items.is_empty() {
            return Err(problem("unless", "unless has no conditions".into()));
        }
        cond.push(Cond::Not(Box::new(Cond::And(unless.items))));
    }

    let subjects = match &rule.events {
        Some(events) if events.is_empty() => {
            return Err(problem(
                "events",
                "events must name at least one of exec, connect, sample".into(),
            ))
        }
        Some(events) => {
            if when.network {
                if let Some(other) = events.iter().find(|e| **e != SubjectKind::Connect) {
                    return Err(problem(
                        "events",
                        format!(
                            "the rule tests a destination, port or protocol, which only connect \
                             events carry, but events lists {}",
                            other.as_str()
                        ),
                    ));
                }
            }
            let mut events = events.clone();
            events.sort_unstable();
            events.dedup();
            events
        }
        // A rule on a connection's attributes is about connects; any other rule is about the
        // process, seen when it starts and in the collector's periodic samples.
        None if when.network => vec![SubjectKind::Connect],
        None => vec![SubjectKind::Exec, SubjectKind::Sample],
    };

    let info = Arc::new(RuleInfo {
        detector: Detector::Policy,
        id: rule.id.clone(),
        title: rule.title.trim().to_string(),
        description: rule.description.clone(),
        author: None,
        severity: rule.severity,
        tags: rule.tags.clone(),
        actions: rule.actions.clone(),
        source: path.to_path_buf(),
    });
    if !rule.enabled {
        return Ok(PolicyRule::Disabled(info));
    }
    Ok(PolicyRule::Ready(RuleIr {
        info,
        product: None,
        subjects,
        cond: Cond::And(cond),
    }))
}

struct Compiled {
    items: Vec<Cond>,
    /// Tests something only connect events carry.
    network: bool,
}

fn conditions(
    c: &Conditions,
    section: &str,
    problem: &dyn Fn(&str, String) -> Box<Problem>,
) -> Result<Compiled, Box<Problem>> {
    let mut items = Vec::new();
    let name = |key: &str| format!("{section}.{key}");
    let list = |key: &str, values: &Strings| -> Result<Vec<String>, Box<Problem>> {
        if values.0.is_empty() {
            return Err(problem(&name(key), "the list is empty".into()));
        }
        if values.0.iter().any(|v| v.is_empty()) {
            return Err(problem(
                &name(key),
                "empty values match nothing useful".into(),
            ));
        }
        Ok(values.0.clone())
    };
    let mut push = |field: Field, patterns: Vec<Pattern>| {
        items.push(Cond::Item(Item {
            field,
            patterns,
            all: false,
        }))
    };
    let globs = |values: Vec<String>| -> Vec<Pattern> {
        values
            .iter()
            .map(|v| pattern::string(v, LitKind::Exact, false, true))
            .collect()
    };

    let glob_fields = [
        ("name", &c.name, Field::Name),
        ("path", &c.path, Field::Image),
        ("resolved_path", &c.resolved_path, Field::ImageResolved),
        ("invoked_path", &c.invoked_path, Field::ImageInvoked),
        ("parent", &c.parent, Field::ParentName),
        ("ancestor", &c.ancestor, Field::AncestorName),
        ("user", &c.user, Field::User),
        ("cwd", &c.cwd, Field::CurrentDirectory),
    ];
    for (key, values, field) in glob_fields {
        if let Some(values) = values {
            push(field, globs(list(key, values)?));
        }
    }
    if let Some(values) = &c.argv_contains {
        let patterns = list("argv_contains", values)?
            .iter()
            .map(|v| pattern::string(v, LitKind::Contains, false, false))
            .collect();
        push(Field::CommandLine, patterns);
    }
    if let Some(values) = &c.argv_regex {
        let mut patterns = Vec::new();
        for v in list("argv_regex", values)? {
            patterns.push(pattern::regex(&v).map_err(|e| match e {
                ValueError::Invalid(m) | ValueError::Unsupported(m) => {
                    problem(&name("argv_regex"), m)
                }
            })?);
        }
        push(Field::CommandLine, patterns);
    }
    if let Some(values) = &c.uid {
        let mut patterns = Vec::new();
        for v in list("uid", values)? {
            let uid: u32 = v
                .parse()
                .map_err(|_| problem(&name("uid"), format!("{v:?} is not a numeric user id")))?;
            patterns.push(pattern::string(
                &uid.to_string(),
                LitKind::Exact,
                false,
                false,
            ));
        }
        push(Field::Uid, patterns);
    }
    let mut network = false;
    if let Some(values) = &c.destination {
        let mut patterns = Vec::new();
        for v in list("destination", values)? {
            patterns.push(pattern::cidr(&v).map_err(|e| match e {
                ValueError::Invalid(m) | ValueError::Unsupported(m) => {
                    problem(&name("destination"), m)
                }
            })?);
        }
        push(Field::DestinationIp, patterns);
        network = true;
    }
    if let Some(values) = &c.port {
        let mut patterns = Vec::new();
        for v in list("port", values)? {
            let (lo, hi) = ports(&v).ok_or_else(|| {
                problem(
                    &name("port"),
                    format!("{v:?} is not a port (0-65535) or a range like 8000-8999"),
                )
            })?;
            patterns.push(Pattern::Range {
                lo: i128::from(lo),
                hi: i128::from(hi),
            });
        }
        push(Field::DestinationPort, patterns);
        network = true;
    }
    if let Some(values) = &c.protocol {
        let mut patterns = Vec::new();
        for v in list("protocol", values)? {
            let v = v.to_ascii_lowercase();
            if v != "tcp" && v != "udp" {
                return Err(problem(
                    &name("protocol"),
                    format!("{v:?} is not a protocol: expected tcp or udp"),
                ));
            }
            patterns.push(pattern::string(&v, LitKind::Exact, false, false));
        }
        push(Field::Protocol, patterns);
        network = true;
    }
    if let Some(mb) = c.rss_above_mb {
        let bytes = mb.checked_mul(MIB).ok_or_else(|| {
            problem(
                &name("rss_above_mb"),
                format!("{mb} MB is beyond any memory size"),
            )
        })?;
        push(
            Field::RssBytes,
            vec![Pattern::Range {
                lo: i128::from(bytes) + 1,
                hi: i128::MAX,
            }],
        );
    }
    if let Some(intel) = &c.intel {
        let Some(above) = intel.detections_above else {
            return Err(problem(
                &name("intel"),
                "intel needs detections_above (e.g. detections_above: 3)".into(),
            ));
        };
        push(
            Field::IntelDetections,
            vec![Pattern::Range {
                lo: i128::from(above) + 1,
                hi: i128::MAX,
            }],
        );
    }
    Ok(Compiled { items, network })
}

/// `22` or `8000-8999`.
fn ports(text: &str) -> Option<(u16, u16)> {
    let text = text.trim();
    match text.split_once('-') {
        None => text.parse().ok().map(|p| (p, p)),
        Some((lo, hi)) => {
            let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
            (lo <= hi).then_some((lo, hi))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ports;

    #[test]
    fn port_ranges() {
        assert_eq!(ports("22"), Some((22, 22)));
        assert_eq!(ports("8000-8999"), Some((8000, 8999)));
        assert_eq!(ports("9-8"), None);
        assert_eq!(ports("70000"), None);
    }
}
