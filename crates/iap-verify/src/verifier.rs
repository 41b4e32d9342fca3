//! [`IapVerifier`]: checks an `x-goog-iap-jwt-assertion`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::cut;
use crate::keys::Keys;
use crate::remembered::Remembered;
use crate::{BuildError, IapIdentity, Policy, VerifyError};

/// Google's IAP key set, as a JWK Set.
pub const GOOGLE_JWKS_URL: &str = "https://www.gstatic.com/iap/verify/public_key-jwk";

/// The only issuer of IAP assertions.
pub const ISSUER: &str = "https://cloud.google.com/iap";

/// The header IAP adds to every request it lets through.
pub const ASSERTION_HEADER: http::HeaderName =
    http::HeaderName::from_static("x-goog-iap-jwt-assertion");

/// The clock skew allowed on `exp` and `iat` unless set otherwise.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Verified assertions remembered unless set otherwise.
const DEFAULT_REMEMBERED: usize = 1024;
/// Longer than any assertion IAP sends (about 1 KiB with access levels).
const MAX_ASSERTION_LEN: usize = 16 * 1024;

/// Verifies IAP's signed header: `alg` ES256 only, the signature against
/// IAP's key named by `kid`, `iss`, `aud` among the accepted audiences,
/// `exp` (required) and `iat` within the leeway, then the
/// [`Policy`]. Cheap to clone; clones share the key cache and the
/// remembered assertions.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let emulator = iap_emulator::Emulator::start().await?;
/// # let app = emulator.app();
/// # let assertion = emulator.mint_assertion(&app, "alice@example.com");
/// use iap_verify::IapVerifier;
///
/// let verifier = IapVerifier::builder()
///     .audience(app.assertion_audience()) // e.g. "/projects/NUMBER/global/backendServices/ID"
///     .jwks_url(emulator.iap_jwks_url()) // default: Google's
///     .build()?;
/// let identity = verifier.verify(&assertion).await?;
/// assert_eq!(identity.email(), Some("alice@example.com"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct IapVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    audiences: Vec<String>,
    leeway: u64,
    policy: Policy,
    keys: Arc<Keys>,
    remembered: Remembered,
}

impl fmt::Debug for IapVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IapVerifier")
            .field("audiences", &self.inner.audiences)
            .field("jwks_url", &self.inner.keys.url())
            .field("leeway_secs", &self.inner.leeway)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

/// Configures an [`IapVerifier`]; [`IapVerifier::builder`] makes one.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build()"]
pub struct IapVerifierBuilder {
    audiences: Vec<String>,
    jwks_url: String,
    leeway: Duration,
    policy: Policy,
    remembered: usize,
}

impl IapVerifierBuilder {
    /// Accept assertions for this audience (the shapes are in
    /// [`audience`](crate::audience)). Call it again to accept several.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Where IAP's keys are, as a JWK Set (default [`GOOGLE_JWKS_URL`]).
    /// `https`, or plain `http` to a loopback host (the emulator's).
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = url.into();
        self
    }

    /// The clock skew allowed on `exp` and `iat` (default 30 s, whole
    /// seconds).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Extra conditions on the identity (default: none).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How many verified assertions to remember (default 1024; 0 checks
    /// every request's signature).
    pub fn remembered_assertions(mut self, capacity: usize) -> Self {
        self.remembered = capacity;
        self
    }

    /// Builds the verifier. Synchronous and needs no runtime: the keys are
    /// fetched on first use.
    pub fn build(self) -> Result<IapVerifier, BuildError> {
        if self.audiences.is_empty() {
            return Err(BuildError::NoAudience);
        }
        check_jwks_url(&self.jwks_url)?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            // The key set is at the URL given: no redirect (to plain http or
            // elsewhere) is followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(BuildError::Client)?;
        Ok(IapVerifier {
            inner: Arc::new(Inner {
                audiences: self.audiences,
                leeway: self.leeway.as_secs(),
                policy: self.policy,
                keys: Arc::new(Keys::new(self.jwks_url, client)),
                remembered: Remembered::new(self.remembered),
            }),
        })
    }
}

