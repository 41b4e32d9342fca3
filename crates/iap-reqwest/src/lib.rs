//! # iap-reqwest
//!
//! [`IapMiddleware`] for [reqwest-middleware]: adds a cached Google ID token
//! to every request for an app behind Cloud Identity-Aware Proxy, and when
//! IAP refuses the token, invalidates exactly that token and sends the
//! request once more with a fresh one.
//!
//! It is the same behaviour as `iap-tower`'s layer, from the same rules in
//! [`iap_token`] ([`IapAuth::plan_url`], [`IapAuth::apply`], [`Exchange`]):
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
//! Build the client from [`client_builder`]: it lets the middleware see
//! IAP's own redirect to the Google sign-in page (a refused token, for
//! browser-like requests) instead of following it. A client that follows
//! it anyway makes the middleware fail with [`SignInFollowed`], which says
//! so and how to fix it.
//!
//! Only IAP's own refusals (`X-Goog-IAP-Generated-Response: true`) count:
//! an app's own 401 comes back as is and costs no token. The protocol is
//! [`iap_token::exchange`], shared with `iap-tower`.
//!
//! [reqwest-middleware]: https://docs.rs/reqwest-middleware
#![warn(missing_docs)]

use std::fmt;

use http::Extensions;
use iap_token::auth::{Plan, Planned};
use iap_token::exchange::{Exchange, Next as ExchangeNext, Refresh};
use iap_token::{IapAuth, IdToken, Origin};
use reqwest::{Request, Response};
use reqwest_middleware::{Error, Middleware, Next, Result};

/// Authorizes requests for IAP in a reqwest-middleware chain.
///
/// ```
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let emu = iap_emulator::Emulator::start().await?;
/// # let app = emu.app();
/// # let auth = iap_token::IapAuth::builder()
/// #     .source(iap_token::source::metadata::MetadataSource::with_host(&emu.metadata_host())?)
/// #     .audience(app.client_id())
/// #     .allow_origin(app.url().as_str())
/// #     .build()?;
/// # let api_url = app.url().join("/api")?;
/// use iap_reqwest::IapMiddleware;
///
/// let client = reqwest_middleware::ClientBuilder::new(iap_reqwest::client_builder().build()?)
///     .with(IapMiddleware::new(auth))
///     .build();
/// // api_url: e.g. "https://app.example.com/api"
/// let body = client.get(api_url).send().await?.text().await?;
/// # assert!(body.contains("/api"), "{body}");
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

/// The future of one request through the middleware. Each path boxes its
/// own future, sized for what that path keeps: a request sent without a
/// retry does not carry the state of one.
type Handled<'a> = BoxFuture<'a, Result<Response>>;
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

// Written out rather than with `#[async_trait]`: the boxed future differs
// by path (see `Handled`), which one `async fn` cannot do.
impl Middleware for IapMiddleware {
    fn handle<'s, 'e, 'n, 'f>(
        &'s self,
        mut req: Request,
        extensions: &'e mut Extensions,
        next: Next<'n>,
    ) -> Handled<'f>
    where
        's: 'f,
        'e: 'f,
        'n: 'f,
        Self: 'f,
    {
        let next: Next<'f> = next;
        if !Exchange::may_retry(&self.auth) {
            // Nothing is kept for a retry: only the token's header value is copied.
            let lookup = self.auth.lookup_url(req.url(), extensions);
            return match lookup.attach_header(req.headers_mut()) {
                Planned::Skip => next.run(req, extensions),
                Planned::Cached(()) => Box::pin(send_once(req, extensions, next)),
                Planned::Fetch(attach) => Box::pin(async move {
                    let token = attach.fetch().await.map_err(Error::middleware)?;
                    self.auth.apply(req.headers_mut(), &token);
                    send_once(req, extensions, next).await
                }),
            };
        }
        // The borrowed lookup: no clone of the plan, the token's this thread's copy.
        match self.auth.plan_url_cached(req.url(), extensions) {
            // Out of scope: the rest of the chain's own future, as is.
            Planned::Skip => next.run(req, extensions),
            Planned::Cached(token) => Box::pin(self.exchange(token, req, extensions, next)),
            Planned::Fetch(attach) => Box::pin(async move {
                let token = attach.fetch().await.map_err(Error::middleware)?;
                self.exchange(token, req, extensions, next).await
            }),
        }
    }
}

