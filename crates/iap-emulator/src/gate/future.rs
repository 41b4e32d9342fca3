//! The response future of [`IapGate`](super::IapGate).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::Buf as _;
use http::header::{CONNECTION, HeaderValue};
use http::{Request, Response, Version};
use http_body_util::Either;
use pin_project_lite::pin_project;

/// The response body of an [`IapGate`](super::IapGate): the app's own body
/// ([`Left`](http_body_util::Either::Left)) or the gate's answer
/// ([`Right`](http_body_util::Either::Right)).
pub type GateBody<B> = http_body_util::Either<B, axum::body::Body>;

/// How much of a request body the gate reads (and throws away) before it
/// answers in the app's place: 1 MiB.
///
/// An HTTP/1.1 client may still be sending its body when the answer comes;
/// a server that answers and closes the connection with the body unread
/// resets it, and the client can lose the answer to a write error (a proxy
/// then reports 502 instead of IAP's 401). Google's front end reads what the
/// client sends before it answers (`docs/iap-gate.md`, "Early answers"), so
/// the gate does too, up to this bound; beyond it, it answers with
/// `Connection: close`, as a front end does with an upload it will not take. Bodies of HTTP/2 requests (which end a
/// stream without closing the connection) and of requests that wait for
/// `100 Continue` (which send no body unless asked) are not read.
pub const MAX_DRAINED_BODY: usize = 1024 * 1024;

pin_project! {
    /// Resolves to the app's response, or to the answer IAP gave in its place.
    ///
    /// `B` is the request body: when the gate answers itself, it reads the
    /// body first (up to [`MAX_DRAINED_BODY`]).
    pub struct ResponseFuture<F, B> {
        // An injected delay, waited out before anything else.
        delay: Option<Pin<Box<tokio::time::Sleep>>>,
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        App { #[pin] future: F },
        Gate {
            response: Option<Response<Body>>,
            // The request body still to be read before the answer.
            #[pin]
            unread: Option<B>,
            // Bytes of it read so far.
            read: usize,
        },
        // The connection is being reset under this request.
        Hang,
    }
}

impl<F, B> ResponseFuture<F, B> {
    /// The request went through to the app.
    pub(crate) fn app(future: F, delay: Option<std::time::Duration>) -> Self {
        Self {
            delay: delay.map(|d| Box::pin(tokio::time::sleep(d))),
            kind: Kind::App { future },
        }
    }

    /// The gate answered itself: `response` once `request`'s body is read
    /// (see [`MAX_DRAINED_BODY`] for which bodies are).
    pub(crate) fn gate(
        response: Response<Body>,
        delay: Option<std::time::Duration>,
        request: Request<B>,
    ) -> Self {
        let drain = request.version() < Version::HTTP_2 && !expects_continue(&request);
        Self {
            delay: delay.map(|d| Box::pin(tokio::time::sleep(d))),
            kind: Kind::Gate {
                response: Some(response),
                unread: drain.then(|| request.into_body()),
                read: 0,
            },
        }
    }

    /// Never resolves: the connection is dropped by its owner.
    pub(crate) fn hang() -> Self {
        Self {
            delay: None,
            kind: Kind::Hang,
        }
    }
}

/// Whether the client waits for `100 Continue` before it sends the body.
fn expects_continue<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

impl<F, B, ResBody, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    B: http_body::Body,
{
    type Output = Result<Response<GateBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(delay) = this.delay {
            ready!(delay.as_mut().poll(cx));
            *this.delay = None;
        }
        match this.kind.project() {
            KindProj::App { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(Either::Left)))
            }
            KindProj::Gate {
                response,
                mut unread,
                read,
            } => {
                let mut too_large = false;
                while let Some(body) = unread.as_mut().as_pin_mut() {
                    if body.is_end_stream() {
                        unread.set(None);
                        break;
                    }
                    match ready!(body.poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            *read += frame.data_ref().map_or(0, |data| data.remaining());
                            if *read > MAX_DRAINED_BODY {
                                too_large = true;
                                unread.set(None);
                            }
                        }
                        // The end, or a client gone: answer (to no one, maybe).
                        None | Some(Err(_)) => unread.set(None),
                    }
                }
                // Polling again after completion breaks the Future contract;
                // answer an empty 500 rather than panic.
                let mut response = response.take().unwrap_or_else(|| {
                    let mut r = Response::new(Body::empty());
                    *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    r
                });
                if too_large {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Poll::Ready(Ok(response.map(Either::Right)))
            }
            KindProj::Hang => Poll::Pending,
        }
    }
}
