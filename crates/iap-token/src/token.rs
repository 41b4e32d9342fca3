//! [`IdToken`]: a Google-signed OIDC ID token, its claims, and the ready-made
//! `Bearer` header value that every request reuses.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use serde::Deserialize;

use crate::Error;

/// The claims of an ID token that this toolkit reads.
///
/// Decoded without verifying the signature: the token came from Google over
/// TLS (or from the caller); IAP verifies it. Unknown claims are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// Issuer, e.g. `https://accounts.google.com`.
    #[serde(default)]
    pub iss: Option<String>,
    /// Audience: for IAP, the IAP OAuth client ID (or a URL for a
    /// self-signed service-account JWT).
    #[serde(default, deserialize_with = "audience")]
    pub aud: Option<String>,
    /// Authorized party: the client the token was issued to.
    #[serde(default)]
    pub azp: Option<String>,
    /// Subject: the principal's stable ID.
    #[serde(default)]
    pub sub: Option<String>,
    /// The principal's email. IAP rejects tokens without it.
    #[serde(default)]
    pub email: Option<String>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// `aud` may be a string or (per RFC 7519) an array of strings; keep the first.
fn audience<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Aud>::deserialize(d)? {
        Some(Aud::One(s)) => Some(s),
        Some(Aud::Many(v)) => v.into_iter().next(),
        None => None,
    })
}

/// An OIDC ID token (a JWT), cheap to clone.
///
/// The token is a bearer secret: `Debug` shows its claims but never the JWT.
/// [`IdToken::header_value`] is built once, marked sensitive, and shared by
/// every request that uses this token.
///
/// ```
/// # use iap_token::IdToken;
/// // header {"alg":"none"}, claims {"aud":"client-id","email":"a@b","exp":4102444800}
/// let jwt = "eyJhbGciOiJub25lIn0.eyJhdWQiOiJjbGllbnQtaWQiLCJlbWFpbCI6ImFAYiIsImV4cCI6NDEwMjQ0NDgwMH0.c2ln";
/// let token = IdToken::parse(jwt).unwrap();
/// assert_eq!(token.claims().aud.as_deref(), Some("client-id"));
/// assert!(token.header_value().is_sensitive());
/// assert!(!format!("{token:?}").contains(jwt));
/// ```
#[derive(Clone)]
pub struct IdToken(Arc<Inner>);

struct Inner {
    jwt: Box<str>,
    claims: Claims,
    expires_at: SystemTime,
    header: HeaderValue,
}

impl IdToken {
    /// Parses a compact JWT. Fails with [`Error::MalformedToken`] when it is
    /// not three base64url parts, its claims are not JSON, or `exp` is
    /// missing or out of range. Never panics, whatever the input.
    pub fn parse(jwt: impl Into<String>) -> Result<Self, Error> {
        let jwt: String = jwt.into();
        let jwt = jwt.trim();
        let claims = decode_claims(jwt)?;
        let expires_at = crate::clock::from_unix_secs(claims.exp).ok_or_else(|| {
            Error::MalformedToken(format!(
                "the `exp` claim ({}) is not a time this system can represent",
                claims.exp
            ))
        })?;
        let mut header = HeaderValue::try_from(format!("Bearer {jwt}")).map_err(|_| {
            Error::MalformedToken(
                "the token contains characters not allowed in an HTTP header".into(),
            )
        })?;
        header.set_sensitive(true);
        Ok(IdToken(Arc::new(Inner {
            jwt: jwt.into(),
            claims,
            expires_at,
            header,
        })))
    }

    /// An equal token with its own reference counts (its own `Arc`, its
    /// own header bytes): the per-core copies of [`crate::per_core`].
    pub(crate) fn separate_copy(&self) -> IdToken {
        let mut header = HeaderValue::from_bytes(self.0.header.as_bytes())
            .expect("the bytes of a valid header value are valid");
        header.set_sensitive(true);
        // The first clone of fresh header bytes allocates their shared
        // counter: done here, not on a request's path.
        drop(header.clone());
        IdToken(Arc::new(Inner {
            jwt: self.0.jwt.clone(),
            claims: self.0.claims.clone(),
            expires_at: self.0.expires_at,
            header,
        }))
    }

    /// The compact JWT. Treat it as a secret.
    pub fn as_str(&self) -> &str {
        &self.0.jwt
    }

    /// The decoded (unverified) claims.
    pub fn claims(&self) -> &Claims {
        &self.0.claims
    }

    /// When the token expires (its `exp` claim).
    pub fn expires_at(&self) -> SystemTime {
        self.0.expires_at
    }

    /// Time left until `exp` at `now`; zero once expired.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.0
            .expires_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }

    /// `Bearer <jwt>`, marked sensitive, ready for `Authorization` or
    /// `Proxy-Authorization`. Cloning it does not allocate.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0.header
    }

    /// Whether two handles hold the very same token (pointer equality first,
    /// then the JWT text).
    pub fn same_as(&self, other: &IdToken) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.jwt == other.0.jwt
    }
}

impl fmt::Debug for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdToken")
            .field("jwt", &"<redacted>")
            .field("claims", &self.0.claims)
            .finish()
    }
}

fn decode_claims(jwt: &str) -> Result<Claims, Error> {
    use base64::Engine as _;
    let mut parts = jwt.split('.');
    let (Some(_header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::MalformedToken(
            "a JWT has three dot-separated parts".into(),
        ));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| Error::MalformedToken("the claims are not base64url".into()))?;
    serde_json::from_slice::<Claims>(&bytes).map_err(|e| {
        if e.to_string().contains("missing field `exp`") {
            Error::MalformedToken("the token has no `exp` claim".into())
        } else {
            Error::MalformedToken(format!("the claims are not valid JSON: {e}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn jwt(claims: &str) -> String {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.{}", b(r#"{"alg":"RS256"}"#), b(claims), b("sig"))
    }

    #[test]
    fn missing_exp_is_a_typed_error_not_a_panic() {
        let err = IdToken::parse(jwt(r#"{"aud":"x"}"#)).unwrap_err();
        assert!(matches!(err, Error::MalformedToken(_)), "{err}");
        assert!(err.to_string().contains("exp"));
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in ["", "a.b", "a.b.c.d", "a.!!!.c", &jwt("not json")] {
            assert!(
                matches!(IdToken::parse(bad), Err(Error::MalformedToken(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_hides_the_jwt() {
        let t = IdToken::parse(jwt(r#"{"aud":["a","b"],"exp":10,"email":"e@x"}"#)).unwrap();
        let dbg = format!("{t:?} {:?}", t.header_value());
        assert!(!dbg.contains(t.as_str()), "{dbg}");
        assert_eq!(t.claims().aud.as_deref(), Some("a"));
        assert_eq!(
            t.expires_at(),
            std::time::UNIX_EPOCH + Duration::from_secs(10)
        );
    }

    #[test]
    fn a_separate_copy_is_the_same_token_with_its_own_counts() {
        let t = IdToken::parse(jwt(r#"{"aud":"a","exp":4102444800}"#)).unwrap();
        let copy = t.separate_copy();
        assert!(copy.same_as(&t) && t.same_as(&copy));
        assert!(!Arc::ptr_eq(&copy.0, &t.0));
        assert_eq!(copy.header_value(), t.header_value());
        assert!(copy.header_value().is_sensitive());
        assert_ne!(
            copy.header_value().as_bytes().as_ptr(),
            t.header_value().as_bytes().as_ptr(),
            "its own header bytes"
        );
        assert_eq!(copy.claims(), t.claims());
        assert!(!format!("{copy:?}").contains(copy.as_str()));
    }
}
