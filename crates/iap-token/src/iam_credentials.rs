//! Google's IAM Credentials API (`iamcredentials.googleapis.com`): the
//! calls that mint tokens of a service account on behalf of another
//! principal, and the URLs they live at. A leaf shared by impersonation and
//! workload identity federation. The wire facts are in
//! `docs/impersonation.md`.

use std::time::Duration;

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::access_token::{AccessToken, CLOUD_PLATFORM_SCOPE};
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
