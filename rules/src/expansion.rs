//! Bounding what a YAML document expands to.
//!
//! An alias (`*name`) repeats the whole node its anchor names, wherever it appears, so a small
//! file can stand for a huge document (a "YAML bomb"). yaml_serde stops nested expansions (the
//! billion laughs), but not one large anchor repeated many times: a 26 KB policy naming a
//! 3,000-value list 3,000 times took 930 MB and 15 s to refuse. Every document is therefore
//! measured first, without building anything, and refused when its aliases add more than
//! [`ALIAS_BUDGET`] values to what the text itself holds.

use std::{cell::Cell, fmt};

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};

/// Values aliases may add to one document. A document without aliases holds about one value
/// per byte at most, so the budget is the text's length plus this.
pub(crate) const ALIAS_BUDGET: usize = 100_000;

/// Checks that `doc`, with its aliases expanded, holds at most `text_len + ALIAS_BUDGET`
/// values; the error (a yaml_serde error, with the location where the budget ran out) says so.
pub(crate) fn check<'de, D: Deserializer<'de>>(doc: D, text_len: usize) -> Result<(), D::Error> {
    let left = Cell::new(text_len.saturating_add(ALIAS_BUDGET));
    Count(&left).deserialize(doc)
}

/// Counts down the values visited; an error when none are left.
#[derive(Clone, Copy)]
struct Count<'a>(&'a Cell<usize>);

impl Count<'_> {
    fn one<E: de::Error>(self) -> Result<(), E> {
        match self.0.get().checked_sub(1) {
            Some(left) => {
                self.0.set(left);
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "aliases expand this document by more than {ALIAS_BUDGET} values (a YAML bomb?)"
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Count<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Count<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.one()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.one()
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.one()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.one()
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.one()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.one()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.one()
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        self.one()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.one()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.one()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.one()?;
        self.deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.one()?;
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.one()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.one()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    /// A tagged value (`!tag value`).
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use de::VariantAccess;
        self.one()?;
        let ((), value) = data.variant_seed(self)?;
        value.newtype_variant_seed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(text: &str) -> Result<(), String> {
        for doc in yaml_serde::Deserializer::from_str(text) {
            check(doc, text.len()).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    #[test]
    fn ordinary_documents_and_modest_aliases_pass() {
        measure("a: 1\nb: [x, y, {c: !tag d}]\n---\n- e\n").unwrap();
        let list = (0..100)
            .map(|i| format!("v{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let uses = vec!["*l"; 100].join(", ");
        measure(&format!("l: &l [{list}]\nuses: [{uses}]\n")).unwrap();
    }

    /// Found while fuzzing the loaders (see the module docs): yaml_serde's own repetition
    /// limit lets a large anchor repeated many times through.
    #[test]
    fn a_large_anchor_repeated_many_times_is_refused() {
        let list = (0..3000)
            .map(|i| format!("v{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let uses = vec!["*l"; 3000].join(",");
        let err = measure(&format!("l: &l [{list}]\nuses: [{uses}]\n")).unwrap_err();
        assert!(
            err.contains("aliases expand this document by more than 100000 values"),
            "{err}"
        );
    }
}
