//! The gate's decision: is this bearer token one IAP accepts for this app?
//!
//! Two kinds of token pass:
//! - a Google-issued ID token: RS256 under one of the emulator's Google keys
//!   (by `kid`), `iss` `https://accounts.google.com` or `accounts.google.com`,
//!   `aud` the app's IAP client ID (not on a Google-managed client) or one
//!   of its allowlisted programmatic client IDs, a string `email`;
//! - a service-account JWT (signed with a key file, or by IAM `signJwt`):
//!   `iss` = `sub` = the service account's email, RS256 under one of that
//!   account's keys (by `kid`), `aud` the exact request URL
//!   (`scheme://host[:port]/path`, no query), `scheme://host[:port]/*` or
//!   a path prefix `scheme://host[:port]/PREFIX/*`, built from the app's
//!   public URL, and `exp <= iat + 3600`
//!   (`docs/service-account-jwts.md`).
//!
//! Both must be unexpired by the emulator's clock (`now < exp`, no leeway)
//! and not revoked (by `jti`). The checks run in this order, and the first
//! failure is the answer: parse, issuer, signature, expiry, revocation,
//! lifetime (self-signed), audience, email (Google).

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use super::app::AppConfig;
use crate::state::State;

/// Why the gate said 401. The [`body`](Rejection::body) is the text IAP
/// answers with; the [`reason`](Rejection::reason) labels the
/// `gate.401.reason` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// No token, or `Bearer` with nothing after it.
    EmptyToken,
    /// Not three base64url parts of JSON, or an unknown `alg`.
    Unparsable,
    /// `iss` is neither Google nor a self-signing service account.
    UnknownIssuer,
    /// Unknown `kid`, a signature that does not verify, or not RS256.
    BadSignature,
    /// `exp` is now or in the past (emulator clock), or missing.
    Expired,
    /// The token's `jti` was revoked through the emulator.
    Revoked,
    /// A self-signed JWT valid for more than an hour.
    LifetimeTooLong,
    /// `aud` is not an audience this app accepts.
    WrongAudience,
    /// A Google ID token without a string `email` (e.g. `format=standard`).
    EmailNotString,
    /// A Google ID token for the IAP client of an app on a Google-managed
    /// OAuth client, whose client ID is on no allowlist.
    ManagedClient,
}

impl Rejection {
    /// The 401 body. Wordings of real IAP answers, except: expired is
    /// the body of a real IAP 401 seen in kubeflow/pipelines#4321 (2020),
    /// issuer and lifetime are unconfirmed, and revoked and managed client
    /// are the emulator's own (IAP has no revocation of ID tokens; its
    /// answer on a Google-managed client is unconfirmed).
    pub(crate) fn body(self) -> &'static str {
        match self {
            Rejection::EmptyToken => "Invalid IAP credentials: empty token",
            Rejection::Unparsable => "Invalid IAP credentials: Unable to parse JWT",
            Rejection::UnknownIssuer => "Invalid IAP credentials: Invalid JWT issuer.",
            Rejection::BadSignature => "Invalid IAP credentials: JWT signature is invalid",
            Rejection::Expired => "OpenID Connect token expired: JWT has expired",
            Rejection::Revoked => "Invalid IAP credentials: JWT has been revoked",
            Rejection::LifetimeTooLong => {
                "Invalid IAP credentials: JWT lifetime is longer than one hour"
            }
            Rejection::WrongAudience => {
                "Invalid IAP credentials: Invalid bearer token. Invalid JWT audience."
            }
            Rejection::EmailNotString => {
                "Invalid IAP credentials: JWT 'email' claim isn't a string"
            }
            Rejection::ManagedClient => {
                "Invalid IAP credentials: This application uses a Google-managed OAuth client: \
                 ID tokens are accepted only from programmatic clients on its allowlist, or use a service-account JWT."
            }
        }
    }

    /// A short, stable label for counters.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Rejection::EmptyToken => "empty_token",
            Rejection::Unparsable => "unparsable",
            Rejection::UnknownIssuer => "issuer",
            Rejection::BadSignature => "signature",
            Rejection::Expired => "expired",
            Rejection::Revoked => "revoked",
            Rejection::LifetimeTooLong => "lifetime",
            Rejection::WrongAudience => "audience",
            Rejection::EmailNotString => "email",
            Rejection::ManagedClient => "managed_client",
        }
    }
}

/// Who an accepted token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The user's or service account's email (unprefixed).
    pub(crate) email: String,
    /// The stable user ID (unprefixed): the token's `sub`.
    pub(crate) sub: String,
    /// What identifies the token in counters: its `jti`, else
    /// `sha256:` and the first 16 hex digits of its SHA-256.
    pub(crate) token_id: String,
}

const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// Longest lifetime of a self-signed JWT.
const SELF_SIGNED_MAX_LIFETIME: u64 = 3600;

