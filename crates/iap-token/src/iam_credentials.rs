//! Google's IAM Credentials API (`iamcredentials.googleapis.com`): the
//! calls that mint tokens of a service account on behalf of another
//! principal, and the URLs they live at. A leaf shared by impersonation,
//! `signJwt` (both through one `Caller`) and workload identity federation. The wire facts are in
//! `docs/impersonation.md`.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::access_token::{AccessToken, AccessTokenSource, CLOUD_PLATFORM_SCOPE};
use crate::transport::{Transport, endpoint_name};
use crate::{Error, Result};

pub(crate) use crate::endpoints::IAM_CREDENTIALS_ENDPOINT;
/// The role a caller needs on a service account to mint its ID tokens.
pub(crate) const OPENID_TOKEN_CREATOR_ROLE: &str = "roles/iam.serviceAccountOpenIdTokenCreator";
/// The role a caller needs on a service account to mint its access tokens
/// (and, in a delegation chain, on each next link).
pub(crate) const TOKEN_CREATOR_ROLE: &str = "roles/iam.serviceAccountTokenCreator";
/// How delegates and targets are named in IAM paths.
pub(crate) const DELEGATE_PREFIX: &str = "projects/-/serviceAccounts/";

/// `Authorization: Bearer <access token>` (sensitive).
pub(crate) fn bearer(access: &AccessToken) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, access.header_value().clone());
    headers
}

/// A service-account email fit for an IAM URL path.
pub(crate) fn check_email(email: &str) -> std::result::Result<&str, String> {
    let email = email.trim();
    let ok = email.contains('@') && !email.contains(['/', ':', '?', '#', ' ', '%']);
    if ok {
        Ok(email)
    } else {
        Err(format!("`{email}` is not a service-account email"))
    }
}

/// `{base}/v1/projects/-/serviceAccounts/{email}:{method}`, checked for https.
pub(crate) fn iam_url(base: &str, email: &str, method: &str) -> Result<Url> {
    let base = base.trim().trim_end_matches('/');
    let url = Url::parse(&format!("{base}/v1/{DELEGATE_PREFIX}{email}:{method}")).map_err(|e| {
        Error::config(format!(
            "impersonation: the IAM endpoint `{base}` is not a URL ({e})"
        ))
    })?;
    crate::transport::ensure_secure(&url)?;
    Ok(url)
}

/// Access tokens are renewed when less than this (or half their lifetime,
/// if shorter) remains.
const ACCESS_TOKEN_MARGIN: Duration = Duration::from_secs(240);

/// Who calls IAM Credentials on behalf of which account, as configured:
/// shared by impersonation (`generateIdToken`) and `signJwt`, which differ
/// only in the method they call and the body they send.
#[derive(Clone)]
pub(crate) struct CallerSettings {
    /// The service account whose tokens are minted or signed.
    pub(crate) account: String,
    /// The caller's credential (its access tokens authorize the calls).
    pub(crate) source: Arc<dyn AccessTokenSource>,
    /// Names the caller in error messages when the source cannot.
    pub(crate) principal: Option<String>,
    /// The delegation chain, as given (emails or IAM names).
    pub(crate) delegates: Vec<String>,
    /// The IAM Credentials base URL.
    pub(crate) endpoint: String,
    pub(crate) transport: Transport,
}

impl CallerSettings {
    pub(crate) fn new(account: String, source: Arc<dyn AccessTokenSource>) -> Self {
        CallerSettings {
            account,
            source,
            principal: None,
            delegates: Vec::new(),
            endpoint: IAM_CREDENTIALS_ENDPOINT.into(),
            transport: Transport::default(),
        }
    }

