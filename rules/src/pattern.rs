//! Turning rule values into [`Pattern`]s: wildcards, case, regexes and CIDRs.

use crate::ir::{LitKind, Pattern};

/// Why a value cannot become a pattern.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ValueError {
    /// The value is wrong (e.g. a regex that does not parse).
    Invalid(String),
    /// The value is fine but uses something this engine does not do (e.g. look-around).
    Unsupported(String),
}

#[derive(Debug, PartialEq, Eq)]
enum Tok {
    Text(String),
    /// `*`: any run of characters, `/` included.
    Star,
    /// `?`: exactly one character.
    One,
}

/// Splits a value on unescaped `*` and `?`. A backslash escapes `*`, `?` and itself; before
/// any other character it is a literal backslash (Sigma's rule, so Windows paths need no
/// doubling).
fn tokenize(value: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut text = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&next @ ('*' | '?' | '\\')) => {
                    text.push(next);
                    chars.next();
                }
                _ => text.push('\\'),
            },
            '*' | '?' => {
                if !text.is_empty() {
                    toks.push(Tok::Text(std::mem::take(&mut text)));
                }
                toks.push(if c == '*' { Tok::Star } else { Tok::One });
            }
            _ => text.push(c),
        }
    }
    if !text.is_empty() {
        toks.push(Tok::Text(text));
    }
    toks
}

/// A string match of the given kind, honouring `*`/`?` wildcards when `wildcards` is set.
/// Case-insensitive unless `cased`.
///
/// Leading and trailing `*` only widen the kind (`/tmp/*` is a prefix test), so the common
/// globs stay literals and go into the Aho-Corasick automaton; only inner wildcards need a
/// regex.
pub(crate) fn string(value: &str, kind: LitKind, cased: bool, wildcards: bool) -> Pattern {
    let mut toks = if wildcards {
        tokenize(value)
    } else if value.is_empty() {
        Vec::new()
    } else {
        vec![Tok::Text(value.to_string())]
    };
    let mut kind = kind;
    if toks.first() == Some(&Tok::Star) {
        while toks.first() == Some(&Tok::Star) {
            toks.remove(0);
        }
        kind = match kind {
            _ if toks.is_empty() => LitKind::Contains,
            LitKind::Exact | LitKind::Suffix => LitKind::Suffix,
            LitKind::Prefix | LitKind::Contains => LitKind::Contains,
        };
    }
    if toks.last() == Some(&Tok::Star) {
        while toks.last() == Some(&Tok::Star) {
            toks.pop();
        }
        kind = match kind {
            LitKind::Exact | LitKind::Prefix => LitKind::Prefix,
            LitKind::Suffix | LitKind::Contains => LitKind::Contains,
        };
    }
    let plain = match toks.as_slice() {
        [] => Some(String::new()),
        [Tok::Text(text)] => Some(text.clone()),
        _ => None,
    };
    match plain {
        Some(text) if !cased => Pattern::Literal {
            kind,
            text: text.to_lowercase(),
        },
        _ => Pattern::Regex(glob_regex(&toks, kind, cased)),
    }
}

fn glob_regex(toks: &[Tok], kind: LitKind, cased: bool) -> String {
    let mut re = String::from(if cased { "(?s)" } else { "(?si)" });
    if matches!(kind, LitKind::Exact | LitKind::Prefix) {
        re.push('^');
    }
    for tok in toks {
        match tok {
            Tok::Text(text) => re.push_str(&regex::escape(text)),
            Tok::Star => re.push_str(".*"),
            Tok::One => re.push('.'),
        }
    }
    if matches!(kind, LitKind::Exact | LitKind::Suffix) {
        re.push('$');
    }
    re
}

/// Checks a regex compiles, telling syntax errors from features the engine lacks.
pub(crate) fn regex(source: &str) -> Result<Pattern, ValueError> {
    match regex::Regex::new(source) {
        Ok(_) => Ok(Pattern::Regex(source.to_string())),
        Err(err) => {
            let text = err.to_string();
            // The regex crate guarantees linear time, so it refuses look-around and
            // backreferences: such rules are unsupported, not wrong.
            let reason = text.lines().last().unwrap_or(&text).trim().to_string();
            if text.contains("not supported") {
                Err(ValueError::Unsupported(format!(
                    "regex {source:?} uses a feature the regex engine lacks ({reason})"
                )))
            } else {
                Err(ValueError::Invalid(format!(
                    "invalid regex {source:?}: {reason}"
                )))
            }
        }
    }
}

