//! Sending a request body twice: what lets [`IapService`](crate::IapService)
//! retry a request whose token IAP refused.
//!
//! A retry needs a second copy of the request body. Bodies that are cheap to
//! clone (`Full<Bytes>`, `Empty`, `String`, `()`) are simply cloned. Streaming
//! bodies (tonic's `Body`, boxed bodies) go through a [`ReplayBody`]: while the
//! first attempt is sent, the bytes it reads are kept, up to a limit (64 KiB
//! by default); a retry sends the kept bytes again and then continues with
//! whatever the first attempt had not read yet. A body that outgrows the
//! limit drops its copy and is not retried. This is the "replay body" of
//! linkerd2-proxy, reduced to the one retry IAP needs.
//!
//! Body types opt in by implementing [`ReplayableBody`]:
//!
//! ```
//! use iap_tower::replay::{ReplayableBody, Spare};
//!
//! /// A body of our own that is cheap to clone.
//! #[derive(Clone)]
//! struct Json(bytes::Bytes);
//!
//! impl ReplayableBody for Json {
//!     fn replayable(self, _limit: usize) -> (Self, Spare<Self>) {
//!         (self.clone(), Spare::copy(self))
//!     }
//! }
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// A boxed error, the error type of [`ReplayBody`] (and of the service).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// How many bytes of a streaming request body are kept for a retry unless
/// configured otherwise: 64 KiB, plenty for gRPC unary calls and JSON APIs.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// A request body type that [`IapService`](crate::IapService) knows how to
/// send a second time.
///
/// Implemented for the common cheap-to-clone bodies (`()`, `String`,
/// [`Full`](http_body_util::Full), [`Empty`](http_body_util::Empty)), for
/// boxed bodies with [`BoxError`] errors, and for `tonic::body::Body` (feature
/// `tonic`, on by default). Implement it for your own body types with
/// [`Spare::copy`], [`Spare::record`] or [`Spare::none`].
pub trait ReplayableBody: Sized {
    /// Splits `self` into the body to send now and the spare to send on a
    /// retry. `limit` is how many bytes a recording may keep.
    fn replayable(self, limit: usize) -> (Self, Spare<Self>);
}

/// The second copy of a request body, kept until the first attempt's
/// response says whether a retry is needed.
pub struct Spare<B>(SpareKind<B>);

enum SpareKind<B> {
    None,
    Copy(B),
    Recorded {
        replay: ReplayBody<B>,
        wrap: fn(ReplayBody<B>) -> B,
    },
}

impl<B> Spare<B> {
    /// No second copy: the request is never retried.
    pub fn none() -> Self {
        Spare(SpareKind::None)
    }

    /// A ready second copy (for bodies that are cheap to clone).
    pub fn copy(body: B) -> Self {
        Spare(SpareKind::Copy(body))
    }

    /// Records `body` as the first attempt sends it, keeping up to `limit`
    /// bytes. `wrap` turns a [`ReplayBody`] back into the body type (for
    /// tonic: `tonic::body::Body::new`); it runs for the first attempt now,
    /// and for the retry only when there is one.
    pub fn record(body: B, limit: usize, wrap: fn(ReplayBody<B>) -> B) -> (B, Spare<B>)
    where
        B: Body<Data = Bytes> + Unpin,
    {
        // Known to be too large: not worth recording.
        if body.size_hint().lower() > limit as u64 {
            return (body, Spare::none());
        }
        let (first, replay) = ReplayBody::pair(body, limit);
        (wrap(first), Spare(SpareKind::Recorded { replay, wrap }))
    }

    /// The body for the retry, or `None` when the request cannot be sent
    /// again (no copy, or the recording outgrew its limit or failed). From
    /// here on the first attempt's body can no longer be read.
    pub fn into_body(self) -> Option<B> {
        match self.0 {
            SpareKind::None => None,
            SpareKind::Copy(body) => Some(body),
            SpareKind::Recorded { replay, wrap } => replay.take_over().then(|| wrap(replay)),
        }
    }

    /// Whether this spare could still produce a body (it may yet outgrow its limit).
    pub fn can_replay(&self) -> bool {
        match &self.0 {
            SpareKind::None => false,
            SpareKind::Copy(_) => true,
            SpareKind::Recorded { replay, .. } => !replay.lock().capped,
        }
    }
}

impl<B> fmt::Debug for Spare<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0 {
            SpareKind::None => "none",
            SpareKind::Copy(_) => "copy",
            SpareKind::Recorded { .. } => "recorded",
        };
        f.debug_tuple("Spare").field(&kind).finish()
    }
}

/// A request body shared by two attempts of one request: the first attempt
/// reads the original body and keeps what it read (up to a limit); the
/// replay sends that again, then reads on where the first stopped.
///
/// Made by [`Spare::record`]. Once the replay has taken over, the first
/// attempt's body fails with an error instead of stealing data from it.
pub struct ReplayBody<B> {
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
    fn pair(inner: B, limit: usize) -> (Self, Self) {
        let shared = Arc::new(Mutex::new(Shared {
            inner,
            limit,
            chunks: Vec::new(),
            kept: 0,
            trailers: None,
            capped: false,
            done: false,
            reader: Role::First,
        }));
        let handle = |shared, role| ReplayBody {
            shared,
            role,
            started: false,
            next: 0,
            kept_left: 0,
            trailers_sent: false,
        };
        (
            handle(shared.clone(), Role::First),
            handle(shared, Role::Replay),
        )
    }

    fn lock(&self) -> MutexGuard<'_, Shared<B>> {
        // A panic while holding the lock leaves consistent data (every update is a single step).
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands the original body to the replay if the recording is complete
    /// so far; the first attempt can no longer read it afterwards.
    fn take_over(&self) -> bool {
        debug_assert_eq!(self.role, Role::Replay);
        let mut shared = self.lock();
        if shared.capped {
            return false;
        }
        shared.reader = Role::Replay;
        true
    }

