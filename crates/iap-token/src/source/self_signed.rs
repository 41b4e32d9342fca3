//! Self-signed service-account JWTs: tokens that IAP accepts without any
//! token endpoint (see `docs/service-account.md`).
//!
//! The service account's own key signs a JWT whose `aud` is the request's
//! URL (exact, without query) or `https://HOST/*`, with `iss` = `sub` = the
//! account's email, header `kid` = the key's ID, and `exp` at most an hour
//! after `iat`. Minting one is a local RSA signature: no network, no
//! Google endpoint, nothing to rate-limit.
//!
//! Because the audience is a URL, [`IapAuth`](crate::IapAuth) derives it
//! from each request (see [`AudienceKind`]): with the default
//! [`AudienceKind::HostWildcard`] one token serves every path of a host
//! until it nears expiry; [`AudienceKind::RequestUrl`] mints one per URL.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emu = iap_emulator::Emulator::start().await?;
//! # let dir = tempfile::tempdir()?;
//! # let key_file = dir.path().join("key.json");
//! # emu.create_service_account("runner").await?.write_key_file(&key_file)?;
//! use iap_token::{IapAuth, source::self_signed::SelfSignedJwtSource};
//!
//! let source = SelfSignedJwtSource::from_file(&key_file)?; // e.g. "key.json"
//! // No audience to configure: each request's host is the audience.
//! let auth = IapAuth::builder()
//!     .source(source)
//!     .allow_origin("https://app.example.com")
//!     .build()?;
//! # let _ = auth; Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::source::service_account::{ASSERTION_LIFETIME, CLOCK_SKEW, ServiceAccountKey};
use crate::source::{AudienceKind, BoxFuture, TokenSource};
use crate::{Audience, Error, IdToken, Result};

/// ID tokens signed by a service account's own key, for IAP. See the
/// [module docs](self). `Debug` never shows the private key.
#[derive(Clone, Debug)]
pub struct SelfSignedJwtSource {
    key: Arc<ServiceAccountKey>,
    kind: AudienceKind,
    lifetime: Duration,
}

impl SelfSignedJwtSource {
    /// A source signing with `key`: one token per host
    /// ([`AudienceKind::HostWildcard`]), each valid for an hour.
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let emu = iap_emulator::Emulator::start().await?;
    /// # let dir = tempfile::tempdir()?;
    /// # let key_file = dir.path().join("key.json");
    /// # emu.create_service_account("runner").await?.write_key_file(&key_file)?;
    /// use std::time::Duration;
    /// use iap_token::source::{AudienceKind, self_signed::SelfSignedJwtSource};
    /// use iap_token::source::service_account::ServiceAccountKey;
    ///
    /// let source = SelfSignedJwtSource::new(ServiceAccountKey::from_file(&key_file)?)
    ///     .with_audience_kind(AudienceKind::RequestUrl)
    ///     .with_lifetime(Duration::from_secs(900));
    /// # let _ = source; Ok(()) }
    /// ```
    pub fn new(key: ServiceAccountKey) -> Self {
        SelfSignedJwtSource {
            key: Arc::new(key),
            kind: AudienceKind::HostWildcard,
            lifetime: ASSERTION_LIFETIME,
        }
    }

    /// A source from a service-account key file, with the defaults of [`new`](Self::new).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::new(ServiceAccountKey::from_file(path)?))
    }

    /// A source from the JSON text of a service-account key file.
    pub fn from_json(json: impl AsRef<[u8]>) -> Result<Self> {
        Ok(Self::new(ServiceAccountKey::from_json(json)?))
    }

    /// Which audience requests get (default [`AudienceKind::HostWildcard`]:
    /// `https://HOST/*`, one token per host). [`AudienceKind::RequestUrl`]
    /// signs one token per exact URL, for apps that insist on it.
    /// [`AudienceKind::ClientId`] makes no sense for this source and is
    /// treated as the default.
    pub fn with_audience_kind(mut self, kind: AudienceKind) -> Self {
        self.kind = match kind {
            AudienceKind::RequestUrl => AudienceKind::RequestUrl,
            _ => AudienceKind::HostWildcard,
        };
        self
    }

    /// How long each token is valid (default and maximum: one hour, IAP's
    /// limit; at least one minute).
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime.clamp(Duration::from_secs(60), ASSERTION_LIFETIME);
        self
    }

    /// The signing key.
    pub fn key(&self) -> &ServiceAccountKey {
        &self.key
    }

    /// How long each token is valid.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Signs a token for `audience`: a URL (`https://app.example.com/path`
    /// or `https://app.example.com/*`). Synchronous and local.
    ///
    /// Fails when `audience` is not an `http(s)` URL: IAP only accepts
    /// self-signed JWTs addressed to the URL they are sent to, so a client
    /// ID here is a configuration mistake.
    pub fn mint(&self, audience: &Audience) -> Result<IdToken> {
        check_url_audience(audience)?;
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            sub: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // Back-dated for verifiers whose clock is a little behind ours;
        // `exp - iat` stays within IAP's one hour.
        let iat = now.saturating_sub(CLOCK_SKEW.as_secs());
        let email = self.key.client_email();
        let jwt = self.key.sign(&Claims {
            iss: email,
            sub: email,
            aud: audience.as_str(),
            iat,
            exp: iat + self.lifetime.as_secs(),
        })?;
        tracing::debug!(email, %audience, "minted a self-signed service-account JWT");
        IdToken::parse(jwt)
    }
}

impl TokenSource for SelfSignedJwtSource {
    fn id_token<'a>(&'a self, audience: &'a Audience) -> BoxFuture<'a, Result<IdToken>> {
        Box::pin(std::future::ready(self.mint(audience)))
    }

    fn audience_kind(&self) -> AudienceKind {
        self.kind
    }
}

pub(crate) fn check_url_audience(audience: &Audience) -> Result<()> {
    let ok = url::Url::parse(audience.as_str())
        .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host_str().is_some());
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "a self-signed service-account JWT is addressed to a URL (the request URL or https://HOST/*), not `{audience}`: \
                 drop the fixed audience so that IapAuth derives it from each request, or use a source that mints \
                 Google-signed ID tokens for IAP client IDs"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_audience_is_a_clear_error() {
        for bad in [
            "123-abc.apps.googleusercontent.com",
            "ftp://host/x",
            "mailto:a@b",
            "",
        ] {
            let err = check_url_audience(&Audience::new(bad)).unwrap_err();
            assert!(err.to_string().contains("addressed to a URL"), "{err}");
        }
        for good in [
            "https://app.example.com/*",
            "https://app.example.com/a/b",
            "http://127.0.0.1:8080/*",
        ] {
            check_url_audience(&Audience::new(good)).unwrap();
        }
    }
}
