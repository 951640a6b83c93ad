//! Building a [`Matcher`] from rules: interning value tests as atoms and grouping them by
//! field into automata and regex sets.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;
use regex::{Regex, RegexSetBuilder};

use super::{
    expr::Expr, Automaton, CompiledRule, FieldIndex, LazyAtom, Literals, Matcher, Product,
};
use crate::{
    field::Field,
    ir::{Cond, Item, LitKind, Pattern, RuleIr},
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
            Cond::AtLeast(n, v) => Expr::AtLeast(*n, v.iter().map(|c| self.lower(c)).collect()),
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
            product: Product::of(rule.product.as_deref()),
            expr: atoms.lower(&rule.cond),
        });
    }

    // Regexes are the costliest tests. Most sit next to a literal in an AND (an Image suffix,
    // a command-line keyword), so they are left lazy: computed during evaluation, only for
    // rules a literal already made candidates. A regex whose rule could fire without any
    // eager atom hitting (a regex-only selection) is scanned eagerly, in the field's RegexSet.
    let mut eager: Vec<bool> = atoms
        .defs
        .iter()
        .map(|(_, p)| !matches!(p, Pattern::Regex(_)))
        .collect();
    for rule in &compiled {
        let unknown = rule
            .expr
            .eval3(&|a| if eager[a as usize] { Some(false) } else { None })
            .is_none();
        if unknown {
            let mut used = Vec::new();
            rule.expr.atoms(&mut used);
            for atom in used {
                eager[atom as usize] = true;
            }
        }
    }

    // Each rule is indexed under its trigger: the rarest set of scanned atoms one of which
    // must hit for it to hold (e.g. `Image|endswith: /gcc` rather than `CommandLine|contains:
    // -o`), so an input wakes only the rules it is close to matching.
    let likelihood = |a: u32| eager[a as usize].then(|| likelihood(&atoms.defs[a as usize].1));
    let mut atom_rules: Vec<Vec<u32>> = vec![Vec::new(); atoms.defs.len()];
    let mut always = Vec::new();
    for (r, rule) in compiled.iter().enumerate() {
        let mut used = match rule.expr.trigger(&likelihood) {
            Some((_, atoms)) => atoms,
            None => {
                let mut used = Vec::new();
                rule.expr.atoms(&mut used);
                used
            }
        };
        used.sort_unstable();
        used.dedup();
        for atom in used.into_iter().filter(|a| eager[*a as usize]) {
            atom_rules[atom as usize].push(r as u32);
        }
        // With no eager atom hit, a rule's outcome is now this constant (lazy atoms can no
        // longer change it); if it is true (`not filter`), the rule is looked at on every
        // input. Unknown cannot remain after the promotion above; treat it as "always" anyway.
        let without_hits = rule
            .expr
            .eval3(&|a| if eager[a as usize] { Some(false) } else { None });
        if without_hits != Some(false) {
            always.push(r as u32);
        }
    }

    let mut lazy: Vec<Option<LazyAtom>> = Vec::with_capacity(atoms.defs.len());
    let mut by_field: BTreeMap<Field, Vec<(u32, &Pattern)>> = BTreeMap::new();
    for (atom, (field, pattern)) in atoms.defs.iter().enumerate() {
        if eager[atom] {
            lazy.push(None);
            by_field
                .entry(*field)
                .or_default()
                .push((atom as u32, pattern));
        } else if let Pattern::Regex(source) = pattern {
            let regex =
                Regex::new(source).map_err(|e| format!("cannot build regex {source:?}: {e}"))?;
            lazy.push(Some(LazyAtom {
                field: *field,
                regex,
            }));
        }
    }
    let mut fields = Vec::with_capacity(by_field.len());
    for (field, patterns) in by_field {
        fields.push(field_index(field, &patterns)?);
    }

    Ok(Matcher {
        fields,
        atom_count: atoms.defs.len(),
        lazy: lazy.into_boxed_slice(),
        atom_rules: atom_rules.into_iter().map(Vec::into_boxed_slice).collect(),
        always: always.into_boxed_slice(),
        rules: compiled,
    })
}

/// A rough chance that a scanned atom hits a typical input (lower is rarer), to pick
/// triggers: a literal of n characters is rarer the longer it is, and `contains` may match
/// anywhere in a command line of some 50 characters.
fn likelihood(pattern: &Pattern) -> f64 {
    let p = match pattern {
        Pattern::Literal { kind, text } => {
            let chance = 0.25f64.powi(text.chars().count().min(30) as i32);
            match kind {
                LitKind::Exact => chance * 0.1,
                LitKind::Prefix | LitKind::Suffix => chance,
                LitKind::Contains => chance * 50.0,
            }
        }
        Pattern::Regex(_) => 0.5,
        Pattern::Cidr(_) | Pattern::Range { .. } => 0.3,
        Pattern::Null | Pattern::Exists(false) => 0.5,
        Pattern::Exists(true) => 1.0,
    };
    p.min(1.0)
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
        // An address written as a plain value (`DestinationIp: 127.0.0.1`) is tested as a
        // one-address network: no text form needed, and `::1` equals `0::1`.
        if let (
            true,
            Pattern::Literal {
                kind: LitKind::Exact,
                text,
            },
        ) = (field.is_address(), pattern)
        {
            if let Ok(ip) = text.parse::<std::net::IpAddr>() {
                index
                    .cidrs
                    .push((IpNet::from(protocol::net::canonical_ip(ip)), atom));
                continue;
            }
        }
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
        // the right trade on a per-event hot path; past its size limit, a contiguous NFA.
        let automaton = match aho_corasick::dfa::DFA::builder()
            .ascii_case_insensitive(true)
            .build(&texts)
        {
            Ok(dfa) => Automaton::Dfa(dfa),
            Err(_) => aho_corasick::nfa::contiguous::NFA::builder()
                .ascii_case_insensitive(true)
                .build(&texts)
                .map(Automaton::Nfa)
                .map_err(|e| format!("cannot build the literal automaton for {field:?}: {e}"))?,
        };
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
