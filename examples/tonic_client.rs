//! A tonic gRPC client (tonic-health's `HealthClient`) calling a server
//! behind IAP, over a `Channel` wrapped with `IapLayer`. Unary calls are
//! retried with a fresh token if IAP refuses one (the request body is
//! replayed).
//!
//! Runs offline: the emulator puts its IAP gate in front of a tonic-health
//! server. `cargo run --example tonic_client`

mod common;

use iap::{IapAuth, IapLayer};
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (emulator, _adc) = common::emulator_as_google().await?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let app = emulator
        .create_app()
        .serve(tonic::service::Routes::new(health))
        .await?;

    let auth = IapAuth::for_app(app.url().as_str(), app.client_id()).await?;
    let channel = Endpoint::from_shared(app.url().to_string())?
        .connect()
        .await?;
    let channel = tower::ServiceBuilder::new()
        .layer(IapLayer::new(auth))
        .service(channel);
    // A Channel adds the origin below the layer; `with_origin` puts it on the
    // requests the layer sees, for its host scoping.
    let mut client = HealthClient::with_origin(channel, app.url().as_str().parse()?);

    let answer = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    println!("health: {:?}", answer.into_inner().status());
    Ok(())
}
