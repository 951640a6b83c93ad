//! Compiled rule conditions over atom bits, and the bit sets they read.

/// Bits kept inline: 2048 atoms or rules fit without a heap allocation per input.
const INLINE_WORDS: usize = 32;

/// A fixed-size bit set: which atoms hit, which rules are candidates.
#[derive(Clone, Debug)]
pub(crate) struct Bits {
    inline: [u64; INLINE_WORDS],
    heap: Vec<u64>,
    len: usize,
}

impl Bits {
    pub(crate) fn new(len: usize) -> Self {
        let words = len.div_ceil(64);
        Bits {
            inline: [0; INLINE_WORDS],
            heap: if words > INLINE_WORDS {
                vec![0; words]
            } else {
                Vec::new()
            },
            len: words,
        }
    }

    #[inline]
    fn words(&self) -> &[u64] {
        if self.len > INLINE_WORDS {
            &self.heap
        } else {
            &self.inline[..self.len]
        }
    }

    #[inline]
    fn words_mut(&mut self) -> &mut [u64] {
        if self.len > INLINE_WORDS {
            &mut self.heap
        } else {
            &mut self.inline[..self.len]
        }
    }

    #[inline]
    pub(crate) fn set(&mut self, i: u32) {
        self.words_mut()[(i / 64) as usize] |= 1 << (i % 64);
    }

    #[inline]
    pub(crate) fn get(&self, i: u32) -> bool {
        self.words()[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Indexes of set bits, ascending.
    pub(crate) fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.words().iter().enumerate().flat_map(|(w, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let bit = word.trailing_zeros();
                word &= word - 1;
                Some(w as u32 * 64 + bit)
            })
        })
    }
}

/// A rule's condition with every value test replaced by its atom number.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    Atom(u32),
    And(Box<[Expr]>),
    Or(Box<[Expr]>),
    Not(Box<Expr>),
    AtLeast(usize, Box<[Expr]>),
}

impl Expr {
    /// Evaluates with `hits` telling each atom's value; short-circuits, so atoms that are
    /// costly to compute (lazy regexes) are only asked for when they decide something.
    pub(crate) fn eval(&self, hits: &mut dyn FnMut(u32) -> bool) -> bool {
        match self {
            Expr::Atom(atom) => hits(*atom),
            Expr::And(all) => all.iter().all(|e| e.eval(hits)),
            Expr::Or(any) => any.iter().any(|e| e.eval(hits)),
            Expr::Not(e) => !e.eval(hits),
            Expr::AtLeast(n, of) => {
                let mut count = 0;
                for e in of.iter() {
                    if e.eval(hits) {
                        count += 1;
                        if count >= *n {
                            return true;
                        }
                    }
                }
                false
            }
        }
    }

    /// Three-valued (Kleene) evaluation: `None` is "unknown". Tells, at compile time, whether
    /// a rule's outcome can depend on atoms that are not scanned eagerly.
    pub(crate) fn eval3(&self, atom: &dyn Fn(u32) -> Option<bool>) -> Option<bool> {
        match self {
            Expr::Atom(a) => atom(*a),
            Expr::And(all) => {
                let mut out = Some(true);
                for e in all.iter() {
                    match e.eval3(atom) {
                        Some(false) => return Some(false),
                        None => out = None,
                        Some(true) => {}
                    }
                }
                out
            }
            Expr::Or(any) => {
                let mut out = Some(false);
                for e in any.iter() {
                    match e.eval3(atom) {
                        Some(true) => return Some(true),
                        None => out = None,
                        Some(false) => {}
                    }
                }
                out
            }
            Expr::Not(e) => e.eval3(atom).map(|v| !v),
            Expr::AtLeast(n, of) => {
                let values: Vec<_> = of.iter().map(|e| e.eval3(atom)).collect();
                let yes = values.iter().filter(|v| **v == Some(true)).count();
                let maybe = values.iter().filter(|v| v.is_none()).count();
                if yes >= *n {
                    Some(true)
                } else if yes + maybe < *n {
                    Some(false)
                } else {
                    None
                }
            }
        }
    }

