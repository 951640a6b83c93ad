//! The compiled matcher for one kind of input (exec, connect or sample).
//!
//! Per input, each field the rules test is read once and run through one Aho-Corasick
//! automaton (all literals of all rules on that field), one `RegexSet` (all regexes and
//! inner-wildcard globs on it) and the few CIDR, range and null tests. Each hit sets an
//! "atom" bit; only rules owning a hit atom are evaluated (plus the rare rules that hold with
//! no atom at all, like `not filter`). So the cost per input grows with the size of the
//! input and the number of rules that are close to matching, not with the number of rules.

mod compile;
mod expr;

use std::{net::IpAddr, sync::Arc};

use aho_corasick::AhoCorasick;
use ipnet::IpNet;
use regex::RegexSet;

use crate::{
    engine::Match,
    field::{canonical, Field},
    input::MatchInput,
    ir::{LitKind, RuleInfo},
};
pub(crate) use compile::build;
use expr::{Bits, Expr};

#[derive(Debug, Default)]
pub(crate) struct Matcher {
    fields: Vec<FieldIndex>,
    atom_count: usize,
    /// For each atom, the rules whose condition reads it.
    atom_rules: Vec<Box<[u32]>>,
    /// Rules whose condition holds when none of their atoms hit.
    always: Box<[u32]>,
    rules: Vec<CompiledRule>,
}

#[derive(Debug)]
struct CompiledRule {
    info: Arc<RuleInfo>,
    product: Option<Box<str>>,
    expr: Expr,
}

/// Everything tested on one field, across all rules.
#[derive(Debug)]
struct FieldIndex {
    field: Field,
    literals: Option<Literals>,
    /// Empty literals cannot go into the automaton: they test presence (or emptiness).
    empty_literals: Vec<(LitKind, u32)>,
    regexes: Option<(RegexSet, Vec<u32>)>,
    cidrs: Vec<(IpNet, u32)>,
    ranges: Vec<(i128, i128, u32)>,
    nulls: Vec<u32>,
    exists: Vec<(bool, u32)>,
}

#[derive(Debug)]
struct Literals {
    automaton: AhoCorasick,
    /// For each automaton pattern, the (kind, atom) pairs it stands for: the same text can be
    /// a `contains` in one rule and an `endswith` in another.
    targets: Vec<Vec<(LitKind, u32)>>,
}

impl Matcher {
    pub(crate) fn len(&self) -> usize {
        self.rules.len()
    }

    pub(crate) fn evaluate(&self, input: &MatchInput<'_>, out: &mut Vec<Match>) {
        if self.rules.is_empty() {
            return;
        }
        let mut hits = Bits::new(self.atom_count);
        for index in &self.fields {
            index.scan(input, &mut hits);
        }
        let mut candidates = Bits::new(self.rules.len());
        for atom in hits.ones() {
            for &rule in self.atom_rules[atom as usize].iter() {
                candidates.set(rule);
            }
        }
        for &rule in self.always.iter() {
            candidates.set(rule);
        }
        let platform = input.platform.as_str();
        for rule in candidates.ones() {
            let rule = &self.rules[rule as usize];
            if rule.product.as_deref().is_some_and(|p| p != platform) {
                continue;
            }
            if rule.expr.eval(&|atom| hits.get(atom)) {
                out.push(Match {
                    rule: Arc::clone(&rule.info),
                });
            }
        }
    }
}

impl FieldIndex {
    fn scan(&self, input: &MatchInput<'_>, hits: &mut Bits) {
        let mut present = false;
        let mut non_empty = false;
        self.field.each_value(input, &mut |value| {
            present = true;
            non_empty |= !value.is_empty();
            if let Some(literals) = &self.literals {
                literals.scan(value, hits);
            }
            for &(kind, atom) in &self.empty_literals {
                if kind != LitKind::Exact || value.is_empty() {
                    hits.set(atom);
                }
            }
            if let Some((set, atoms)) = &self.regexes {
                for i in set.matches(value).iter() {
                    hits.set(atoms[i]);
                }
            }
            if !self.cidrs.is_empty() {
                if let Ok(ip) = value.parse::<IpAddr>() {
                    let ip = canonical(ip);
                    for (net, atom) in &self.cidrs {
                        if net.contains(&ip) {
                            hits.set(*atom);
                        }
                    }
                }
            }
            if !self.ranges.is_empty() {
                if let Ok(n) = value.parse::<i128>() {
                    for &(lo, hi, atom) in &self.ranges {
                        if (lo..=hi).contains(&n) {
                            hits.set(atom);
                        }
                    }
                }
            }
        });
        if !non_empty {
            for &atom in &self.nulls {
                hits.set(atom);
            }
        }
        for &(want, atom) in &self.exists {
            if present == want {
                hits.set(atom);
            }
        }
    }
}

impl Literals {
    fn scan(&self, value: &str, hits: &mut Bits) {
        // The automaton folds ASCII case itself; only non-ASCII text needs lowering first
        // (the patterns were lowered at load), which keeps the common case allocation-free.
        let lowered;
        let haystack = if value.is_ascii() {
            value
        } else {
            lowered = value.to_lowercase();
            lowered.as_str()
        };
        let len = haystack.len();
        for m in self.automaton.find_overlapping_iter(haystack) {
            for &(kind, atom) in &self.targets[m.pattern().as_usize()] {
                let hit = match kind {
                    LitKind::Contains => true,
                    LitKind::Prefix => m.start() == 0,
                    LitKind::Suffix => m.end() == len,
                    LitKind::Exact => m.start() == 0 && m.end() == len,
                };
                if hit {
                    hits.set(atom);
                }
            }
        }
    }
}
