//! Service-account JWTs without a key file: IAM Credentials `signJwt`
//! signs them (wire facts: `docs/service-account-jwts.md`).
//!
//! IAP accepts a JWT that a service account signed itself, with `iss` =
//! `sub` = the account's email, `aud` the URL it is sent to (exact,
//! `https://HOST/*`, or a path prefix `https://HOST/PREFIX/*`), and `exp` at
//! most an hour after `iat`. With a key file the signature is local
//! ([`SelfSignedJwtSource`](super::self_signed::SelfSignedJwtSource)); most
//! workloads have none (GCE, GKE, Cloud Run run as the metadata server's
//! account, and many organisations ban keys), so this source asks IAM to
//! sign the claims with the account's Google-managed key:
//!
//! ```text
//! POST {iam}/v1/projects/-/serviceAccounts/EMAIL:signJwt
//! Authorization: Bearer <access token of the caller>
//! {"payload": "{\"iss\":EMAIL,\"sub\":EMAIL,\"aud\":AUD,\"iat\":..,\"exp\":..}",
//!  "delegates": ["projects/-/serviceAccounts/D1", ...]}
//! ```
//!
//! which answers `{"keyId", "signedJwt"}`. The caller is any
//! [`AccessTokenSource`]: the metadata server (signing as its own account,
//! [`SignJwtSource::from_metadata`]), an authorized user, a key, an
//! impersonation chain, workload identity federation. Its access token is
//! kept until close to its expiry, so with a token cache in front
//! ([`IapAuth`](crate::IapAuth) has one) there is one `signJwt` call per
//! audience per token lifetime and one access-token fetch per hour.
//!
//! The caller needs `roles/iam.serviceAccountTokenCreator` on the account,
//! also when an account signs as itself; a refusal names the role and the
//! `gcloud` command that grants it.
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emulator = iap_emulator::Emulator::start().await?;
//! # let app = emulator.app();
//! # let me = emulator.metadata_service_account().unwrap();
//! # emulator.allow_impersonation(&me, &me);
//! use iap_token::{Audience, TokenSource};
//! use iap_token::source::metadata::MetadataSource;
//! use iap_token::source::sign_jwt::SignJwtSource;
//!
//! let metadata = MetadataSource::with_host(&emulator.metadata_host())?;
//! let source = SignJwtSource::from_metadata(metadata).await?.with_iam_endpoint(emulator.url())?;
//! let aud = Audience::new(format!("{}*", app.url()));
//! let token = source.id_token(&aud).await?;
//! assert_eq!(token.claims().iss.as_deref(), Some(me.as_str()));
//! # assert_eq!(emulator.counter(iap_emulator::counter::SIGNED_JWTS, &me), 1);
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::access_token::{AccessToken, AccessTokenSource};
use crate::iam_credentials::{
    Caller, CallerSettings, DELEGATE_PREFIX, TOKEN_CREATOR_ROLE, bearer, member,
};
use crate::source::metadata::MetadataSource;
use crate::source::self_signed::check_url_audience;
use crate::source::service_account::{ASSERTION_LIFETIME, CLOCK_SKEW};
use crate::source::{AudienceKind, BoxFuture, TokenSource};
use crate::transport::Transport;
use crate::{Audience, Error, IdToken, Result};

/// Service-account JWTs signed by IAM Credentials `signJwt`. See the
/// [module docs](self). Cheap to clone; clones share the caller's cached
/// access token.
#[derive(Clone)]
pub struct SignJwtSource {
    inner: Arc<Inner>,
}

struct Inner {
    caller: Arc<Caller>,
    kind: AudienceKind,
    lifetime: Duration,
}

/// The wording of configuration errors.
const CONTEXT: &str = "signJwt";
const ACCOUNT_ROLE: &str = "the signing service account";
const METHOD: &str = "signJwt";

impl fmt::Debug for SignJwtSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("SignJwtSource")
            .field("email", &inner.caller.settings.account)
            .field("delegates", &inner.caller.delegates)
            .field("endpoint", &inner.caller.url.as_str())
            .field("caller", &inner.caller.access.source)
            .field("audience_kind", &inner.kind)
            .field("lifetime", &inner.lifetime)
            .finish()
    }
}

impl SignJwtSource {
    /// JWTs of service account `email`, signed by IAM with access tokens of
    /// `source` as the caller. Fails when `email` is not an email.
    ///
    /// ```
    /// # fn main() -> iap_token::Result<()> {
    /// use iap_token::source::sign_jwt::SignJwtSource;
    /// use iap_token::source::authorized_user::AuthorizedUserSource;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("adc.json");
    /// # std::fs::write(&path, r#"{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r"}"#).unwrap();
    ///
    /// let source = SignJwtSource::new(
    ///     "robot@my-project.iam.gserviceaccount.com",
    ///     AuthorizedUserSource::from_file(&path)?,
    /// )?;
    /// assert_eq!(source.email(), "robot@my-project.iam.gserviceaccount.com");
    /// # Ok(()) }
    /// ```
    pub fn new(email: impl Into<String>, source: impl AccessTokenSource) -> Result<Self> {
        Self::from_arc(email, Arc::new(source))
    }

