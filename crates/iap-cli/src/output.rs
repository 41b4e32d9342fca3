//! Showing tokens to a person: abbreviated JWTs, decoded claims, timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

/// `eyJhbGci…(1234 chars)`: enough to recognise a token, not enough to use it.
pub fn abbreviate(jwt: &str) -> String {
    let head: String = jwt.chars().take(8).collect();
    format!("{head}…({} chars)", jwt.chars().count())
}

/// All the claims of a JWT, decoded without verification, as JSON.
/// `Value::Null` when the payload is not base64url JSON.
pub fn claims_json(jwt: &str) -> serde_json::Value {
    jwt.split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// RFC 3339 in UTC (`2026-11-27T15:04:05Z`), without a date library.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn abbreviation_shows_eight_chars_and_the_length() {
        let jwt = format!("eyJhbGciOiJSUzI1NiJ9.{}", "x".repeat(100));
        let short = abbreviate(&jwt);
        assert_eq!(short, format!("eyJhbGci…({} chars)", jwt.len()));
        assert!(!short.contains("OiJSUzI1NiJ9"));
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(4_102_444_800)),
            "2100-01-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661)),
            "2000-02-29T01:01:01Z"
        );
    }

    #[test]
    fn claims_decode_or_null() {
        let jwt = "eyJhbGciOiJub25lIn0.eyJhdWQiOiJjbGllbnQtaWQiLCJleHAiOjEwfQ.c2ln";
        assert_eq!(claims_json(jwt)["aud"], "client-id");
        assert!(claims_json("nope").is_null());
    }
}
