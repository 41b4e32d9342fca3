//! A hyper-util client calling an app behind IAP, through `IapLayer`.
//!
//! Runs offline against the emulator started in-process (see
//! `reqwest_client.rs`). `cargo run --example hyper_client`

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use iap::{IapAuth, IapLayer};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (emulator, _adc) = common::emulator_as_google().await?;
    let app = emulator.app();

    let auth = IapAuth::for_app(app.url().as_str(), app.client_id()).await?;
    let client = ServiceBuilder::new()
        .layer(IapLayer::new(auth))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    let request = http::Request::post(app.url().join("/items")?.as_str())
        .body(Full::from("{\"name\":\"x\"}"))?;
    let response = client.oneshot(request).await?;
    let status = response.status();
    let echo: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
    println!(
        "{status}: the app got {} bytes from {}",
        echo["body_len"], echo["headers"]["x-goog-authenticated-user-email"]
    );
    Ok(())
}
