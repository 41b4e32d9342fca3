//! OAuth access tokens: what impersonation and workload identity federation
//! need from a source credential before they can ask IAM for an ID token.
//!
//! IAP itself never sees an access token; [`AccessTokenSource`] exists so
//! that an impersonation source can sit on top of any credential (a
//! service-account key, an authorized user, the metadata server).

use std::fmt;
use std::time::{Duration, SystemTime};

use http::HeaderValue;

use crate::{Error, Result};
use futures_util::future::BoxFuture;

/// The scope IAM Credentials calls need.
pub(crate) const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// An OAuth 2.0 access token and when it expires. `Debug` never shows it.
#[derive(Clone)]
pub struct AccessToken {
    token: Box<str>,
    expires_at: SystemTime,
    header: HeaderValue,
}

impl AccessToken {
    /// A token valid for `expires_in` from now. Fails with
    /// [`Error::MalformedToken`] when `expires_in` is too large for the
    /// system's clock (never panics).
    pub fn new(token: impl Into<String>, expires_in: Duration) -> Result<Self> {
        let expires_at = crate::clock::after(SystemTime::now(), expires_in).ok_or_else(|| {
            Error::MalformedToken(format!(
                "the access token's `expires_in` ({} s) is out of range",
                expires_in.as_secs()
            ))
        })?;
        Self::with_expiry(token, expires_at)
    }

    /// A token that expires at `expires_at`. Fails when the token cannot be
    /// an HTTP header value.
    pub fn with_expiry(token: impl Into<String>, expires_at: SystemTime) -> Result<Self> {
        let token: String = token.into();
        let mut header = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
            Error::MalformedToken(
                "an access token contains characters not allowed in an HTTP header".into(),
            )
        })?;
        header.set_sensitive(true);
        Ok(AccessToken {
            token: token.into(),
            expires_at,
            header,
        })
    }

    /// The token text. Treat it as a secret.
    pub fn as_str(&self) -> &str {
        &self.token
    }

    /// When the token expires.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// Time left until expiry at `now`; zero once expired.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }

    /// `Bearer <token>`, marked sensitive, for `Authorization`.
    pub fn header_value(&self) -> &HeaderValue {
        &self.header
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Where access tokens come from: the source credential of impersonation.
///
/// Implemented by [`ServiceAccountSource`](crate::source::service_account::ServiceAccountSource),
/// [`AuthorizedUserSource`](crate::source::authorized_user::AuthorizedUserSource) and
/// [`MetadataSource`](crate::source::metadata::MetadataSource). Sources do
/// not cache.
pub trait AccessTokenSource: fmt::Debug + Send + Sync + 'static {
    /// Fetches a fresh access token for `scopes` (e.g. `https://www.googleapis.com/auth/cloud-platform`).
    fn access_token<'a>(&'a self, scopes: &'a [&'a str]) -> BoxFuture<'a, Result<AccessToken>>;

    /// Whom the tokens speak for (an email, or a federated principal), when
    /// known without a network call: named in errors, e.g. which principal
    /// lacks an IAM role. Default `None`.
    fn principal(&self) -> Option<String> {
        None
    }
}

/// The access-token answer of Google's token endpoints and the metadata server.
#[derive(serde::Deserialize)]
pub(crate) struct AccessTokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl AccessTokenAnswer {
    /// Without `expires_in`, assume Google's usual hour.
    pub(crate) fn into_token(self) -> Result<AccessToken> {
        AccessToken::new(
            self.access_token,
            Duration::from_secs(self.expires_in.unwrap_or(3600)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_token() {
        let t = AccessToken::new("ya29.secret-access", Duration::from_secs(60)).unwrap();
        let dbg = format!("{t:?} {:?}", t.header_value());
        assert!(!dbg.contains("secret-access"), "{dbg}");
        assert!(t.header_value().is_sensitive());
    }
}