/// A network in CIDR notation, or a single address.
pub(crate) fn cidr(text: &str) -> Result<Pattern, ValueError> {
    let text = text.trim();
    // Canonical (`::ffff:10.0.0.0/104` is 10.0.0.0/8, as events carry IPv4 peers as IPv4),
    // and truncated: a host part after the prefix (10.1.2.3/8) is almost certainly a typo
    // for the network, which is what the writer meant.
    match protocol::net::parse_net(text) {
        Some(net) => Ok(Pattern::Cidr(net)),
        None => Err(ValueError::Invalid(format!(
            "invalid CIDR {text:?}: expected e.g. 10.0.0.0/8, fe80::/10 or 192.0.2.1"
        ))),
    }
}

/// Sigma `windash`: every dash or slash that starts an option may be written as `-`, `/`,
/// en dash, em dash or horizontal bar on Windows. Expands to every combination (at most 5
/// positions, 3125 variants, so a pathological value cannot explode the automaton).
pub(crate) fn windash(value: &str) -> Result<Vec<String>, ValueError> {
    const DASHES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];
    let chars: Vec<char> = value.chars().collect();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let positions: Vec<usize> = (0..chars.len())
        .filter(|&i| {
            matches!(chars[i], '-' | '/')
                && (i == 0 || !is_word(chars[i - 1]))
                && chars.get(i + 1).is_some_and(|&c| is_word(c))
        })
        .collect();
    if positions.len() > 5 {
        return Err(ValueError::Unsupported(format!(
            "windash on a value with {} option dashes (at most 5)",
            positions.len()
        )));
    }
    let mut variants = vec![chars];
    for &at in &positions {
        variants = variants
            .into_iter()
            .flat_map(|v| {
                DASHES.iter().map(move |&d| {
                    let mut v = v.clone();
                    v[at] = d;
                    v
                })
            })
            .collect();
    }
    Ok(variants
        .into_iter()
        .map(|v| v.into_iter().collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(kind: LitKind, text: &str) -> Pattern {
        Pattern::Literal {
            kind,
            text: text.into(),
        }
    }

    #[test]
    fn outer_stars_widen_the_kind_and_inner_wildcards_become_regexes() {
        assert_eq!(
            string("/TMP/*", LitKind::Exact, false, true),
            lit(LitKind::Prefix, "/tmp/")
        );
        assert_eq!(
            string("*.exe", LitKind::Exact, false, true),
            lit(LitKind::Suffix, ".exe")
        );
        assert_eq!(
            string("*x*", LitKind::Exact, false, true),
            lit(LitKind::Contains, "x")
        );
        assert_eq!(
            string("a*", LitKind::Suffix, false, true),
            lit(LitKind::Contains, "a")
        );
        assert_eq!(
            string("/etc/*.conf", LitKind::Contains, false, true),
            Pattern::Regex(r"(?si)/etc/.*\.conf".into())
        );
        assert_eq!(
            string("vir?s", LitKind::Exact, false, true),
            Pattern::Regex("(?si)^vir.s$".into())
        );
        assert_eq!(
            string("a\\*b", LitKind::Exact, false, true),
            lit(LitKind::Exact, "a*b")
        );
        assert_eq!(
            string("C:\\Windows\\", LitKind::Exact, false, true),
            lit(LitKind::Exact, "c:\\windows\\")
        );
        assert_eq!(
            string("*", LitKind::Exact, false, true),
            lit(LitKind::Contains, "")
        );
        assert_eq!(
            string("a*b", LitKind::Contains, false, false),
            lit(LitKind::Contains, "a*b")
        );
        assert_eq!(
            string("Ab", LitKind::Prefix, true, true),
            Pattern::Regex("(?s)^Ab".into())
        );
    }

    #[test]
    fn regexes_tell_unsupported_from_invalid() {
        assert!(regex("-D").is_ok());
        assert!(matches!(regex("(?<=a)b"), Err(ValueError::Unsupported(_))));
        assert!(matches!(regex("a(b"), Err(ValueError::Invalid(_))));
    }

    #[test]
    fn cidrs_accept_bare_addresses() {
        assert_eq!(
            cidr("10.1.2.3/8").unwrap(),
            Pattern::Cidr("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            cidr("::1").unwrap(),
            Pattern::Cidr("::1/128".parse().unwrap())
        );
        assert!(cidr("10.0.0.0/33").is_err());
    }

    #[test]
    fn windash_expands_option_dashes_only() {
        let v = windash("-enc x-y").unwrap();
        assert_eq!(v.len(), 5);
        assert!(v.contains(&"/enc x-y".to_string()));
        assert!(v.contains(&"\u{2013}enc x-y".to_string()));
    }
}
