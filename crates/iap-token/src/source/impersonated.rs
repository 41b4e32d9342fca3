//! Service-account impersonation: ID tokens for a target service account,
//! minted by IAM Credentials' `generateIdToken` on behalf of another
//! credential (PROTOCOLS section 4).
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
//! ```no_run
//! # fn demo() -> iap_token::Result<()> {
//! use iap_token::source::impersonated::ImpersonatedSource;
//! use iap_token::source::service_account::ServiceAccountSource;
//!
//! let source = ImpersonatedSource::builder("deployer@my-project.iam.gserviceaccount.com")
//!     .source(ServiceAccountSource::from_file("ci-key.json")?)
//!     .delegate("relay@my-project.iam.gserviceaccount.com")
//!     .build()?;
//! # let _ = source; Ok(()) }
//! ```
//!
//! ADC files of type `impersonated_service_account` (as written by
//! `gcloud auth application-default login --impersonate-service-account`)
//! become an [`ImpersonatedSource`] through [`adc`](crate::adc); the IAM
//! endpoint and the target come from their `service_account_impersonation_url`.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::access_token::{AccessToken, AccessTokenSource, CLOUD_PLATFORM_SCOPE};
use crate::adc::{CredentialsJson, Environment};
use crate::source::{BoxFuture, TokenSource};
use crate::transport::{Transport, endpoint_name};
use crate::{Audience, Error, IdToken, Result};

/// Google's IAM Credentials API, the default IAM endpoint.
pub const IAM_CREDENTIALS_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
/// The role a caller needs on a service account to mint its ID tokens.
pub const OPENID_TOKEN_CREATOR_ROLE: &str = "roles/iam.serviceAccountOpenIdTokenCreator";
/// The role a caller needs on a service account to mint its access tokens
/// (and, in a delegation chain, on each next link).
pub const TOKEN_CREATOR_ROLE: &str = "roles/iam.serviceAccountTokenCreator";
/// Access tokens are renewed when less than this (or half their lifetime,
/// if shorter) remains.
pub const ACCESS_TOKEN_MARGIN: Duration = Duration::from_secs(240);

/// ID tokens of a target service account, through IAM Credentials. See the
/// [module docs](self). Cheap to clone; clones share the cached access token.
#[derive(Clone)]
pub struct ImpersonatedSource {
    inner: Arc<Inner>,
}

struct Inner {
    target: String,
    /// `projects/-/serviceAccounts/EMAIL`, in chain order.
    delegates: Vec<String>,
    id_token_url: Url,
    access: AccessTokenCache,
    transport: Transport,
}

impl fmt::Debug for ImpersonatedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("ImpersonatedSource")
            .field("target", &inner.target)
            .field("delegates", &inner.delegates)
            .field("endpoint", &inner.id_token_url.as_str())
            .field("source", &inner.access.source)
            .finish()
    }
}

/// Configures an [`ImpersonatedSource`]; from [`ImpersonatedSource::builder`].
#[must_use]
pub struct ImpersonatedSourceBuilder {
    target: String,
    source: Option<Arc<dyn AccessTokenSource>>,
    principal: Option<String>,
    delegates: Vec<String>,
    endpoint: String,
    transport: Transport,
}

