//! An axum service that sits behind IAP: `IapVerifyLayer` checks the
//! `x-goog-iap-jwt-assertion` header IAP signs, and the handler answers
//! with the caller's email.
//!
//! Runs offline: the emulator's IAP gate stands in front of the service
//! (as `iap emulator --front http://127.0.0.1:PORT` would), and a client
//! calls through it with an ID token.
//! `cargo run --example axum_behind_iap`
//!
//! On Google Cloud, build the verifier with your audience
//! (`iap::verify::audience::backend_service(PROJECT_NUMBER, BACKEND_ID)`,
//! `app_engine(..)` or `cloud_run(..)`) and leave `jwks_url` at its
//! default, Google's key set.

use axum::routing::get;
use axum::{Extension, Router};
use iap::verify::{IapIdentity, IapVerifier, IapVerifyLayer};

/// `GET /`: who IAP says the caller is.
async fn hello(Extension(caller): Extension<IapIdentity>) -> String {
    format!("hello {}", caller.email().unwrap_or("(no email)"))
}

/// The service: every route behind the verifier.
fn service(verifier: IapVerifier) -> Router {
    Router::new()
        .route("/", get(hello))
        .layer(IapVerifyLayer::new(verifier))
}

/// Starts the emulator and the service behind its gate, calls it once as
/// `alice@example.com` and once around IAP; the two answers.
pub async fn run() -> Result<(String, u16), Box<dyn std::error::Error + Send + Sync>> {
    let emulator = iap_emulator::Emulator::start().await?;

    // Our service on a port of its own.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let service_url: reqwest::Url = format!("http://{}/", listener.local_addr()?).parse()?;
    // IAP in front of it, and the audience IAP signs for it.
    let app = emulator.create_app().proxy_to(service_url.clone()).await?;
    let verifier = IapVerifier::builder()
        .audience(app.assertion_audience())
        .jwks_url(emulator.iap_jwks_url())
        .build()?;
    let server = tokio::spawn(async move { axum::serve(listener, service(verifier)).await });

    // A user of the app, through IAP.
    let token = emulator.mint_id_token(app.client_id(), "alice@example.com");
    let through_iap = iap::reqwest::client_builder()
        .build()?
        .get(app.url().clone())
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    // Someone who found the service's own address, around IAP.
    let around_iap = reqwest::get(service_url).await?.status().as_u16();
    server.abort();
    Ok((through_iap, around_iap))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (through_iap, around_iap) = run().await?;
    println!("through IAP: {through_iap}");
    println!("around IAP: HTTP {around_iap}");
    Ok(())
}
