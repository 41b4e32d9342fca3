//! Sending a request body twice: how [`IapService`](crate::IapService)
//! keeps a request's body for the retry after IAP refused its token.
//!
//! How a body is kept is a *policy* of the layer, [`ReplayPolicy`], not a
//! bound on the body (as tower-http's `FollowRedirect` does with
//! `Policy::clone_body`): every body type goes through the layer, and a body
//! the policy cannot keep is sent once, its refusal returned as is.
//!
//! - [`Standard`] (the default): the inner service receives the body type it
//!   was given. Bodies that are cheap to clone (`Full` of `Bytes` or of
//!   static bytes, `Empty<Bytes>`, `String`, `()`) are cloned; streaming bodies that can be rebuilt around
//!   another body (tonic's and axum's `Body`, `BoxBody` and `UnsyncBoxBody`
//!   with [`BoxError`] errors, `reqwest::Body` with the `reqwest` feature)
//!   are recorded while the first attempt sends them, up to the replay limit
//!   (64 KiB by default), and rebuilt for the retry; a body with nothing in
//!   it is replaced by an empty one. Any other body is sent once.
//! - [`RecordBody`] (`IapLayer::record_body()`): any body, e.g.
//!   `hyper::body::Incoming` or a stream of your own, is recorded; the inner
//!   service receives a [`ReplayBody`] around it.
//! - [`CloneBodyFn`] (`IapLayer::clone_body(f)`): `f` clones the body or
//!   says it cannot.
//! - [`NoReplay`] (`IapLayer::no_replay()`): never send a body twice.
//!
//! A recording keeps what the first attempt read; the retry sends the kept
//! bytes again and then continues with whatever the first attempt had not
//! read. A body that outgrows the limit drops its copy and is not retried.
//! This is the "replay body" of linkerd2-proxy, reduced to the one retry
//! IAP needs.
//!
//! A server that forwards the requests it receives (here `Incoming` from
//! hyper, through a hyper-util client; an axum handler forwarding its
//! `axum::body::Body` needs no `record_body`, axum's body is rebuilt by the
//! default policy):
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), iap_tower::BoxError> {
//! use hyper::body::Incoming;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use iap_tower::{IapLayer, replay::ReplayBody};
//! use tower::ServiceBuilder;
//!
//! # let emulator = iap_emulator::Emulator::start().await?;
//! # let app = emulator.app();
//! # let auth = iap_token::IapAuth::builder()
//! #     .source(iap_token::source::metadata::MetadataSource::with_host(&emulator.metadata_host())?)
//! #     .audience(app.client_id())
//! #     .allow_origin(app.url().origin().ascii_serialization())
//! #     .build()?;
//! let upstream = ServiceBuilder::new()
//!     .layer(IapLayer::new(auth).record_body())
//!     .service(Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Incoming>>());
//! // `upstream` is a `Service<Request<Incoming>>`: hand it the requests a
//! // hyper server's `service_fn` receives.
//! # let _ = upstream;
//! # Ok(()) }
//! ```
//!
//! A body type of your own that is cheap to clone:
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), iap_tower::BoxError> {
//! use http::{Request, Response};
//! use iap_token::{IapAuth, source::static_token::StaticTokenSource};
//! use iap_tower::IapLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! /// A JSON document, already encoded.
//! #[derive(Clone)]
//! struct Json(bytes::Bytes);
//!
//! # let jwt = "eyJhbGciOiJub25lIn0.eyJhdWQiOiJjbGllbnQtaWQiLCJlbWFpbCI6ImFAYiIsImV4cCI6NDEwMjQ0NDgwMH0.c2ln";
//! let auth = IapAuth::builder().source(StaticTokenSource::new(jwt)?).audience("client-id").any_origin().build()?;
//! let service = ServiceBuilder::new()
//!     .layer(IapLayer::new(auth).clone_body(|json: &Json| Some(json.clone())))
//!     .service(service_fn(|_: Request<Json>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(()))
//!     }));
//! service.oneshot(Request::new(Json(bytes::Bytes::from_static(b"{}")))).await?;
//! # Ok(()) }
//! ```

use std::any::{Any, type_name};
use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{Empty, Full};

/// A boxed error, the error type of [`ReplayBody`] (and of the service).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// How many bytes of a request body are kept for a retry unless configured
/// otherwise: 64 KiB, plenty for gRPC unary calls and JSON APIs.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// How [`IapService`](crate::IapService) keeps a request body of type `B`
/// for a second attempt, and what body type the inner service receives.
///
/// Chosen on the layer: [`Standard`] by default,
/// [`record_body`](crate::IapLayer::record_body),
/// [`clone_body`](crate::IapLayer::clone_body),
/// [`no_replay`](crate::IapLayer::no_replay), or any policy of your own
/// with [`replay_policy`](crate::IapLayer::replay_policy).
pub trait ReplayPolicy<B> {
    /// The body type the inner service receives.
    type Body;

    /// A request that is sent once whatever happens (it gets no token, or
    /// the retry policy is `Never`), with the body type the inner service
    /// receives. A policy whose `Body` is `B` returns the request itself;
    /// one that wraps the body maps it (`request.map(...)`).
    fn send_once(&self, request: Request<B>) -> Request<Self::Body>;

    /// Splits `body` into the body to send now and the [`Spare`] to send on
    /// a retry. `limit` is how many bytes a recording may keep.
    fn replayable(&self, body: B, limit: usize) -> (Self::Body, Spare<Self::Body>);
}

/// The default [`ReplayPolicy`]: the inner service receives the body type
/// the layer was given, and the body types this crate knows are kept for a
/// retry (see the [module docs](self)). Compiles for every body type; one
/// it does not know is sent once.
#[derive(Clone, Copy, Debug, Default)]
pub struct Standard;

impl<B: 'static> ReplayPolicy<B> for Standard {
    type Body = B;

    #[inline(always)]
    fn send_once(&self, request: Request<B>) -> Request<B> {
        request
    }

    #[inline(always)]
    fn replayable(&self, body: B, limit: usize) -> (B, Spare<B>) {
        known::split(body, limit)
    }
}

