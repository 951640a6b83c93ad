//! Wall-clock timestamps: nanoseconds since the Unix epoch, RFC 3339 UTC on the wire.

use chrono::{DateTime, Utc};
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

    /// RFC 3339 in UTC with nanoseconds, e.g. `2023-11-14T22:13:20.123456789Z`, rendered
    /// without allocating: every event carries several timestamps, and going through chrono's
    /// formatter cost more than the rest of the event's encoding.
    fn rfc3339(self) -> [u8; RFC3339_LEN] {
        const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;
        let days = self.nanos.div_euclid(NANOS_PER_DAY);
        let in_day = self.nanos.rem_euclid(NANOS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let secs = in_day / 1_000_000_000;
        let fields: [(i64, usize); 7] = [
            (year, 4),
            (month, 2),
            (day, 2),
            (secs / 3600, 2),
            (secs / 60 % 60, 2),
            (secs % 60, 2),
            (in_day % 1_000_000_000, 9),
        ];
        let mut out = *b"0000-00-00T00:00:00.000000000Z";
        let mut at = 0;
        for (value, width) in fields {
            let mut value = value;
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
            at += width + 1;
        }
        out
    }
}

const RFC3339_LEN: usize = 30;

/// (year, month, day) of a day counted from 1970-01-01 in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`). Every `i64` nanosecond falls in years 1677–2262, so
/// the year always has four digits.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.rfc3339();
        // The buffer holds ASCII digits and separators only.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
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
        let text = self.rfc3339();
        s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
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
    use chrono::SecondsFormat;

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

    #[test]
    fn renders_like_chrono_over_the_whole_range() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let samples = [i64::MIN, i64::MAX, 0, -1, 1, 951_782_400_000_000_000]
            .into_iter()
            .chain((0..100_000).map(|_| {
                // xorshift: spread over every i64.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as i64
            }));
        for nanos in samples {
            let expected = DateTime::<Utc>::from_timestamp_nanos(nanos)
                .to_rfc3339_opts(SecondsFormat::Nanos, true);
            assert_eq!(Timestamp::from_unix_nanos(nanos).to_string(), expected);
        }
    }
}