    /// A set of atoms at least one of which must hit for the expression to hold, with its
    /// estimated cost (sum of the atoms' hit likelihoods); the cheapest such set found.
    /// `likelihood` is `None` for atoms that are not scanned (they cannot trigger a rule).
    /// `None` when no such set is known (under `not`, or only unscanned atoms).
    pub(crate) fn trigger(
        &self,
        likelihood: &dyn Fn(u32) -> Option<f64>,
    ) -> Option<(f64, Vec<u32>)> {
        match self {
            Expr::Atom(a) => likelihood(*a).map(|p| (p, vec![*a])),
            // Any one conjunct is necessary: take the rarest.
            Expr::And(all) => all
                .iter()
                .filter_map(|e| e.trigger(likelihood))
                .min_by(|a, b| a.0.total_cmp(&b.0)),
            // Every alternative must be covered.
            Expr::Or(any) | Expr::AtLeast(_, any) => {
                let mut cost = 0.0;
                let mut atoms = Vec::new();
                for e in any.iter() {
                    let (c, mut a) = e.trigger(likelihood)?;
                    cost += c;
                    atoms.append(&mut a);
                }
                Some((cost, atoms))
            }
            Expr::Not(_) => None,
        }
    }

    pub(crate) fn atoms(&self, out: &mut Vec<u32>) {
        match self {
            Expr::Atom(atom) => out.push(*atom),
            Expr::And(v) | Expr::Or(v) | Expr::AtLeast(_, v) => v.iter().for_each(|e| e.atoms(out)),
            Expr::Not(e) => e.atoms(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_iterate_in_order() {
        for len in [200, 5000] {
            let mut b = Bits::new(len);
            for i in [3, 64, 65, 199] {
                b.set(i);
            }
            assert_eq!(b.ones().collect::<Vec<_>>(), vec![3, 64, 65, 199]);
            assert!(b.get(65) && !b.get(66));
        }
    }

    #[test]
    fn at_least_counts() {
        let e = Expr::AtLeast(2, vec![Expr::Atom(0), Expr::Atom(1), Expr::Atom(2)].into());
        assert!(e.eval(&mut |a| a != 1));
        assert!(!e.eval(&mut |a| a == 1));
    }

    #[test]
    fn triggers_pick_the_rarest_necessary_atoms() {
        let p = |a: u32| match a {
            0 => Some(0.9),
            1 => Some(0.01),
            2 => Some(0.02),
            _ => None,
        };
        // (common and (rare1 or rare2)) and not x: rare1 or rare2 triggers it.
        let e = Expr::And(
            vec![
                Expr::Atom(0),
                Expr::Or(vec![Expr::Atom(1), Expr::Atom(2)].into()),
                Expr::Not(Box::new(Expr::Atom(3))),
            ]
            .into(),
        );
        assert_eq!(e.trigger(&p).map(|t| t.1), Some(vec![1, 2]));
        assert_eq!(Expr::Not(Box::new(Expr::Atom(1))).trigger(&p), None);
        assert_eq!(
            Expr::Or(vec![Expr::Atom(1), Expr::Atom(3)].into()).trigger(&p),
            None
        );
    }

    #[test]
    fn kleene_logic_tells_what_unknown_atoms_can_change() {
        let unknown_1 = |a: u32| if a == 1 { None } else { Some(false) };
        let and = Expr::And(vec![Expr::Atom(0), Expr::Atom(1)].into());
        assert_eq!(and.eval3(&unknown_1), Some(false));
        let or = Expr::Or(vec![Expr::Atom(0), Expr::Atom(1)].into());
        assert_eq!(or.eval3(&unknown_1), None);
        let not = Expr::Not(Box::new(Expr::Atom(0)));
        assert_eq!(not.eval3(&unknown_1), Some(true));
        let not_and = Expr::Not(Box::new(and));
        assert_eq!(not_and.eval3(&unknown_1), Some(true));
    }
}
