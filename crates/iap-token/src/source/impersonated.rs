//! Service-account impersonation: ID tokens for a target service account,
//! minted by IAM Credentials' `generateIdToken` on behalf of another
//! credential (the wire facts: `docs/impersonation.md`).
//!
//! The source credential (a service-account key, an authorized user, the
//! metadata server, or a federated workload identity) first gets an OAuth
//! access token with the `cloud-platform` scope. That token is kept until
//! close to its own expiry, so it is fetched once per its lifetime, not once
//! per ID token, and by one caller at a time. Then
//!
//! ```text
//! POST {iam}/v1/projects/-/serviceAccounts/TARGET:generateIdToken
//! Authorization: Bearer <access token>
//! {"audience": AUD, "includeEmail": true, "delegates": ["projects/-/serviceAccounts/D1", ...]}
//! ```
//!
//! answers `{"token": ...}`. `includeEmail` is always sent: IAP refuses
//! tokens without an `email` claim.
//!
//! The caller needs `roles/iam.serviceAccountOpenIdTokenCreator` on the
//! target (with delegates: on each link of the chain, the last delegate on
//! the target); a 403 says so, naming the principal and the target.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emu = iap_emulator::Emulator::builder().project("my-project", "123456789012").start().await?;
//! # let dir = tempfile::tempdir()?;
//! # let ci_key = dir.path().join("ci-key.json");
//! # let ci = emu.create_service_account("ci").await?;
//! # ci.write_key_file(&ci_key)?;
//! # let relay = emu.create_service_account("relay").await?;
//! # let deployer = emu.create_service_account("deployer").await?;
//! # emu.allow_impersonation(ci.email(), relay.email());
//! # emu.allow_impersonation(relay.email(), deployer.email());
//! use iap_token::{Audience, TokenSource};
//! use iap_token::source::impersonated::ImpersonatedSource;
//! use iap_token::source::service_account::ServiceAccountSource;
//!
//! let source = ImpersonatedSource::new(
//!     "deployer@my-project.iam.gserviceaccount.com",
//!     ServiceAccountSource::from_file(&ci_key)?, // e.g. "ci-key.json"
//! )?
//! .with_delegates(["relay@my-project.iam.gserviceaccount.com"])?;
//! # let source = source.with_iam_endpoint(emu.url())?;
//! let token = source.id_token(&Audience::new("123-abc.apps.googleusercontent.com")).await?;
//! assert_eq!(
//!     token.claims().email.as_deref(),
//!     Some("deployer@my-project.iam.gserviceaccount.com")
//! );
//! # Ok(()) }
//! ```
//!
//! ADC files of type `impersonated_service_account` (as written by
//! `gcloud auth application-default login --impersonate-service-account`)
//! become an [`ImpersonatedSource`] through [`adc`](crate::adc); the IAM
//! endpoint and the target come from their `service_account_impersonation_url`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::access_token::{AccessToken, AccessTokenSource};
use crate::credentials_json::CredentialsJson;
use crate::iam_credentials::{
    Caller, CallerSettings, DELEGATE_PREFIX, ImpersonationUrl, OPENID_TOKEN_CREATOR_ROLE,
    TOKEN_CREATOR_ROLE, bearer, check_email, member,
};
use crate::source::{BoxFuture, TokenSource};
use crate::transport::Transport;
use crate::{Audience, Error, IdToken, Result};

/// ID tokens of a target service account, through IAM Credentials. See the
/// [module docs](self). Cheap to clone; clones share the cached access token.
///
/// Built like every source: [`ImpersonatedSource::new`], then `with_*`
/// settings. Settings that name accounts or URLs are checked at once.
#[derive(Clone)]
pub struct ImpersonatedSource {
    inner: Arc<Caller>,
}

/// The wording of configuration errors.
const CONTEXT: &str = "impersonation";
const ACCOUNT_ROLE: &str = "the target service account";
const METHOD: &str = "generateIdToken";

