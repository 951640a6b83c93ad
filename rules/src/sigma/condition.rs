//! The Sigma `condition` expression: `and`, `or`, `not`, parentheses, `1 of x*`,
//! `all of x*`, `any of x*`, `N of x*`, `1 of them`, `all of them`.

use super::Issue;
use crate::ir::Cond;

/// Parentheses and `not` nest this deep at most. Real rules use a few levels; the parser, and
/// everything that walks the condition after it, recurses once per level, so an unbounded
/// depth would overflow the stack of the thread loading the rules.
const MAX_NESTING: usize = 32;

/// A condition holds this many values at most, counted after expansion: each reference to a
/// selection (by name or through `N of`) copies it, so a short condition naming a large
/// selection many times would otherwise make the matcher grow with the square of the file.
const MAX_SIZE: usize = 20_000;

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
    /// Open parentheses and `not`s around the current token.
    depth: usize,
    /// Values of the selections referenced so far ([`Cond::size`]).
    size: usize,
}

/// Parses `text` into a condition over the named `selections`.
pub(crate) fn parse(text: &str, selections: &[(String, Cond)]) -> Result<Cond, Issue> {
    let mut parser = Parser {
        toks: tokenize(text)?,
        at: 0,
        selections,
        text,
        depth: 0,
        size: 0,
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
        // Quote the condition, but not a page of it.
        const SHOWN: usize = 120;
        let quoted = match self.text.char_indices().nth(SHOWN) {
            Some((cut, _)) => format!("{:?}...", &self.text[..cut]),
            None => format!("{:?}", self.text),
        };
        Issue::Invalid {
            field: Some("condition".into()),
            message: format!("{message} in {quoted}"),
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    /// Parses one nesting level deeper with `parse`, within [`MAX_NESTING`].
    fn nested(&mut self, parse: fn(&mut Self) -> Result<Cond, Issue>) -> Result<Cond, Issue> {
        if self.depth == MAX_NESTING {
            return Err(self.invalid(format!(
                "parentheses and `not` nest deeper than {MAX_NESTING} levels"
            )));
        }
        self.depth += 1;
        let cond = parse(self);
        self.depth -= 1;
        cond
    }

    /// A copy of the selections `chosen` for the condition, within [`MAX_SIZE`].
    fn copy<'c>(&mut self, chosen: impl IntoIterator<Item = &'c Cond>) -> Result<Vec<Cond>, Issue> {
        let mut out = Vec::new();
        for cond in chosen {
            self.size += cond.size();
            if self.size > MAX_SIZE {
                return Err(self.invalid(format!(
                    "the selections it names add up to more than {MAX_SIZE} values (each \
                     reference counts the whole selection)"
                )));
            }
            out.push(cond.clone());
        }
        Ok(out)
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
            return Ok(Cond::Not(Box::new(self.nested(Self::not)?)));
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
                let inner = self.nested(Self::or)?;
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
                let selections = self.selections;
                let Some((_, cond)) = selections.iter().find(|(name, _)| *name == word) else {
                    return Err(self.invalid(format!("unknown selection `{word}`")));
                };
                Ok(self.copy([cond])?.remove(0))
            }
        }
    }

    /// `<quantifier> of <target>`; the quantifier word is already consumed with `of`.
    fn quantified(&mut self, quantifier: &str) -> Result<Cond, Issue> {
        let Some(Tok::Word(target)) = self.peek().cloned() else {
            return Err(self.invalid(format!("`{quantifier} of` needs a selection pattern")));
        };
        self.at += 1;
        let selections = self.selections;
        let chosen = selections
            .iter()
            .filter(|(name, _)| {
                if target == "them" {
                    // Sigma: `them` leaves out selections whose names start with an underscore.
                    !name.starts_with('_')
                } else {
                    star_match(&target, name)
                }
            })
            .map(|(_, c)| c);
        let chosen = self.copy(chosen)?;
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

    /// Found while fuzzing the loaders: 4,000 nested parentheses overflowed the stack of
    /// `osprey rules check` (and would abort the collector on a reload).
    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let s = sels();
        let depth = 100_000;
        let parens = format!("{}selection_a{}", "(".repeat(depth), ")".repeat(depth));
        let nots = format!("{}selection_a", "not ".repeat(depth));
        for text in [parens, nots] {
            match parse(&text, &s) {
                Err(Issue::Invalid { message, .. }) => {
                    assert!(
                        message.contains("nest deeper than 32 levels"),
                        "{message:.80}"
                    )
                }
                other => panic!("{other:.80?}"),
            }
        }
        let ok = format!("{}selection_a{}", "(".repeat(31), ")".repeat(31));
        assert_eq!(parse(&ok, &s).unwrap(), sel(0));
        assert!(parse(&format!("not {ok}"), &s).is_ok(), "32 levels");
    }

    /// Found while fuzzing the loaders: an 18 KB rule naming an 800-value selection 1,000
    /// times compiled 800,000 values (100 MB, growing with the square of the file).
    #[test]
    fn references_cannot_multiply_a_selection_past_the_limit() {
        let big = Cond::Item(Item {
            field: Field::CommandLine,
            patterns: (0..1000)
                .map(|n| Pattern::Literal {
                    kind: LitKind::Exact,
                    text: n.to_string(),
                })
                .collect(),
            all: false,
        });
        let s = vec![("big".to_string(), big)];
        assert!(parse(&vec!["big"; 20].join(" or "), &s).is_ok());
        for text in [
            vec!["big"; 21].join(" or "),
            vec!["1 of them"; 21].join(" and "),
        ] {
            match parse(&text, &s) {
                Err(Issue::Invalid { message, .. }) => {
                    assert!(message.contains("more than 20000 values"), "{message:.80}")
                }
                other => panic!("{other:.80?}"),
            }
        }
    }

    #[test]
    fn star_patterns() {
        assert!(star_match("selection*", "selection"));
        assert!(star_match("sel*_img_*", "sel_x_img_1"));
        assert!(!star_match("filter_main_*", "filter_optional_x"));
        assert!(star_match("*", "anything"));
    }
}