fn check_jwks_url(url: &str) -> Result<(), BuildError> {
    let bad = |reason| BuildError::JwksUrl {
        url: url.to_owned(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| bad("not a URL"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Domain(host)) => host.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(bad(
                    "plain http is only allowed to a loopback host; use https",
                ))
            }
        }
        _ => Err(bad("not an https URL")),
    }
}

/// The header members we read.
#[derive(Deserialize)]
struct JoseHeader {
    alg: Option<Value>,
    kid: Option<Value>,
}

impl IapVerifier {
    /// A builder: give it at least one [`audience`](IapVerifierBuilder::audience).
    pub fn builder() -> IapVerifierBuilder {
        IapVerifierBuilder {
            audiences: Vec::new(),
            jwks_url: GOOGLE_JWKS_URL.to_owned(),
            leeway: DEFAULT_LEEWAY,
            policy: Policy::default(),
            remembered: DEFAULT_REMEMBERED,
        }
    }

    /// Verifies one assertion (the value of `x-goog-iap-jwt-assertion`).
    ///
    /// An assertion verified before and not yet expired is answered from
    /// memory; otherwise the first call fetches IAP's keys.
    pub async fn verify(&self, assertion: impl AsRef<[u8]>) -> Result<IapIdentity, VerifyError> {
        let assertion = assertion.as_ref();
        let now = unix_now();
        if let Some(identity) = self.inner.remembered.get(assertion, now) {
            return Ok(identity);
        }
        self.verify_fully(assertion, now).await
    }

    /// The identity of an assertion verified before and still valid, with
    /// no I/O: the hot path of the layer.
    pub(crate) fn remembered(&self, assertion: &[u8]) -> Option<IapIdentity> {
        self.inner.remembered.get(assertion, unix_now())
    }

    async fn verify_fully(&self, assertion: &[u8], now: u64) -> Result<IapIdentity, VerifyError> {
        let inner = &*self.inner;
        if assertion.is_empty() {
            return Err(VerifyError::Missing);
        }
        if assertion.len() > MAX_ASSERTION_LEN {
            return Err(VerifyError::Malformed("longer than 16 KiB"));
        }
        let text = std::str::from_utf8(assertion)
            .map_err(|_| VerifyError::Malformed("not ASCII text"))?
            .trim();
        let mut parts = text.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed("not three dot-separated parts"));
        };
        let header: JoseHeader = decode_json(
            header,
            "the header is not base64url",
            "the header is not a JSON object",
        )?;
        match header.alg {
            Some(Value::String(alg)) if alg == "ES256" => {}
            Some(Value::String(alg)) => {
                return Err(VerifyError::WrongAlgorithm { alg: cut(&alg, 32) });
            }
            _ => return Err(VerifyError::Malformed("the header has no alg")),
        }
        let kid = match header.kid {
            Some(Value::String(kid)) => kid,
            _ => return Err(VerifyError::Malformed("the header has no kid")),
        };

        let set = inner.keys.current().await?;
        let key = inner.keys.find(set, &kid).await?;
        let message = &text[..header_and_payload_len(text)];
        let valid =
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, Algorithm::ES256)
                .map_err(|_| VerifyError::Malformed("the signature is not base64url"))?;
        if !valid {
            return Err(VerifyError::BadSignature { kid: cut(&kid, 64) });
        }

        let claims: Map<String, Value> = decode_json(
            payload,
            "the claims are not base64url",
            "the claims are not a JSON object",
        )?;
        match claims.get("iss") {
            Some(Value::String(iss)) if iss == crate::verifier::ISSUER => {}
            Some(Value::String(iss)) => return Err(VerifyError::WrongIssuer { iss: cut(iss, 64) }),
            Some(_) => return Err(VerifyError::Malformed("iss is not a string")),
            None => return Err(VerifyError::MissingClaim("iss")),
        }
        let audience = match claims.get("aud") {
            Some(Value::String(aud)) => {
                if !inner.audiences.iter().any(|a| a == aud) {
                    return Err(VerifyError::WrongAudience { aud: cut(aud, 128) });
                }
                aud.clone()
            }
            Some(_) => return Err(VerifyError::Malformed("aud is not a string")),
            None => return Err(VerifyError::MissingClaim("aud")),
        };
        let exp = match claims.get("exp") {
            Some(exp) => exp
                .as_u64()
                .ok_or(VerifyError::Malformed("exp is not a number of seconds"))?,
            None => return Err(VerifyError::MissingClaim("exp")),
        };
        let valid_until = exp.saturating_add(inner.leeway);
        if now > valid_until {
            return Err(VerifyError::Expired { exp, now });
        }
        if let Some(iat) = claims.get("iat") {
            let iat = iat
                .as_u64()
                .ok_or(VerifyError::Malformed("iat is not a number of seconds"))?;
            if iat > now.saturating_add(inner.leeway) {
                return Err(VerifyError::IssuedInTheFuture { iat, now });
            }
        }
        let identity = IapIdentity::from_claims(claims, audience, exp)?;
        if let Some(reason) = inner.policy.refusal(&identity) {
            return Err(VerifyError::Policy(reason));
        }
        inner
            .remembered
            .insert(assertion, valid_until, identity.clone(), now);
        Ok(identity)
    }
}

