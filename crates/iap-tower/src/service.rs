//! [`IapService`]: the middleware itself.

use std::mem;
use std::task::{Context, Poll};

use http::{Request, Response};
use iap_token::auth::{Attach, IapAuth, Planned};
use iap_token::policy::RetryPolicy;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::replay::{
    BoxError, CloneBodyFn, DEFAULT_REPLAY_LIMIT, NoReplay, RecordBody, ReplayPolicy, Standard,
};

/// Adds an IAP ID token to every request in scope and retries once, with a
/// fresh token, when IAP refuses it. Made by [`IapLayer`](crate::IapLayer).
///
/// For each request, [`IapAuth::plan`] decides whether it gets a token (host
/// scoping, a per-request [`Audience`](iap_token::Audience) or
/// [`NoAuth`](iap_token::policy::NoAuth) in its extensions). The cached token
/// goes in with [`IapAuth::apply`]; when none is cached yet, the response
/// future fetches one first. When [`IapAuth::verdict`] says the token was
/// refused, that token is invalidated and, if the request body can be sent
/// again (see [`replay`](crate::replay)), the request goes out once more with
/// a fresh token on a clone of the inner service (made ready first). The
/// replay policy `P` decides how a body is kept for that and what body type
/// the inner service receives (see [`IapLayer`](crate::IapLayer)).
#[derive(Clone, Debug)]
pub struct IapService<S, P = Standard> {
    inner: S,
    auth: IapAuth,
    policy: P,
    replay_limit: usize,
    /// Scheme and authority given to requests with a relative URI.
    origin: Option<(http::uri::Scheme, http::uri::Authority)>,
}

impl<S> IapService<S> {
    /// Wraps `inner`, authorizing its requests with `auth`.
    pub fn new(inner: S, auth: IapAuth) -> Self {
        IapService {
            inner,
            auth,
            policy: Standard,
            replay_limit: DEFAULT_REPLAY_LIMIT,
            origin: None,
        }
    }
}

impl<S, P> IapService<S, P> {
    /// The origin of requests whose URI is relative (a path only), as a
    /// tonic `Channel` sends them: such a request gets this scheme and
    /// authority before the scope is checked, so a scoped [`IapAuth`]
    /// authorizes it (the channel puts its own origin in below anyway).
    /// Fails when `origin` has no scheme and authority.
    pub fn origin(mut self, origin: &str) -> Result<Self, BoxError> {
        self.origin = Some(parse_origin(origin)?);
        Ok(self)
    }

    /// Keeps at most `bytes` of a request body for a retry (default 64 KiB);
    /// larger bodies are not retried. `0` turns recording off (bodies that
    /// are cheap to clone, and empty ones, are still retried).
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.replay_limit = bytes;
        self
    }

    /// Records any request body for a retry (see
    /// [`IapLayer::record_body`](crate::IapLayer::record_body)).
    pub fn record_body(self) -> IapService<S, RecordBody> {
        self.replay_policy(RecordBody)
    }

    /// Keeps a request body for a retry by cloning it with `f` (see
    /// [`IapLayer::clone_body`](crate::IapLayer::clone_body)).
    pub fn clone_body<B, F>(self, f: F) -> IapService<S, CloneBodyFn<F>>
    where
        F: Fn(&B) -> Option<B>,
    {
        self.replay_policy(CloneBodyFn::new(f))
    }

    /// Never sends a request body twice (see
    /// [`IapLayer::no_replay`](crate::IapLayer::no_replay)).
    pub fn no_replay(self) -> IapService<S, NoReplay> {
        self.replay_policy(NoReplay)
    }

    /// Keeps request bodies for a retry as `policy` says.
    pub fn replay_policy<Q>(self, policy: Q) -> IapService<S, Q> {
        IapService {
            inner: self.inner,
            auth: self.auth,
            policy,
            replay_limit: self.replay_limit,
            origin: self.origin,
        }
    }

    pub(crate) fn with_options(
        inner: S,
        auth: IapAuth,
        policy: P,
        replay_limit: usize,
        origin: Option<(http::uri::Scheme, http::uri::Authority)>,
    ) -> Self {
        IapService {
            inner,
            auth,
            policy,
            replay_limit,
            origin,
        }
    }

    /// The authorization handle.
    pub fn auth(&self) -> &IapAuth {
        &self.auth
    }

    /// The replay policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, P, B, ResBody> Service<Request<B>> for IapService<S, P>
where
    P: ReplayPolicy<B>,
    S: Service<Request<P::Body>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, P::Body>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some((scheme, authority)) = &self.origin
            && request.uri().authority().is_none()
        {
            let mut parts = std::mem::take(request.uri_mut()).into_parts();
            parts.scheme = Some(scheme.clone());
            parts.authority = Some(authority.clone());
            if parts.path_and_query.is_none() {
                parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
            }
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
        let policy = &self.policy;
        if self.auth.retry_policy() == RetryPolicy::Never {
            // Nothing is kept for a retry: only the token's header value is
            // copied.
            let lookup = self.auth.lookup(request.uri(), request.extensions());
            if let Planned::Fetch(attach) = lookup.attach_header(request.headers_mut()) {
                return self.fetch_first(request, attach);
            }
            return ResponseFuture::pass(self.inner.call(policy.send_once(request)));
        }
        let cached = match self.auth.plan_cached(request.uri(), request.extensions()) {
            Planned::Skip => {
                return ResponseFuture::pass(self.inner.call(policy.send_once(request)));
            }
            Planned::Cached(cached) => cached,
            Planned::Fetch(attach) => return self.fetch_first(request, attach),
        };
        // This thread's copy of the token (see `iap_token::cache`).
        ResponseFuture::first(
            &mut self.inner,
            request,
            cached,
            &self.auth,
            policy,
            self.replay_limit,
        )
    }
}

impl<S: Clone, P> IapService<S, P> {
    /// The first attempt of a request whose token is not cached: the ready
    /// service goes with the request, a fresh clone stays here and is made
    /// ready by the next `poll_ready`.
    #[cold]
    #[inline(never)]
    fn fetch_first<B>(&mut self, request: Request<B>, attach: Attach) -> ResponseFuture<S, P::Body>
    where
        P: ReplayPolicy<B>,
        S: Service<Request<P::Body>>,
    {
        let clone = self.inner.clone();
        let ready = mem::replace(&mut self.inner, clone);
        ResponseFuture::fetching(
            ready,
            request,
            self.auth.clone(),
            attach,
            &self.policy,
            self.replay_limit,
        )
    }
}

/// `scheme://authority` of `origin`.
pub(crate) fn parse_origin(
    origin: &str,
) -> Result<(http::uri::Scheme, http::uri::Authority), BoxError> {
    let uri: http::Uri = origin.parse()?;
    match (uri.scheme(), uri.authority()) {
        (Some(scheme), Some(authority)) => Ok((scheme.clone(), authority.clone())),
        _ => Err(format!("{origin:?} is not an origin: write it as https://host[:port]").into()),
    }
}
