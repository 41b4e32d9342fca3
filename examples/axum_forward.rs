//! An axum handler that forwards its requests, axum's `Body` and all, to an
//! app behind IAP through a hyper-util client with `IapLayer`. A request
//! whose token IAP refuses (here: revoked in the emulator) is sent again
//! with a fresh token, its body included: the default replay policy records
//! axum's body (up to 64 KiB) and rebuilds it for the retry.
//!
//! Runs offline against the emulator started in-process.
//! `cargo run --example axum_forward`

mod common;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use iap::tower::IapService;
use iap::{IapAuth, IapLayer};
use tower::{Layer, ServiceExt};

#[derive(Clone)]
struct Upstream {
    client: IapService<Client<HttpConnector, Body>>,
    url: reqwest::Url,
}

/// Every path: the same request, sent on to the IAP app.
async fn forward(State(upstream): State<Upstream>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = match upstream.url.join(path).map(|u| u.as_str().parse()) {
        Ok(Ok(uri)) => uri,
        _ => return (StatusCode::BAD_REQUEST, "cannot forward").into_response(),
    };
    parts.headers.remove(http::header::HOST);
    match upstream
        .client
        .oneshot(Request::from_parts(parts, body))
        .await
    {
        Ok(response) => response.map(Body::new),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (emulator, _adc) = common::emulator_as_google().await?;
    let app = emulator.app();
    let auth = IapAuth::for_app(app.url().as_str(), app.client_id()).await?;
    let client = IapLayer::new(auth.clone())
        .layer(Client::builder(TokioExecutor::new()).build_http::<Body>());
    let router = axum::Router::new().fallback(forward).with_state(Upstream {
        client,
        url: app.url().clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    // The token the layer holds stops working (as after a revocation).
    let token = auth.token_for(&app.url().as_str().parse()?).await?;
    if let Some(token) = token {
        emulator.revoke(token.as_str());
    }

    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/items"))
        .body("{\"name\":\"x\"}")
        .send()
        .await?;
    let status = answer.status();
    let echo: serde_json::Value = answer.json().await?;
    println!(
        "{status}: the app got {} bytes after IAP refused {} token(s); tokens minted: {}",
        echo["body_len"],
        emulator.gate_401s(&app),
        emulator.id_tokens_issued(app.client_id()),
    );
    server.abort();
    Ok(())
}
