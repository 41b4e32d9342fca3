//! `IapIdentity` as an axum extractor (feature `axum`).

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

use crate::verifier::ASSERTION_HEADER;
use crate::{IapIdentity, IapVerifier, VerifyError};

/// Why the [`IapIdentity`] extractor refused a request: `401` without
/// detail (the reason is logged), `503` when IAP's keys could not be
/// fetched, `500` when there is neither a layer nor a verifier to check
/// with.
///
/// Behind [`IapVerifyLayer`](crate::IapVerifyLayer) the extractor takes the
/// identity the layer verified. Without the layer it verifies the header
/// itself with the [`IapVerifier`] found in the request's extensions
/// (`.layer(axum::Extension(verifier))`). `Option<IapIdentity>` is `None`
/// when the request has no assertion at all; a present but invalid one is
/// still refused.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let emulator = iap_emulator::Emulator::start().await?;
/// # let app = emulator.app();
/// use axum::{Extension, Router, routing::get};
/// use iap_verify::{IapIdentity, IapVerifier};
/// use tower::ServiceExt as _;
///
/// async fn hello(who: Option<IapIdentity>) -> String {
///     match who {
///         Some(who) => format!("hello {}", who.email().unwrap_or("?")),
///         None => "hello stranger".into(),
///     }
/// }
///
/// let verifier = IapVerifier::builder()
///     .audience(app.assertion_audience())
///     .jwks_url(emulator.iap_jwks_url())
///     .build()?;
/// let router = Router::new()
///     .route("/", get(hello))
///     .layer(Extension(verifier));
/// let request = http::Request::get("/")
///     .header("x-goog-iap-jwt-assertion", emulator.mint_assertion(&app, "alice@example.com"))
///     .body(axum::body::Body::empty())?;
/// let response = router.oneshot(request).await?;
/// assert_eq!(response.status(), 200);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct IapRejection {
    error: Option<VerifyError>,
}

impl IapRejection {
    /// The verification error; `None` when no [`IapVerifier`] was in the
    /// request's extensions.
    pub fn error(&self) -> Option<&VerifyError> {
        self.error.as_ref()
    }
}

impl std::fmt::Display for IapRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            Some(error) => error.fmt(f),
            None => f.write_str(
                "no IapVerifier: add IapVerifyLayer or an Extension(IapVerifier) to the router",
            ),
        }
    }
}

impl std::error::Error for IapRejection {}

impl IntoResponse for IapRejection {
    fn into_response(self) -> Response {
        match &self.error {
            Some(error) => crate::layer::refusal(error, false),
            None => {
                tracing::error!("iap-verify: {self}");
                let mut response = Response::default();
                *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                response
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IapIdentity {
    type Rejection = IapRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match <IapIdentity as OptionalFromRequestParts<S>>::from_request_parts(parts, state).await {
            Ok(Some(identity)) => Ok(identity),
            Ok(None) => Err(IapRejection {
                error: Some(VerifyError::Missing),
            }),
            Err(rejection) => Err(rejection),
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IapIdentity {
    type Rejection = IapRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        if let Some(identity) = parts.extensions.get::<IapIdentity>() {
            return Ok(Some(identity.clone()));
        }
        let Some(value) = parts.headers.get(ASSERTION_HEADER) else {
            return Ok(None);
        };
        let Some(verifier) = parts.extensions.get::<IapVerifier>() else {
            return Err(IapRejection { error: None });
        };
        verifier
            .verify(value.as_bytes())
            .await
            .map(Some)
            .map_err(|error| IapRejection { error: Some(error) })
    }
}
