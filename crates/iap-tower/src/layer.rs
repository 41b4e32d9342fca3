//! [`IapLayer`]: put IAP ID tokens on a service's requests, and retry once
//! with a fresh token when IAP refuses one.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), iap_tower::BoxError> {
//! use http::{Request, Response, header::AUTHORIZATION};
//! use iap_token::{IapAuth, source::static_token::StaticTokenSource};
//! use iap_tower::IapLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # let jwt = "eyJhbGciOiJub25lIn0.eyJhdWQiOiJjbGllbnQtaWQiLCJlbWFpbCI6ImFAYiIsImV4cCI6NDEwMjQ0NDgwMH0.c2ln";
//! let auth = IapAuth::builder().source(StaticTokenSource::new(jwt)?).audience("client-id").any_origin().build()?;
//! let service = ServiceBuilder::new()
//!     .layer(IapLayer::new(auth).replay_limit(16 * 1024))
//!     .service(service_fn(|req: Request<String>| async move {
//!         // What the server sees: the token, in a header marked sensitive.
//!         let value = req.headers().get(AUTHORIZATION).expect("a token");
//!         assert!(value.is_sensitive() && value.as_bytes().starts_with(b"Bearer "));
//!         Ok::<_, std::convert::Infallible>(Response::new(String::new()))
//!     }));
//!
//! service.oneshot(Request::new("hello".to_owned())).await?;
//! # Ok(()) }
//! ```

use iap_token::auth::IapAuth;
use tower_layer::Layer;

use crate::replay::{CloneBodyFn, DEFAULT_REPLAY_LIMIT, NoReplay, RecordBody, Standard};
use crate::service::IapService;

/// A [`Layer`] that authorizes requests for IAP: adds the cached ID token,
/// and retries once with a fresh token when IAP refuses it.
///
/// Where the token goes (`Authorization` or `Proxy-Authorization`), which
/// answers count as a refusal, and which requests get a token at all are
/// decided by the [`IapAuth`] it is built from (`IapAuthBuilder::placement`,
/// `::retry_policy`, `::allow_origin`). How a request body is kept for the
/// retry is the layer's [`ReplayPolicy`](crate::replay::ReplayPolicy) `P`: [`Standard`] unless chosen
/// with [`record_body`](Self::record_body), [`clone_body`](Self::clone_body),
/// [`no_replay`](Self::no_replay) or [`replay_policy`](Self::replay_policy).
/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct IapLayer<P = Standard> {
    auth: IapAuth,
    policy: P,
    replay_limit: usize,
    origin: Option<(http::uri::Scheme, http::uri::Authority)>,
}

impl IapLayer {
    /// Authorize requests with `auth`.
    pub fn new(auth: IapAuth) -> Self {
        IapLayer {
            auth,
            policy: Standard,
            replay_limit: DEFAULT_REPLAY_LIMIT,
            origin: None,
        }
    }
}

impl<P> IapLayer<P> {
    /// The origin of requests whose URI is relative (a path only), as a
    /// tonic `Channel` sends them: they get this scheme and authority
    /// before the scope is checked, so a scoped [`IapAuth`] never lets a
    /// tonic call go out without a token. Fails when `origin` has no scheme
    /// and authority.
    ///
    /// ```
    /// # fn run(auth: iap_token::IapAuth) -> Result<(), iap_tower::BoxError> {
    /// let layer = iap_tower::IapLayer::new(auth).origin("https://grpc.example.com")?;
    /// # Ok(()) }
    /// ```
    pub fn origin(mut self, origin: &str) -> Result<Self, crate::BoxError> {
        self.origin = Some(crate::service::parse_origin(origin)?);
        Ok(self)
    }

