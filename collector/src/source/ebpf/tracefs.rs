//! Tracepoint record layouts, read from tracefs `format` files (they change between kernels).

use std::{collections::HashMap, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read tracepoint format {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("tracepoint {tracepoint} has no field {field}")]
    NoField { tracepoint: String, field: String },
}

/// Field name → byte offset of one tracepoint's record.
pub struct Format {
    tracepoint: String,
    fields: HashMap<String, u32>,
}

impl Format {
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Self, FormatError> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| FormatError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::parse(&format!("{category}/{name}"), &text))
    }

    pub fn parse(tracepoint: &str, text: &str) -> Self {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let mut decl = None;
            let mut offset = None;
            for part in line.split(';') {
                let part = part.trim();
                if let Some(d) = part.strip_prefix("field:") {
                    decl = Some(d);
                } else if let Some(o) = part.strip_prefix("offset:") {
                    offset = o.parse::<u32>().ok();
                }
            }
            if let (Some(decl), Some(offset)) = (decl, offset) {
                // "const char * filename", "__data_loc char[] filename", "__u8 saddr[4]"
                let last = decl.split_whitespace().last().unwrap_or("");
                let name = last
                    .split('[')
                    .next()
                    .unwrap_or(last)
                    .trim_start_matches('*');
                fields.insert(name.to_string(), offset);
            }
        }
        Format {
            tracepoint: tracepoint.to_string(),
            fields,
        }
    }

    pub fn offset(&self, field: &str) -> Result<u32, FormatError> {
        self.fields
            .get(field)
            .copied()
            .ok_or_else(|| FormatError::NoField {
                tracepoint: self.tracepoint.clone(),
                field: field.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_data_loc_pointer_and_array_fields() {
        let text = "name: sched_process_exec\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\
            \tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;\n\
            \tfield:const char *const * argv;\toffset:24;\tsize:8;\tsigned:0;\n\
            \tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n";
        let f = Format::parse("t", text);
        assert_eq!(f.offset("filename").unwrap(), 8);
        assert_eq!(f.offset("old_pid").unwrap(), 16);
        assert_eq!(f.offset("argv").unwrap(), 24);
        assert_eq!(f.offset("saddr_v6").unwrap(), 40);
        assert!(f.offset("nope").is_err());
    }
}