impl fmt::Debug for ImpersonatedSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImpersonatedSourceBuilder")
            .field("target", &self.target)
            .field("source", &self.source)
            .field("delegates", &self.delegates)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl ImpersonatedSourceBuilder {
    /// The source credential, whose access tokens call IAM.
    pub fn source(self, source: impl AccessTokenSource) -> Self {
        self.source_arc(Arc::new(source))
    }

    /// Like [`source`](Self::source), for a shared source.
    pub fn source_arc(mut self, source: Arc<dyn AccessTokenSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// Names the source credential's principal in error messages when the
    /// source does not know it itself (see [`AccessTokenSource::principal`]).
    pub fn principal(mut self, principal: impl Into<String>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// Appends a delegate to the chain: an email, or
    /// `projects/-/serviceAccounts/EMAIL`. The source credential
    /// impersonates the first delegate, which impersonates the next, ...,
    /// the last impersonates the target.
    pub fn delegate(mut self, delegate: impl AsRef<str>) -> Self {
        self.delegates.push(delegate.as_ref().to_string());
        self
    }

    /// Appends several delegates, in chain order (see [`delegate`](Self::delegate)).
    pub fn delegates<I, S>(mut self, delegates: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.delegates
            .extend(delegates.into_iter().map(|d| d.as_ref().to_string()));
        self
    }

    /// The IAM Credentials base URL (default [`IAM_CREDENTIALS_ENDPOINT`]),
    /// e.g. an emulator's `http://127.0.0.1:PORT`. Must be https except on
    /// loopback.
    pub fn iam_endpoint(mut self, base: impl Into<String>) -> Self {
        self.endpoint = base.into();
        self
    }

    /// Sends requests through `transport` instead of the shared client.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Builds the source. Needs no running runtime. Fails when no source
    /// credential is set, or the target, a delegate or the endpoint is not
    /// well formed (or the endpoint is plain http to a remote host).
    pub fn build(self) -> Result<ImpersonatedSource> {
        let config = |problem: String| Error::Other {
            context: format!("impersonation: {problem}"),
            source: None,
        };
        let source = self.source.ok_or_else(|| {
            config(format!(
                "no source credential to impersonate {} with: call .source(..)",
                self.target
            ))
        })?;
        let target = check_email(&self.target)
            .map_err(|why| config(format!("the target service account {why}")))?;
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
        let id_token_url = iam_url(&self.endpoint, target, "generateIdToken")?;
        let principal = self.principal.or_else(|| source.principal());
        Ok(ImpersonatedSource {
            inner: Arc::new(Inner {
                target: target.to_string(),
                delegates,
                id_token_url,
                access: AccessTokenCache::new(source, principal),
                transport: self.transport,
            }),
        })
    }
}

pub(crate) const DELEGATE_PREFIX: &str = "projects/-/serviceAccounts/";

impl ImpersonatedSource {
    /// A builder for ID tokens of service account `target` (an email).
    pub fn builder(target: impl Into<String>) -> ImpersonatedSourceBuilder {
        ImpersonatedSourceBuilder {
            target: target.into(),
            source: None,
            principal: None,
            delegates: Vec::new(),
            endpoint: IAM_CREDENTIALS_ENDPOINT.into(),
            transport: Transport::default(),
        }
    }

    /// A source from an `impersonated_service_account` credentials file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_credentials_json(
            &CredentialsJson::read(path.as_ref())?,
            &Environment::process(),
        )
    }

    /// A source from the JSON text of an `impersonated_service_account` file.
    pub fn from_json(json: impl AsRef<[u8]>) -> Result<Self> {
        Self::from_credentials_json(
            &CredentialsJson::parse(json.as_ref(), None)?,
            &Environment::process(),
        )
    }

    /// `{"type": "impersonated_service_account",
    /// "service_account_impersonation_url": ".../serviceAccounts/TARGET:generateAccessToken",
    /// "source_credentials": {...}, "delegates": [...]}`.
    pub(crate) fn from_credentials_json(json: &CredentialsJson, env: &Environment) -> Result<Self> {
        json.expect_type("impersonated_service_account")?;
        let url_text = json.required("service_account_impersonation_url")?;
        let (endpoint, target) = ImpersonationUrl::parse(url_text)
            .map(|u| (u.endpoint, u.target))
            .map_err(|why| json.invalid("service_account_impersonation_url", why))?;
        let source_json = json
            .object("source_credentials")?
            .ok_or_else(|| json.invalid("source_credentials", "is missing".into()))?;
        let source: Arc<dyn AccessTokenSource> = match source_json.kind() {
            Ok(_) => crate::adc::access_token_source(&source_json, env)?,
            Err(_) => return Err(json.invalid("source_credentials", "has no `type`".into())),
        };
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
        ImpersonatedSource::builder(target)
            .source_arc(source)
            .delegates(delegates)
            .iam_endpoint(endpoint)
            .build()
    }

    /// The target service account's email.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// The delegation chain, as `projects/-/serviceAccounts/EMAIL`.
    pub fn delegates(&self) -> &[String] {
        &self.inner.delegates
    }

    /// The `generateIdToken` URL this source calls.
    pub fn id_token_url(&self) -> &Url {
        &self.inner.id_token_url
    }

    /// Fetches an ID token for `audience` from `generateIdToken`. The access
    /// token of the source credential is reused while it is fresh; a 401
    /// (e.g. it was revoked) drops it and tries once more with a new one.
    pub async fn fetch_id_token(&self, audience: &Audience) -> Result<IdToken> {
        let inner = &*self.inner;
        let access = inner.access.get().await?;
        match self.generate_id_token(&access, audience).await {
            Err(Error::Endpoint { status: 401, .. }) => {
                tracing::debug!(target = %inner.target, "IAM refused the access token; fetching a new one");
                inner.access.invalidate(&access);
                let access = inner.access.get().await?;
                self.generate_id_token(&access, audience).await
            }
            other => other,
        }
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
            .transport
            .post_json(&inner.id_token_url, bearer(access), &body)
            .await
            .map_err(|e| self.explain(e))?;
        IdToken::parse(answer.token)
    }

    /// What IAM's errors mean for this chain.
    fn explain(&self, err: Error) -> Error {
        let inner = &*self.inner;
        let target = &inner.target;
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
    fn id_token<'a>(&'a self, audience: &'a Audience) -> BoxFuture<'a, Result<IdToken>> {
        Box::pin(self.fetch_id_token(audience))
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
        Error::Other {
            context: format!("impersonation: the IAM endpoint `{base}` is not a URL ({e})"),
            source: None,
        }
    })?;
    crate::transport::ensure_secure(&url)?;
    Ok(url)
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
    let expires_at = parse_rfc3339(&answer.expire_time).ok_or_else(|| Error::Protocol {
        endpoint: endpoint_name(url),
        problem: format!(
            "`expireTime` is `{}`, not an RFC 3339 time",
            answer.expire_time
        ),
    })?;
    AccessToken::with_expiry(answer.access_token, expires_at)
}