    /// Keeps at most `bytes` of a request body for a retry (default 64 KiB);
    /// larger bodies are not retried. `0` turns recording off (bodies that
    /// are cheap to clone, and empty ones, are still retried).
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.replay_limit = bytes;
        self
    }

    /// Records any request body for a retry, up to the replay limit: the
    /// inner service receives a [`ReplayBody`](crate::replay::ReplayBody) around the body it was
    /// given. For body types the default policy does not know, such as
    /// `hyper::body::Incoming` or a stream of your own (see
    /// [`RecordBody`]).
    ///
    /// ```
    /// use hyper::body::Incoming;
    /// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    /// use iap_tower::{IapLayer, replay::ReplayBody};
    /// use tower::Layer;
    ///
    /// # fn run(auth: iap_token::IapAuth) {
    /// let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Incoming>>();
    /// // A `Service<Request<Incoming>>`, e.g. for a proxy built on hyper's server.
    /// let upstream = IapLayer::new(auth).record_body().layer(client);
    /// # }
    /// ```
    pub fn record_body(self) -> IapLayer<RecordBody> {
        self.replay_policy(RecordBody)
    }

    /// Keeps a request body for a retry by cloning it with `f` (`None`:
    /// this body cannot be sent again), as tower-http's `FollowRedirect`
    /// does with `clone_body_fn`. The inner service receives `B`.
    ///
    /// ```
    /// # fn run(auth: iap_token::IapAuth) {
    /// use bytes::Bytes;
    /// let layer = iap_tower::IapLayer::new(auth)
    ///     .clone_body(|body: &http_body_util::Full<Bytes>| Some(body.clone()));
    /// # }
    /// ```
    pub fn clone_body<B, F>(self, f: F) -> IapLayer<CloneBodyFn<F>>
    where
        F: Fn(&B) -> Option<B>,
    {
        self.replay_policy(CloneBodyFn::new(f))
    }

    /// Never sends a request body twice: a refused token is still
    /// invalidated, and the refusal is returned as is (see [`NoReplay`]).
    pub fn no_replay(self) -> IapLayer<NoReplay> {
        self.replay_policy(NoReplay)
    }

    /// Keeps request bodies for a retry as `policy` says.
    pub fn replay_policy<Q>(self, policy: Q) -> IapLayer<Q> {
        IapLayer {
            auth: self.auth,
            policy,
            replay_limit: self.replay_limit,
            origin: self.origin,
        }
    }

    /// Puts the token in `Proxy-Authorization` instead of `Authorization`,
    /// leaving the caller's own `Authorization` (e.g. the app's login) to
    /// the app; IAP reads both. Unless a retry policy was chosen on the
    /// [`IapAuth`], only IAP's own refusals are then retried (an app's 401
    /// is about the app's credentials). Shares the token cache with `auth`
    /// (see [`IapAuth::with_placement`]).
    ///
    /// ```
    /// # fn run(auth: iap_token::IapAuth) {
    /// use iap_token::policy::{Placement, RetryPolicy};
    /// use iap_tower::IapLayer;
    ///
    /// let layer = IapLayer::new(auth).proxy_authorization();
    /// assert_eq!(layer.auth().placement(), Placement::ProxyAuthorization);
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

    /// The replay policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }
}

impl<S> IapService<S> {
    /// A layer that wraps services in an `IapService` (same as [`IapLayer::new`]).
    pub fn layer(auth: IapAuth) -> IapLayer {
        IapLayer::new(auth)
    }
}

impl<S, P: Clone> Layer<S> for IapLayer<P> {
    type Service = IapService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        IapService::with_options(
            inner,
            self.auth.clone(),
            self.policy.clone(),
            self.replay_limit,
            self.origin.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iap_token::source::static_token::StaticTokenSource;

    const JWT: &str = "eyJhbGciOiJub25lIn0.eyJhdWQiOiJjbGllbnQtaWQiLCJlbWFpbCI6ImFAYiIsImV4cCI6NDEwMjQ0NDgwMH0.c2ln";

    #[tokio::test]
    async fn debug_never_shows_the_token() {
        let auth = IapAuth::builder()
            .source(StaticTokenSource::new(JWT).unwrap())
            .audience("client-id")
            .any_origin()
            .build()
            .unwrap();
        auth.token_for(&"http://a/".parse().unwrap()).await.unwrap();
        let layer = IapLayer::new(auth);
        let service = layer.layer(());
        let shown = format!("{layer:?} {service:?}");
        assert!(shown.contains("client-id"), "{shown}");
        assert!(!shown.contains(JWT) && !shown.contains("c2ln"), "{shown}");
    }

    #[tokio::test]
    async fn relative_uris_get_the_layers_origin_and_so_a_token() {
        use tower::{Service as _, ServiceExt as _};
        let auth = IapAuth::builder()
            .source(StaticTokenSource::new(JWT).unwrap())
            .audience("client-id")
            .allow_origin("https://grpc.example.com")
            .build()
            .unwrap();
        let echo = tower::service_fn(|req: http::Request<String>| async move {
            let seen = (
                req.uri().to_string(),
                req.headers().contains_key(http::header::AUTHORIZATION),
            );
            Ok::<_, std::convert::Infallible>(http::Response::new(seen))
        });
        let relative = || {
            http::Request::get("/pkg.Svc/Call")
                .body(String::new())
                .unwrap()
        };

        let mut bare = IapLayer::new(auth.clone()).layer(echo);
        let answer = bare.ready().await.unwrap().call(relative()).await.unwrap();
        assert!(!answer.into_body().1, "out of scope without an origin");

        let mut with_origin = IapLayer::new(auth)
            .origin("https://grpc.example.com")
            .unwrap()
            .layer(echo);
        let answer = with_origin
            .ready()
            .await
            .unwrap()
            .call(relative())
            .await
            .unwrap();
        let (uri, authorized) = answer.into_body();
        assert!(authorized, "the token went along");
        assert_eq!(uri, "https://grpc.example.com/pkg.Svc/Call");

        assert!(
            IapLayer::new(with_origin.auth().clone())
                .origin("/path")
                .is_err()
        );
    }
}