/// Checks `token` for `app`, as a request for `path` (the request URI's
/// path, used for self-signed `aud`).
pub(crate) fn verify(
    state: &State,
    app: &AppConfig,
    token: &str,
    path: &str,
) -> Result<Identity, Rejection> {
    let token = token.trim();
    if token.is_empty() {
        return Err(Rejection::EmptyToken);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Unparsable)?;
    let unverified = jsonwebtoken::dangerous::insecure_decode::<Value>(token)
        .map_err(|_| Rejection::Unparsable)?
        .claims;
    let iss = unverified.get("iss").and_then(Value::as_str).unwrap_or("");
    let self_signed = !GOOGLE_ISSUERS.contains(&iss);
    if self_signed && (iss.is_empty() || unverified.get("sub").and_then(Value::as_str) != Some(iss))
    {
        return Err(Rejection::UnknownIssuer);
    }

    let kid = header.kid.as_deref().ok_or(Rejection::BadSignature)?;
    let key = if self_signed {
        state.service_account_decoding_key(iss, kid)
    } else {
        state.google_decoding_key(kid)
    }
    .ok_or(Rejection::BadSignature)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = match jsonwebtoken::decode::<Value>(token, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => {
            return Err(match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat => Rejection::BadSignature,
                _ => Rejection::Unparsable,
            });
        }
    };

    let now = state.now();
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(Rejection::Expired)?;
    if now >= exp {
        return Err(Rejection::Expired);
    }
    let jti = claims.get("jti").and_then(Value::as_str);
    if jti.is_some_and(|jti| state.is_revoked(jti)) {
        return Err(Rejection::Revoked);
    }
    let token_id = match jti {
        Some(jti) => jti.to_owned(),
        None => fingerprint(token),
    };
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();

    if self_signed {
        let iat = claims
            .get("iat")
            .and_then(Value::as_u64)
            .ok_or(Rejection::Unparsable)?;
        if exp > iat.saturating_add(SELF_SIGNED_MAX_LIFETIME) {
            return Err(Rejection::LifetimeTooLong);
        }
        if !audiences(&claims).any(|aud| app.accepts_url_audience(aud, path)) {
            return Err(Rejection::WrongAudience);
        }
        // IAP names a service account by its numeric unique ID.
        let sub = crate::locks::read(&state.service_accounts)
            .get(iss)
            .map_or_else(|| sub.to_owned(), |account| account.unique_id.clone());
        return Ok(Identity {
            email: iss.to_owned(),
            sub,
            token_id,
        });
    }

    if !audiences(&claims).any(|aud| app.accepts_client_audience(aud)) {
        return Err(if app.google_managed_client() {
            Rejection::ManagedClient
        } else {
            Rejection::WrongAudience
        });
    }
    let email = claims
        .get("email")
        .and_then(Value::as_str)
        .ok_or(Rejection::EmailNotString)?;
    Ok(Identity {
        email: email.to_owned(),
        sub: sub.to_owned(),
        token_id,
    })
}

/// `aud` as a string or an array of strings.
fn audiences(claims: &Value) -> impl Iterator<Item = &str> {
    let (one, many) = match claims.get("aud") {
        Some(Value::String(s)) => (Some(s.as_str()), None),
        Some(Value::Array(a)) => (None, Some(a.iter().filter_map(Value::as_str))),
        _ => (None, None),
    };
    one.into_iter().chain(many.into_iter().flatten())
}

/// A stable, non-secret ID for a token without `jti`.
fn fingerprint(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_reads_a_string_or_an_array() {
        let one = serde_json::json!({"aud": "a"});
        assert_eq!(audiences(&one).collect::<Vec<_>>(), ["a"]);
        let many = serde_json::json!({"aud": ["a", 1, "b"]});
        assert_eq!(audiences(&many).collect::<Vec<_>>(), ["a", "b"]);
        let none = serde_json::json!({});
        assert_eq!(audiences(&none).count(), 0);
    }

    #[test]
    fn fingerprint_is_stable_and_does_not_contain_the_token() {
        let token = "header.payload.signature";
        assert_eq!(fingerprint(token), fingerprint(token));
        assert!(fingerprint(token).starts_with("sha256:"));
        assert!(!fingerprint(token).contains("payload"));
    }

    #[test]
    fn every_rejection_has_a_distinct_reason() {
        let all = [
            Rejection::EmptyToken,
            Rejection::Unparsable,
            Rejection::UnknownIssuer,
            Rejection::BadSignature,
            Rejection::Expired,
            Rejection::Revoked,
            Rejection::LifetimeTooLong,
            Rejection::WrongAudience,
            Rejection::EmailNotString,
            Rejection::ManagedClient,
        ];
        let reasons: std::collections::HashSet<_> = all.iter().map(|r| r.reason()).collect();
        assert_eq!(reasons.len(), all.len());
    }
}
