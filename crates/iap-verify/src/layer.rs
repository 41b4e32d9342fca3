//! [`IapVerifyLayer`]: a tower layer for servers behind IAP.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::verifier::ASSERTION_HEADER;
use crate::{IapVerifier, VerifyError};

/// A tower layer for servers behind IAP: every request must carry a valid `x-goog-iap-jwt-assertion`; the
/// caller's [`IapIdentity`](crate::IapIdentity) then travels in the request's extensions.
/// Refused requests get an empty `401` (the reason goes to the log via
/// `tracing`, not to the client); when IAP's keys cannot be fetched at all,
/// `503`. To a gRPC request (`content-type: application/grpc...`) the
/// answer also carries `grpc-status` (16 `UNAUTHENTICATED`, 14
/// `UNAVAILABLE`), so a tonic client sees the right code.
///
/// The `x-goog-authenticated-user-email` / `-id` headers IAP adds beside the
/// assertion are never read: only the signed assertion counts.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let emulator = iap_emulator::Emulator::start().await?;
/// # let app = emulator.app();
/// use axum::{Extension, Router, routing::get};
/// use iap_verify::{IapIdentity, IapVerifier, IapVerifyLayer};
/// use tower::ServiceExt as _;
///
/// let verifier = IapVerifier::builder()
///     .audience(app.assertion_audience())
///     .jwks_url(emulator.iap_jwks_url())
///     .build()?;
/// let router = Router::new()
///     .route(
///         "/",
///         get(|Extension(who): Extension<IapIdentity>| async move {
///             who.email().unwrap_or_default().to_owned()
///         }),
///     )
///     .layer(IapVerifyLayer::new(verifier));
///
/// let request = http::Request::get("/")
///     .header("x-goog-iap-jwt-assertion", emulator.mint_assertion(&app, "alice@example.com"))
///     .body(axum::body::Body::empty())?;
/// let response = router.clone().oneshot(request).await?;
/// assert_eq!(response.status(), 200);
///
/// // Without the assertion (or with a forged user header alone): 401.
/// let request = http::Request::get("/")
///     .header("x-goog-authenticated-user-email", "accounts.google.com:alice@example.com")
///     .body(axum::body::Body::empty())?;
/// assert_eq!(router.oneshot(request).await?.status(), 401);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct IapVerifyLayer {
    verifier: IapVerifier,
}

impl IapVerifyLayer {
    /// A layer checking requests with `verifier`.
    pub fn new(verifier: IapVerifier) -> Self {
        Self { verifier }
    }
}

impl<S> Layer<S> for IapVerifyLayer {
    type Service = IapVerify<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IapVerify::new(inner, self.verifier.clone())
    }
}

/// The service [`IapVerifyLayer`] makes.
#[derive(Debug, Clone)]
pub struct IapVerify<S> {
    inner: S,
    verifier: IapVerifier,
}

impl<S> IapVerify<S> {
    /// `inner` behind a check with `verifier`.
    pub fn new(inner: S, verifier: IapVerifier) -> Self {
        Self { inner, verifier }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for IapVerify<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let grpc = is_grpc(&req);
        let mut values = req.headers().get_all(ASSERTION_HEADER).iter();
        let value = match (values.next(), values.next()) {
            (Some(value), None) => value,
            (None, _) => return ResponseFuture::ready(refusal(&VerifyError::Missing, grpc)),
            (Some(_), Some(_)) => {
                let twice = VerifyError::Malformed("more than one x-goog-iap-jwt-assertion");
                return ResponseFuture::ready(refusal(&twice, grpc));
            }
        };
        if let Some(identity) = self.verifier.remembered(value.as_bytes()) {
            req.extensions_mut().insert(identity);
            return ResponseFuture::inner(self.inner.call(req));
        }
        // The first time this assertion is seen: verify it (keys may need
        // fetching), then call the service that was made ready.
        let value = value.clone();
        let verifier = self.verifier.clone();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::verifying(Box::pin(async move {
            match verifier.verify(value.as_bytes()).await {
                Ok(identity) => {
                    req.extensions_mut().insert(identity);
                    inner.call(req).await
                }
                Err(error) => Ok(refusal(&error, grpc)),
            }
        }))
    }
}

type Verifying<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// The response future of [`IapVerify`].
    pub struct ResponseFuture<F: Future> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F: Future> {
        // A remembered assertion: the inner service's own future.
        Inner { #[pin] future: F },
        // A new assertion: verify, then call.
        Verifying { future: Verifying<F::Output> },
        // Refused before reaching the service.
        Ready { output: Option<F::Output> },
    }
}

impl<F: Future> ResponseFuture<F> {
    fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    fn verifying(future: Verifying<F::Output>) -> Self {
        Self {
            kind: Kind::Verifying { future },
        }
    }
}

impl<F, B, E> ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    fn ready(response: Response<B>) -> Self {
        Self {
            kind: Kind::Ready {
                output: Some(Ok(response)),
            },
        }
    }
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Verifying { future } => future.as_mut().poll(cx),
            KindProj::Ready { output } => match output.take() {
                Some(output) => Poll::Ready(output),
                None => panic!("ResponseFuture polled after completion"),
            },
        }
    }
}

impl<F: Future> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// The answer to a refused request: 401 without detail (503 when the
/// assertion could not be judged), the reason logged.
pub(crate) fn refusal<B: Default>(error: &VerifyError, grpc: bool) -> Response<B> {
    let (status, grpc_status) = if error.is_transient() {
        tracing::warn!(error = %error, "iap-verify: cannot verify IAP's assertion");
        (StatusCode::SERVICE_UNAVAILABLE, "14")
    } else {
        tracing::info!(check = error.check(), error = %error, "iap-verify: refused a request");
        (StatusCode::UNAUTHORIZED, "16")
    };
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    if grpc {
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from_static(grpc_status));
    }
    response
}
