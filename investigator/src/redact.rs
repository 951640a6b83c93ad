//! Secrets out of everything sent to the model.
//!
//! Redaction works on the JSON values before they are serialized: every string is matched
//! against the patterns, and so is every array of strings joined by single spaces — an argv
//! keeps `--password` and its value in two elements, which no pattern over one string sees.
//! What a pattern's first capture group covers (or its whole match, without a group) is
//! replaced by [`REDACTED`], in whichever elements it spans.

use regex::Regex;
use serde_json::Value;

pub const REDACTED: &str = "[REDACTED]";

/// The built-in patterns (docs/investigator.md).
pub const DEFAULT_PATTERNS: &[&str] = &[
    // --password X, --password=X, --token X, --secret X, --api-key X, ...
    r"(?i)--(?:password|passwd|pass|token|secret|api[-_]?key|access[-_]?key)(?:=|\s+)(\S+)",
    // -p X (mysql and friends)
    r"(?:^|\s)-p\s+(\S+)",
    // password=X, token=X, ... in URLs, environment-style arguments and scripts
    r"(?i)\b(?:password|passwd|pwd|secret|token|api[-_]?key)=([^\s&]+)",
    // AWS access key ids
    r"AKIA[0-9A-Z]{16}",
    // bearer tokens
    r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]+)",
    // private keys, up to their end (or the end of the text)
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
];

#[derive(Clone, Debug)]
pub struct Redactor {
    patterns: Vec<Regex>,
}

#[derive(Debug, thiserror::Error)]
#[error("pattern {index} ({pattern:?}): {reason}")]
pub struct PatternError {
    pub index: usize,
    pub pattern: String,
    pub reason: String,
}

impl Redactor {
    pub fn new(patterns: &[impl AsRef<str>]) -> Result<Redactor, PatternError> {
        let patterns = patterns
            .iter()
            .enumerate()
            .map(|(index, p)| {
                Regex::new(p.as_ref()).map_err(|e| PatternError {
                    index,
                    pattern: p.as_ref().to_string(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Redactor { patterns })
    }

    /// The byte ranges of `text` that are secrets.
    fn secrets(&self, text: &str) -> Vec<(usize, usize)> {
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for pattern in &self.patterns {
            for captures in pattern.captures_iter(text) {
                let m = captures.get(1).or_else(|| captures.get(0));
                if let Some(m) = m.filter(|m| !m.is_empty()) {
                    ranges.push((m.start(), m.end()));
                }
            }
        }
        ranges.sort_unstable();
        // Merge overlaps, so replacing from the back never cuts into a replaced range.
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }

    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (start, end) in self.secrets(text).into_iter().rev() {
            out.replace_range(start..end, REDACTED);
        }
        out
    }

    /// Redacts every string in `value`, and every array of strings as one text.
    pub fn value(&self, value: &mut Value) {
        match value {
            Value::String(s) => *s = self.text(s),
            Value::Array(items) => {
                if items.iter().all(Value::is_string) && items.len() > 1 {
                    self.string_array(items);
                }
                items.iter_mut().for_each(|v| self.value(v));
            }
            Value::Object(map) => map.values_mut().for_each(|v| self.value(v)),
            _ => {}
        }
    }

    /// Joins the strings with spaces, finds the secrets, and blanks each one's part in every
    /// element it spans.
    fn string_array(&self, items: &mut [Value]) {
        let parts: Vec<String> = items
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect();
        let joined = parts.join(" ");
        let secrets = self.secrets(&joined);
        if secrets.is_empty() {
            return;
        }
        let mut offset = 0;
        for (item, part) in items.iter_mut().zip(&parts) {
            let (from, to) = (offset, offset + part.len());
            offset = to + 1;
            let mut text = part.clone();
            for &(start, end) in secrets.iter().rev() {
                let (s, e) = (start.max(from), end.min(to));
                if s < e {
                    text.replace_range(s - from..e - from, REDACTED);
                }
            }
            *item = Value::String(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_built_in_patterns_catch_the_documented_forms() {
        let r = Redactor::new(DEFAULT_PATTERNS).unwrap();
        for (text, secret) in [
            ("mysql --password hunter2 db", "hunter2"),
            ("app --token=abc.def", "abc.def"),
            ("mysql -u root -p hunter2", "hunter2"),
            ("curl https://x/?password=s3cret&a=1", "s3cret"),
            ("key AKIAABCDEFGHIJKLMNOP here", "AKIAABCDEFGHIJKLMNOP"),
            ("Authorization: Bearer eyJhbGciOi.x-y", "eyJhbGciOi.x-y"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
                "MIIE",
            ),
        ] {
            let out = r.text(text);
            assert!(!out.contains(secret), "{text} → {out}");
            assert!(out.contains(REDACTED), "{out}");
        }
        assert_eq!(r.text("ls -la /tmp"), "ls -la /tmp");
    }

    #[test]
    fn a_secret_in_the_next_argv_element_is_redacted_there() {
        let r = Redactor::new(DEFAULT_PATTERNS).unwrap();
        let mut v = json!({"process": {"argv": ["python3", "-c", "x", "--password", "hunter2", "-v"], "pid": 7}});
        r.value(&mut v);
        assert_eq!(
            v["process"]["argv"],
            json!(["python3", "-c", "x", "--password", REDACTED, "-v"])
        );
        assert!(!v.to_string().contains("hunter2"));
        assert_eq!(v["process"]["pid"], 7);
    }
}
