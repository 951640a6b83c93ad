//! MessagePack encoding with named fields.

use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode {what} as MessagePack: {source}")]
    Encode {
        what: &'static str,
        source: rmp_serde::encode::Error,
    },
    #[error("cannot decode {what} from MessagePack: {source}")]
    Decode {
        what: &'static str,
        source: rmp_serde::decode::Error,
    },
}

/// Encodes a value as MessagePack maps keyed by field name.
///
/// Human-readable mode makes standard types take the same shape as in JSON (an IP address is
/// its text form), which the wire contract requires.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    // Events with ancestry run to a few KiB: start big enough to rarely grow.
    let mut out = Vec::with_capacity(4096);
    let mut serializer = rmp_serde::Serializer::new(&mut out)
        .with_struct_map()
        .with_human_readable();
    value
        .serialize(&mut serializer)
        .map_err(|source| CodecError::Encode {
            what: short_type_name::<T>(),
            source,
        })?;
    // Encoded values wait in queues (events for NATS, the spool): they hold what they use.
    out.shrink_to_fit();
    Ok(out)
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes).with_human_readable();
    T::deserialize(&mut deserializer).map_err(|source| CodecError::Decode {
        what: short_type_name::<T>(),
        source,
    })
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn process() -> Process {
        Process {
            pid: 10,
            ppid: 1,
            name: "python3".into(),
            invoked_path: Some("/usr/bin/python3".into()),
            cwd: Some("/tmp".into()),
            user: Some("root".into()),
            cgroup_id: 1,
            start_time: Timestamp::from_unix_nanos(1),
            ..Process::new(
                "0000abcd-10-20-1".parse().unwrap(),
                "/usr/bin/python3.11",
                vec!["python3".into(), "-c".into(), "print(1)".into()],
            )
        }
    }

    #[test]
    fn events_round_trip_through_messagepack_and_render_the_same_json() {
        let event = Event {
            time: Timestamp::from_unix_nanos(5),
            host: "h".into(),
            process: process(),
            ancestry: vec![],
            detail: EventDetail::Connect(ConnectEvent {
                family: SocketFamily::Ipv4,
                protocol: TransportProtocol::Tcp,
                destination_ip: "127.0.0.1".parse().unwrap(),
                destination_port: 443,
                source_ip: None,
                source_port: None,
                outcome: Outcome::Refused,
                errno: Some(111),
                hook: ConnectHook::Connect,
                late_outcome: false,
            }),
        };
        let back: Event = decode(&encode(&event).unwrap()).unwrap();
        assert_eq!(back, event);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"], "connect");
        assert_eq!(json["destination_ip"], "127.0.0.1");
        assert_eq!(json["process"]["exec_id"], "0000abcd-10-20-1");
        assert_eq!(json["time"], "1970-01-01T00:00:00.000000005Z");
    }

    #[test]
    fn decoding_garbage_names_the_type() {
        let err = decode::<Event>(b"\xc1").unwrap_err();
        assert!(err.to_string().contains("Event"), "{err}");
    }
}
