//! Network events: Microsoft-Windows-Kernel-Network TCP connect (12 IPv4, 28 IPv6) and accept
//! (15, 31).
//!
//! All four share one template: `PID, size, daddr, saddr, dport, sport, ...`. `daddr`/`dport`
//! are the remote end and `saddr`/`sport` the local end for both directions. The owner is the
//! `PID` property: the header's pid is whatever process the TCP stack happened to run in.

use std::net::IpAddr;

use protocol::{SocketFamily, Timestamp, TransportProtocol};

use crate::properties::{EventProperties, PropertyError};
use crate::provider::{TCP_ACCEPT_V4, TCP_ACCEPT_V6, TCP_CONNECT_V4, TCP_CONNECT_V6};
use crate::record::{Connection, Direction};

/// Translates one of the four TCP events; `None` for any other event id.
pub fn connection(
    time: Timestamp,
    event_id: u16,
    header_pid: u32,
    props: &dyn EventProperties,
) -> Result<Option<Connection>, PropertyError> {
    let (family, direction) = match event_id {
        TCP_CONNECT_V4 => (SocketFamily::Ipv4, Direction::Outbound),
        TCP_ACCEPT_V4 => (SocketFamily::Ipv4, Direction::Inbound),
        TCP_CONNECT_V6 => (SocketFamily::Ipv6, Direction::Outbound),
        TCP_ACCEPT_V6 => (SocketFamily::Ipv6, Direction::Inbound),
        _ => return Ok(None),
    };
    let address = |name: &str| -> Result<IpAddr, PropertyError> {
        Ok(match family {
            SocketFamily::Ipv4 => IpAddr::V4(props.ipv4(name)?),
            // Kept as the kernel reported it, v4-mapped (`::ffff:a.b.c.d`) included, as the
            // Linux source does for connect6: the family stays the socket's.
            SocketFamily::Ipv6 => IpAddr::V6(props.ipv6(name)?),
        })
    };
    Ok(Some(Connection {
        time,
        pid: props.u32("PID")?,
        header_pid,
        direction,
        family,
        protocol: TransportProtocol::Tcp,
        destination_ip: address("daddr")?,
        destination_port: props.port("dport")?,
        source_ip: address("saddr")?,
        source_port: props.port("sport")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Fixture;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Event 12 as ETW delivers it: 10.1.2.3:50000 connecting to 93.184.216.34:443 for pid
    /// 4242, logged while the System process (4) was current.
    fn v4_fixture() -> Fixture {
        Fixture::new()
            .with("PID", 4242u32.to_le_bytes().to_vec())
            .with("size", 0u32.to_le_bytes().to_vec())
            .with("daddr", vec![93, 184, 216, 34])
            .with("saddr", vec![10, 1, 2, 3])
            .with("dport", vec![0x01, 0xBB])
            .with("sport", vec![0xC3, 0x50])
            .with("mss", 1460u16.to_le_bytes().to_vec())
    }

    fn v6_fixture(daddr: [u8; 16]) -> Fixture {
        let local: Ipv6Addr = "fe80::1".parse().expect("literal");
        Fixture::new()
            .with("PID", 77u32.to_le_bytes().to_vec())
            .with("daddr", daddr.to_vec())
            .with("saddr", local.octets().to_vec())
            .with("dport", vec![0x00, 0x50])
            .with("sport", vec![0xFF, 0xFE])
    }

    #[test]
    fn ipv4_connect_uses_property_pid_and_network_order() {
        let t = Timestamp::from_unix_nanos(42);
        let rec = connection(t, 12, 4, &v4_fixture())
            .expect("valid")
            .expect("tcp event");
        assert_eq!(rec.pid, 4242, "the PID property owns the connection");
        assert_eq!(rec.header_pid, 4);
        assert_eq!(rec.direction, Direction::Outbound);
        assert_eq!(rec.family, SocketFamily::Ipv4);
        assert_eq!(rec.protocol, TransportProtocol::Tcp);
        assert_eq!(
            rec.destination_ip,
            IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34))
        );
        assert_eq!(rec.destination_ip.to_string(), "93.184.216.34");
        assert_eq!(rec.destination_port, 443);
        assert_eq!(rec.source_ip.to_string(), "10.1.2.3");
        assert_eq!(rec.source_port, 50000);
        assert_eq!(rec.time, t);
    }

    #[test]
    fn ipv4_accept_is_inbound_with_remote_as_destination() {
        let rec = connection(Timestamp::default(), 15, 4, &v4_fixture())
            .expect("valid")
            .expect("tcp event");
        assert_eq!(rec.direction, Direction::Inbound);
        assert_eq!(rec.destination_ip.to_string(), "93.184.216.34");
    }

    #[test]
    fn ipv6_connect_reads_sixteen_raw_bytes() {
        let remote: Ipv6Addr = "2606:2800:220:1:248:1893:25c8:1946"
            .parse()
            .expect("literal");
        let rec = connection(Timestamp::default(), 28, 0, &v6_fixture(remote.octets()))
            .expect("valid")
            .expect("tcp event");
        assert_eq!(rec.family, SocketFamily::Ipv6);
        assert_eq!(rec.pid, 77);
        assert_eq!(
            rec.destination_ip.to_string(),
            "2606:2800:220:1:248:1893:25c8:1946"
        );
        assert_eq!(rec.destination_port, 80);
        assert_eq!(rec.source_ip.to_string(), "fe80::1");
        assert_eq!(rec.source_port, 65534);
        let accepted = connection(Timestamp::default(), 31, 0, &v6_fixture(remote.octets()))
            .expect("valid")
            .expect("tcp event");
        assert_eq!(accepted.direction, Direction::Inbound);
    }

    #[test]
    fn ipv6_v4_mapped_and_loopback_text_forms() {
        let mapped = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped();
        let rec = connection(Timestamp::default(), 28, 0, &v6_fixture(mapped.octets()))
            .expect("valid")
            .expect("tcp event");
        assert_eq!(rec.family, SocketFamily::Ipv6);
        assert_eq!(rec.destination_ip.to_string(), "::ffff:192.0.2.1");
        let rec = connection(
            Timestamp::default(),
            28,
            0,
            &v6_fixture(Ipv6Addr::LOCALHOST.octets()),
        )
        .expect("valid")
        .expect("tcp event");
        assert_eq!(rec.destination_ip.to_string(), "::1");
    }

    #[test]
    fn address_of_the_wrong_family_is_an_error() {
        // An IPv6 event whose daddr is 4 bytes is malformed, not silently misread.
        let props = v4_fixture();
        assert!(connection(Timestamp::default(), 28, 0, &props).is_err());
    }

    #[test]
    fn other_network_events_are_ignored() {
        assert_eq!(
            connection(Timestamp::default(), 10, 0, &v4_fixture()),
            Ok(None)
        );
    }
}