/// A [`ReplayPolicy`] for any body: it is recorded while the first attempt
/// sends it, up to the replay limit, and the inner service receives a
/// [`ReplayBody`] around it. Made by
/// [`IapLayer::record_body`](crate::IapLayer::record_body).
///
/// The body must be `Unpin`; wrap one that is not in `Box::pin`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordBody;

impl<B> ReplayPolicy<B> for RecordBody
where
    B: Body + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Body = ReplayBody<B>;

    #[inline]
    fn send_once(&self, request: Request<B>) -> Request<ReplayBody<B>> {
        request.map(ReplayBody::once)
    }

    fn replayable(&self, body: B, limit: usize) -> (ReplayBody<B>, Spare<ReplayBody<B>>) {
        if body.is_end_stream() || body.size_hint().exact() == Some(0) {
            // Nothing to keep (a GET, say): the retry sends an empty body.
            return (ReplayBody::once(body), Spare::copy(ReplayBody::empty()));
        }
        if body.size_hint().lower() > limit as u64 {
            return (ReplayBody::once(body), Spare::not(NotKept::TooLarge));
        }
        record(
            body,
            limit,
            |first| first,
            |shared| ReplayBody::replay(shared),
        )
    }
}

/// A [`ReplayPolicy`] that clones the body with a function, `None` for a
/// body that cannot be cloned. Made by
/// [`IapLayer::clone_body`](crate::IapLayer::clone_body).
#[derive(Clone, Copy)]
pub struct CloneBodyFn<F>(F);

impl<F> CloneBodyFn<F> {
    /// Clones bodies with `f`.
    pub fn new<B>(f: F) -> Self
    where
        F: Fn(&B) -> Option<B>,
    {
        CloneBodyFn(f)
    }
}

impl<F> fmt::Debug for CloneBodyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CloneBodyFn")
            .field(&type_name::<F>())
            .finish()
    }
}

