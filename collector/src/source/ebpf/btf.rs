//! Just enough of a BTF reader to find struct member offsets in `/sys/kernel/btf/vmlinux`.
//!
//! Rust eBPF has no CO-RE yet, so the programs read `task_struct` and friends at offsets
//! resolved here at load time (aya's own BTF types keep members private).

use std::{collections::HashMap, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF)")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// One type, with its members left in the raw data: only the few structs we ask about are
/// ever walked, so the 100k-type kernel BTF costs an index, not a parsed tree.
struct Type {
    name: u32,
    kind: u32,
    kind_flag: bool,
    /// Referenced type for modifiers and typedefs.
    type_ref: u32,
    vlen: u32,
    /// Offset of the member array in `types_data`.
    members_at: u32,
}

pub struct Btf {
    data: Vec<u8>,
    /// The type section's range in `data`.
    types_start: usize,
    strings_start: usize,
    strings_len: usize,
    /// Index 0 is `void`.
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(data)
    }

    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let type_off = u32_at(&data, 8)? as usize;
        let type_len = u32_at(&data, 12)? as usize;
        let str_off = u32_at(&data, 16)? as usize;
        let str_len = u32_at(&data, 20)? as usize;
        let types_start = hdr_len + type_off;
        let strings_start = hdr_len + str_off;
        if data.len() < types_start + type_len || data.len() < strings_start + str_len {
            return Err(BtfError::Malformed("section out of bounds"));
        }
        let types_data = &data[types_start..types_start + type_len];

        let mut types = vec![Type {
            name: 0,
            kind: 0,
            kind_flag: false,
            type_ref: 0,
            vlen: 0,
            members_at: 0,
        }];
        let mut at = 0;
        while at < types_data.len() {
            let name = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let size_or_type = u32_at(types_data, at + 8)?;
            at += 12;
            let vlen = info & 0xffff;
            let kind = (info >> 24) & 0x1f;
            let members_at = at as u32;
            at += match kind {
                1 | 14 | 17 => 4, // int, var, decl_tag
                3 => 12,          // array
                KIND_STRUCT | KIND_UNION => vlen as usize * 12,
                6 | 13 => vlen as usize * 8,   // enum, func_proto
                15 | 19 => vlen as usize * 12, // datasec, enum64
                _ => 0,
            };
            types.push(Type {
                name,
                kind,
                kind_flag: info >> 31 == 1,
                type_ref: size_or_type,
                vlen,
                members_at,
            });
        }

        let mut btf = Btf {
            data,
            types_start,
            strings_start,
            strings_len: str_len,
            types,
            structs_by_name: HashMap::new(),
        };
        let mut by_name = HashMap::new();
        for (id, ty) in btf.types.iter().enumerate() {
            if ty.kind == KIND_STRUCT && ty.name != 0 {
                by_name
                    .entry(btf.string(ty.name).to_string())
                    .or_insert(id as u32);
            }
        }
        btf.structs_by_name = by_name;
        Ok(btf)
    }

    fn string(&self, offset: u32) -> &str {
        let strings = &self.data[self.strings_start..self.strings_start + self.strings_len];
        let Some(rest) = strings.get(offset as usize..) else {
            return "";
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// (name, type id, bit offset) of each member of a struct or union.
    fn members(&self, ty: &Type) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        let base = self.types_start + ty.members_at as usize;
        let kind_flag = ty.kind_flag;
        (0..ty.vlen as usize).filter_map(move |i| {
            let m = base + i * 12;
            let raw = u32_at(&self.data, m + 8).ok()?;
            let bit_offset = if kind_flag { raw & 0x00ff_ffff } else { raw };
            Some((
                u32_at(&self.data, m).ok()?,
                u32_at(&self.data, m + 4).ok()?,
                bit_offset,
            ))
        })
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.type_ref
                }
                _ => break,
            }
        }
        id
    }

    /// Byte offset of `member` in `struct strukt`, looking through anonymous struct/union
    /// members (e.g. `mm_struct` wraps its fields in one).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        self.find_member(id, member, 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_string(),
                member: member.to_string(),
            })
    }

    fn find_member(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        let ty = self.types.get(id as usize)?;
        if !matches!(ty.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        if let Some((_, _, bits)) = self
            .members(ty)
            .find(|&(name, _, _)| name != 0 && self.string(name) == member)
        {
            return Some(bits);
        }
        self.members(ty)
            .filter(|&(name, _, _)| name == 0)
            .find_map(|(_, type_id, bits)| {
                self.find_member(self.resolve(type_id), member, depth + 1)
                    .map(|found| bits + found)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_task_struct_offsets_from_this_kernel() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("no kernel BTF here; skipping");
            return;
        }
        let btf = Btf::from_file(path).unwrap();
        let tgid = btf.member_offset("task_struct", "tgid").unwrap();
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        assert_eq!(tgid, pid + 4, "tgid follows pid in task_struct");
        // exe_file lives inside mm_struct's anonymous struct.
        assert!(btf.member_offset("mm_struct", "exe_file").unwrap() > 0);
        assert!(matches!(
            btf.member_offset("task_struct", "no_such_field"),
            Err(BtfError::NoMember { .. })
        ));
    }
}
