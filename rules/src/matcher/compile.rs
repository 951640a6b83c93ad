//! Building a [`Matcher`] from rules: interning value tests as atoms and grouping them by
//! field into automata and regex sets.

use std::collections::{BTreeMap, HashMap};

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use regex::RegexSetBuilder;

use super::{expr::Expr, CompiledRule, FieldIndex, Literals, Matcher};
use crate::{
    field::Field,
    ir::{Cond, Item, Pattern, RuleIr},
};

/// Large enough for the corpus's `(.){200,}` in Unicode mode with room to grow; the default
/// 10 MiB is meant for a single regex, not a set of a whole corpus.
const REGEX_SET_SIZE_LIMIT: usize = 256 << 20;

#[derive(Default)]
struct Atoms {
    index: HashMap<(Field, String), u32>,
    defs: Vec<(Field, Pattern)>,
}

impl Atoms {
    fn intern(&mut self, field: Field, pattern: &Pattern) -> u32 {
        // Debug output is a faithful key: patterns are plain data.
        let key = (field, format!("{pattern:?}"));
        if let Some(&atom) = self.index.get(&key) {
            return atom;
        }
        let atom = self.defs.len() as u32;
        self.defs.push((field, pattern.clone()));
        self.index.insert(key, atom);
        atom
    }

    fn lower(&mut self, cond: &Cond) -> Expr {
        fn one_or(mut v: Vec<Expr>, make: fn(Box<[Expr]>) -> Expr) -> Expr {
            if v.len() == 1 {
                v.pop().unwrap_or(Expr::And(Box::new([])))
            } else {
                make(v.into_boxed_slice())
            }
        }
        match cond {
            Cond::Item(Item {
                field,
                patterns,
                all,
            }) => {
                let atoms: Vec<Expr> = patterns
                    .iter()
                    .map(|p| Expr::Atom(self.intern(*field, p)))
                    .collect();
                // An empty value list matches nothing, `all` or not.
                if *all && !atoms.is_empty() {
                    one_or(atoms, Expr::And)
                } else {
                    one_or(atoms, Expr::Or)
                }
            }
            Cond::And(v) => one_or(v.iter().map(|c| self.lower(c)).collect(), Expr::And),
            Cond::Or(v) => one_or(v.iter().map(|c| self.lower(c)).collect(), Expr::Or),
            Cond::Not(c) => Expr::Not(Box::new(self.lower(c))),
            Cond::AtLeast(n, v) => {
                Expr::AtLeast(*n, v.iter().map(|c| self.lower(c)).collect())
            }
        }
    }
}

/// Compiles `rules` into one matcher. Fails only when the automata or regex sets exceed
/// their size limits.
pub(crate) fn build(rules: &[&RuleIr]) -> Result<Matcher, String> {
    let mut atoms = Atoms::default();
    let mut compiled = Vec::with_capacity(rules.len());
    for rule in rules {
        compiled.push(CompiledRule {
            info: rule.info.clone(),
            product: rule.product.as_deref().map(Box::from),
            expr: atoms.lower(&rule.cond),
        });
    }

    let mut atom_rules: Vec<Vec<u32>> = vec![Vec::new(); atoms.defs.len()];
    let mut always = Vec::new();
    for (r, rule) in compiled.iter().enumerate() {
        let mut used = Vec::new();
        rule.expr.atoms(&mut used);
        used.sort_unstable();
        used.dedup();
        for atom in used {
            atom_rules[atom as usize].push(r as u32);
        }
        // With no atom hit, a rule's outcome is this constant; if it is true (`not filter`),
        // the rule must be looked at on every input.
        if rule.expr.eval(&|_| false) {
            always.push(r as u32);
        }
    }

    let mut by_field: BTreeMap<Field, Vec<(u32, &Pattern)>> = BTreeMap::new();
    for (atom, (field, pattern)) in atoms.defs.iter().enumerate() {
        by_field
            .entry(*field)
            .or_default()
            .push((atom as u32, pattern));
    }
    let mut fields = Vec::with_capacity(by_field.len());
    for (field, patterns) in by_field {
        fields.push(field_index(field, &patterns)?);
    }

    Ok(Matcher {
        fields,
        atom_count: atoms.defs.len(),
        atom_rules: atom_rules.into_iter().map(Vec::into_boxed_slice).collect(),
        always: always.into_boxed_slice(),
        rules: compiled,
    })
}

fn field_index(field: Field, patterns: &[(u32, &Pattern)]) -> Result<FieldIndex, String> {
    let mut index = FieldIndex {
        field,
        literals: None,
        empty_literals: Vec::new(),
        regexes: None,
        cidrs: Vec::new(),
        ranges: Vec::new(),
        nulls: Vec::new(),
        exists: Vec::new(),
    };
    let mut texts: Vec<&str> = Vec::new();
    let mut text_ids: HashMap<&str, usize> = HashMap::new();
    let mut targets: Vec<Vec<_>> = Vec::new();
    let mut regex_sources = Vec::new();
    let mut regex_atoms = Vec::new();
    for &(atom, pattern) in patterns {
        match pattern {
            Pattern::Literal { kind, text } if text.is_empty() => {
                index.empty_literals.push((*kind, atom))
            }
            Pattern::Literal { kind, text } => {
                let id = *text_ids.entry(text.as_str()).or_insert_with(|| {
                    texts.push(text.as_str());
                    targets.push(Vec::new());
                    texts.len() - 1
                });
                targets[id].push((*kind, atom));
            }
            Pattern::Regex(source) => {
                regex_sources.push(source.as_str());
                regex_atoms.push(atom);
            }
            Pattern::Cidr(net) => index.cidrs.push((*net, atom)),
            Pattern::Range { lo, hi } => index.ranges.push((*lo, *hi, atom)),
            Pattern::Null => index.nulls.push(atom),
            Pattern::Exists(want) => index.exists.push((*want, atom)),
        }
    }
    if !texts.is_empty() {
        // A DFA trades memory (a few MiB for the whole corpus) for the fastest scan, which is
        // the right trade on a per-event hot path.
        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&texts)
            .or_else(|_| {
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&texts)
            })
            .map_err(|e| format!("cannot build the literal automaton for {field:?}: {e}"))?;
        index.literals = Some(Literals { automaton, targets });
    }
    if !regex_sources.is_empty() {
        let set = RegexSetBuilder::new(&regex_sources)
            .size_limit(REGEX_SET_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("cannot build the regex set for {field:?}: {e}"))?;
        index.regexes = Some((set, regex_atoms));
    }
    Ok(index)
}