/// The request, its token in, sent without a copy kept.
async fn send_once(req: Request, extensions: &mut Extensions, next: Next<'_>) -> Result<Response> {
    sign_in_followed(next.run(req, extensions).await?)
}

/// What a request that may be retried keeps while its first attempt is
/// out: a copy of it, or, when it cannot be copied, where it went (to tell
/// our answer from another origin's after a redirect).
enum Kept {
    Copy(Request),
    SentTo(reqwest::Url),
}

impl Kept {
    fn url(&self) -> &reqwest::Url {
        match self {
            Kept::Copy(request) => request.url(),
            Kept::SentTo(url) => url,
        }
    }
}

impl IapMiddleware {
    /// One request with `token` under the shared protocol
    /// ([`Exchange`]): a refused token is invalidated and the copy sent
    /// once more with a fresh one.
    ///
    /// Not an `async fn`: its arguments would be stored twice in the
    /// future (as arguments, then as locals); the block below holds each once.
    fn exchange<'f>(
        &'f self,
        token: IdToken,
        mut req: Request,
        extensions: &'f mut Extensions,
        next: Next<'f>,
    ) -> impl Future<Output = Result<Response>> + Send + 'f {
        let kept = match req.try_clone() {
            Some(copy) => Kept::Copy(copy),
            None => Kept::SentTo(req.url().clone()),
        };
        self.auth.apply(req.headers_mut(), &token);
        let mut exchange = Exchange::new(self.auth.clone_local(), token);
        async move {
            let response = sign_in_followed(next.clone().run(req, extensions).await?)?;
            let from_origin = Origin::same(kept.url(), response.url());
            if exchange.first_answer(response.status(), response.headers(), from_origin)
                == ExchangeNext::Deliver
            {
                return Ok(response);
            }
            // Boxed: only a retry pays for the retry's state, the future of
            // every first attempt stays small.
            Box::pin(self.retry(exchange, kept, response, extensions, next)).await
        }
    }

    /// After a refusal: the copy of the request, sent once more with a
    /// fresh token (another caller's, or fetched); or the refusal as is
    /// when the request could not be copied.
    async fn retry(
        &self,
        mut exchange: Exchange,
        kept: Kept,
        response: Response,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let Kept::Copy(mut second) = kept else {
            tracing::debug!(status = %response.status(), "request body not replayable, not retried");
            return Ok(response);
        };
        // The hot path kept no `Attach`: the same request plans the same again.
        let Plan::Attach(attach) = self.auth.plan_url(second.url(), extensions) else {
            return Ok(response);
        };
        drop(response);
        let fresh = match exchange.refresh(&attach) {
            Refresh::Ready(token) => token,
            Refresh::Fetch(fetch) => fetch.await.map_err(Error::middleware)?,
        };
        self.auth.apply(second.headers_mut(), &fresh);
        exchange.resend(fresh);
        let sent_to = second.url().clone();
        let response = sign_in_followed(next.run(second, extensions).await?)?;
        let from_origin = Origin::same(&sent_to, response.url());
        exchange.second_answer(response.status(), response.headers(), from_origin);
        Ok(response)
    }
}

/// An answer from Google's sign-in page means the client followed IAP's
/// sign-in redirect: the refusal was hidden from the middleware. Says so,
/// and how to fix it.
#[inline]
fn sign_in_followed(response: Response) -> Result<Response> {
    if iap_token::policy::is_google_sign_in(response.url()) {
        return Err(Error::middleware(SignInFollowed));
    }
    Ok(response)
}

/// The client followed IAP's redirect to the Google sign-in page, so IAP's
/// refusal of the token was hidden; build the client with
/// [`client_builder`].
#[derive(Debug)]
pub struct SignInFollowed;

impl fmt::Display for SignInFollowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "IAP refused the token with a redirect to accounts.google.com and the reqwest client followed it; \
             build the client with iap_reqwest::client_builder() (or .redirect(iap_reqwest::redirect_policy())) \
             so the refusal is seen and the token refreshed",
        )
    }
}

impl std::error::Error for SignInFollowed {}

/// A `reqwest::ClientBuilder` set up for IAP: it does not follow IAP's
/// redirect to the Google sign-in page (see [`redirect_policy`]). Build
/// every client that carries [`IapMiddleware`] from it.
///
/// ```
/// let client = reqwest_middleware::ClientBuilder::new(iap_reqwest::client_builder().build().unwrap()).build();
/// ```
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().redirect(redirect_policy())
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
