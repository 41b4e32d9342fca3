//! # iap-reqwest
//!
//! [`IapMiddleware`] for [reqwest-middleware]: adds a cached Google ID token
//! to every request for an app behind Cloud Identity-Aware Proxy, and when
//! IAP refuses the token, invalidates exactly that token and sends the
//! request once more with a fresh one.
//!
//! It is the same behaviour as `iap-tower`'s layer, from the same rules in
//! [`iap_token`] ([`IapAuth::plan_url`], [`IapAuth::apply`], [`IapAuth::verdict`]):
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

    /// Puts the token in `Proxy-Authorization` instead of `Authorization`,
    /// leaving the caller's own `Authorization` to the app; unless a retry
    /// policy was chosen on the [`IapAuth`], only IAP's own refusals are
    /// then retried. Shares the token cache with `auth` (see
    /// [`IapAuth::with_placement`]).
    ///
    /// ```
    /// # fn run(auth: iap_token::IapAuth) {
    /// use iap_token::policy::Placement;
    ///
    /// let middleware = iap_reqwest::IapMiddleware::new(auth).proxy_authorization();
    /// assert_eq!(middleware.auth().placement(), Placement::ProxyAuthorization);
    /// # }
    /// ```
    pub fn proxy_authorization(mut self) -> Self {
        self.auth = self
            .auth
            .with_placement(iap_token::policy::Placement::ProxyAuthorization);
        self
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
        let attach = match self.auth.plan_url(req.url(), extensions) {
            Plan::Skip => return next.run(req, extensions).await,
            Plan::Attach(attach) => attach,
        };
        let token = match attach.cached() {
            Some(token) => token,
            None => attach.fetch().await.map_err(Error::middleware)?,
        };
        let policy = self.auth.retry_policy();
        let spare = match policy {
            RetryPolicy::Never => None,
            _ => req.try_clone(),
        };
        // Where the token went (the spare copy knows it, if there is one), to
        // tell our answer from another origin's after a redirect. Never
        // needed when the policy refuses nothing.
        let sent_to = match (&spare, policy) {
            (None, RetryPolicy::AnyUnauthorized | RetryPolicy::IapGenerated) => {
                Some(req.url().clone())
            }
            _ => None,
        };
        self.auth.apply(req.headers_mut(), &token);
        let response = next.clone().run(req, extensions).await?;
        if self.auth.verdict(response.status(), response.headers()) == Verdict::Accepted {
            return Ok(response);
        }
        let Some(url) = spare.as_ref().map(Request::url).or(sent_to.as_ref()) else {
            return Ok(response);
        };
        let url = url.clone();
        // After a redirect to another origin (which got no token), the answer is not about ours.
        if !same_origin(&url, response.url()) {
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
            && same_origin(&url, response.url())
        {
            // Only one retry: pass the answer on, but do not keep a refused token.
            self.auth.invalidate(&fresh);
        }
        Ok(response)
    }
}

/// Whether `answered` (where the answer came from) has the origin of `sent` (where the token went).
fn same_origin(sent: &reqwest::Url, answered: &reqwest::Url) -> bool {
    sent.scheme() == answered.scheme()
        && sent.host_str() == answered.host_str()
        && sent.port_or_known_default() == answered.port_or_known_default()
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
