//! A reqwest client calling an app behind IAP, through `IapMiddleware`.
//!
//! Runs offline against the emulator started in-process: it stands in for
//! Google (Application Default Credentials point at one of its service
//! accounts), its echo app for your IAP-protected app. On Google Cloud the
//! same `IapAuth::for_app(APP_URL, IAP_CLIENT_ID)` finds real credentials.
//!
//! `cargo run --example reqwest_client`

mod common;

use iap::IapAuth;
use iap::reqwest::IapMiddleware;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (emulator, _adc) = common::emulator_as_google().await?;
    let app = emulator.app();

    // The app's URL (only its origin gets the token) and its IAP OAuth client ID.
    let auth = IapAuth::for_app(app.url().as_str(), app.client_id()).await?;
    // A client that does not follow IAP's sign-in redirect, so a refusal is seen.
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
