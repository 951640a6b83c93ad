//! The kernel maps the actuator fills: destination blocks and kill-on-exec entries.

use std::net::IpAddr;

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    HashMap, MapData,
};
use ipnet::IpNet;
use sensor_common::{BlockAnyPortData, BlockPortData, FileKey};

use crate::actuator::Enforcement;

pub struct EbpfEnforcement {
    any_port: LpmTrie<MapData, BlockAnyPortData, u32>,
    port: LpmTrie<MapData, BlockPortData, u32>,
    kill_on_exec: HashMap<MapData, FileKey, u32>,
}

/// The network as the tries hold it: IPv6, IPv4 v4-mapped.
fn mapped(net: &IpNet) -> ([u8; 16], u32) {
    match net.addr() {
        IpAddr::V4(a) => (
            a.to_ipv6_mapped().octets(),
            96 + u32::from(net.prefix_len()),
        ),
        IpAddr::V6(a) => (a.octets(), u32::from(net.prefix_len())),
    }
}

fn port_data(addr: [u8; 16], port: u16) -> BlockPortData {
    let mut data = [0u8; 20];
    data[..2].copy_from_slice(&port.to_be_bytes());
    data[2..18].copy_from_slice(&addr);
    data
}

/// Userspace `st_dev` in the kernel's internal encoding (major << 20 | minor).
fn user_dev_to_kernel(dev: u64) -> u32 {
    (libc::major(dev) << 20) | (libc::minor(dev) & 0xfffff)
}

impl EbpfEnforcement {
    pub(super) fn take(ebpf: &mut aya::Ebpf) -> Result<Self, String> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| format!("eBPF object lacks {name}"))
        };
        let any_port = take("BLOCK_ANY_PORT")?;
        let port = take("BLOCK_PORT")?;
        let koe = take("KILL_ON_EXEC")?;
        Ok(EbpfEnforcement {
            any_port: LpmTrie::try_from(any_port).map_err(|e| format!("BLOCK_ANY_PORT: {e}"))?,
            port: LpmTrie::try_from(port).map_err(|e| format!("BLOCK_PORT: {e}"))?,
            kill_on_exec: HashMap::try_from(koe).map_err(|e| format!("KILL_ON_EXEC: {e}"))?,
        })
    }
}

impl Enforcement for EbpfEnforcement {
    fn add_block(&mut self, net: IpNet, port: Option<u16>) -> Result<(), String> {
        let (addr, bits) = mapped(&net);
        match port {
            None => self.any_port.insert(&Key::new(bits, addr), 1, 0),
            Some(p) => self
                .port
                .insert(&Key::new(16 + bits, port_data(addr, p)), 1, 0),
        }
        .map_err(|e| format!("cannot add the block of {net}: {e}"))
    }

    fn remove_block(&mut self, net: IpNet, port: Option<u16>) -> Result<(), String> {
        let (addr, bits) = mapped(&net);
        let removed = match port {
            None => self.any_port.remove(&Key::new(bits, addr)),
            Some(p) => self.port.remove(&Key::new(16 + bits, port_data(addr, p))),
        };
        match removed {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(format!("cannot remove the block of {net}: {e}")),
        }
    }

    fn add_kill_on_exec(&mut self, dev: u64, ino: u64) -> Result<(), String> {
        let key = FileKey {
            dev: user_dev_to_kernel(dev),
            _pad: 0,
            ino,
        };
        self.kill_on_exec
            .insert(key, 1, 0)
            .map_err(|e| format!("cannot add kill-on-exec entry: {e}"))
    }

    fn remove_kill_on_exec(&mut self, dev: u64, ino: u64) -> Result<(), String> {
        let key = FileKey {
            dev: user_dev_to_kernel(dev),
            _pad: 0,
            ino,
        };
        match self.kill_on_exec.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(format!("cannot remove kill-on-exec entry: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_round_trip_to_the_kernel_encoding() {
        let dev = libc::makedev(259, 3);
        assert_eq!(
            super::super::decode::kernel_dev_to_user(user_dev_to_kernel(dev)),
            dev
        );
        let (addr, bits) = mapped(&"10.1.0.0/16".parse().unwrap());
        assert_eq!((addr[10], addr[11], addr[12], bits), (0xff, 0xff, 10, 112));
    }
}