impl<B, F> ReplayPolicy<B> for CloneBodyFn<F>
where
    F: Fn(&B) -> Option<B>,
{
    type Body = B;

    #[inline(always)]
    fn send_once(&self, request: Request<B>) -> Request<B> {
        request
    }

    fn replayable(&self, body: B, _limit: usize) -> (B, Spare<B>) {
        let spare = match (self.0)(&body) {
            Some(copy) => Spare::copy(copy),
            None => Spare::not(NotKept::Declined),
        };
        (body, spare)
    }
}

/// A [`ReplayPolicy`] that never sends a body twice: a refusal is returned
/// as is (its token is still invalidated, so the next request gets a fresh
/// one). Made by [`IapLayer::no_replay`](crate::IapLayer::no_replay).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoReplay;

impl<B> ReplayPolicy<B> for NoReplay {
    type Body = B;

    #[inline(always)]
    fn send_once(&self, request: Request<B>) -> Request<B> {
        request
    }

    fn replayable(&self, body: B, _limit: usize) -> (B, Spare<B>) {
        (body, Spare::not(NotKept::Off))
    }
}

/// The second copy of a request body, kept until the first attempt's
/// response says whether a retry is needed.
pub struct Spare<T>(SpareKind<T>);

enum SpareKind<T> {
    Not(NotKept),
    Copy(T),
    Recorded {
        recording: Arc<dyn Recording>,
        /// Builds the retry's body from `recording`.
        replay: fn(Arc<dyn Recording>) -> T,
    },
}

/// Why a [`Spare`] holds no second copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotKept {
    /// The policy does not know how to keep this body type.
    Unknown,
    /// The body is larger than the replay limit.
    TooLarge,
    /// The body outgrew the limit or failed while it was recorded.
    Abandoned,
    /// The clone function returned `None`.
    Declined,
    /// The policy never replays.
    Off,
}

impl<T> Spare<T> {
    /// No second copy: the request is not retried.
    pub fn none() -> Self {
        Spare::not(NotKept::Declined)
    }

    /// A ready second copy (for bodies that are cheap to clone).
    pub fn copy(body: T) -> Self {
        Spare(SpareKind::Copy(body))
    }

    pub(crate) fn not(why: NotKept) -> Self {
        Spare(SpareKind::Not(why))
    }

    /// The body for the retry, or `None` when the request cannot be sent
    /// again (no copy, or the recording outgrew its limit or failed). From
    /// here on the first attempt's body can no longer be read.
    pub fn into_body(self) -> Option<T> {
        self.into_retry().ok()
    }

    /// The body for the retry, or why there is none.
    pub(crate) fn into_retry(self) -> Result<T, NotKept> {
        match self.0 {
            SpareKind::Not(why) => Err(why),
            SpareKind::Copy(body) => Ok(body),
            SpareKind::Recorded { recording, replay } => {
                if recording.take_over() {
                    Ok(replay(recording))
                } else {
                    Err(NotKept::Abandoned)
                }
            }
        }
    }

    /// Whether this spare could still produce a body (a recording may yet
    /// outgrow its limit).
    pub fn can_replay(&self) -> bool {
        match &self.0 {
            SpareKind::Not(_) => false,
            SpareKind::Copy(_) => true,
            SpareKind::Recorded { recording, .. } => recording.can_replay(),
        }
    }
}

impl<T> fmt::Debug for Spare<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0 {
            SpareKind::Not(_) => "none",
            SpareKind::Copy(_) => "copy",
            SpareKind::Recorded { .. } => "recorded",
        };
        f.debug_tuple("Spare").field(&kind).finish()
    }
}

/// What the log says when a refused request is not sent again.
pub(crate) fn not_kept_reason(why: NotKept) -> &'static str {
    match why {
        NotKept::Unknown => {
            "the layer does not know how to keep this body type for a retry: \
             use IapLayer::record_body() (any body) or IapLayer::clone_body(..)"
        }
        NotKept::TooLarge | NotKept::Abandoned => {
            "the body is larger than the replay limit (IapLayer::replay_limit)"
        }
        NotKept::Declined => "the body could not be cloned",
        NotKept::Off => "replay is off (IapLayer::no_replay)",
    }
}

