//! One form for every address: an IPv4 peer reached through a dual-stack IPv6 socket shows
//! up as `::ffff:a.b.c.d`, and heuristics, rules, protected-network checks and block keys
//! must all see it as the IPv4 address it is. Every address and network that enters Osprey
//! goes through these functions first.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// `::ffff:0:0/96`, where IPv4 addresses live inside IPv6.
const MAPPED_PREFIX: u8 = 96;

/// The address in its canonical form: IPv4-mapped IPv6 becomes IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The network in its canonical form: an IPv6 network inside `::ffff:0:0/96` becomes the
/// IPv4 network it describes. A wider IPv6 network stays IPv6 (see [`covers_all_ipv4`]).
pub fn canonical_net(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net.trunc() else {
        return net.trunc();
    };
    match v6.addr().to_ipv4_mapped() {
        Some(v4) if v6.prefix_len() >= MAPPED_PREFIX => {
            // The prefix is in range by construction (96..=128 → 0..=32).
            Ipv4Net::new(v4, v6.prefix_len() - MAPPED_PREFIX)
                .map(|n| IpNet::V4(n.trunc()))
                .unwrap_or(net)
        }
        _ => IpNet::V6(v6),
    }
}

/// Parses an address or a network in CIDR notation, canonicalised.
pub fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
        .map(canonical_net)
}

/// Whether an IPv6 network contains the whole IPv4-mapped range (so, through dual-stack
/// sockets, every IPv4 address).
pub fn covers_all_ipv4(net: &IpNet) -> bool {
    match net {
        IpNet::V4(v4) => v4.prefix_len() == 0,
        IpNet::V6(v6) => {
            let mapped = Ipv6Net::new(
                std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0),
                MAPPED_PREFIX,
            );
            mapped.is_ok_and(|m| v6.contains(&m))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_addresses_and_networks_become_ipv4() {
        assert_eq!(
            canonical_ip("::ffff:127.0.0.53".parse().unwrap()),
            "127.0.0.53".parse::<IpAddr>().unwrap()
        );
        assert_eq!(canonical_net(net("::ffff:10.0.0.0/104")), net("10.0.0.0/8"));
        assert_eq!(
            canonical_net(net("::ffff:10.1.2.3/128")),
            net("10.1.2.3/32")
        );
        assert_eq!(parse_net("::ffff:127.0.0.53"), Some(net("127.0.0.53/32")));
        assert_eq!(parse_net("10.1.2.3/8"), Some(net("10.0.0.0/8")));
        assert_eq!(canonical_net(net("fe80::/10")), net("fe80::/10"));
        assert_eq!(parse_net("nope"), None);
    }

    #[test]
    fn networks_covering_every_ipv4_address_are_recognised() {
        for wide in ["0.0.0.0/0", "::/0", "::ffff:0:0/96", "::/64"] {
            assert!(covers_all_ipv4(&parse_net(wide).unwrap()), "{wide}");
        }
        for narrow in ["10.0.0.0/8", "::ffff:10.0.0.0/104", "2001:db8::/32"] {
            assert!(!covers_all_ipv4(&parse_net(narrow).unwrap()), "{narrow}");
        }
    }
}
