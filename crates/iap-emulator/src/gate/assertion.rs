//! The signed header IAP adds to every request it lets through:
//! `x-goog-iap-jwt-assertion`.
//!
//! An ES256 JWT whose keys are published as a JWK Set at
//! `/iap/verify/public_key-jwk` and as a `kid -> PEM public key` map at
//! `/iap/verify/public_key` on the emulator's main server (Google's:
//! `https://www.gstatic.com/iap/verify/public_key-jwk` and `.../public_key`).
//! Its claims, as IAP sends them (see `docs/iap-signed-header.md`):
//!
//! ```json
//! {
//!   "iss": "https://cloud.google.com/iap",
//!   "aud": "/projects/123456789012/global/backendServices/4711471147114711471",
//!   "azp": "/projects/123456789012/global/backendServices/4711471147114711471",
//!   "email": "alice@example.com",
//!   "sub": "accounts.google.com:104807498307591862452",
//!   "identity_source": "GOOGLE",
//!   "iat": 1764250000,
//!   "exp": 1764250600
//! }
//! ```
//!
//! `email` is the plain address; only `sub` carries the
//! `accounts.google.com:` prefix. `google.access_levels` is added when the
//! app has [access levels](super::AppBuilder::access_levels).
//!
//! A backend verifies it with the key set, `iss`, `aud`, and a skew of 30 s.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// IAP's issuer for the assertion.
pub(crate) const ISSUER: &str = "https://cloud.google.com/iap";

/// The prefix IAP puts before the user ID in `sub`, and before the email
/// and the user ID in the `x-goog-authenticated-user-*` headers.
pub(crate) const IDENTITY_PREFIX: &str = "accounts.google.com:";

/// How long an assertion is valid (IAP: 10 minutes).
pub(crate) const LIFETIME_SECS: u64 = 600;

/// A key that signs assertions, with its public half as a JWK and as PEM.
pub(crate) struct AssertionSigner {
    kid: String,
    key: EncodingKey,
    jwk: serde_json::Value,
    public_pem: String,
}

impl fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private part.
        f.debug_struct("AssertionSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Who an assertion speaks for, and for which app.
pub(crate) struct Subject<'a> {
    pub(crate) audience: &'a str,
    /// The plain email address.
    pub(crate) email: &'a str,
    /// The numeric user ID, unprefixed.
    pub(crate) sub: &'a str,
    /// `google.access_levels`, left out when empty.
    pub(crate) access_levels: &'a [String],
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'static str,
    aud: &'a str,
    azp: &'a str,
    email: &'a str,
    sub: String,
    identity_source: &'static str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    google: Option<GoogleClaims<'a>>,
}

#[derive(Serialize)]
struct GoogleClaims<'a> {
    access_levels: &'a [String],
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
        let spki: PublicKeyX509Der<'static> = pair.public_key().as_der().ok()?;
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
            public_pem: pem("PUBLIC KEY", spki.as_ref()),
        })
    }

    /// The key ID (`kid` of the assertions it signs).
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs an assertion for `subject` at `now`.
    pub(crate) fn sign(&self, now: u64, subject: &Subject<'_>) -> Option<String> {
        let claims = Claims {
            iss: ISSUER,
            aud: subject.audience,
            azp: subject.audience,
            email: subject.email,
            sub: format!("{IDENTITY_PREFIX}{}", subject.sub),
            identity_source: "GOOGLE",
            iat: now,
            exp: now + LIFETIME_SECS,
            google: (!subject.access_levels.is_empty()).then_some(GoogleClaims {
                access_levels: subject.access_levels,
            }),
        };
        self.sign_claims(&claims)
    }

    /// Signs any claims: header `{"alg":"ES256","kid":..,"typ":"JWT"}`.
    pub(crate) fn sign_claims<T: Serialize>(&self, claims: &T) -> Option<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).ok()
    }
}

/// IAP's published assertion keys: the current one first, then the one it
/// replaced (assertions it signed still verify until they expire).
pub(crate) type AssertionKeys = Vec<Arc<AssertionSigner>>;

/// The JWK Set served at `/iap/verify/public_key-jwk`.
pub(crate) fn jwks(keys: &[Arc<AssertionSigner>]) -> serde_json::Value {
    let keys: Vec<_> = keys.iter().map(|k| k.jwk.clone()).collect();
    serde_json::json!({ "keys": keys })
}

/// The `{kid: PEM}` map served at `/iap/verify/public_key`.
pub(crate) fn pem_map(keys: &[Arc<AssertionSigner>]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|k| (k.kid.clone(), serde_json::Value::from(k.public_pem.clone())))
        .collect();
    serde_json::Value::Object(map)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};

    fn subject<'a>(aud: &'a str, levels: &'a [String]) -> Subject<'a> {
        Subject {
            audience: aud,
            email: "a@example.com",
            sub: "42",
            access_levels: levels,
        }
    }

    #[test]
    fn assertion_verifies_with_the_published_jwks() {
        let signer = Arc::new(AssertionSigner::generate().unwrap());
        let aud = "/projects/1/global/backendServices/2";
        let jwt = signer.sign(1_000, &subject(aud, &[])).unwrap();

        let set: JwkSet = serde_json::from_value(jwks(std::slice::from_ref(&signer))).unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.validate_exp = false;
        v.set_audience(&[aud]);
        v.set_issuer(&[ISSUER]);
        let data = jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &v).unwrap();
        assert_eq!(data.claims["email"], "a@example.com");
        assert_eq!(data.claims["sub"], "accounts.google.com:42");
        assert_eq!(data.claims["azp"], aud);
        assert_eq!(data.claims["identity_source"], "GOOGLE");
        assert_eq!(data.claims["exp"], 1_600);
        assert!(data.claims.get("google").is_none());
    }

    #[test]
    fn assertion_verifies_with_the_published_pem() {
        let signer = Arc::new(AssertionSigner::generate().unwrap());
        let levels = vec!["accessPolicies/1/accessLevels/corp".to_owned()];
        let jwt = signer.sign(1_000, &subject("/a", &levels)).unwrap();
        let map = pem_map(std::slice::from_ref(&signer));
        let pem = map[signer.kid()].as_str().unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let key = DecodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.validate_exp = false;
        v.validate_aud = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &v).unwrap();
        assert_eq!(data.claims["google"]["access_levels"][0], levels[0]);
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let signer = AssertionSigner::generate().unwrap();
        let dbg = format!("{signer:?}");
        assert!(dbg.contains(&signer.kid));
        assert!(!dbg.contains("key:"));
    }
}