impl fmt::Debug for ImpersonatedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("ImpersonatedSource")
            .field("target", &inner.settings.account)
            .field("delegates", &inner.delegates)
            .field("endpoint", &inner.url.as_str())
            .field("source", &inner.access.source)
            .finish()
    }
}

impl ImpersonatedSource {
    /// ID tokens of service account `target` (an email), with access tokens
    /// of `source` as the caller. Fails when `target` is not an email.
    pub fn new(target: impl Into<String>, source: impl AccessTokenSource) -> Result<Self> {
        Self::from_arc(target, Arc::new(source))
    }

    /// Like [`new`](Self::new), for a shared source credential.
    pub fn from_arc(target: impl Into<String>, source: Arc<dyn AccessTokenSource>) -> Result<Self> {
        Self::checked(CallerSettings::new(target.into(), source))
    }

    fn checked(settings: CallerSettings) -> Result<Self> {
        let inner = Arc::new(settings.check(CONTEXT, ACCOUNT_ROLE, METHOD)?);
        Ok(ImpersonatedSource { inner })
    }

    fn with(&self, f: impl FnOnce(&mut CallerSettings)) -> Result<Self> {
        let mut settings = self.inner.settings.clone();
        f(&mut settings);
        Self::checked(settings)
    }

    /// A change of settings that need no check (the checked ones stay).
    fn reconfigured(&self, f: impl FnOnce(&mut CallerSettings)) -> Self {
        ImpersonatedSource {
            inner: Arc::new(self.inner.reconfigured(f)),
        }
    }

    /// The delegation chain, in order: emails, or
    /// `projects/-/serviceAccounts/EMAIL`. The source credential
    /// impersonates the first delegate, which impersonates the next, ...,
    /// the last impersonates the target. Fails when one is not an email.
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

    /// Names the source credential's principal in error messages when the
    /// source does not know it itself (see [`AccessTokenSource::principal`]).
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

    /// Shares `transport` (workload identity federation's own).
    pub(crate) fn with_transport(self, transport: Transport) -> Self {
        self.reconfigured(|s| s.transport = transport)
    }

    /// `{"type": "impersonated_service_account",
    /// "service_account_impersonation_url": ".../serviceAccounts/TARGET:generateAccessToken",
    /// "source_credentials": {...}, "delegates": [...]}`, with `source` the
    /// source credential already built from `source_credentials` (by
    /// [`adc`](crate::adc), which owns the dispatch over credential types).
    pub(crate) fn from_credentials_json(
        json: &CredentialsJson,
        source: Arc<dyn AccessTokenSource>,
    ) -> Result<Self> {
        json.expect_type("impersonated_service_account")?;
        let url_text = json.required("service_account_impersonation_url")?;
        let (endpoint, target) = ImpersonationUrl::parse(url_text)
            .map(|u| (u.endpoint, u.target))
            .map_err(|why| json.invalid("service_account_impersonation_url", why))?;
        let not_emails = || {
            json.invalid(
                "delegates",
                "must be a list of service-account emails".into(),
            )
        };
        let delegates = match json.get("delegates") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|d| {
                    let d = d.as_str()?;
                    check_email(d.strip_prefix(DELEGATE_PREFIX).unwrap_or(d))
                        .ok()
                        .map(str::to_string)
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(not_emails)?,
            Some(_) => return Err(not_emails()),
        };
        Self::checked(CallerSettings {
            delegates,
            endpoint,
            ..CallerSettings::new(target, source)
        })
    }

    /// The target service account's email.
    pub fn target(&self) -> &str {
        &self.inner.settings.account
    }

    /// The delegation chain, as `projects/-/serviceAccounts/EMAIL`.
    pub fn delegates(&self) -> &[String] {
        &self.inner.delegates
    }

    /// The `generateIdToken` URL this source calls.
    pub fn id_token_url(&self) -> &Url {
        &self.inner.url
    }