/// `header.payload` of a compact JWS: everything before the last dot.
fn header_and_payload_len(text: &str) -> usize {
    text.rfind('.').unwrap_or(text.len())
}

fn decode_json<T: for<'de> Deserialize<'de>>(
    part: &str,
    not_base64: &'static str,
    not_json: &'static str,
) -> Result<T, VerifyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| VerifyError::Malformed(not_base64))?;
    serde_json::from_slice(&bytes).map_err(|_| VerifyError::Malformed(not_json))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_needs_an_audience_and_a_safe_key_url() {
        assert!(matches!(
            IapVerifier::builder().build(),
            Err(BuildError::NoAudience)
        ));
        let with = |url: &str| IapVerifier::builder().audience("/a").jwks_url(url).build();
        assert!(with("https://keys.example.com/jwk").is_ok());
        assert!(with("http://127.0.0.1:1/jwk").is_ok());
        assert!(with("http://[::1]:1/jwk").is_ok());
        assert!(with("http://localhost:1/jwk").is_ok());
        let err = with("http://keys.example.com/jwk").unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        assert!(matches!(with("ftp://x/"), Err(BuildError::JwksUrl { .. })));
        assert!(matches!(with("not a url"), Err(BuildError::JwksUrl { .. })));
    }

    #[tokio::test]
    async fn the_key_refresh_task_ends_with_the_verifier() {
        let emulator = iap_emulator::Emulator::start().await.unwrap();
        let app = emulator.app();
        let verifier = IapVerifier::builder()
            .audience(app.assertion_audience())
            .jwks_url(emulator.iap_jwks_url())
            .build()
            .unwrap();
        verifier
            .verify(emulator.mint_assertion(&app, "a@example.com"))
            .await
            .unwrap();
        let task = verifier
            .inner
            .keys
            .refresher()
            .await
            .expect("a refresh task");
        let keys = Arc::downgrade(&verifier.inner.keys);
        let clone = verifier.clone();
        drop(verifier);
        assert!(!task.is_finished(), "a clone still owns it");
        drop(clone);
        // The task held the keys only weakly...
        assert!(keys.upgrade().is_none());
        // ...and was aborted with them.
        for _ in 0..1000 {
            if task.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(task.is_finished());
    }

    #[test]
    fn build_needs_no_runtime() {
        // A plain #[test]: no tokio runtime anywhere.
        let verifier = IapVerifier::builder().audience("/a").build().unwrap();
        assert!(format!("{verifier:?}").contains(GOOGLE_JWKS_URL));
    }
}
