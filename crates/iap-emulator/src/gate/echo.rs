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
//! A WebSocket upgrade (`GET` with `Upgrade: websocket`, any path; the
//! emulator hands out `/ws`, [`App::ws_url`](crate::App::ws_url)) is
//! accepted instead, and every text or binary message is sent back as it
//! came, until the client closes; the text message `close` makes the app
//! close first (status 1000, reason `bye`), for tests of a server-side
//! close.
//!
//! `/status/{code}` answers with that status and the same JSON, as the app's
//! own answer (no `X-Goog-IAP-Generated-Response`): `/status/401` is how a
//! test gets "the app's own 401" through a valid token.

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts as _, Path};
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
    if is_websocket_upgrade(&req) {
        let (mut parts, _) = req.into_parts();
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade.on_upgrade(echo_socket),
            Err(rejection) => rejection.into_response(),
        };
    }
    (StatusCode::OK, axum::Json(describe(req).await)).into_response()
}

fn is_websocket_upgrade(req: &Request<Body>) -> bool {
    req.headers()
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Sends every data message back until either side closes. The loop goes
/// on reading after a close frame either way: that read sends the pending
/// close reply (tungstenite queues it) and then ends the stream, so the
/// client sees a complete closing handshake rather than a reset.
async fn echo_socket(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(text) if text.as_str() == "close" => Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "bye".into(),
            })),
            Message::Text(_) | Message::Binary(_) => message,
            // tungstenite answers pings and closes itself.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => continue,
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
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
