//! Test fixtures: events as ETW delivers them, property by property, as raw bytes.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::properties::{EventProperties, PropertyError};

#[derive(Default, Debug, Clone)]
pub struct Fixture {
    props: HashMap<String, Vec<u8>>,
}

impl Fixture {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: &str, bytes: Vec<u8>) -> Self {
        self.props.insert(name.to_string(), bytes);
        self
    }
}

impl EventProperties for Fixture {
    fn raw(&self, name: &str) -> Result<Cow<'_, [u8]>, PropertyError> {
        self.props
            .get(name)
            .map(|bytes| Cow::Borrowed(bytes.as_slice()))
            .ok_or_else(|| PropertyError::Missing(name.to_string()))
    }
}

/// A `win:UnicodeString` as ETW lays it out: UTF-16LE with a terminating NUL.
pub fn utf16z(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}
