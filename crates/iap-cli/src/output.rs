//! Showing tokens to a person: abbreviated JWTs, decoded claims, timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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

/// RFC 3339 in UTC to the second (`2026-11-27T15:04:05Z`); a time before
/// the Unix epoch shows as the epoch, one past year 9999 as
/// `9999-12-31T23:59:59Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let secs = i64::try_from(secs).map_or(LAST_SECOND, |s| s.min(LAST_SECOND));
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// `9999-12-31T23:59:59Z`: RFC 3339 years have four digits.
const LAST_SECOND: i64 = 253_402_300_799;

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
        // Whole seconds: the fraction is cut, not rounded.
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::new(1_798_761_599, 999_999_999)),
            "2026-12-31T23:59:59Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(LAST_SECOND as u64 + 1)),
            "9999-12-31T23:59:59Z"
        );
        if let Some(far) = UNIX_EPOCH.checked_add(Duration::from_secs(u64::MAX / 2)) {
            assert_eq!(rfc3339(far), "9999-12-31T23:59:59Z");
        }
    }

    #[test]
    fn claims_decode_or_null() {
        let jwt = "eyJhbGciOiJub25lIn0.eyJhdWQiOiJjbGllbnQtaWQiLCJleHAiOjEwfQ.c2ln";
        assert_eq!(claims_json(jwt)["aud"], "client-id");
        assert!(claims_json("nope").is_null());
    }
}
