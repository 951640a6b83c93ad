//! FILETIME (100 ns ticks since 1601-01-01 UTC) to Unix time.
//!
//! ETW header timestamps (ProcessTrace converts them to system time unless raw timestamps are
//! asked for, and ferrisetw does not ask), `CreateTime`/`ExitTime` properties and
//! `GetProcessTimes` all use this unit.

use protocol::Timestamp;

/// FILETIME ticks between 1601-01-01 and 1970-01-01.
pub const UNIX_EPOCH_AS_FILETIME: u64 = 116_444_736_000_000_000;

/// Nanoseconds per FILETIME tick.
const NANOS_PER_TICK: i64 = 100;

/// The Unix-epoch timestamp of a FILETIME, or `None` when it lies before 1970 (a zeroed or
/// corrupt field: nothing this sensor sees happened then) or past what `Timestamp` holds
/// (year 2262).
pub fn to_timestamp(filetime: u64) -> Option<Timestamp> {
    let ticks = filetime.checked_sub(UNIX_EPOCH_AS_FILETIME)?;
    let ticks = i64::try_from(ticks).ok()?;
    ticks
        .checked_mul(NANOS_PER_TICK)
        .map(Timestamp::from_unix_nanos)
}

/// The FILETIME of a Unix-epoch timestamp (truncated to 100 ns), for tests and for comparing
/// the two clocks; `None` before 1970.
pub fn from_timestamp(time: Timestamp) -> Option<u64> {
    let nanos = u64::try_from(time.unix_nanos()).ok()?;
    (nanos / NANOS_PER_TICK as u64).checked_add(UNIX_EPOCH_AS_FILETIME)
}

/// Header timestamps arrive as the signed LARGE_INTEGER of `EVENT_HEADER.TimeStamp`.
pub fn header_to_timestamp(raw: i64) -> Option<Timestamp> {
    u64::try_from(raw).ok().and_then(to_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_epoch_is_zero() {
        assert_eq!(
            to_timestamp(UNIX_EPOCH_AS_FILETIME),
            Some(Timestamp::from_unix_nanos(0))
        );
    }

    #[test]
    fn known_instant_converts_with_sub_second_ticks() {
        // 2023-11-14T22:13:20Z is Unix 1_700_000_000; 1_234_567 ticks = 0.1234567 s.
        let ft = 1_700_000_000 * 10_000_000 + UNIX_EPOCH_AS_FILETIME + 1_234_567;
        assert_eq!(ft, 133_444_736_001_234_567);
        let t = to_timestamp(ft).expect("after 1970");
        assert_eq!(t.unix_nanos(), 1_700_000_000_123_456_700);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123456700Z");
        assert_eq!(from_timestamp(t), Some(ft));
    }

    #[test]
    fn before_1970_and_negative_header_times_are_rejected() {
        assert_eq!(to_timestamp(0), None);
        assert_eq!(to_timestamp(UNIX_EPOCH_AS_FILETIME - 1), None);
        assert_eq!(header_to_timestamp(-1), None);
        assert_eq!(
            header_to_timestamp(UNIX_EPOCH_AS_FILETIME as i64 + 10),
            Some(Timestamp::from_unix_nanos(1_000))
        );
    }

    #[test]
    fn far_future_does_not_overflow() {
        assert_eq!(to_timestamp(u64::MAX), None);
    }
}
