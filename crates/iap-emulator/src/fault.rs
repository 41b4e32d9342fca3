//! Fault injection: make the next N answers of one endpoint fail, or a
//! share of them at random.
//!
//! A [`Fault`] is queued for an [`Endpoint`] with
//! [`Emulator::inject`](crate::Emulator::inject) (or `POST /_emulator/faults`);
//! each request to that endpoint takes one queued fault, in order, before the
//! endpoint runs. [`Emulator::inject_at_rate`](crate::Emulator::inject_at_rate)
//! (or `POST /_emulator/faults/rate`) instead faults each request with a
//! probability, drawing the fault from a list: a soak's steady weather
//! rather than one storm. Queued faults go first.
//!
//! Errors are rendered in the endpoint's own dialect: OAuth's
//! `{"error","error_description"}` for the token and STS endpoints, Google
//! API's `{"error":{"code","message","status"}}` for IAM Credentials, plain
//! text for the metadata server and the IAP gate.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use iap_emulator::{Emulator, Endpoint, Fault};
//! let emu = Emulator::start().await?;
//! // The next two token requests get a 503 with Google's error JSON.
//! emu.inject(Endpoint::Token, Fault::status(503), 2);
//! # let answer = reqwest::Client::new().post(emu.token_uri()).send().await?;
//! # assert_eq!(answer.status(), 503);
//! # assert_eq!(emu.pending_faults(Endpoint::Token), 1);
//! // After them, one request in ten gets a 429 or has its connection reset.
//! emu.inject_at_rate(Endpoint::Token, 0.1, [Fault::status(429), Fault::Reset]);
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::endpoint::{Endpoint, Fault};
use crate::server::ConnControl;
use crate::state::State;

// The rendering side of an endpoint, beside the dialects it picks from.
impl Endpoint {
    fn dialect(self) -> Dialect {
        match self {
            Endpoint::Token | Endpoint::Sts | Endpoint::Authorize => Dialect::OAuth,
            Endpoint::GenerateIdToken | Endpoint::GenerateAccessToken | Endpoint::SignJwt => {
                Dialect::GoogleApi
            }
            Endpoint::Jwks | Endpoint::CertsV1 | Endpoint::Oidc | Endpoint::IapJwks => {
                Dialect::GoogleApi
            }
            Endpoint::MetadataRoot
            | Endpoint::MetadataIdentity
            | Endpoint::MetadataToken
            | Endpoint::MetadataOther => Dialect::Metadata,
            Endpoint::Gate => Dialect::Text,
        }
    }
}

#[derive(Clone, Copy)]
enum Dialect {
    OAuth,
    GoogleApi,
    Metadata,
    Text,
}

fn api_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

fn oauth_error(code: u16) -> &'static str {
    match code {
        400 => "invalid_request",
        401 => "invalid_client",
        403 => "access_denied",
        429 => "rate_limit_exceeded",
        500 => "internal_failure",
        503 | 504 => "temporarily_unavailable",
        _ => "server_error",
    }
}

fn reason(code: u16) -> &'static str {
    StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// OAuth error JSON `{"error","error_description"}` (token endpoint, STS).
pub(crate) fn oauth_error_response(status: u16, error: &str, description: &str) -> Response {
    let body = serde_json::json!({"error": error, "error_description": description});
    json_response(status, body.to_string())
}

/// Google API error JSON `{"error":{"code","message","status"}}` (IAM, ...).
pub(crate) fn api_error_response(status: u16, api_status_name: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {
        "code": status,
        "message": message,
        "status": api_status_name,
    }});
    json_response(status, body.to_string())
}

/// Same as [`api_error_response`] with the canonical status for the code.
pub(crate) fn api_error_for(status: u16, message: &str) -> Response {
    api_error_response(status, api_status(status), message)
}

/// A plain-text answer carrying `Metadata-Flavor: Google`.
pub(crate) fn metadata_text(status: u16, text: impl Into<String>) -> Response {
    let mut resp = text_response(status, text.into());
    resp.headers_mut()
        .insert("metadata-flavor", HeaderValue::from_static("Google"));
    resp
}

fn text_response(status: u16, text: String) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