    /// Like [`new`](Self::new), for a shared caller.
    pub fn from_arc(email: impl Into<String>, source: Arc<dyn AccessTokenSource>) -> Result<Self> {
        let caller =
            CallerSettings::new(email.into(), source).check(CONTEXT, ACCOUNT_ROLE, METHOD)?;
        Ok(SignJwtSource {
            inner: Arc::new(Inner {
                caller: Arc::new(caller),
                kind: AudienceKind::HostWildcard,
                lifetime: ASSERTION_LIFETIME,
            }),
        })
    }

    /// JWTs of the metadata server's own service account, signed by IAM
    /// with the metadata server's access tokens as the caller. Asks the
    /// metadata server for the account's email.
    pub async fn from_metadata(metadata: MetadataSource) -> Result<Self> {
        let email = metadata.service_account_email().await?;
        Ok(Self::new(email.clone(), metadata)?.with_principal(email))
    }

    fn with_caller(&self, caller: Caller) -> Self {
        SignJwtSource {
            inner: Arc::new(Inner {
                caller: Arc::new(caller),
                ..*self.inner
            }),
        }
    }

    /// A change of the caller's settings that are checked.
    fn with(&self, f: impl FnOnce(&mut CallerSettings)) -> Result<Self> {
        let mut settings = self.inner.caller.settings.clone();
        f(&mut settings);
        Ok(self.with_caller(settings.check(CONTEXT, ACCOUNT_ROLE, METHOD)?))
    }

    /// A change of the caller's settings that need no check (the checked
    /// ones stay).
    fn reconfigured(&self, f: impl FnOnce(&mut CallerSettings)) -> Self {
        self.with_caller(self.inner.caller.reconfigured(f))
    }

    /// The delegation chain, in order: emails, or
    /// `projects/-/serviceAccounts/EMAIL`. The caller acts as the first
    /// delegate, which acts as the next, ..., the last signs as the
    /// account. Fails when one is not an email.
    pub fn with_delegates<I, S>(self, delegates: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let delegates: Vec<String> = delegates
            .into_iter()
            .map(|d| d.as_ref().to_string())
            .collect();
        self.with(|s| s.delegates = delegates)
    }

    /// Names the caller in error messages when the source does not know it
    /// itself (see [`AccessTokenSource::principal`]).
    pub fn with_principal(self, principal: impl Into<String>) -> Self {
        let principal = principal.into();
        self.reconfigured(|s| s.principal = Some(principal))
    }

    /// The IAM Credentials base URL (default
    /// `https://iamcredentials.googleapis.com`), e.g. an emulator's
    /// `http://127.0.0.1:PORT`. Fails unless it is an https URL (plain http
    /// only on loopback).
    pub fn with_iam_endpoint(self, base: impl Into<String>) -> Result<Self> {
        let base = base.into();
        self.with(|s| s.endpoint = base)
    }

    /// Sends requests through `client` instead of the shared one (extra
    /// root certificates, a fixed proxy). Configure it not to follow
    /// redirects.
    pub fn with_http_client(self, client: reqwest::Client) -> Self {
        self.reconfigured(|s| s.transport = Transport::new(client))
    }

    /// Which audience requests get when none is configured (default
    /// [`AudienceKind::HostWildcard`]: `https://HOST/*`, one JWT per host);
    /// [`AudienceKind::RequestUrl`] signs one per exact URL.
    /// [`AudienceKind::ClientId`] makes no sense here and is treated as the
    /// default.
    pub fn with_audience_kind(self, kind: AudienceKind) -> Self {
        let kind = match kind {
            AudienceKind::RequestUrl => AudienceKind::RequestUrl,
            _ => AudienceKind::HostWildcard,
        };
        SignJwtSource {
            inner: Arc::new(Inner {
                caller: self.inner.caller.clone(),
                kind,
                ..*self.inner
            }),
        }
    }

    /// How long each JWT is valid (default and maximum: one hour, IAP's
    /// limit; at least one minute).
    pub fn with_lifetime(self, lifetime: Duration) -> Self {
        let lifetime = lifetime.clamp(Duration::from_secs(60), ASSERTION_LIFETIME);
        SignJwtSource {
            inner: Arc::new(Inner {
                caller: self.inner.caller.clone(),
                lifetime,
                ..*self.inner
            }),
        }
    }

