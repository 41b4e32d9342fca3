//! [`IapIdentity`]: who IAP says the caller is, read from a verified
//! assertion.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// The caller, as a verified `x-goog-iap-jwt-assertion` names them.
///
/// Cheap to clone (one reference count). The [layer](crate::IapVerifyLayer)
/// puts it in the request's extensions; with the `axum` feature it is an
/// extractor. `Debug` shows who, never the assertion.
#[derive(Clone)]
pub struct IapIdentity {
    inner: Arc<Inner>,
}

struct Inner {
    email: Option<String>,
    subject: String,
    audience: String,
    hosted_domain: Option<String>,
    identity_source: Option<String>,
    access_levels: Vec<String>,
    issued_at: Option<u64>,
    expires_at: u64,
    claims: Map<String, Value>,
}

impl fmt::Debug for IapIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IapIdentity")
            .field("email", &self.inner.email)
            .field("subject", &self.inner.subject)
            .field("audience", &self.inner.audience)
            .field("hosted_domain", &self.inner.hosted_domain)
            .field("expires_at", &self.inner.expires_at)
            .finish_non_exhaustive()
    }
}

impl IapIdentity {
    /// Reads the identity from verified claims; `sub`, `aud` and `exp` were
    /// checked by the caller.
    pub(crate) fn from_claims(
        claims: Map<String, Value>,
        audience: String,
        expires_at: u64,
    ) -> Result<Self, crate::VerifyError> {
        let text = |name: &'static str| -> Result<Option<String>, crate::VerifyError> {
            match claims.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(crate::VerifyError::Malformed(
                    "a claim that should be a string is not",
                )),
            }
        };
        let subject = text("sub")?.ok_or(crate::VerifyError::MissingClaim("sub"))?;
        let access_levels = match claims.get("google").and_then(|g| g.get("access_levels")) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(levels)) => levels
                .iter()
                .map(|l| l.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(crate::VerifyError::Malformed(
                    "google.access_levels is not a list of strings",
                ))?,
            Some(_) => {
                return Err(crate::VerifyError::Malformed(
                    "google.access_levels is not a list of strings",
                ));
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                email: text("email")?,
                subject,
                audience,
                hosted_domain: text("hd")?,
                identity_source: text("identity_source")?,
                access_levels,
                issued_at: claims.get("iat").and_then(Value::as_u64),
                expires_at,
                claims,
            }),
        })
    }

    /// The plain email address (`alice@example.com`). `None` for the
    /// workforce identities whose assertion carries no `email`.
    pub fn email(&self) -> Option<&str> {
        self.inner.email.as_deref()
    }

    /// The stable user ID, the `sub` claim as IAP sends it:
    /// `accounts.google.com:NUMERIC_ID` for Google identities.
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }

    /// The Google Workspace domain of the user (`hd`), if any.
    pub fn hosted_domain(&self) -> Option<&str> {
        self.inner.hosted_domain.as_deref()
    }

    /// Where the identity comes from (`identity_source`): `GOOGLE`, or a
    /// workforce identity pool.
    pub fn identity_source(&self) -> Option<&str> {
        self.inner.identity_source.as_deref()
    }

    /// The access levels the request met (`google.access_levels`), empty
    /// when none apply.
    pub fn access_levels(&self) -> &[String] {
        &self.inner.access_levels
    }

    /// The audience the assertion was signed for (`aud`).
    pub fn audience(&self) -> &str {
        &self.inner.audience
    }

    /// When the assertion expires (`exp`).
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.inner.expires_at)
    }

    /// When the assertion was issued (`iat`), if it says.
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.inner
            .issued_at
            .map(|iat| UNIX_EPOCH + Duration::from_secs(iat))
    }

    /// Every claim of the assertion, as IAP sent them.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.inner.claims
    }
}