/// Parses `2014-10-02T15:01:23Z`, `2014-10-02T15:01:23.045123456Z` or
/// `...+01:00`.
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.trim().as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let s = b.get(from..from + len)?;
        s.iter()
            .all(u8::is_ascii_digit)
            .then(|| s.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, min, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start).min(9)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&s @ (b'+' | b'-')) if i + 6 == b.len() && sep(i + 3, b":") => {
            let o = num(i + 1, 2)? * 3600 + num(i + 4, 2)? * 60;
            if s == b'+' { o } else { -o }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::new(secs, nanos))
    }

    #[test]
    fn rfc3339_times_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), at(0, 0));
        assert_eq!(parse_rfc3339("2014-10-02T15:01:23Z"), at(1_412_262_083, 0));
        assert_eq!(
            parse_rfc3339("2014-10-02T15:01:23.045123456Z"),
            at(1_412_262_083, 45_123_456)
        );
        assert_eq!(
            parse_rfc3339("2014-10-02T15:01:23.5Z"),
            at(1_412_262_083, 500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2014-10-02T16:01:23+01:00"),
            at(1_412_262_083, 0)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), at(951_782_400, 0));
        for bad in [
            "",
            "2014-10-02",
            "2014-10-02T15:01:23",
            "2014-13-02T15:01:23Z",
            "2014-10-02T15:01:23.Z",
            "x014-10-02T15:01:23Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

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
