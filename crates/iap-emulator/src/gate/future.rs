//! The response future of [`IapGate`](super::IapGate).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use http::Response;
use http_body_util::Either;
use pin_project_lite::pin_project;

use super::GateBody;

pin_project! {
    /// Resolves to the app's response, or to the answer IAP gave in its place.
    pub struct ResponseFuture<F> {
        // An injected delay, waited out before anything else.
        delay: Option<Pin<Box<tokio::time::Sleep>>>,
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        App { #[pin] future: F },
        Gate { response: Option<Response<Body>> },
        // The connection is being reset under this request.
        Hang,
    }
}

impl<F> ResponseFuture<F> {
    /// The request went through to the app.
    pub(crate) fn app(future: F, delay: Option<std::time::Duration>) -> Self {
        Self {
            delay: delay.map(|d| Box::pin(tokio::time::sleep(d))),
            kind: Kind::App { future },
        }
    }

    /// The gate answered itself.
    pub(crate) fn gate(response: Response<Body>, delay: Option<std::time::Duration>) -> Self {
        Self {
            delay: delay.map(|d| Box::pin(tokio::time::sleep(d))),
            kind: Kind::Gate {
                response: Some(response),
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

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<GateBody<B>>, E>;

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
            KindProj::Gate { response } => {
                // Polling again after completion breaks the Future contract;
                // answer an empty 500 rather than panic.
                let response = response.take().unwrap_or_else(|| {
                    let mut r = Response::new(Body::empty());
                    *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    r
                });
                Poll::Ready(Ok(response.map(Either::Right)))
            }
            KindProj::Hang => Poll::Pending,
        }
    }
}
