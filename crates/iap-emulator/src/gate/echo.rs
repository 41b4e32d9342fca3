//! The built-in echo app: what a backend behind IAP sees, as JSON.
//!
//! Every request is answered `200` with
//!
//! ```json
//! {
//!   "method": "GET",
//!   "path": "/hello",
//!   "query": "a=1",
//!   "version": "HTTP/1.1",
//!   "headers": { "x-goog-authenticated-user-email": "accounts.google.com:alice@example.com", "...": "..." },
//!   "body_len": 0
//! }
//! ```
//!
//! `query` is `null` when the URL has none; a header sent several times is
//! one entry, its values joined with `", "`; the body is read to the end and
//! only its length reported.
//!
//! `/status/{code}` answers with that status and the same JSON, as the app's
//! own answer (no `X-Goog-IAP-Generated-Response`): `/status/401` is how a
//! test gets "the app's own 401" through a valid token.

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http_body_util::BodyExt as _;

/// The echo app's routes.
pub(crate) fn router() -> Router {
    Router::new()
        .route("/status/{code}", any(status))
        .fallback(echo)
}

async fn echo(req: Request<Body>) -> Response {
    (StatusCode::OK, axum::Json(describe(req).await)).into_response()
}

async fn status(Path(code): Path<u16>, req: Request<Body>) -> Response {
    let Ok(status) = StatusCode::from_u16(code) else {
        return (StatusCode::BAD_REQUEST, "status must be 100..=999").into_response();
    };
    (status, axum::Json(describe(req).await)).into_response()
}

async fn describe(req: Request<Body>) -> serde_json::Value {
    let (parts, mut body) = req.into_parts();
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let joined = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(name.as_str().to_owned(), joined.into());
    }
    // Counted frame by frame so that large uploads are not buffered.
    let mut body_len: u64 = 0;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            body_len += data.len() as u64;
        }
    }
    serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
    })
}