pub(crate) fn json_response(status: u16, body: String) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Renders a fault that answers (status or malformed) in the endpoint's
/// dialect. `Delay` and `Reset` are not answers: `None`.
pub(crate) fn render(endpoint: Endpoint, fault: &Fault) -> Option<Response> {
    let dialect = endpoint.dialect();
    match fault {
        Fault::Status {
            status,
            error,
            message,
        } => {
            let status = *status;
            Some(match dialect {
                Dialect::OAuth => oauth_error_response(
                    status,
                    error.as_deref().unwrap_or(oauth_error(status)),
                    message.as_deref().unwrap_or(reason(status)),
                ),
                Dialect::GoogleApi => api_error_response(
                    status,
                    error.as_deref().unwrap_or(api_status(status)),
                    message.as_deref().unwrap_or(reason(status)),
                ),
                Dialect::Metadata => {
                    metadata_text(status, message.as_deref().unwrap_or(reason(status)))
                }
                Dialect::Text => text_response(
                    status,
                    message.as_deref().unwrap_or(reason(status)).to_owned(),
                ),
            })
        }
        Fault::Malformed => Some(match dialect {
            Dialect::Metadata | Dialect::Text => metadata_text(200, "\u{0}\u{1}not-a-jwt"),
            Dialect::OAuth | Dialect::GoogleApi => {
                json_response(200, "{\"access_token\": \"ya29.trunc".to_owned())
            }
        }),
        Fault::Delay { .. } | Fault::Reset => None,
    }
}

/// Counts the request for `endpoint` and applies its next queued fault (or
/// one drawn at its random rate).
///
/// Returns `Some(response)` when the fault answers in place of the
/// endpoint; `None` when the endpoint should run (no fault, or after a
/// delay). A reset never returns: the connection is dropped.
pub(crate) async fn intercept(
    state: &State,
    endpoint: Endpoint,
    conn: Option<&ConnControl>,
) -> Option<Response> {
    state.count(crate::counter::REQUESTS, endpoint.name());
    let fault = state.take_fault(endpoint)?;
    state.count(crate::counter::FAULTS, endpoint.name());
    state.count(&crate::counter::faults_by(&fault), endpoint.name());
    match &fault {
        Fault::Delay { millis } => {
            tokio::time::sleep(Duration::from_millis(*millis)).await;
            None
        }
        Fault::Reset => {
            if let Some(c) = conn {
                c.reset();
                std::future::pending::<()>().await;
            }
            // Without a connection handle (a gate layer in someone else's
            // server) the closest thing is an empty 502.
            Some(
                Response::builder()
                    .status(StatusCode::BAD_GATEWAY)
                    .body(Body::empty())
                    .unwrap_or_default(),
            )
        }
        other => render(endpoint, other),
    }
}

/// A tower layer that runs [`intercept`] for one endpoint before the inner
/// service: counts `requests` and applies queued faults.
///
/// The state comes from the request's extensions, where the emulator's
/// server puts it.
#[derive(Clone)]
pub(crate) struct FaultLayer {
    endpoint: Endpoint,
}

impl FaultLayer {
    /// A layer for `endpoint`, taking the state from the request extensions.
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        FaultLayer { endpoint }
    }
}

impl<S> tower_layer::Layer<S> for FaultLayer {
    type Service = FaultService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`FaultLayer`].
#[derive(Clone)]
pub(crate) struct FaultService<S> {
    inner: S,
    layer: FaultLayer,
}

impl<S> tower_service::Service<Request> for FaultService<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // Take the service that was driven to readiness; leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let endpoint = self.layer.endpoint;
        let state = req.extensions().get::<Arc<State>>().cloned();
        let conn = req.extensions().get::<ConnControl>().cloned();
        Box::pin(async move {
            if let Some(state) = &state
                && let Some(resp) = intercept(state, endpoint, conn.as_ref()).await
            {
                return Ok(resp);
            }
            let resp = inner.call(req).await?;
            if let Some(state) = &state
                && (resp.status().is_client_error() || resp.status().is_server_error())
            {
                state.count(crate::counter::ERRORS, endpoint.name());
            }
            Ok(resp)
        })
    }
}
