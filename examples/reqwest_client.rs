//! A reqwest client calling an app behind IAP, through `IapMiddleware`.
//!
//! Runs offline against the emulator started in-process: its metadata server
//! stands in for Google Cloud's, its echo app for your IAP-protected app. On
//! Google Cloud, build the `IapAuth` with `IapAuth::for_app(APP_URL, IAP_CLIENT_ID)`.
//!
//! `cargo run --example reqwest_client`

use iap::IapAuth;
use iap::reqwest::IapMiddleware;
use iap::token::source::metadata::MetadataSource;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let emulator = iap_emulator::Emulator::start().await?;
    let app = emulator.app();

    let auth = IapAuth::builder()
        .source(MetadataSource::with_host(&emulator.metadata_host())?)
        .audience(app.client_id()) // the IAP OAuth client ID
        .allow_origin(app.url().origin().ascii_serialization()) // no token for anyone else
        .build()?;
    let client = reqwest_middleware::ClientBuilder::new(iap::reqwest::client_builder().build()?)
        .with(IapMiddleware::new(auth))
        .build();

    let echo: serde_json::Value = client
        .get(app.url().join("/hello")?)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!(
        "IAP let us in as {}",
        echo["headers"]["x-goog-authenticated-user-email"]
    );
    Ok(())
}
