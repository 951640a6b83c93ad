//! The compiled matcher for one kind of input (exec, connect or sample).
//!
//! Per input, each field the rules test is read once and run through one Aho-Corasick
//! automaton (all literals of all rules on that field), one `RegexSet` (the regexes that
//! must be scanned eagerly) and the few CIDR, range and null tests. Each hit sets an "atom"
//! bit; only rules owning a hit atom are evaluated (plus the rare rules that hold with no
//! atom at all, like `not filter`), and regexes guarded by a literal are run only then. So
//! the cost per input grows with the size of the input and the number of rules that are
//! close to matching, not with the number of rules.

mod compile;
mod expr;

use std::sync::Arc;

use ipnet::IpNet;
use regex::{Regex, RegexSet};

use crate::{
    engine::Match,
    field::Field,
    input::{MatchInput, Platform},
    ir::{LitKind, RuleInfo},
};
pub(crate) use compile::build;
use expr::{Bits, Expr};

#[derive(Debug, Default)]
pub(crate) struct Matcher {
    fields: Vec<FieldIndex>,
    atom_count: usize,
    /// For each atom, the regex to run on demand when it is not scanned eagerly.
    lazy: Box<[Option<LazyAtom>]>,
    /// For each atom, the rules whose condition reads it.
    atom_rules: Vec<Box<[u32]>>,
    /// Rules whose condition holds when none of their atoms hit.
    always: Box<[u32]>,
    rules: Vec<CompiledRule>,
}

#[derive(Debug)]
struct LazyAtom {
    field: Field,
    regex: Regex,
}

#[derive(Debug)]
struct CompiledRule {
    info: Arc<RuleInfo>,
    product: Product,
    expr: Expr,
}

/// Which platforms' inputs a rule applies to (Sigma `product`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Product {
    Any,
    Only(Platform),
    /// A product the sensor never reports (e.g. `aws`): the rule never applies.
    Never,
}

impl Product {
    fn of(product: Option<&str>) -> Self {
        match product {
            None => Product::Any,
            Some(name) => Platform::from_product(name).map_or(Product::Never, Product::Only),
        }
    }

    fn admits(self, platform: Platform) -> bool {
        match self {
            Product::Any => true,
            Product::Only(p) => p == platform,
            Product::Never => false,
        }
    }
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
    automaton: Automaton,
    /// For each automaton pattern, the (kind, atom) pairs it stands for: the same text can be
    /// a `contains` in one rule and an `endswith` in another.
    targets: Vec<Vec<(LitKind, u32)>>,
}

/// A DFA when it fits its size limit (fastest), else a contiguous NFA.
#[derive(Debug)]
enum Automaton {
    Dfa(aho_corasick::dfa::DFA),
    Nfa(aho_corasick::nfa::contiguous::NFA),
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
        let mut scratch = String::new();
        for index in &self.fields {
            index.scan(input, &mut scratch, &mut hits);
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
        // Lazy regex results, computed at most once per input; few per input, so a short
        // list beats a bit set that would need allocating every time.
        let mut computed: Vec<(u32, bool)> = Vec::new();
        let mut value = |atom: u32| -> bool {
            if hits.get(atom) {
                return true;
            }
            let Some(lazy) = &self.lazy[atom as usize] else {
                return false;
            };
            if let Some(&(_, v)) = computed.iter().find(|(a, _)| *a == atom) {
                return v;
            }
            let mut v = false;
            lazy.field.each_value(input, &mut scratch, &mut |value| {
                v = v || value.with_text(|text| lazy.regex.is_match(text))
            });
            computed.push((atom, v));
            v
        };
        for rule in candidates.ones() {
            let rule = &self.rules[rule as usize];
            if !rule.product.admits(input.platform) {
                continue;
            }
            if rule.expr.eval(&mut value) {
                out.push(Match {
                    rule: Arc::clone(&rule.info),
                });
            }
        }
    }
}

impl FieldIndex {
    fn scan(&self, input: &MatchInput<'_>, scratch: &mut String, hits: &mut Bits) {
        let mut present = false;
        let mut non_empty = false;
        let wants_text =
            self.literals.is_some() || self.regexes.is_some() || !self.empty_literals.is_empty();
        self.field.each_value(input, scratch, &mut |value| {
            present = true;
            non_empty |= !value.is_empty();
            if wants_text {
                value.with_text(|text| self.scan_text(text, hits));
            }
            if !self.cidrs.is_empty() {
                if let Some(ip) = value.ip() {
                    for (net, atom) in &self.cidrs {
                        if net.contains(&ip) {
                            hits.set(*atom);
                        }
                    }
                }
            }
            if !self.ranges.is_empty() {
                if let Some(n) = value.number() {
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

    fn scan_text(&self, text: &str, hits: &mut Bits) {
        if let Some(literals) = &self.literals {
            literals.scan(text, hits);
        }
        for &(kind, atom) in &self.empty_literals {
            if kind != LitKind::Exact || text.is_empty() {
                hits.set(atom);
            }
        }
        if let Some((set, atoms)) = &self.regexes {
            for i in set.matches(text).iter() {
                hits.set(atoms[i]);
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
        match &self.automaton {
            Automaton::Dfa(dfa) => self.walk(dfa, haystack.as_bytes(), hits),
            Automaton::Nfa(nfa) => self.walk(nfa, haystack.as_bytes(), hits),
        }
    }

    /// Walks the automaton byte by byte and handles every match at every position. A command
    /// line hits short patterns (`-d`, `sh`, `0`) many times; doing it in one loop instead of
    /// through the overlapping-match iterator (one call per match) halves the cost on long
    /// command lines.
    fn walk<A: aho_corasick::automaton::Automaton>(&self, a: &A, haystack: &[u8], hits: &mut Bits) {
        use aho_corasick::Anchored;
        let Ok(mut sid) = a.start_state(Anchored::No) else {
            return;
        };
        let len = haystack.len();
        for (i, &byte) in haystack.iter().enumerate() {
            sid = a.next_state(Anchored::No, sid, byte);
            if !a.is_special(sid) {
                continue;
            }
            if a.is_dead(sid) {
                return;
            }
            if !a.is_match(sid) {
                continue;
            }
            let end = i + 1;
            for k in 0..a.match_len(sid) {
                let pattern = a.match_pattern(sid, k);
                let start = end - a.pattern_len(pattern);
                for &(kind, atom) in &self.targets[pattern.as_usize()] {
                    let hit = match kind {
                        LitKind::Contains => true,
                        LitKind::Prefix => start == 0,
                        LitKind::Suffix => end == len,
                        LitKind::Exact => start == 0 && end == len,
                    };
                    if hit {
                        hits.set(atom);
                    }
                }
            }
        }
    }
}
