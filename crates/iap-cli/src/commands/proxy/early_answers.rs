//! Answers that come before the request body is fully sent.
//!
//! A server may answer while a request body is still arriving (IAP refusing
//! a token, an app refusing an upload) and then close the connection. Two
//! things turn such a valid answer into a failure, one on each side of the
//! proxy, and this module undoes both:
//!
//! - Upstream, hyper's client reports the write error (broken pipe, reset)
//!   that the closing server causes, and never reads the answer already
//!   waiting in the socket: the proxy would answer 502. [`AnswerFirst`]
//!   connections hold such a write error back until reading has ended, so
//!   hyper reads the answer first; the error then ends the connection as
//!   before.
//! - Downstream, hyper's server closes the client's connection when the
//!   body still arriving on it is dropped unread, and a client still
//!   writing can lose the proxy's answer the same way. [`DrainedBody`] reads
//!   such a rest (up to [`DRAIN_LIMIT`]) and throws it away, as Google's
//!   front end does (`docs/iap-gate.md`, "Early answers").

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes};
use http::Uri;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use iap_tower::BoxError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How much of a request body the proxy still reads, once nothing upstream
/// wants it, before it gives up and lets the client's connection close.
pub(crate) const DRAIN_LIMIT: usize = 1024 * 1024;

/// hyper-util's TCP connector (any scheme: TLS goes on top), whose
/// connections read a server's answer before reporting a failed write.
#[derive(Clone, Debug)]
pub(crate) struct AnswerFirst(HttpConnector);

impl AnswerFirst {
    pub(crate) fn new() -> Self {
        let mut http = HttpConnector::new();
        // The TLS connector on top checks the scheme.
        http.enforce_http(false);
        AnswerFirst(http)
    }
}

impl tower_service::Service<Uri> for AnswerFirst {
    type Response = TokioIo<AnswerFirstStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            Ok(TokioIo::new(AnswerFirstStream {
                tcp,
                held: None,
                read_ended: false,
            }))
        })
    }
}

/// A TCP connection that holds a write error back until reading has ended
/// (end of stream or a read error), so what the peer sent before it went
/// away is read first.
#[derive(Debug)]
pub(crate) struct AnswerFirstStream {
    tcp: TcpStream,
    /// The write error held back.
    held: Option<io::Error>,
    read_ended: bool,
}

/// The errors of writing to a peer that has closed (or reset) the
/// connection, which may have answered first.
fn peer_went_away(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

impl AnswerFirstStream {
    /// What a write returns: `written` as is, unless it failed because the
    /// peer went away and there may still be something to read.
    fn hold_back<T>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match written {
            Poll::Ready(Err(e)) if peer_went_away(&e) && !self.read_ended => {
                self.held = Some(e);
                // Once, so hyper's loop reads again; from then on its reads
                // wake it.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }

    /// A write error held back: pending while reading goes on, then the error.
    fn held(&mut self) -> Option<Poll<io::Error>> {
        let e = self.held.take()?;
        if self.read_ended {
            Some(Poll::Ready(e))
        } else {
            self.held = Some(e);
            Some(Poll::Pending)
        }
    }
}

impl Connection for AnswerFirstStream {
    fn connected(&self) -> Connected {
        self.tcp.connected()
    }
}

impl AsyncRead for AnswerFirstStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (before, room) = (buf.filled().len(), buf.remaining() > 0);
        let read = Pin::new(&mut this.tcp).poll_read(cx, buf);
        match &read {
            Poll::Ready(Ok(())) if room && buf.filled().len() == before => this.read_ended = true,
            Poll::Ready(Err(_)) => this.read_ended = true,
            _ => {}
        }
        read
    }
}

impl AsyncWrite for AnswerFirstStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(held) = this.held() {
            return held.map(Err);
        }
        let written = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.hold_back(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(held) = this.held() {
            return held.map(Err);
        }
        let written = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.hold_back(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(held) = this.held() {
            return held.map(Err);
        }
        let flushed = Pin::new(&mut this.tcp).poll_flush(cx);
        this.hold_back(cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// A client's request body that, dropped before its end (nothing upstream
/// wants the rest), is read on to its end in a task of its own, up to
/// [`DRAIN_LIMIT`], so the client's connection is not closed under a client
/// still sending.
#[derive(Debug)]
pub(crate) struct DrainedBody {
    body: Option<Incoming>,
    end: BodyEnd,
}

/// Whether a [`DrainedBody`] has been read to its end (by whoever holds it).
#[derive(Clone, Debug)]
pub(crate) struct BodyEnd(Arc<AtomicBool>);

impl BodyEnd {
    pub(crate) fn reached(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

impl DrainedBody {
    pub(crate) fn new(body: Incoming) -> Self {
        let end = BodyEnd(Arc::new(AtomicBool::new(body.is_end_stream())));
        DrainedBody {
            body: Some(body),
            end,
        }
    }

    /// Tells, later, whether the body was read to its end.
    pub(crate) fn end(&self) -> BodyEnd {
        self.end.clone()
    }
}

impl Body for DrainedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = frame {
            this.end.set();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.end.reached() || self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for DrainedBody {
    fn drop(&mut self) {
        if self.is_end_stream() {
            return;
        }
        let (Some(body), Ok(runtime)) = (self.body.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(drain(body, self.end.clone()));
    }
}

/// Reads `body` to its end, or until [`DRAIN_LIMIT`] bytes, and throws it away.
async fn drain(mut body: Incoming, end: BodyEnd) {
    let mut read = 0;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, |data| data.remaining());
        if read > DRAIN_LIMIT {
            tracing::debug!(
                "client still sending after {DRAIN_LIMIT} bytes nobody wanted: closing"
            );
            return;
        }
    }
    end.set();
}
