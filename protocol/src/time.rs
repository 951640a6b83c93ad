//! Wall-clock timestamps: nanoseconds since the Unix epoch, RFC 3339 UTC on the wire.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    nanos: i64,
}

impl Timestamp {
    pub const fn from_unix_nanos(nanos: i64) -> Self {
        Self { nanos }
    }

    pub fn now() -> Self {
        Self::from_unix_nanos(Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX))
    }

    /// How far apart two times are, in nanoseconds, either way. Never wraps: a signed
    /// message claiming a time at the end of the range is far from now, not near.
    pub const fn distance_nanos(self, other: Timestamp) -> u64 {
        self.nanos.abs_diff(other.nanos)
    }

    pub const fn unix_nanos(self) -> i64 {
        self.nanos
    }

    fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.nanos)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &self
                .to_datetime()
                .to_rfc3339_opts(SecondsFormat::Nanos, true),
        )
    }
}

impl std::str::FromStr for Timestamp {
    type Err = chrono::ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let dt = DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc);
        Ok(Self::from_unix_nanos(
            dt.timestamp_nanos_opt().unwrap_or(i64::MAX),
        ))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_never_wrap() {
        let (min, max) = (
            Timestamp::from_unix_nanos(i64::MIN),
            Timestamp::from_unix_nanos(i64::MAX),
        );
        assert_eq!(min.distance_nanos(max), u64::MAX);
        assert!(
            Timestamp::now().distance_nanos(min) > 1 << 62,
            "far, not near"
        );
        let t = Timestamp::from_unix_nanos(5);
        assert_eq!(t.distance_nanos(Timestamp::from_unix_nanos(-3)), 8);
    }

    #[test]
    fn renders_rfc3339_with_nanoseconds_and_round_trips() {
        let t = Timestamp::from_unix_nanos(1_700_000_000_123_456_789);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123456789Z");
        assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
    }
}
