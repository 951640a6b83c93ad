//! The Sigma `condition` expression: `and`, `or`, `not`, parentheses, `1 of x*`,
//! `all of x*`, `any of x*`, `N of x*`, `1 of them`, `all of them`.

use super::Issue;
use crate::ir::Cond;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Open,
    Close,
    Word(String),
}

fn tokenize(text: &str) -> Result<Vec<Tok>, Issue> {
    let mut toks = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, toks: &mut Vec<Tok>| {
        if !word.is_empty() {
            toks.push(Tok::Word(std::mem::take(word)));
        }
    };
    for c in text.chars() {
        match c {
            '(' | ')' => {
                flush(&mut word, &mut toks);
                toks.push(if c == '(' { Tok::Open } else { Tok::Close });
            }
            '|' => {
                return Err(Issue::Unsupported(format!(
                    "aggregation in condition {text:?} is not supported"
                )))
            }
            c if c.is_whitespace() => flush(&mut word, &mut toks),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut toks);
    Ok(toks)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    at: usize,
    selections: &'a [(String, Cond)],
    text: &'a str,
}

/// Parses `text` into a condition over the named `selections`.
pub(crate) fn parse(text: &str, selections: &[(String, Cond)]) -> Result<Cond, Issue> {
    let mut parser = Parser {
        toks: tokenize(text)?,
        at: 0,
        selections,
        text,
    };
    if parser.toks.is_empty() {
        return Err(parser.invalid("the condition is empty".into()));
    }
    let cond = parser.or()?;
    if let Some(tok) = parser.toks.get(parser.at) {
        return Err(parser.invalid(format!("unexpected {}", show(tok))));
    }
    Ok(cond)
}

fn show(tok: &Tok) -> String {
    match tok {
        Tok::Open => "`(`".into(),
        Tok::Close => "`)`".into(),
        Tok::Word(w) => format!("`{w}`"),
    }
}

fn keyword(tok: Option<&Tok>, kw: &str) -> bool {
    matches!(tok, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
}

impl Parser<'_> {
    fn invalid(&self, message: String) -> Issue {
        Issue::Invalid {
            field: Some("condition".into()),
            message: format!("{message} in {:?}", self.text),
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn or(&mut self) -> Result<Cond, Issue> {
        let mut any = vec![self.and()?];
        while keyword(self.peek(), "or") {
            self.at += 1;
            any.push(self.and()?);
        }
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            Cond::Or(any)
        })
    }

    fn and(&mut self) -> Result<Cond, Issue> {
        let mut all = vec![self.not()?];
        while keyword(self.peek(), "and") {
            self.at += 1;
            all.push(self.not()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Cond::And(all)
        })
    }

    fn not(&mut self) -> Result<Cond, Issue> {
        if keyword(self.peek(), "not") {
            self.at += 1;
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Cond, Issue> {
        let Some(tok) = self.peek().cloned() else {
            return Err(self.invalid("the condition ends too early".into()));
        };
        self.at += 1;
        match tok {
            Tok::Open => {
                let inner = self.or()?;
                match self.peek() {
                    Some(Tok::Close) => {
                        self.at += 1;
                        Ok(inner)
                    }
                    _ => Err(self.invalid("missing `)`".into())),
                }
            }
            Tok::Close => Err(self.invalid("unexpected `)`".into())),
            Tok::Word(word) if keyword(self.peek(), "of") => {
                self.at += 1;
                self.quantified(&word)
            }
            Tok::Word(word) => {
                if ["and", "or", "not", "of"]
                    .iter()
                    .any(|k| word.eq_ignore_ascii_case(k))
                {
                    return Err(self.invalid(format!("unexpected `{word}`")));
                }
                self.selections
                    .iter()
                    .find(|(name, _)| *name == word)
                    .map(|(_, cond)| cond.clone())
                    .ok_or_else(|| self.invalid(format!("unknown selection `{word}`")))
            }
        }
    }

    /// `<quantifier> of <target>`; the quantifier word is already consumed with `of`.
    fn quantified(&mut self, quantifier: &str) -> Result<Cond, Issue> {
        let Some(Tok::Word(target)) = self.peek().cloned() else {
            return Err(self.invalid(format!("`{quantifier} of` needs a selection pattern")));
        };
        self.at += 1;
        let chosen: Vec<Cond> = if target == "them" {
            // Sigma: `them` leaves out selections whose names start with an underscore.
            self.selections
                .iter()
                .filter(|(name, _)| !name.starts_with('_'))
                .map(|(_, c)| c.clone())
                .collect()
        } else {
            self.selections
                .iter()
                .filter(|(name, _)| star_match(&target, name))
                .map(|(_, c)| c.clone())
                .collect()
        };
        if chosen.is_empty() {
            return Err(self.invalid(format!("`{quantifier} of {target}` names no selection")));
        }
        let q = quantifier.to_ascii_lowercase();
        Ok(match q.as_str() {
            "all" => Cond::And(chosen),
            "any" | "1" => Cond::Or(chosen),
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => Cond::AtLeast(n, chosen),
                _ => return Err(self.invalid(format!("unknown quantifier `{quantifier}`"))),
            },
        })
    }
}

/// Selection-name patterns: `*` matches any run of characters, nothing else is special.
fn star_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        field::Field,
        ir::{Item, LitKind, Pattern},
    };

    fn sel(n: usize) -> Cond {
        Cond::Item(Item {
            field: Field::CommandLine,
            patterns: vec![Pattern::Literal {
                kind: LitKind::Exact,
                text: n.to_string(),
            }],
            all: false,
        })
    }

    fn sels() -> Vec<(String, Cond)> {
        ["selection_a", "selection_b", "filter_x", "_hidden"]
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), sel(i)))
            .collect()
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let s = sels();
        let c = parse("selection_a or selection_b and not filter_x", &s).unwrap();
        assert_eq!(
            c,
            Cond::Or(vec![
                sel(0),
                Cond::And(vec![sel(1), Cond::Not(Box::new(sel(2)))])
            ])
        );
        let c = parse("(selection_a or selection_b) and not filter_x", &s).unwrap();
        assert_eq!(
            c,
            Cond::And(vec![
                Cond::Or(vec![sel(0), sel(1)]),
                Cond::Not(Box::new(sel(2)))
            ])
        );
    }

    #[test]
    fn quantifiers_expand_patterns_and_them() {
        let s = sels();
        assert_eq!(
            parse("1 of selection_*", &s).unwrap(),
            Cond::Or(vec![sel(0), sel(1)])
        );
        assert_eq!(
            parse("any of selection*", &s).unwrap(),
            Cond::Or(vec![sel(0), sel(1)])
        );
        assert_eq!(
            parse("all of them", &s).unwrap(),
            Cond::And(vec![sel(0), sel(1), sel(2)])
        );
        assert_eq!(
            parse("2 of them", &s).unwrap(),
            Cond::AtLeast(2, vec![sel(0), sel(1), sel(2)])
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let s = sels();
        let err = |t: &str| match parse(t, &s) {
            Err(Issue::Invalid { message, .. }) => message,
            other => panic!("{t}: {other:?}"),
        };
        assert!(err("selection_c").contains("unknown selection `selection_c`"));
        assert!(err("1 of nothing_*").contains("names no selection"));
        assert!(err("(selection_a").contains("missing `)`"));
        assert!(err("selection_a and").contains("ends too early"));
        assert!(err("selection_a selection_b").contains("unexpected `selection_b`"));
        assert!(matches!(
            parse("selection_a | count() > 5", &s),
            Err(Issue::Unsupported(_))
        ));
    }

    #[test]
    fn star_patterns() {
        assert!(star_match("selection*", "selection"));
        assert!(star_match("sel*_img_*", "sel_x_img_1"));
        assert!(!star_match("filter_main_*", "filter_optional_x"));
        assert!(star_match("*", "anything"));
    }
}