    /// Whether the recording gave up (the body outgrew the limit or failed).
    pub fn is_capped(&self) -> bool {
        self.lock().capped
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.lock();
        f.debug_struct("ReplayBody")
            .field("role", &self.role)
            .field("kept", &shared.kept)
            .field("limit", &shared.limit)
            .field("capped", &shared.capped)
            .field("done", &shared.done)
            .finish()
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

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut guard = this.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let shared = &mut *guard;
        match this.role {
            Role::First => {
                if shared.reader != Role::First {
                    return Poll::Ready(Some(Err(Box::new(Superseded))));
                }
                let polled = Pin::new(&mut shared.inner).poll_frame(cx);
                match polled {
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
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.lock();
        match self.role {
            Role::First => {
                shared.reader == Role::First && (shared.done || shared.inner.is_end_stream())
            }
            Role::Replay => {
                let kept_pending = if self.started {
                    self.kept_left
                } else {
                    shared.kept
                };
                kept_pending == 0
                    && self.next >= shared.chunks.len()
                    && if shared.done {
                        self.trailers_sent || shared.trailers.is_none()
                    } else {
                        shared.inner.is_end_stream()
                    }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.lock();
        let rest = if shared.done {
            SizeHint::with_exact(0)
        } else {
            shared.inner.size_hint()
        };
        let kept = match self.role {
            Role::First => 0,
            Role::Replay if self.started => self.kept_left,
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

impl ReplayableBody for () {
    fn replayable(self, _limit: usize) -> (Self, Spare<Self>) {
        ((), Spare::copy(()))
    }
}

impl ReplayableBody for String {
    fn replayable(self, _limit: usize) -> (Self, Spare<Self>) {
        (self.clone(), Spare::copy(self))
    }
}

impl<D: Clone> ReplayableBody for http_body_util::Full<D> {
    fn replayable(self, _limit: usize) -> (Self, Spare<Self>) {
        (self.clone(), Spare::copy(self))
    }
}

impl<D> ReplayableBody for http_body_util::Empty<D> {
    fn replayable(self, _limit: usize) -> (Self, Spare<Self>) {
        (http_body_util::Empty::new(), Spare::copy(self))
    }
}

impl ReplayableBody for http_body_util::combinators::BoxBody<Bytes, BoxError> {
    fn replayable(self, limit: usize) -> (Self, Spare<Self>) {
        Spare::record(self, limit, http_body_util::combinators::BoxBody::new)
    }
}

impl ReplayableBody for http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError> {
    fn replayable(self, limit: usize) -> (Self, Spare<Self>) {
        Spare::record(self, limit, http_body_util::combinators::UnsyncBoxBody::new)
    }
}

/// gRPC calls: the encoded messages are recorded, so unary calls (and short
/// streams) through a `Channel` are retried.
#[cfg(feature = "tonic")]
impl ReplayableBody for tonic::body::Body {
    fn replayable(self, limit: usize) -> (Self, Spare<Self>) {
        if self.is_end_stream() {
            return (
                tonic::body::Body::empty(),
                Spare::copy(tonic::body::Body::empty()),
            );
        }
        Spare::record(self, limit, tonic::body::Body::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::convert::Infallible;

    type Boxed = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

    fn stream(chunks: &[&'static str]) -> Boxed {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
            .map_err(|e| match e {})
            .boxed_unsync()
    }

    async fn collect(body: Boxed) -> Result<Bytes, BoxError> {
        Ok(body.collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn replay_sends_the_same_bytes_again() {
        let (first, spare) = stream(&["hello ", "world"]).replayable(64);
        assert_eq!(collect(first).await.unwrap(), "hello world");
        let second = spare.into_body().expect("within the limit");
        assert_eq!(collect(second).await.unwrap(), "hello world");
    }

    #[tokio::test]
    async fn replay_continues_where_the_first_attempt_stopped() {
        let (mut first, spare) = stream(&["a", "b", "c"]).replayable(64);
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "a");
        let second = spare.into_body().expect("nothing over the limit yet");
        // The first attempt may no longer read: the replay owns the body now.
        assert!(first.frame().await.unwrap().is_err());
        assert_eq!(collect(second).await.unwrap(), "abc");
    }

    #[tokio::test]
    async fn body_over_the_limit_is_not_replayed() {
        let (first, spare) = stream(&["0123456789", "0123456789"]).replayable(15);
        assert!(spare.can_replay());
        assert_eq!(collect(first).await.unwrap().len(), 20);
        assert!(!spare.can_replay());
        assert!(spare.into_body().is_none());
    }

    #[tokio::test]
    async fn replay_keeps_the_exact_size_hint() {
        let body = http_body_util::Full::new(Bytes::from_static(b"12345"))
            .map_err(|e| match e {})
            .boxed_unsync();
        let (first, spare) = Boxed::replayable(body, 64);
        assert_eq!(first.size_hint().exact(), Some(5));
        collect(first).await.unwrap();
        let second = spare.into_body().unwrap();
        assert_eq!(second.size_hint().exact(), Some(5));
        assert!(!second.is_end_stream());
        assert_eq!(collect(second).await.unwrap(), "12345");
    }

    #[tokio::test]
    async fn clone_bodies_are_copied() {
        let (first, spare) = http_body_util::Full::new(Bytes::from_static(b"x")).replayable(0);
        assert_eq!(first.collect().await.unwrap().to_bytes(), "x");
        let second = spare.into_body().unwrap();
        assert_eq!(second.collect().await.unwrap().to_bytes(), "x");
    }
}
