//! Time: the conversions every token and answer needs, saturating or
//! failing with a typed error, never panicking (an `exp` of 2^63 is as
//! representable as any other number), and RFC 3339 parsing for IAM's
//! `expireTime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Parses `2014-10-02T15:01:23Z`, `2014-10-02T15:01:23.045123456Z` or
/// `...+01:00`.
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.trim().as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let s = b.get(from..from + len)?;
        s.iter()
            .all(u8::is_ascii_digit)
            .then(|| s.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, min, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start).min(9)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&s @ (b'+' | b'-')) if i + 6 == b.len() && sep(i + 3, b":") => {
            let o = num(i + 1, 2)? * 3600 + num(i + 4, 2)? * 60;
            if s == b'+' { o } else { -o }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
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
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