    /// Checks the account, the delegates and the endpoint for `method`;
    /// `context` and `account_role` word the configuration errors. Needs no
    /// running runtime.
    pub(crate) fn check(self, context: &str, account_role: &str, method: &str) -> Result<Caller> {
        let config = |problem: String| Error::config(format!("{context}: {problem}"));
        let account = check_email(&self.account)
            .map_err(|why| config(format!("{account_role} {why}")))?
            .to_string();
        let delegates = self
            .delegates
            .iter()
            .map(|d| {
                let email = d.strip_prefix(DELEGATE_PREFIX).unwrap_or(d);
                check_email(email)
                    .map(|e| format!("{DELEGATE_PREFIX}{e}"))
                    .map_err(|why| config(format!("the delegate {why}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let url = iam_url(&self.endpoint, &account, method)?;
        let principal = self.principal.clone().or_else(|| self.source.principal());
        let access = AccessTokenCache::new(self.source.clone(), principal);
        Ok(Caller {
            settings: CallerSettings { account, ..self },
            delegates,
            url,
            access,
        })
    }
}

/// [`CallerSettings`], checked: the IAM URL to call, the chain in IAM's
/// naming, and the caller's access token kept between calls.
pub(crate) struct Caller {
    pub(crate) settings: CallerSettings,
    /// `projects/-/serviceAccounts/EMAIL`, in chain order.
    pub(crate) delegates: Vec<String>,
    pub(crate) url: Url,
    pub(crate) access: AccessTokenCache,
}

impl Caller {
    /// The same checked account, chain and URL with settings that need no
    /// check changed (principal, transport); a fresh access-token cache.
    pub(crate) fn reconfigured(&self, f: impl FnOnce(&mut CallerSettings)) -> Caller {
        let mut settings = self.settings.clone();
        f(&mut settings);
        let principal = settings
            .principal
            .clone()
            .or_else(|| settings.source.principal());
        Caller {
            access: AccessTokenCache::new(settings.source.clone(), principal),
            settings,
            delegates: self.delegates.clone(),
            url: self.url.clone(),
        }
    }

    /// Runs `call` with the caller's access token; when IAM answers 401
    /// (the token was revoked), drops that token and runs it once more with
    /// a new one.
    pub(crate) async fn with_access<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(AccessToken) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let access = self.access.get().await?;
        match call(access.clone()).await {
            Err(Error::Endpoint { status: 401, .. }) => {
                tracing::debug!(account = %self.settings.account, "IAM refused the access token; fetching a new one");
                self.access.invalidate(&access);
                call(self.access.get().await?).await
            }
            other => other,
        }
    }
}

/// `--member=` for `principal`: a service account, a user, or a federated principal.
pub(crate) fn member(principal: &str) -> String {
    if principal.starts_with("principal://") || principal.starts_with("principalSet://") {
        principal.to_string()
    } else if principal.ends_with(".gserviceaccount.com") {
        format!("serviceAccount:{principal}")
    } else if principal.contains('@') {
        format!("user:{principal}")
    } else {
        "PRINCIPAL".to_string()
    }
}

/// The source credential's access token, kept until close to its expiry;
/// one fetch at a time.
pub(crate) struct AccessTokenCache {
    pub(crate) source: Arc<dyn AccessTokenSource>,
    principal: Option<String>,
    current: Mutex<Option<Fresh>>,
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Fresh {
    token: AccessToken,
    /// Renew from this instant on.
    renew_at: SystemTime,
}

impl AccessTokenCache {
    pub(crate) fn new(source: Arc<dyn AccessTokenSource>, principal: Option<String>) -> Self {
        AccessTokenCache {
            source,
            principal,
            current: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn principal_name(&self) -> String {
        self.principal
            .clone()
            .unwrap_or_else(|| "the source credential's account".into())
    }

    fn fresh(&self) -> Option<AccessToken> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .filter(|f| SystemTime::now() < f.renew_at)
            .map(|f| f.token.clone())
    }

    pub(crate) async fn get(&self) -> Result<AccessToken> {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let _one_at_a_time = self.fetching.lock().await;
        if let Some(token) = self.fresh() {
            return Ok(token); // fetched by whoever held the lock
        }
        let fetched_at = SystemTime::now();
        let token = self.source.access_token(&[CLOUD_PLATFORM_SCOPE]).await?;
        let lifetime = token
            .expires_at()
            .duration_since(fetched_at)
            .unwrap_or_default();
        let renew_at = token.expires_at() - ACCESS_TOKEN_MARGIN.min(lifetime / 2);
        tracing::debug!(
            lifetime_s = lifetime.as_secs(),
            "fetched the source credential's access token"
        );
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(Fresh {
            token: token.clone(),
            renew_at,
        });
        Ok(token)
    }

    /// Drops `token` if it is still the current one.
    pub(crate) fn invalidate(&self, token: &AccessToken) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current
            .as_ref()
            .is_some_and(|f| f.token.as_str() == token.as_str())
        {
            *current = None;
        }
    }
}

/// A `service_account_impersonation_url`, taken apart.
#[derive(Debug)]
pub(crate) struct ImpersonationUrl {
    /// Everything before `/v1/projects/`: the IAM endpoint.
    pub endpoint: String,
    /// The part between `serviceAccounts/` and `:`.
    pub target: String,
}

impl ImpersonationUrl {
    pub(crate) fn parse(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "is `{text}`, expected `https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken`"
            )
        };
        let url = Url::parse(text).map_err(|_| bad())?;
        let path = url.path();
        let at = path.find("/v1/projects/").ok_or_else(bad)?;
        let rest = &path[at..];
        let start = rest.find("/serviceAccounts/").ok_or_else(bad)? + "/serviceAccounts/".len();
        let target = rest[start..].split(':').next().unwrap_or_default();
        let target = percent_decode(target);
        if check_email(&target).is_err() {
            return Err(bad());
        }
        let mut endpoint = url.clone();
        endpoint.set_path(&path[..at]);
        endpoint.set_query(None);
        endpoint.set_fragment(None);
        Ok(ImpersonationUrl {
            endpoint: endpoint.as_str().trim_end_matches('/').to_string(),
            target,
        })
    }
}

/// `%40` -> `@` (gcloud writes plain `@`, some tools escape it).
fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(s.replace('+', "%2B").as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect()
}

/// IAM Credentials `generateAccessToken` for `url` (a
/// `service_account_impersonation_url`) with `access` as the caller.
pub(crate) async fn generate_access_token(
    transport: &Transport,
    url: &Url,
    access: &AccessToken,
    lifetime: Option<Duration>,
) -> Result<AccessToken> {
    #[derive(Serialize)]
    struct Request<'a> {
        scope: [&'a str; 1],
        #[serde(skip_serializing_if = "Option::is_none")]
        lifetime: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        access_token: String,
        expire_time: String,
    }
    let body = Request {
        scope: [CLOUD_PLATFORM_SCOPE],
        lifetime: lifetime.map(|l| format!("{}s", l.as_secs())),
    };
    let answer: Answer = transport.post_json(url, bearer(access), &body).await?;
    let expires_at =
        crate::clock::parse_rfc3339(&answer.expire_time).ok_or_else(|| Error::Protocol {
            endpoint: endpoint_name(url),
            problem: format!(
                "`expireTime` is `{}`, not an RFC 3339 time",
                answer.expire_time
            ),
        })?;
    AccessToken::with_expiry(answer.access_token, expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impersonation_urls_give_endpoint_and_target() {
        let u = ImpersonationUrl::parse(
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken",
        )
        .unwrap();
        assert_eq!(u.endpoint, "https://iamcredentials.googleapis.com");
        assert_eq!(u.target, "sa@p.iam.gserviceaccount.com");
        let u = ImpersonationUrl::parse(
            "http://127.0.0.1:9/base/v1/projects/-/serviceAccounts/a%40b.com:generateAccessToken",
        )
        .unwrap();
        assert_eq!(u.endpoint, "http://127.0.0.1:9/base");
        assert_eq!(u.target, "a@b.com");
        for bad in [
            "not a url",
            "https://x/v1/projects/-/serviceAccounts/:generateAccessToken",
            "https://x/other/path",
        ] {
            let err = ImpersonationUrl::parse(bad).unwrap_err();
            assert!(
                err.contains("serviceAccounts/EMAIL:generateAccessToken"),
                "{err}"
            );
        }
    }
}