/// The recording behind a [`Spare`], with its body type erased (the spare
/// only knows the type it hands out).
trait Recording: Any + Send + Sync {
    /// Hands the original body to the replay if the recording is complete
    /// so far; the first attempt can no longer read it afterwards.
    fn take_over(&self) -> bool;
    /// Whether the recording is still complete.
    fn can_replay(&self) -> bool;
}

impl<B: Send + 'static> Recording for Mutex<Shared<B>> {
    fn take_over(&self) -> bool {
        let mut shared = self.lock().unwrap_or_else(PoisonError::into_inner);
        if shared.capped {
            return false;
        }
        shared.reader = Role::Replay;
        true
    }

    fn can_replay(&self) -> bool {
        !self.lock().unwrap_or_else(PoisonError::into_inner).capped
    }
}

/// Records `body`: the first attempt sends `first(recording)`, a retry
/// `replay(recording)` (a plain `fn`, so the spare stays two pointers and
/// needs no allocation of its own).
fn record<B, T>(
    body: B,
    limit: usize,
    first: impl FnOnce(ReplayBody<B>) -> T,
    replay: fn(Arc<dyn Recording>) -> T,
) -> (T, Spare<T>)
where
    B: Send + 'static,
{
    let shared = Arc::new(Mutex::new(Shared {
        inner: body,
        limit,
        chunks: Vec::new(),
        kept: 0,
        trailers: None,
        capped: false,
        done: false,
        reader: Role::First,
    }));
    let recording: Arc<dyn Recording> = shared.clone();
    (
        first(ReplayBody::handle(shared, Role::First)),
        Spare(SpareKind::Recorded { recording, replay }),
    )
}

/// A request body that may be sent twice: the first attempt reads the
/// original body and keeps what it read (up to a limit); the replay sends
/// that again, then reads on where the first stopped. A body sent once
/// passes straight through.
///
/// What the inner service receives with
/// [`IapLayer::record_body`](crate::IapLayer::record_body), and what the
/// default policy puts inside streaming bodies it rebuilds. Once the replay
/// has taken over, the first attempt's body fails with [`Superseded`]
/// instead of stealing data from it.
pub struct ReplayBody<B>(Kind<B>);

enum Kind<B> {
    /// Sent once: nothing kept.
    Once(B),
    /// The retry of a body that had nothing in it.
    Empty,
    /// One of two attempts sharing the original body.
    Shared(Handle<B>),
}

struct Handle<B> {
    shared: Arc<Mutex<Shared<B>>>,
    role: Role,
    /// Replay only: whether it has been polled, the next kept chunk to
    /// send, the bytes left in the kept chunks, and whether trailers went out.
    started: bool,
    next: usize,
    kept_left: usize,
    trailers_sent: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    First,
    Replay,
}

struct Shared<B> {
    inner: B,
    limit: usize,
    chunks: Vec<Bytes>,
    kept: usize,
    trailers: Option<HeaderMap>,
    /// The recording was abandoned (too large, or the body failed).
    capped: bool,
    /// The original body has ended.
    done: bool,
    /// Who may read the original body.
    reader: Role,
}

impl<B> ReplayBody<B> {
    fn once(body: B) -> Self {
        ReplayBody(Kind::Once(body))
    }

    fn empty() -> Self {
        ReplayBody(Kind::Empty)
    }

    fn handle(shared: Arc<Mutex<Shared<B>>>, role: Role) -> Self {
        ReplayBody(Kind::Shared(Handle {
            shared,
            role,
            started: false,
            next: 0,
            kept_left: 0,
            trailers_sent: false,
        }))
    }

    /// The retry's body over a recording made by [`record`] for `B`.
    fn replay(recording: Arc<dyn Recording>) -> Self
    where
        B: Send + 'static,
    {
        let any: Arc<dyn Any + Send + Sync> = recording;
        match any.downcast::<Mutex<Shared<B>>>() {
            Ok(shared) => ReplayBody::handle(shared, Role::Replay),
            // `record` pairs every recording with the replay of its own type.
            Err(_) => unreachable!("a recording replayed as another body type"),
        }
    }

