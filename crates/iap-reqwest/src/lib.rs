//! # iap-reqwest
//!
//! [`IapMiddleware`] for [reqwest-middleware]: adds a cached Google ID token
//! to every request for an app behind Cloud Identity-Aware Proxy, and when
//! IAP refuses the token, invalidates exactly that token and sends the
//! request once more with a fresh one.
//!
//! It is the same behaviour as `iap-tower`'s layer, from the same rules in
//! [`iap_token`] ([`IapAuth::plan`], [`IapAuth::apply`], [`IapAuth::verdict`]):
//! - requests to origins outside the [`IapAuth`]'s scope get no token;
//! - per request, an [`Audience`](iap_token::Audience) or
//!   [`NoAuth`](iap_token::policy::NoAuth) given with
//!   [`RequestBuilder::with_extension`](reqwest_middleware::RequestBuilder::with_extension)
//!   overrides the configured audience or turns authorization off;
//! - the retry needs a copy of the request made with
//!   [`Request::try_clone`](reqwest::Request::try_clone) before sending: a
//!   streaming body cannot be copied, so such a request is not retried (its
//!   refused token is still invalidated).
//!
//! It composes with `reqwest-retry` (which treats a 401 as fatal, so the
//! retry on a refused token is this middleware's job) and `reqwest-tracing`.
//! Put it last in the chain, so that each transient retry gets the current token.
//!
//! Redirects are followed inside reqwest, below every middleware; reqwest
//! drops `Authorization` and `Proxy-Authorization` on a redirect to another
//! origin, so a token never follows a request off its origin, and an answer
//! from another origin is passed on as is (its 401 is not about our token).
//! To let the
//! middleware see IAP's own redirect to the Google sign-in page (a refused
//! token, for browser-like requests) instead of following it, build the
//! client with [`redirect_policy`].
//!
//! [reqwest-middleware]: https://docs.rs/reqwest-middleware
#![warn(missing_docs)]

use std::fmt;

use http::Extensions;
use iap_token::IapAuth;
use iap_token::auth::Plan;
use iap_token::policy::{RetryPolicy, Verdict};
use reqwest::{Request, Response};
use reqwest_middleware::{Error, Middleware, Next, Result};

/// Authorizes requests for IAP in a reqwest-middleware chain.
///
/// ```no_run
/// # async fn run(auth: iap_token::IapAuth) -> Result<(), Box<dyn std::error::Error>> {
/// use iap_reqwest::IapMiddleware;
///
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(IapMiddleware::new(auth))
///     .build();
/// let body = client.get("https://app.example.com/api").send().await?.text().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct IapMiddleware {
    auth: IapAuth,
}

impl IapMiddleware {
    /// Authorize requests with `auth`.
    pub fn new(auth: IapAuth) -> Self {
        IapMiddleware { auth }
    }

    /// The authorization handle.
    pub fn auth(&self) -> &IapAuth {
        &self.auth
    }
}

impl fmt::Debug for IapMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IapMiddleware")
            .field("auth", &self.auth)
            .finish()
    }
}

#[async_trait::async_trait]
impl Middleware for IapMiddleware {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        // `plan` speaks `http::Uri`; a URL that is not one is left to reqwest to reject.
        let Ok(uri) = req.url().as_str().parse::<http::Uri>() else {
            return next.run(req, extensions).await;
        };
        let attach = match self.auth.plan(&uri, extensions) {
            Plan::Skip => return next.run(req, extensions).await,
            Plan::Attach(attach) => attach,
        };
        let token = match attach.cached() {
            Some(token) => token,
            None => attach.fetch().await.map_err(Error::middleware)?,
        };
        let spare = match self.auth.retry_policy() {
            RetryPolicy::Never => None,
            _ => req.try_clone(),
        };
        self.auth.apply(req.headers_mut(), &token);
        let response = next.clone().run(req, extensions).await?;
        if self.auth.verdict(response.status(), response.headers()) == Verdict::Accepted
            // After a redirect to another origin (which got no token), the answer is not about ours.
            || !same_origin(&uri, response.url())
        {
            return Ok(response);
        }
        self.auth.invalidate(&token);
        let Some(mut second) = spare else {
            tracing::debug!(status = %response.status(), "IAP refused the token; request not replayable, not retried");
            return Ok(response);
        };
        tracing::debug!(status = %response.status(), "IAP refused the token; retrying once with a fresh one");
        drop(response);
        let fresh = match attach.cached() {
            // Another request already replaced the refused token.
            Some(fresh) if !fresh.same_as(&token) => fresh,
            _ => attach.fetch().await.map_err(Error::middleware)?,
        };
        self.auth.apply(second.headers_mut(), &fresh);
        let response = next.run(second, extensions).await?;
        if self.auth.verdict(response.status(), response.headers()) == Verdict::Refused
            && same_origin(&uri, response.url())
        {
            // Only one retry: pass the answer on, but do not keep a refused token.
            self.auth.invalidate(&fresh);
        }
        Ok(response)
    }
}

/// Whether `url` (where the answer came from) has the origin of `uri` (where the token went).
fn same_origin(uri: &http::Uri, url: &reqwest::Url) -> bool {
    let default_port = |scheme: Option<&str>| match scheme {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    };
    uri.scheme_str() == Some(url.scheme())
        && uri.host() == url.host_str()
        && uri.port_u16().or_else(|| default_port(uri.scheme_str())) == url.port_or_known_default()
}

/// reqwest's default redirect handling (at most 10 hops; `Authorization`
/// and `Proxy-Authorization` dropped on a change of origin), except that a
/// redirect to Google's sign-in page is not followed: it is how IAP refuses
/// a token for browser-like requests, and [`IapMiddleware`] needs to see it
/// to refresh the token and retry.
///
/// ```
/// let client = reqwest::Client::builder().redirect(iap_reqwest::redirect_policy()).build();
/// ```
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if iap_token::policy::is_google_sign_in(attempt.url()) {
            attempt.stop()
        } else if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}
