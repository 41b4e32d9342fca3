//! Time: the conversions every token and answer needs, saturating or
//! failing with a typed error, never panicking (an `exp` of 2^63 is as
//! representable as any other number), and RFC 3339 parsing (with the
//! `time` crate) for IAM's `expireTime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The instant `secs` seconds after the Unix epoch (a JWT's `exp` or
/// `iat`); `None` when the platform's clock cannot represent it.
pub(crate) fn from_unix_secs(secs: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// `now + d`; `None` when not representable (an absurd `expires_in`).
pub(crate) fn after(now: SystemTime, d: Duration) -> Option<SystemTime> {
    now.checked_add(d)
}

/// Milliseconds since the Unix epoch, saturating (0 before the epoch,
/// `u64::MAX` past what fits).
pub(crate) fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Parses an RFC 3339 time (`2014-10-02T15:01:23Z`,
/// `2014-10-02T15:01:23.045123456Z`, `...+01:00`; `t`, `z` and a space
/// separator too) with the `time` crate. `None` for anything else, and for
/// a time before the Unix epoch or past what the platform's clock holds.
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    // `time` takes any byte between date and time; RFC 3339 allows `T`
    // (either case) and, in its note, a space.
    if !text.as_bytes().get(10).is_some_and(|c| b"Tt ".contains(c)) {
        return None;
    }
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    // Not `SystemTime::from(t)`: it panics where the platform's clock
    // cannot hold `t`.
    let nanos = u128::try_from(t.unix_timestamp_nanos()).ok()?;
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::new(secs, nanos))
    }

    #[test]
    fn rfc3339_times_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), at(0, 0));
        assert_eq!(parse_rfc3339("2014-10-02T15:01:23Z"), at(1_412_262_083, 0));
        assert_eq!(
            parse_rfc3339("2014-10-02T15:01:23.045123456Z"),
            at(1_412_262_083, 45_123_456)
        );
        assert_eq!(
            parse_rfc3339("2014-10-02T15:01:23.5Z"),
            at(1_412_262_083, 500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2014-10-02T16:01:23+01:00"),
            at(1_412_262_083, 0)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), at(951_782_400, 0));
        for bad in [
            "",
            "2014-10-02",
            "2014-10-02T15:01:23",
            "2014-13-02T15:01:23Z",
            "2014-10-02T15:01:23.Z",
            "x014-10-02T15:01:23Z",
            "2014-10-02X15:01:23Z",
            "2014-10-02T15:01:23+0100",
            "2014-10-02T15:01:23Z ok",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_offsets_case_and_separators() {
        let t = at(1_412_262_083, 0);
        for same in [
            "2014-10-02T20:31:23+05:30",
            "2014-10-02T11:01:23-04:00",
            "2014-10-02T15:01:23-00:00",
            "2014-10-02T15:01:23+00:00",
            "2014-10-02t15:01:23z",
            "2014-10-02 15:01:23Z",
            " 2014-10-02T15:01:23Z\n",
        ] {
            assert_eq!(parse_rfc3339(same), t, "{same}");
        }
        // More than nine digits of a second: the rest is dropped.
        assert_eq!(
            parse_rfc3339("2014-10-02T15:01:23.0451234569Z"),
            at(1_412_262_083, 45_123_456)
        );
    }

    #[test]
    fn rfc3339_out_of_range_is_none_not_a_panic() {
        for bad in [
            // Before the Unix epoch: no token expires then.
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00+00:01",
            "0000-01-01T00:00:00Z",
            // Not a calendar date, not a clock time, not an offset.
            "2014-02-30T15:01:23Z",
            "2014-10-02T24:00:00Z",
            "2014-10-02T15:60:00Z",
            "2014-10-02T15:01:23+24:00",
            "2014-10-02T15:01:23+01:60",
            // A leap second only at the end of a month (UTC).
            "2014-10-02T15:01:60Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        // The latest instant there is, in the largest offsets.
        assert!(parse_rfc3339("9999-12-31T23:59:59.999999999-23:59").is_some());
        assert!(parse_rfc3339("0000-01-01T00:00:00+23:59").is_none());
        // A leap second is the nanosecond before the next minute.
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            at(1_483_228_799, 999_999_999)
        );
    }
}