    /// Fetches an ID token for `audience` from `generateIdToken`. The access
    /// token of the source credential is reused while it is fresh; a 401
    /// (e.g. it was revoked) drops it and tries once more with a new one.
    pub async fn fetch_id_token(&self, audience: &Audience) -> Result<IdToken> {
        self.inner
            .with_access(|access| async move { self.generate_id_token(&access, audience).await })
            .await
    }

    async fn generate_id_token(
        &self,
        access: &AccessToken,
        audience: &Audience,
    ) -> Result<IdToken> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Request<'a> {
            audience: &'a str,
            include_email: bool,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            delegates: &'a [String],
        }
        #[derive(Deserialize)]
        struct Answer {
            token: String,
        }
        let inner = &*self.inner;
        let body = Request {
            audience: audience.as_str(),
            include_email: true,
            delegates: &inner.delegates,
        };
        let answer: Answer = inner
            .settings
            .transport
            .post_json(&inner.url, bearer(access), &body)
            .await
            .map_err(|e| self.explain(e))?;
        IdToken::parse(answer.token)
    }

    /// What IAM's errors mean for this chain.
    fn explain(&self, err: Error) -> Error {
        let inner = &*self.inner;
        let target = &inner.settings.account;
        let principal = inner.access.principal_name();
        let status = match &err {
            Error::Endpoint { status, .. } => *status,
            _ => return err,
        };
        err.with_endpoint_hint(|_, _| match status {
            403 => Some(if inner.delegates.is_empty() && principal == *target {
                // Workload identity federation ends here: the account calls
                // generateIdToken on itself, which needs an explicit grant.
                format!(
                    "{target} needs the role {OPENID_TOKEN_CREATOR_ROLE} on itself to mint its own ID tokens \
                     (service accounts cannot implicitly impersonate themselves): \
                     gcloud iam service-accounts add-iam-policy-binding {target} \
                     --member={} --role={OPENID_TOKEN_CREATOR_ROLE}",
                    member(target)
                )
            } else if inner.delegates.is_empty() {
                format!(
                    "{principal} needs the role {OPENID_TOKEN_CREATOR_ROLE} on {target}: \
                     gcloud iam service-accounts add-iam-policy-binding {target} \
                     --member={} --role={OPENID_TOKEN_CREATOR_ROLE}",
                    member(&principal)
                )
            } else {
                let chain: Vec<&str> = std::iter::once(principal.as_str())
                    .chain(inner.delegates.iter().map(|d| d.trim_start_matches(DELEGATE_PREFIX)))
                    .collect();
                format!(
                    "in the delegation chain {} -> {target}, each link needs the role {TOKEN_CREATOR_ROLE} \
                     on the next, and the last delegate ({}) needs {OPENID_TOKEN_CREATOR_ROLE} on {target}",
                    chain.join(" -> "),
                    chain.last().copied().unwrap_or_default()
                )
            }),
            404 => Some(format!(
                "the service account {target} (or a delegate) does not exist: check the email and its project"
            )),
            401 => Some(format!("IAM refused the access token of {principal}: it may have been revoked")),
            _ => None,
        })
    }
}

impl TokenSource for ImpersonatedSource {
    fn endpoint(&self) -> Option<String> {
        Some(crate::transport::endpoint_name(self.id_token_url()))
    }

    fn id_token<'a>(&'a self, audience: &'a Audience) -> BoxFuture<'a, Result<IdToken>> {
        Box::pin(self.fetch_id_token(audience))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_typed() {
        assert_eq!(
            member("a@p.iam.gserviceaccount.com"),
            "serviceAccount:a@p.iam.gserviceaccount.com"
        );
        assert_eq!(member("me@example.com"), "user:me@example.com");
        assert_eq!(
            member("principal://iam.googleapis.com/x"),
            "principal://iam.googleapis.com/x"
        );
    }
}
