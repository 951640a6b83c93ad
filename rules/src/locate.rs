//! Finding the line of a rule or key in a YAML text, for errors found after parsing (a bad
//! regex, CIDR or condition), where yaml_serde no longer knows locations.

/// The 1-based line of the `id:` entry whose value is `rule`.
pub(crate) fn rule_line(text: &str, rule: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = strip_item(line);
            line.strip_prefix("id:")
                .map(|v| unquote(v.trim()) == rule)
                .unwrap_or(false)
        })
        .map(|i| i + 1)
}

/// The 1-based line of the first `key:` at or after line `from`. With `within_rule`, the
/// search stops at the next list item carrying an `id:` (the next policy rule).
pub(crate) fn key_line(text: &str, from: usize, key: &str, within_rule: bool) -> Option<usize> {
    for (i, line) in text.lines().enumerate().skip(from.saturating_sub(1)) {
        let trimmed = line.trim_start();
        if within_rule && i + 1 > from && trimmed.starts_with("- id:") {
            return None;
        }
        let item = strip_item(line);
        if item
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
        {
            return Some(i + 1);
        }
    }
    None
}

fn strip_item(line: &str) -> &str {
    let line = line.trim_start();
    line.strip_prefix("- ").map(str::trim_start).unwrap_or(line)
}

fn unquote(v: &str) -> &str {
    let v = v.split(" #").next().unwrap_or(v).trim();
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rules_and_their_keys() {
        let text = "rules:\n  - id: a\n    match:\n      name: x\n  - id: \"b\"\n    match:\n      argv_regex: '('\n";
        assert_eq!(rule_line(text, "a"), Some(2));
        assert_eq!(rule_line(text, "b"), Some(5));
        assert_eq!(key_line(text, 2, "argv_regex", true), None);
        assert_eq!(key_line(text, 5, "argv_regex", true), Some(7));
        assert_eq!(key_line(text, 1, "name", false), Some(4));
    }
}
