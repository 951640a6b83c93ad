//! Compiled rule conditions over atom bits, and the bit sets they read.

/// A fixed-size bit set: which atoms hit, which rules are candidates.
#[derive(Clone, Debug)]
pub(crate) struct Bits {
    words: Vec<u64>,
}

impl Bits {
    pub(crate) fn new(len: usize) -> Self {
        Bits {
            words: vec![0; len.div_ceil(64)],
        }
    }

    #[inline]
    pub(crate) fn set(&mut self, i: u32) {
        self.words[(i / 64) as usize] |= 1 << (i % 64);
    }

    #[inline]
    pub(crate) fn get(&self, i: u32) -> bool {
        self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Indexes of set bits, ascending.
    pub(crate) fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
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
    pub(crate) fn eval(&self, hits: &dyn Fn(u32) -> bool) -> bool {
        match self {
            Expr::Atom(atom) => hits(*atom),
            Expr::And(all) => all.iter().all(|e| e.eval(hits)),
            Expr::Or(any) => any.iter().any(|e| e.eval(hits)),
            Expr::Not(e) => !e.eval(hits),
            Expr::AtLeast(n, of) => of.iter().filter(|e| e.eval(hits)).take(*n).count() >= *n,
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
        let mut b = Bits::new(200);
        for i in [3, 64, 65, 199] {
            b.set(i);
        }
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![3, 64, 65, 199]);
        assert!(b.get(65) && !b.get(66));
    }

    #[test]
    fn at_least_counts() {
        let e = Expr::AtLeast(2, vec![Expr::Atom(0), Expr::Atom(1), Expr::Atom(2)].into());
        assert!(e.eval(&|a| a != 1));
        assert!(!e.eval(&|a| a == 1));
    }
}
