//! # iap-tower
//!
//! A [tower] layer for calling apps behind Google Cloud Identity-Aware
//! Proxy: [`IapLayer`] adds a cached Google ID token to every request in
//! scope and, when IAP refuses a token (revoked, expired early), invalidates
//! exactly that token and sends the request once more with a fresh one. It
//! wraps anything that is a `Service<http::Request<B>>`, whatever the body
//! type `B`: hyper-util clients, tonic `Channel`s (gRPC calls are retried
//! too), an axum app forwarding its requests.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use iap_token::{IapAuth, source::metadata::MetadataSource};
//! use iap_tower::IapLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # let emulator = iap_emulator::Emulator::start().await?;
//! # let app = emulator.app();
//! # let (metadata, client_id, url) = (emulator.metadata_host(), app.client_id(), app.url().clone());
//! // Against the emulator here; on Google Cloud, `IapAuth::for_app(app_url, client_id).await?`.
//! let auth = IapAuth::builder()
//!     .source(MetadataSource::with_host(&metadata)?)
//!     .audience(client_id) // the IAP OAuth client ID
//!     .allow_origin(url.origin().ascii_serialization()) // nobody else gets the token
//!     .build()?;
//! let client = ServiceBuilder::new()
//!     .layer(IapLayer::new(auth))
//!     .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
//!
//! let response = client.oneshot(http::Request::get(url.as_str()).body(Full::default())?).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(()) }
//! ```
//!
//! # What happens to a request
//!
//! Every decision comes from the [`IapAuth`](iap_token::IapAuth) the layer
//! is built from, the same rules `iap-reqwest` uses:
//! 1. [`plan`](iap_token::IapAuth::plan): no token for an origin outside the
//!    scope or with [`NoAuth`](iap_token::policy::NoAuth) in the request's
//!    extensions; an [`Audience`](iap_token::Audience) there picks another
//!    audience. Such requests go through untouched.
//! 2. The cached token goes in with [`apply`](iap_token::IapAuth::apply):
//!    `Authorization: Bearer` by default, or `Proxy-Authorization: Bearer`
//!    (then the caller's own `Authorization` goes to the app untouched). No
//!    token cached yet: the response future fetches one first (one fetch
//!    for all concurrent requests).
//! 3. On the answer, [`verdict`](iap_token::IapAuth::verdict) applies the
//!    retry policy: only the 401s and sign-in redirects IAP generated
//!    (`X-Goog-IAP-Generated-Response: true`; the default, whatever the
//!    placement: an app's own 401 costs no token), any 401 (an explicit
//!    `RetryPolicy::AnyUnauthorized`), or never. Accepted: the answer is
//!    returned. Refused: that token is
//!    invalidated (only if still current, so a burst of refusals costs one
//!    fetch) and, if the request can be sent again, it goes out once more,
//!    with a fresh token, on a clone of the inner service made ready first.
//!    The second answer is returned whatever it is (a refused second token
//!    is invalidated too).
//! 4. The request can be sent again when its body can, as the layer's
//!    [`ReplayPolicy`] says (see [`replay`]). Every body type compiles; by
//!    default ([`replay::Standard`]) cheap clones for `Full`/`String`/...,
//!    a recording of up to 64 KiB for streaming bodies that can be rebuilt
//!    (tonic's, axum's, boxed bodies), and anything else is sent once, its
//!    refusal returned as is. [`IapLayer::record_body`] records any body
//!    (`hyper::body::Incoming`, your own streams); [`IapLayer::clone_body`]
//!    clones with your function. With `RetryPolicy::Never` none of this
//!    bookkeeping is done.
//!
//! # tonic
//!
//! A `Channel` adds the server's origin to requests *below* the layer, so
//! the layer sees bare paths. With a scoped `IapAuth` (`allow_origin`), give
//! the layer the origin: `IapLayer::new(auth).origin("https://grpc.example.com")?`
//! (or the client: `HealthClient::with_origin(channel, origin)`).
//!
//! # Features
//!
//! - `tonic` (default): tonic's body is recorded and rebuilt for a retry.
//! - `axum` (default): axum's body (axum-core's `Body`) likewise.
//! - `reqwest`: `reqwest::Body` likewise (bytes in memory are copied).
//!
//! Without them the body types still compile and are sent once.
//!
//! [tower]: https://docs.rs/tower
#![warn(missing_docs)]

pub mod future;
pub mod layer;
pub mod replay;
pub mod service;

pub use layer::IapLayer;
pub use replay::{BoxError, ReplayPolicy};
pub use service::IapService;
