//! Detection items: `Field|modifier|...: value(s)` and the selections made of them.

use yaml_serde::Value;

use super::{fields::Category, Invalid};
use crate::{
    ir::{Cond, Item, LitKind, Pattern},
    pattern::{self, ValueError},
};

/// Modifiers Sigma defines that this engine does not implement; named so the report says
/// "unsupported modifier base64offset" rather than "unknown".
const KNOWN_UNSUPPORTED: &[&str] = &[
    "base64",
    "base64offset",
    "wide",
    "utf16",
    "utf16le",
    "utf16be",
    "expand",
    "fieldref",
    "neq",
];

/// How values are compared, from the modifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compare {
    Text(LitKind),
    Re,
    Cidr,
    Lt,
    Lte,
    Gt,
    Gte,
    Exists,
}

/// A selection: a map (all items hold) or a list of maps (any map holds).
///
/// Unsupported parts are pushed to `unsupported` (the rule then does not evaluate, with that
/// reason); wrong parts are an error.
pub(crate) fn selection(
    name: &str,
    value: &Value,
    category: Category,
    unsupported: &mut Vec<String>,
) -> Result<Cond, Invalid> {
    match value {
        Value::Mapping(map) => items(name, map, category, unsupported),
        Value::Sequence(list) if list.iter().all(|v| matches!(v, Value::Mapping(_))) => {
            let mut any = Vec::with_capacity(list.len());
            for map in list.iter().filter_map(Value::as_mapping) {
                any.push(items(name, map, category, unsupported)?);
            }
            Ok(Cond::Or(any))
        }
        Value::Sequence(list) if list.iter().all(is_scalar) => {
            unsupported.push(format!(
                "selection {name} is a keyword (field-less) search, which the sensor's \
                 structured events do not support"
            ));
            Ok(Cond::Or(Vec::new()))
        }
        v if is_scalar(v) && !v.is_null() => {
            unsupported.push(format!(
                "selection {name} is a keyword (field-less) search, which the sensor's \
                 structured events do not support"
            ));
            Ok(Cond::Or(Vec::new()))
        }
        _ => Err(Invalid {
            field: Some(name.to_string()),
            message: "a selection must be a map of fields or a list of such maps".into(),
        }),
    }
}

fn is_scalar(v: &Value) -> bool {
    matches!(
        v,
        Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null
    )
}

fn items(
    name: &str,
    map: &yaml_serde::Mapping,
    category: Category,
    unsupported: &mut Vec<String>,
) -> Result<Cond, Invalid> {
    let mut all = Vec::with_capacity(map.len());
    for (key, value) in map {
        let Some(spec) = key.as_str() else {
            return Err(Invalid {
                field: Some(name.to_string()),
                message: format!("field names must be strings, not {key:?}"),
            });
        };
        all.push(item(spec, value, category, unsupported)?);
    }
    Ok(Cond::And(all))
}

