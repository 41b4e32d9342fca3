//! Why an assertion was refused, and why a verifier could not be built.

use std::sync::Arc;

/// Why an assertion was not accepted. The message starts with the check
/// that failed (`expired: ...`, `wrong audience: ...`); it never contains
/// the assertion itself.
///
/// [`check`](VerifyError::check) names the check as a short stable label,
/// [`is_transient`](VerifyError::is_transient) tells a refusal (the
/// assertion is bad: answer 401) from a failure to judge it (IAP's keys
/// could not be fetched: try again).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// No `x-goog-iap-jwt-assertion` header: the request did not come
    /// through IAP (or IAP is not enabled in front of this service).
    #[error("missing: no x-goog-iap-jwt-assertion header (the request did not come through IAP)")]
    Missing,
    /// Not a JWT: not three base64url parts, JSON that does not parse, a
    /// claim of the wrong type.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not `ES256` (`none`, `HS256`, `RS256`, ...
    /// are never accepted).
    #[error("wrong algorithm: {alg:?} (only ES256 is accepted)")]
    WrongAlgorithm {
        /// The `alg` the header named (cut to 32 characters).
        alg: String,
    },
    /// The header's `kid` is not in IAP's key set, even after fetching it
    /// again.
    #[error("unknown key: kid {kid:?} is not in IAP's key set")]
    UnknownKey {
        /// The `kid` the header named (cut to 64 characters).
        kid: String,
    },
    /// The signature does not verify with the key named by `kid`.
    #[error("bad signature: the assertion was not signed by IAP's key {kid:?}")]
    BadSignature {
        /// The key it was checked with.
        kid: String,
    },
    /// `iss` is not `https://cloud.google.com/iap`.
    #[error("wrong issuer: {iss:?} (expected https://cloud.google.com/iap)")]
    WrongIssuer {
        /// The `iss` claim (cut to 64 characters).
        iss: String,
    },
    /// `aud` is none of the accepted audiences.
    #[error("wrong audience: {aud:?} is not an accepted audience")]
    WrongAudience {
        /// The `aud` claim (cut to 128 characters).
        aud: String,
    },
    /// `exp` has passed (beyond the leeway).
    #[error("expired: the assertion expired at {exp} (unix time; now {now})")]
    Expired {
        /// The `exp` claim, unix seconds.
        exp: u64,
        /// The verifier's clock, unix seconds.
        now: u64,
    },
    /// `iat` is in the future (beyond the leeway).
    #[error("issued in the future: iat {iat} (unix time; now {now})")]
    IssuedInTheFuture {
        /// The `iat` claim, unix seconds.
        iat: u64,
        /// The verifier's clock, unix seconds.
        now: u64,
    },
    /// A required claim is absent (`exp`, `sub`, `aud`, `iss`).
    #[error("malformed: no {0:?} claim")]
    MissingClaim(&'static str),
    /// The identity is not allowed by the verifier's [`Policy`](crate::Policy).
    #[error("refused by policy: {0}")]
    Policy(String),
    /// IAP's keys could not be fetched (and none were fetched before):
    /// transient, the assertion was not judged.
    #[error("cannot fetch IAP's keys from {url}: {source}")]
    Keys {
        /// The key set's URL.
        url: String,
        /// What went wrong.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl VerifyError {
    /// The failed check as a short stable label: `missing`, `malformed`,
    /// `algorithm`, `unknown_key`, `signature`, `issuer`, `audience`,
    /// `expired`, `issued_in_the_future`, `policy`, `keys`.
    pub fn check(&self) -> &'static str {
        match self {
            VerifyError::Missing => "missing",
            VerifyError::Malformed(_) | VerifyError::MissingClaim(_) => "malformed",
            VerifyError::WrongAlgorithm { .. } => "algorithm",
            VerifyError::UnknownKey { .. } => "unknown_key",
            VerifyError::BadSignature { .. } => "signature",
            VerifyError::WrongIssuer { .. } => "issuer",
            VerifyError::WrongAudience { .. } => "audience",
            VerifyError::Expired { .. } => "expired",
            VerifyError::IssuedInTheFuture { .. } => "issued_in_the_future",
            VerifyError::Policy(_) => "policy",
            VerifyError::Keys { .. } => "keys",
        }
    }

    /// `true` when the assertion could not be judged (IAP's keys could not
    /// be fetched): retrying later may succeed. Every other error is a
    /// refusal of the assertion.
    pub fn is_transient(&self) -> bool {
        matches!(self, VerifyError::Keys { .. })
    }
}

/// Why [`IapVerifierBuilder::build`](crate::IapVerifierBuilder::build) failed:
/// a configuration to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No audience was given: a verifier must know which `aud` it accepts
    /// (see [`audience`](crate::audience) for the three shapes).
    #[error(
        "no audience: give the verifier the audience IAP signs for this service, e.g. /projects/NUMBER/global/backendServices/ID"
    )]
    NoAudience,
    /// The key set URL is not a URL, or not `https` (plain `http` is only
    /// allowed to a loopback host).
    #[error("bad key set URL {url:?}: {reason}")]
    JwksUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot build the HTTP client for IAP's keys: {0}")]
    Client(#[source] reqwest::Error),
}

/// At most `max` characters of an attacker-chosen string, for messages.
pub(crate) fn cut(value: &str, max: usize) -> String {
    match value.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_start_with_the_check() {
        let cases = [
            (VerifyError::Expired { exp: 1, now: 2 }, "expired: "),
            (
                VerifyError::WrongAudience { aud: "x".into() },
                "wrong audience: ",
            ),
            (
                VerifyError::BadSignature { kid: "k".into() },
                "bad signature: ",
            ),
            (VerifyError::UnknownKey { kid: "k".into() }, "unknown key: "),
            (
                VerifyError::WrongAlgorithm { alg: "none".into() },
                "wrong algorithm: ",
            ),
            (
                VerifyError::WrongIssuer { iss: "i".into() },
                "wrong issuer: ",
            ),
            (VerifyError::Malformed("not a JWT"), "malformed: "),
        ];
        for (error, prefix) in cases {
            assert!(error.to_string().starts_with(prefix), "{error}");
            assert!(!error.is_transient());
        }
    }

    #[test]
    fn cut_keeps_short_values_and_marks_long_ones() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abcdef", 3), "abc...");
        assert_eq!(cut("ééé", 2), "éé...");
    }
}
