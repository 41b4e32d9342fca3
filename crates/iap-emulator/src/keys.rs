//! RSA signing keys: generation, JWT signing, JWK / PEM / X.509 export.
//!
//! Key generation is CPU-bound (tens to hundreds of milliseconds for RSA
//! 2048), so async callers go through [`RsaKey::generate_async`], which runs it
//! on tokio's blocking pool instead of an async worker thread.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;
use serde::Serialize;

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
#[error("RSA key generation failed in aws-lc-rs")]
pub struct KeyError;

/// An RSA 2048 key pair with its key ID.
pub(crate) struct RsaKey {
    kid: String,
    pair: KeyPair,
    pkcs8_der: Vec<u8>,
    n: Vec<u8>,
    e: Vec<u8>,
    x509_pem: String,
}

impl fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private part.
        f.debug_struct("RsaKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl RsaKey {
    /// Generates a key on the current thread (blocking).
    pub(crate) fn generate() -> Result<Self, KeyError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError)?;
        let pkcs8: Pkcs8V1Der<'static> = pair.as_der().map_err(|_| KeyError)?;
        let pkcs8_der = pkcs8.as_ref().to_vec();
        let public = pair.public_key();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        let spki: PublicKeyX509Der<'static> = public.as_der().map_err(|_| KeyError)?;
        let kid = random_hex(20);
        let mut key = RsaKey {
            kid,
            pair,
            pkcs8_der,
            n,
            e,
            x509_pem: String::new(),
        };
        let cert = x509::self_signed(&key, spki.as_ref()).ok_or(KeyError)?;
        key.x509_pem = pem("CERTIFICATE", &cert);
        Ok(key)
    }

    /// Generates a key on tokio's blocking pool.
    pub(crate) async fn generate_async() -> Result<Self, KeyError> {
        tokio::task::spawn_blocking(Self::generate)
            .await
            .map_err(|_| KeyError)?
    }

    /// The key ID (`kid` header, `private_key_id` of a key file).
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// RS256 signature over `msg`.
    pub(crate) fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; self.pair.public_modulus_len()];
        // Signing with a valid key pair and a fixed padding cannot fail.
        if self
            .pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
            .is_err()
        {
            sig.clear();
        }
        sig
    }

    /// A compact RS256 JWT with header `{"alg":"RS256","kid":..,"typ":"JWT"}`.
    pub(crate) fn sign_jwt<T: Serialize>(&self, claims: &T) -> String {
        let header = serde_json::json!({"alg": "RS256", "kid": self.kid, "typ": "JWT"});
        let mut out = String::with_capacity(1024);
        out.push_str(&URL_SAFE_NO_PAD.encode(header.to_string()));
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default()));
        let sig = self.sign(out.as_bytes());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        out
    }

    /// The public key for `jsonwebtoken` verification.
    pub(crate) fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_rsa_raw_components(&self.n, &self.e)
    }

    /// The public key as a JWK (member of a JWK Set).
    pub(crate) fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(&self.n),
            "e": URL_SAFE_NO_PAD.encode(&self.e),
        })
    }

    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub(crate) fn private_key_pem(&self) -> String {
        pem("PRIVATE KEY", &self.pkcs8_der)
    }

    /// A self-signed X.509 certificate of the public key, PEM.
    pub(crate) fn x509_pem(&self) -> &str {
        &self.x509_pem
    }
}

/// `len` random bytes as lowercase hex, from the system CSPRNG.
pub(crate) fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `len` random bytes, base64url without padding, from the system CSPRNG.
pub(crate) fn random_b64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A random decimal string of `len` digits not starting with 0 (Google's
/// numeric IDs: user `sub`, service-account unique ID).
pub(crate) fn random_digits(len: usize) -> String {
    let mut s = String::with_capacity(len);
    s.push(char::from(b'1' + fastrand::u8(0..9)));
    for _ in 1..len {
        s.push(char::from(b'0' + fastrand::u8(0..10)));
    }
    s
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

/// Just enough DER to write a self-signed certificate, the form of
/// `https://www.googleapis.com/oauth2/v1/certs`.
mod x509 {
    use super::RsaKey;

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const INTEGER: u8 = 0x02;
    const BIT_STRING: u8 = 0x03;
    const NULL: u8 = 0x05;
    const OID: u8 = 0x06;
    const UTF8: u8 = 0x0c;
    const GENERALIZED_TIME: u8 = 0x18;
    // 1.2.840.113549.1.1.11 sha256WithRSAEncryption
    const SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    // 2.5.4.3 commonName
    const CN: &[u8] = &[0x55, 0x04, 0x03];

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(content);
        out
    }

    fn seq(parts: &[&[u8]]) -> Vec<u8> {
        tlv(SEQUENCE, &parts.concat())
    }

    fn name(cn: &str) -> Vec<u8> {
        let atv = seq(&[&tlv(OID, CN), &tlv(UTF8, cn.as_bytes())]);
        seq(&[&tlv(SET, &atv)])
    }

    pub(super) fn self_signed(key: &RsaKey, spki: &[u8]) -> Option<Vec<u8>> {
        let alg = seq(&[&tlv(OID, SHA256_RSA), &tlv(NULL, &[])]);
        let version = tlv(0xa0, &tlv(INTEGER, &[2]));
        let mut serial = vec![0x01];
        serial.extend_from_slice(&key.n[..8]);
        let serial = tlv(INTEGER, &serial);
        let validity = seq(&[
            &tlv(GENERALIZED_TIME, b"20000101000000Z"),
            &tlv(GENERALIZED_TIME, b"20991231235959Z"),
        ]);
        let name = name("iap-emulator.googleusercontent.com");
        let tbs = seq(&[&version, &serial, &alg, &name, &validity, &name, spki]);
        let sig = key.sign(&tbs);
        if sig.is_empty() {
            return None;
        }
        let mut bits = vec![0u8];
        bits.extend_from_slice(&sig);
        Some(seq(&[&tbs, &alg, &tlv(BIT_STRING, &bits)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_jwt_verifies_with_its_decoding_key() {
        let key = RsaKey::generate().unwrap();
        let jwt = key.sign_jwt(&serde_json::json!({"sub": "x", "exp": u64::MAX / 2}));
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.validate_aud = false;
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&jwt, &key.decoding_key(), &v).unwrap();
        assert_eq!(data.claims["sub"], "x");
        assert_eq!(data.header.kid.as_deref(), Some(key.kid()));
    }

    #[test]
    fn private_pem_round_trips_through_jsonwebtoken() {
        let key = RsaKey::generate().unwrap();
        let pem = key.private_key_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let enc = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        h.kid = Some(key.kid().into());
        let jwt =
            jsonwebtoken::encode(&h, &serde_json::json!({"exp": u64::MAX / 2}), &enc).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.validate_aud = false;
        jsonwebtoken::decode::<serde_json::Value>(&jwt, &key.decoding_key(), &v).unwrap();
    }

    #[test]
    fn debug_never_shows_private_key() {
        let key = RsaKey::generate().unwrap();
        let dbg = format!("{key:?}");
        assert!(!dbg.contains("PRIVATE"));
        assert!(dbg.contains(key.kid()));
    }
}