    /// Whether the recording gave up (the body outgrew the limit or failed);
    /// `false` for a body that is sent once.
    pub fn is_capped(&self) -> bool {
        match &self.0 {
            Kind::Once(_) | Kind::Empty => false,
            Kind::Shared(handle) => handle.lock().capped,
        }
    }
}

impl<B> Handle<B> {
    fn lock(&self) -> MutexGuard<'_, Shared<B>> {
        // A panic while holding the lock leaves consistent data (every update is a single step).
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Once(_) => f.debug_struct("ReplayBody").field("role", &"once").finish(),
            Kind::Empty => f
                .debug_struct("ReplayBody")
                .field("role", &"empty")
                .finish(),
            Kind::Shared(handle) => {
                let shared = handle.lock();
                f.debug_struct("ReplayBody")
                    .field("role", &handle.role)
                    .field("kept", &shared.kept)
                    .field("limit", &shared.limit)
                    .field("capped", &shared.capped)
                    .field("done", &shared.done)
                    .finish()
            }
        }
    }
}

/// The first attempt's body was read after a retry took over the request body.
#[derive(Debug)]
pub struct Superseded;

impl fmt::Display for Superseded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body taken over by a retry of the request")
    }
}

impl StdError for Superseded {}

fn to_bytes<D: Buf>(mut data: D) -> Bytes {
    // `Bytes` hands itself over without a copy.
    let len = data.remaining();
    data.copy_to_bytes(len)
}

fn frame_to_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(to_bytes)
}

