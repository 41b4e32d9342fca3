//! The signed header IAP adds to every request it lets through:
//! `x-goog-iap-jwt-assertion`.
//!
//! An ES256 JWT whose keys are published as a JWK Set at
//! `/iap/verify/public_key-jwk` on the emulator's main server (Google's is
//! `https://www.gstatic.com/iap/verify/public_key-jwk`). Its claims, as IAP
//! sends them:
//!
//! ```json
//! {
//!   "iss": "https://cloud.google.com/iap",
//!   "aud": "/projects/123456789012/global/backendServices/4711471147114711471",
//!   "email": "accounts.google.com:alice@example.com",
//!   "sub": "accounts.google.com:104807498307591862452",
//!   "iat": 1764250000,
//!   "exp": 1764250600
//! }
//! ```
//!
//! A backend verifies it with the JWK Set, `iss`, `aud`, and a skew of 30 s.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// IAP's issuer for the assertion.
pub(crate) const ISSUER: &str = "https://cloud.google.com/iap";

/// The prefix IAP puts before the email and the user ID it forwards.
pub(crate) const IDENTITY_PREFIX: &str = "accounts.google.com:";

/// How long an assertion is valid (IAP: 10 minutes).
const LIFETIME_SECS: u64 = 600;

/// The key that signs assertions, with its public half as a JWK.
pub(crate) struct AssertionSigner {
    kid: String,
    key: EncodingKey,
    jwk: serde_json::Value,
}

impl fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private part.
        f.debug_struct("AssertionSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'static str,
    aud: &'a str,
    email: String,
    sub: String,
    iat: u64,
    exp: u64,
}

impl AssertionSigner {
    /// A fresh P-256 key. `None` only if the system's random source fails.
    pub(crate) fn generate() -> Option<Self> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .ok()?;
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).ok()?;
        // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 0x04 {
            return None;
        }
        let mut kid_bytes = [0u8; 6];
        aws_lc_rs::rand::fill(&mut kid_bytes).ok()?;
        let kid = URL_SAFE_NO_PAD.encode(kid_bytes);
        let jwk = serde_json::json!({
            "kty": "EC",
            "alg": "ES256",
            "use": "sig",
            "crv": "P-256",
            "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Some(Self {
            kid,
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
        })
    }

    /// The JWK Set served at `/iap/verify/public_key-jwk`.
    pub(crate) fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk] })
    }

    /// Signs an assertion for `email` / `sub` (both unprefixed) at `now`.
    pub(crate) fn sign(&self, now: u64, audience: &str, email: &str, sub: &str) -> Option<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let claims = Claims {
            iss: ISSUER,
            aud: audience,
            email: format!("{IDENTITY_PREFIX}{email}"),
            sub: format!("{IDENTITY_PREFIX}{sub}"),
            iat: now,
            exp: now + LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};

    #[test]
    fn assertion_verifies_with_the_published_jwks() {
        let signer = AssertionSigner::generate().unwrap();
        let aud = "/projects/1/global/backendServices/2";
        let jwt = signer.sign(1_000, aud, "a@example.com", "42").unwrap();

        let set: JwkSet = serde_json::from_value(signer.jwks()).unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.validate_exp = false;
        v.set_audience(&[aud]);
        v.set_issuer(&[ISSUER]);
        let data = jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &v).unwrap();
        assert_eq!(data.claims["email"], "accounts.google.com:a@example.com");
        assert_eq!(data.claims["sub"], "accounts.google.com:42");
        assert_eq!(data.claims["exp"], 1_600);
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let signer = AssertionSigner::generate().unwrap();
        let dbg = format!("{signer:?}");
        assert!(dbg.contains(&signer.kid));
        assert!(!dbg.contains("key:"));
    }
}
