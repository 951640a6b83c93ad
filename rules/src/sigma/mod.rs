//! Sigma rules for the `process_creation` and `network_connection` log sources.

mod condition;
mod fields;
mod modifier;
mod rule;

use std::{path::Path, sync::Arc};

use protocol::{Detector, Severity};
use yaml_serde::Value;

use crate::{
    error::{Problem, ProblemKind},
    ir::{Cond, RuleInfo, RuleIr},
    locate,
};
use fields::Category;
pub(crate) use rule::SigmaDoc;

/// A wrong part of a rule (becomes a load error).
#[derive(Debug)]
pub(crate) struct Invalid {
    pub field: Option<String>,
    pub message: String,
}

#[derive(Debug)]
pub(crate) enum Issue {
    /// The rule is fine but needs something the sensor or engine lacks.
    Unsupported(String),
    Invalid {
        field: Option<String>,
        message: String,
    },
}

/// A Sigma rule after loading.
pub(crate) enum SigmaRule {
    Ready(RuleIr),
    /// The rule does not evaluate on this sensor, for `reason`.
    Unsupported {
        info: Arc<RuleInfo>,
        product: Option<String>,
        reason: String,
    },
}

/// Compiles one Sigma document of file `path` (whose text is `text`, for locating errors).
/// `fallback_id` names rules without an `id`.
pub(crate) fn compile(
    doc: SigmaDoc,
    path: &Path,
    text: &str,
    fallback_id: String,
) -> Result<SigmaRule, Box<Problem>> {
    let id = doc.id.clone().unwrap_or(fallback_id);
    let problem = |field: &str, message: String| {
        Box::new(
            Problem::new(ProblemKind::Invalid, message)
                .at(path)
                .line(locate::key_line(text, 1, field, false))
                .rule(&id)
                .field(field),
        )
    };
    let title = match doc.title.as_deref().map(str::trim) {
        Some(title) if !title.is_empty() => title.to_string(),
        _ => return Err(problem("title", "a Sigma rule needs a title".into())),
    };
    let severity = match &doc.level {
        None => Severity::Medium,
        Some(level) => level
            .parse::<Severity>()
            .map_err(|e| problem("level", e.to_string()))?,
    };
    let logsource = doc.logsource.unwrap_or_default();
    let product = logsource.product.as_deref().map(str::to_ascii_lowercase);
    let info = Arc::new(RuleInfo {
        detector: Detector::Sigma,
        id: id.clone(),
        title,
        description: doc.description.map(|d| d.trim().to_string()),
        author: doc.author,
        severity,
        tags: doc.tags.unwrap_or_default(),
        actions: Vec::new(),
        source: path.to_path_buf(),
    });
    let unsupported = |reason: String| SigmaRule::Unsupported {
        info: info.clone(),
        product: product.clone(),
        reason,
    };

    if let Some(action) = &doc.action {
        return Ok(unsupported(format!(
            "Sigma rule collections (action: {action}) are not supported"
        )));
    }
    if doc.correlation.is_some() {
        return Ok(unsupported(
            "Sigma correlation rules are not supported".into(),
        ));
    }
    if let Some(name) = &logsource.product {
        if crate::input::Platform::from_product(name).is_none() {
            return Ok(unsupported(format!(
                "logsource product {name} is not one the sensor runs on (linux, windows, macos)"
            )));
        }
    }
    let category = match (&logsource.category, &logsource.service) {
        (Some(name), _) => match Category::parse(name) {
            Some(category) => category,
            None => {
                return Ok(unsupported(format!(
                    "logsource category {name} is not produced by the sensor"
                )))
            }
        },
        (None, Some(service)) => {
            return Ok(unsupported(format!(
                "logsource service {service} is not produced by the sensor"
            )))
        }
        (None, None) => {
            return Err(problem(
                "logsource",
                "a Sigma rule needs a logsource with a category".into(),
            ))
        }
    };
    let Some(detection) = doc.detection else {
        return Err(problem(
            "detection",
            "a Sigma rule needs a detection".into(),
        ));
    };

    let mut reasons = Vec::new();
    let mut selections = Vec::new();
    let mut condition = None;
    for (key, value) in &detection {
        let Some(name) = key.as_str() else {
            return Err(problem(
                "detection",
                format!("selection names must be strings, not {key:?}"),
            ));
        };
        match name {
            "condition" => condition = Some(value),
            "timeframe" => reasons.push("timeframe (aggregation) is not supported".into()),
            _ => {
                let cond = modifier::selection(name, value, category, &mut reasons).map_err(
                    |Invalid { field, message }| problem(field.as_deref().unwrap_or(name), message),
                )?;
                selections.push((name.to_string(), cond));
            }
        }
    }
    let condition = match condition {
        Some(Value::String(text)) => parse_condition(text, &selections),
        // A list of conditions (older Sigma) means any of them.
        Some(Value::Sequence(list)) => {
            let mut any = Vec::with_capacity(list.len());
            for text in list {
                match text.as_str() {
                    Some(text) => any.push(parse_condition(text, &selections)),
                    None => {
                        return Err(problem(
                            "condition",
                            "condition list entries must be strings".into(),
                        ))
                    }
                }
            }
            any.into_iter().collect::<Result<Vec<_>, _>>().map(Cond::Or)
        }
        Some(_) => return Err(problem("condition", "condition must be a string".into())),
        None => {
            return Err(problem(
                "condition",
                "the detection has no condition".into(),
            ))
        }
    };
    let cond = match condition {
        Ok(cond) => cond,
        Err(Issue::Unsupported(reason)) => {
            reasons.push(reason);
            Cond::Or(Vec::new())
        }
        Err(Issue::Invalid { field, message }) => {
            return Err(problem(field.as_deref().unwrap_or("condition"), message))
        }
    };
    if !reasons.is_empty() {
        // Several items can fail for the same reason; say it once, in order of appearance.
        let mut seen = std::collections::HashSet::new();
        reasons.retain(|r| seen.insert(r.clone()));
        return Ok(unsupported(reasons.join("; ")));
    }
    Ok(SigmaRule::Ready(RuleIr {
        info,
        product,
        subjects: vec![category.subject()],
        cond,
    }))
}

fn parse_condition(text: &str, selections: &[(String, Cond)]) -> Result<Cond, Issue> {
    condition::parse(text, selections)
}