impl<B> Body for ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = match &mut self.get_mut().0 {
            Kind::Once(body) => {
                return Pin::new(body)
                    .poll_frame(cx)
                    .map(|frame| frame.map(|f| f.map(frame_to_bytes).map_err(Into::into)));
            }
            Kind::Empty => return Poll::Ready(None),
            Kind::Shared(handle) => handle,
        };
        let mut guard = this.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let shared = &mut *guard;
        match this.role {
            Role::First => {
                if shared.reader != Role::First {
                    return Poll::Ready(Some(Err(Box::new(Superseded))));
                }
                match Pin::new(&mut shared.inner).poll_frame(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(None) => {
                        shared.done = true;
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Err(e))) => {
                        shared.capped = true;
                        shared.chunks = Vec::new();
                        Poll::Ready(Some(Err(e.into())))
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        let frame = frame_to_bytes(frame);
                        if !shared.capped {
                            if let Some(data) = frame.data_ref() {
                                shared.kept += data.len();
                                if shared.kept > shared.limit {
                                    shared.capped = true;
                                    shared.chunks = Vec::new();
                                } else if !data.is_empty() {
                                    shared.chunks.push(data.clone());
                                }
                            } else if let Some(trailers) = frame.trailers_ref() {
                                shared.trailers = Some(trailers.clone());
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                }
            }
            Role::Replay => {
                if !this.started {
                    this.started = true;
                    shared.reader = Role::Replay;
                    this.kept_left = shared.kept;
                }
                if let Some(chunk) = shared.chunks.get(this.next) {
                    this.next += 1;
                    this.kept_left -= chunk.len();
                    return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
                }
                if shared.done {
                    if !this.trailers_sent {
                        this.trailers_sent = true;
                        if let Some(trailers) = shared.trailers.clone() {
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                    }
                    return Poll::Ready(None);
                }
                match Pin::new(&mut shared.inner).poll_frame(cx) {
                    Poll::Ready(None) => {
                        shared.done = true;
                        this.trailers_sent = true;
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if frame.is_trailers() {
                            this.trailers_sent = true;
                        }
                        Poll::Ready(Some(Ok(frame_to_bytes(frame))))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let handle = match &self.0 {
            Kind::Once(body) => return body.is_end_stream(),
            Kind::Empty => return true,
            Kind::Shared(handle) => handle,
        };
        let shared = handle.lock();
        match handle.role {
            Role::First => {
                shared.reader == Role::First && (shared.done || shared.inner.is_end_stream())
            }
            Role::Replay => {
                let kept_pending = if handle.started {
                    handle.kept_left
                } else {
                    shared.kept
                };
                kept_pending == 0
                    && handle.next >= shared.chunks.len()
                    && if shared.done {
                        handle.trailers_sent || shared.trailers.is_none()
                    } else {
                        shared.inner.is_end_stream()
                    }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        let handle = match &self.0 {
            Kind::Once(body) => return body.size_hint(),
            Kind::Empty => return SizeHint::with_exact(0),
            Kind::Shared(handle) => handle,
        };
        let shared = handle.lock();
        let rest = if shared.done {
            SizeHint::with_exact(0)
        } else {
            shared.inner.size_hint()
        };
        let kept = match handle.role {
            Role::First => 0,
            Role::Replay if handle.started => handle.kept_left,
            Role::Replay => shared.kept,
        } as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(kept));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(kept));
        }
        hint
    }
}

/// The body types [`Standard`] knows, found by type identity: `B` is tried
/// against each known type through `&mut dyn Any` on `Option` slots, which
/// the compiler resolves per `B` (no allocation, no bound on `B`).
mod known {
    use super::*;

    /// A streaming body type that can be rebuilt around a [`ReplayBody`] of
    /// itself, and built empty.
    trait Rebuild: Body<Data = Bytes, Error: Into<BoxError>> + Unpin + Send + Sized + 'static {
        fn rebuild(body: ReplayBody<Self>) -> Self;
        fn empty() -> Self;
    }

    impl Rebuild for BoxBody<Bytes, BoxError> {
        fn rebuild(body: ReplayBody<Self>) -> Self {
            BoxBody::new(body)
        }
        fn empty() -> Self {
            BoxBody::default()
        }
    }

    impl Rebuild for UnsyncBoxBody<Bytes, BoxError> {
        fn rebuild(body: ReplayBody<Self>) -> Self {
            UnsyncBoxBody::new(body)
        }
        fn empty() -> Self {
            UnsyncBoxBody::default()
        }
    }

    /// gRPC calls: the encoded messages are recorded, so unary calls (and
    /// short streams) through a `Channel` are retried.
    #[cfg(feature = "tonic")]
    impl Rebuild for tonic::body::Body {
        fn rebuild(body: ReplayBody<Self>) -> Self {
            tonic::body::Body::new(body)
        }
        fn empty() -> Self {
            tonic::body::Body::empty()
        }
    }

    #[cfg(feature = "axum")]
    impl Rebuild for axum_core::body::Body {
        fn rebuild(body: ReplayBody<Self>) -> Self {
            axum_core::body::Body::new(body)
        }
        fn empty() -> Self {
            axum_core::body::Body::empty()
        }
    }

    #[cfg(feature = "reqwest")]
    impl Rebuild for reqwest::Body {
        fn rebuild(body: ReplayBody<Self>) -> Self {
            reqwest::Body::wrap(body)
        }
        fn empty() -> Self {
            reqwest::Body::default()
        }
    }

    /// Records a body of a [`Rebuild`] type, or replaces an empty one.
    fn rebuilt<T: Rebuild>(body: T, limit: usize) -> (T, Spare<T>) {
        if body.is_end_stream() || body.size_hint().exact() == Some(0) {
            return (body, Spare::copy(T::empty()));
        }
        if body.size_hint().lower() > limit as u64 {
            return (body, Spare::not(NotKept::TooLarge));
        }
        record(body, limit, T::rebuild, |recording| {
            T::rebuild(ReplayBody::replay(recording))
        })
    }

    fn cloned<T: Clone>(body: T) -> (T, Spare<T>) {
        (body.clone(), Spare::copy(body))
    }

    #[cfg(feature = "reqwest")]
    fn reqwest_body(body: reqwest::Body, limit: usize) -> (reqwest::Body, Spare<reqwest::Body>) {
        match body.as_bytes() {
            // Bytes in memory: copied, if not too many.
            Some(bytes) if bytes.len() <= limit => {
                let copy = reqwest::Body::from(Bytes::copy_from_slice(bytes));
                (body, Spare::copy(copy))
            }
            Some(_) => (body, Spare::not(NotKept::TooLarge)),
            None => rebuilt(body, limit),
        }
    }

    /// Tries `B` as `T`: on a match, `split` fills `output` and the input
    /// slot is emptied.
    #[inline(always)]
    fn attempt<T: 'static>(
        input: &mut dyn Any,
        output: &mut dyn Any,
        split: impl FnOnce(T) -> (T, Spare<T>),
    ) {
        if let (Some(slot), Some(out)) = (
            input.downcast_mut::<Option<T>>(),
            output.downcast_mut::<Option<(T, Spare<T>)>>(),
        ) && let Some(body) = slot.take()
        {
            *out = Some(split(body));
        }
    }

    #[inline(always)]
    pub(super) fn split<B: 'static>(body: B, limit: usize) -> (B, Spare<B>) {
        let mut input = Some(body);
        let mut output: Option<(B, Spare<B>)> = None;
        {
            let (i, o): (&mut dyn Any, &mut dyn Any) = (&mut input, &mut output);
            attempt(i, o, |()| ((), Spare::copy(())));
            attempt(i, o, cloned::<Full<Bytes>>);
            attempt(i, o, |_: Empty<Bytes>| {
                (Empty::new(), Spare::copy(Empty::new()))
            });
            attempt(i, o, cloned::<String>);
            attempt(i, o, cloned::<Full<&'static [u8]>>);
            attempt(i, o, |b: BoxBody<Bytes, BoxError>| rebuilt(b, limit));
            attempt(i, o, |b: UnsyncBoxBody<Bytes, BoxError>| rebuilt(b, limit));
            #[cfg(feature = "tonic")]
            attempt(i, o, |b: tonic::body::Body| rebuilt(b, limit));
            #[cfg(feature = "axum")]
            attempt(i, o, |b: axum_core::body::Body| rebuilt(b, limit));
            #[cfg(feature = "reqwest")]
            attempt(i, o, |b: reqwest::Body| reqwest_body(b, limit));
        }
        match (output, input) {
            (Some(split), _) => split,
            (None, Some(body)) => (body, Spare::not(NotKept::Unknown)),
            (None, None) => unreachable!("a known body type produced no split"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::convert::Infallible;

    type Boxed = UnsyncBoxBody<Bytes, BoxError>;

    fn stream(chunks: &[&'static str]) -> Boxed {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
            .map_err(|e| match e {})
            .boxed_unsync()
    }

    async fn collect<B>(body: B) -> Result<Bytes, BoxError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        Ok(body.collect().await.map_err(Into::into)?.to_bytes())
    }

    #[tokio::test]
    async fn replay_sends_the_same_bytes_again() {
        let (first, spare) = Standard.replayable(stream(&["hello ", "world"]), 64);
        assert_eq!(collect(first).await.unwrap(), "hello world");
        let second = spare.into_body().expect("within the limit");
        assert_eq!(collect(second).await.unwrap(), "hello world");
    }

    #[tokio::test]
    async fn replay_continues_where_the_first_attempt_stopped() {
        let (mut first, spare) = Standard.replayable(stream(&["a", "b", "c"]), 64);
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "a");
        let second = spare.into_body().expect("nothing over the limit yet");
        // The first attempt may no longer read: the replay owns the body now.
        assert!(first.frame().await.unwrap().is_err());
        assert_eq!(collect(second).await.unwrap(), "abc");
    }

    #[tokio::test]
    async fn body_over_the_limit_is_not_replayed() {
        let (first, spare) = Standard.replayable(stream(&["0123456789", "0123456789"]), 15);
        assert!(spare.can_replay());
        assert_eq!(collect(first).await.unwrap().len(), 20);
        assert!(!spare.can_replay());
        assert_eq!(spare.into_retry().err(), Some(NotKept::Abandoned));
    }

    #[tokio::test]
    async fn replay_keeps_the_exact_size_hint() {
        let body: Boxed = Full::new(Bytes::from_static(b"12345"))
            .map_err(|e| match e {})
            .boxed_unsync();
        let (first, spare) = Standard.replayable(body, 64);
        assert_eq!(first.size_hint().exact(), Some(5));
        collect(first).await.unwrap();
        let second = spare.into_body().unwrap();
        assert_eq!(second.size_hint().exact(), Some(5));
        assert!(!second.is_end_stream());
        assert_eq!(collect(second).await.unwrap(), "12345");
    }

    #[tokio::test]
    async fn clone_bodies_are_copied() {
        let (first, spare) = Standard.replayable(Full::new(Bytes::from_static(b"x")), 0);
        assert_eq!(collect(first).await.unwrap(), "x");
        let second = spare.into_body().unwrap();
        assert_eq!(collect(second).await.unwrap(), "x");
    }

    #[test]
    fn bodies_in_memory_are_cloned() {
        assert!(Standard.replayable(Full::new(&b"x"[..]), 0).1.can_replay());
        assert!(Standard.replayable("x".to_owned(), 0).1.can_replay());
        assert!(Standard.replayable((), 0).1.can_replay());
        assert!(Standard.replayable(Empty::<Bytes>::new(), 0).1.can_replay());
    }

    #[tokio::test]
    async fn an_empty_stream_is_replayed_as_an_empty_body_even_with_no_limit() {
        let (first, spare) = Standard.replayable(Boxed::default(), 0);
        assert_eq!(collect(first).await.unwrap(), "");
        assert_eq!(collect(spare.into_body().unwrap()).await.unwrap(), "");
    }

    /// A body type the default policy does not know.
    struct Unknown(Full<Bytes>);

    impl Body for Unknown {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Pin::new(&mut self.get_mut().0).poll_frame(cx)
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_end_stream()
        }
        fn size_hint(&self) -> SizeHint {
            self.0.size_hint()
        }
    }

    #[tokio::test]
    async fn an_unknown_body_is_sent_once_unless_it_is_recorded() {
        let (first, spare) = Standard.replayable(Unknown(Full::from("abc")), 64);
        assert_eq!(spare.into_retry().err(), Some(NotKept::Unknown));
        assert_eq!(collect(first).await.unwrap(), "abc");

        let (first, spare) = RecordBody.replayable(Unknown(Full::from("abc")), 64);
        assert_eq!(collect(first).await.unwrap(), "abc");
        assert_eq!(collect(spare.into_body().unwrap()).await.unwrap(), "abc");

        let (first, spare) = RecordBody.replayable(Unknown(Full::new(Bytes::new())), 64);
        assert!(first.is_end_stream() && !first.is_capped(), "sent as is");
        let empty = spare.into_body().unwrap();
        assert!(empty.is_end_stream());
        assert_eq!(collect(empty).await.unwrap(), "");

        let once = RecordBody
            .send_once(Request::new(Unknown(Full::from("abc"))))
            .into_body();
        assert!(!once.is_capped());
        assert_eq!(collect(once).await.unwrap(), "abc");
    }

    #[tokio::test]
    async fn a_recorded_body_of_other_data_is_kept_as_bytes() {
        let body = Full::new(std::io::Cursor::new(b"cursor".to_vec()));
        let (first, spare) = RecordBody.replayable(body, 64);
        assert_eq!(collect(first).await.unwrap(), "cursor");
        assert_eq!(collect(spare.into_body().unwrap()).await.unwrap(), "cursor");
    }

    #[test]
    fn clone_body_fn_and_no_replay() {
        let clone = CloneBodyFn::new(|s: &String| (s.len() < 4).then(|| s.clone()));
        assert!(clone.replayable("abc".to_owned(), 0).1.can_replay());
        assert!(!clone.replayable("abcd".to_owned(), 0).1.can_replay());
        let (body, spare) = NoReplay.replayable("abc".to_owned(), 1024);
        assert_eq!(body, "abc");
        assert_eq!(spare.into_retry().err(), Some(NotKept::Off));
    }
}