/// One `Field|modifiers: values` entry.
pub(crate) fn item(
    spec: &str,
    value: &Value,
    category: Category,
    unsupported: &mut Vec<String>,
) -> Result<Cond, Invalid> {
    let invalid = |message: String| Invalid {
        field: Some(spec.to_string()),
        message,
    };
    let mut parts = spec.split('|');
    let name = parts.next().unwrap_or_default();
    if name.is_empty() {
        unsupported.push(format!(
            "{spec}: keyword (field-less) searches are not supported"
        ));
        return Ok(Cond::Or(Vec::new()));
    }
    let Some(field) = category.field(name) else {
        unsupported.push(format!("field {name} is not produced by the sensor"));
        return Ok(Cond::Or(Vec::new()));
    };

    let mut compare: Option<Compare> = None;
    let mut all = false;
    let mut windash = false;
    let mut cased = false;
    let mut flags = String::new();
    for modifier in parts {
        let next = match modifier {
            "contains" => Some(Compare::Text(LitKind::Contains)),
            "startswith" => Some(Compare::Text(LitKind::Prefix)),
            "endswith" => Some(Compare::Text(LitKind::Suffix)),
            "re" => Some(Compare::Re),
            "cidr" => Some(Compare::Cidr),
            "lt" => Some(Compare::Lt),
            "lte" => Some(Compare::Lte),
            "gt" => Some(Compare::Gt),
            "gte" => Some(Compare::Gte),
            "exists" => Some(Compare::Exists),
            "all" => {
                all = true;
                None
            }
            "windash" => {
                windash = true;
                None
            }
            "cased" => {
                cased = true;
                None
            }
            // Regex flags: `re|i` case-insensitive, `re|m` multi-line, `re|s` dot matches \n.
            "i" | "m" | "s" => {
                flags.push_str(modifier);
                None
            }
            other => {
                let known = if KNOWN_UNSUPPORTED.contains(&other) {
                    ""
                } else {
                    " (unknown to this engine)"
                };
                unsupported.push(format!("unsupported modifier {other}{known}"));
                return Ok(Cond::Or(Vec::new()));
            }
        };
        if let Some(next) = next {
            if let Some(prev) = compare {
                return Err(invalid(format!(
                    "modifiers {prev:?} and {next:?} cannot be combined"
                )));
            }
            compare = Some(next);
        }
    }
    let compare = compare.unwrap_or(Compare::Text(LitKind::Exact));
    if !flags.is_empty() && compare != Compare::Re {
        return Err(invalid(format!(
            "modifier {flags} only applies to re (a regex flag)"
        )));
    }

    let values: Vec<&Value> = match value {
        Value::Sequence(list) => list.iter().collect(),
        v => vec![v],
    };
    let mut patterns = Vec::with_capacity(values.len());
    for value in values {
        let text = match value {
            Value::Null => {
                patterns.push(Pattern::Null);
                continue;
            }
            Value::String(s) => s.clone(),
            // Numbers and booleans compare as the text of the value (`DestinationPort: 4444`).
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(invalid(format!(
                    "values must be strings, numbers, booleans or null, not {other:?}"
                )))
            }
        };
        let result = match compare {
            Compare::Text(kind) => {
                let variants = if windash {
                    pattern::windash(&text)
                } else {
                    Ok(vec![text])
                };
                variants.map(|variants| {
                    for v in variants {
                        patterns.push(pattern::string(&v, kind, cased, true));
                    }
                })
            }
            Compare::Re => {
                let source = if flags.is_empty() {
                    text
                } else {
                    format!("(?{flags}){text}")
                };
                pattern::regex(&source).map(|p| patterns.push(p))
            }
            Compare::Cidr => pattern::cidr(&text).map(|p| patterns.push(p)),
            Compare::Exists => match value {
                Value::Bool(want) => {
                    patterns.push(Pattern::Exists(*want));
                    Ok(())
                }
                _ => Err(ValueError::Invalid(format!(
                    "exists takes true or false, not {text:?}"
                ))),
            },
            Compare::Lt | Compare::Lte | Compare::Gt | Compare::Gte => number(&text).map(|n| {
                let (lo, hi) = match compare {
                    Compare::Lt => (i128::MIN, n.ceil() as i128 - 1),
                    Compare::Lte => (i128::MIN, n.floor() as i128),
                    Compare::Gt => (n.floor() as i128 + 1, i128::MAX),
                    _ => (n.ceil() as i128, i128::MAX),
                };
                patterns.push(Pattern::Range { lo, hi });
            }),
        };
        match result {
            Ok(()) => {}
            Err(ValueError::Unsupported(reason)) => {
                unsupported.push(format!("{spec}: {reason}"));
                return Ok(Cond::Or(Vec::new()));
            }
            Err(ValueError::Invalid(message)) => return Err(invalid(message)),
        }
    }
    Ok(Cond::Item(Item {
        field,
        patterns,
        all,
    }))
}

fn number(text: &str) -> Result<f64, ValueError> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .ok_or_else(|| ValueError::Invalid(format!("{text:?} is not a number")))
}