    /// The service account that signs.
    pub fn email(&self) -> &str {
        &self.inner.caller.settings.account
    }

    /// The delegation chain, as `projects/-/serviceAccounts/EMAIL`.
    pub fn delegates(&self) -> &[String] {
        &self.inner.caller.delegates
    }

    /// The `signJwt` URL this source calls.
    pub fn sign_jwt_url(&self) -> &Url {
        &self.inner.caller.url
    }

    /// How long each JWT is valid.
    pub fn lifetime(&self) -> Duration {
        self.inner.lifetime
    }

    /// Has IAM sign a JWT for `audience` (a URL: exact, `https://HOST/*` or
    /// `https://HOST/PREFIX/*`). The caller's access token is reused while
    /// fresh; a 401 drops it and tries once more with a new one.
    pub async fn fetch_id_token(&self, audience: &Audience) -> Result<IdToken> {
        check_url_audience(audience)?;
        self.inner
            .caller
            .with_access(|access| async move { self.sign(&access, audience).await })
            .await
    }

    async fn sign(&self, access: &AccessToken, audience: &Audience) -> Result<IdToken> {
        #[derive(Serialize)]
        struct Request<'a> {
            payload: String,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            delegates: &'a [String],
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            signed_jwt: String,
        }
        let inner = &*self.inner;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // Back-dated for verifiers a little behind us; `exp - iat` stays
        // within IAP's hour.
        let iat = now.saturating_sub(CLOCK_SKEW.as_secs());
        let payload = serde_json::json!({
            "iss": inner.caller.settings.account,
            "sub": inner.caller.settings.account,
            "aud": audience.as_str(),
            "iat": iat,
            "exp": iat.saturating_add(inner.lifetime.as_secs()),
        })
        .to_string();
        let body = Request {
            payload,
            delegates: &inner.caller.delegates,
        };
        let answer: Answer = inner
            .caller
            .settings
            .transport
            .post_json(&inner.caller.url, bearer(access), &body)
            .await
            .map_err(|e| self.explain(e))?;
        tracing::debug!(email = %inner.caller.settings.account, %audience, "IAM signed a service-account JWT");
        IdToken::parse(answer.signed_jwt)
    }

    /// What IAM's errors mean for this account and chain.
    fn explain(&self, err: Error) -> Error {
        let inner = &*self.inner;
        let email = &inner.caller.settings.account;
        let principal = inner.caller.access.principal_name();
        let status = match &err {
            Error::Endpoint { status, .. } => *status,
            _ => return err,
        };
        err.with_endpoint_hint(|_, _| match status {
            403 if inner.caller.delegates.is_empty() && principal == *email => Some(format!(
                "{email} needs the role {TOKEN_CREATOR_ROLE} on itself to sign its own JWTs \
                 (a service account cannot implicitly sign as itself): \
                 gcloud iam service-accounts add-iam-policy-binding {email} \
                 --member={} --role={TOKEN_CREATOR_ROLE}",
                member(email)
            )),
            403 if inner.caller.delegates.is_empty() => Some(format!(
                "{principal} needs the role {TOKEN_CREATOR_ROLE} on {email} to sign its JWTs: \
                 gcloud iam service-accounts add-iam-policy-binding {email} \
                 --member={} --role={TOKEN_CREATOR_ROLE}",
                member(&principal)
            )),
            403 => {
                let chain: Vec<&str> = std::iter::once(principal.as_str())
                    .chain(
                        inner
                            .caller
                            .delegates
                            .iter()
                            .map(|d| d.trim_start_matches(DELEGATE_PREFIX)),
                    )
                    .chain(std::iter::once(email.as_str()))
                    .collect();
                Some(format!(
                    "in the chain {}, each link needs the role {TOKEN_CREATOR_ROLE} on the next: \
                     gcloud iam service-accounts add-iam-policy-binding NEXT --member=serviceAccount:PREVIOUS \
                     --role={TOKEN_CREATOR_ROLE}",
                    chain.join(" -> ")
                ))
            }
            404 => Some(format!(
                "the service account {email} (or a delegate) does not exist: check the email and its project"
            )),
            401 => Some(format!(
                "IAM refused the access token of {principal}: it may have been revoked"
            )),
            _ => None,
        })
    }
}

impl TokenSource for SignJwtSource {
    fn endpoint(&self) -> Option<String> {
        Some(crate::transport::endpoint_name(self.sign_jwt_url()))
    }

    fn id_token<'a>(&'a self, audience: &'a Audience) -> BoxFuture<'a, Result<IdToken>> {
        Box::pin(self.fetch_id_token(audience))
    }

    fn audience_kind(&self) -> AudienceKind {
        self.inner.kind
    }
}
