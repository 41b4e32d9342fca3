//! An axum handler that calls an app behind IAP: the client (with
//! `IapMiddleware`) lives in the router's state, so every request shares
//! one token cache.
//!
//! Runs offline against the emulator started in-process (see
//! `reqwest_client.rs`). `cargo run --example axum_handler`

mod common;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use iap::IapAuth;
use iap::reqwest::IapMiddleware;
use reqwest_middleware::ClientWithMiddleware;

#[derive(Clone)]
struct Backend {
    client: ClientWithMiddleware,
    url: reqwest::Url,
}

/// `GET /whoami`: asks the IAP app who IAP says we are.
async fn whoami(State(backend): State<Backend>) -> Result<String, (StatusCode, String)> {
    let bad_gateway = |e: reqwest_middleware::Error| (StatusCode::BAD_GATEWAY, e.to_string());
    let echo: serde_json::Value = backend
        .client
        .get(backend.url.join("/whoami").expect("a valid path"))
        .send()
        .await
        .map_err(bad_gateway)?
        .json()
        .await
        .map_err(|e| bad_gateway(e.into()))?;
    Ok(echo["headers"]["x-goog-authenticated-user-email"].to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (emulator, _adc) = common::emulator_as_google().await?;
    let app = emulator.app();
    let auth = IapAuth::for_app(app.url().as_str(), app.client_id()).await?;
    let client = reqwest_middleware::ClientBuilder::new(iap::reqwest::client_builder().build()?)
        .with(IapMiddleware::new(auth))
        .build();

    let router = axum::Router::new()
        .route("/whoami", get(whoami))
        .with_state(Backend {
            client,
            url: app.url().clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    // Call our own handler once, as a user of this service would.
    let answer = reqwest::get(format!("http://{addr}/whoami"))
        .await?
        .text()
        .await?;
    println!("the handler reached the IAP app as {answer}");
    server.abort();
    Ok(())
}
