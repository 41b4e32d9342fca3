//! `IapVerifyLayer` and the axum extractor in real servers: an axum router
//! and a tonic gRPC server behind the emulator's IAP gate, over loopback
//! HTTP.

mod common;

use axum::routing::get;
use axum::{Extension, Router};
use common::World;
use iap_verify::{IapIdentity, IapVerifier, IapVerifyLayer};
use serde_json::{Value, json};

/// `GET /whoami`: the identity the layer put in the extensions.
async fn whoami(Extension(who): Extension<IapIdentity>) -> axum::Json<Value> {
    axum::Json(json!({"email": who.email(), "sub": who.subject()}))
}

/// `GET /extract`: the same through the extractor.
async fn extract(who: IapIdentity) -> String {
    who.email().unwrap_or_default().to_owned()
}

/// `GET /maybe`: the optional extractor.
async fn maybe(who: Option<IapIdentity>) -> String {
    who.map_or_else(
        || "nobody".to_owned(),
        |w| w.email().unwrap_or_default().to_owned(),
    )
}

/// Serves `router` on a loopback port of its own; its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

fn verified_router(verifier: IapVerifier) -> Router {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/extract", get(extract))
        .layer(IapVerifyLayer::new(verifier))
}

#[tokio::test]
async fn an_axum_app_behind_the_gate_sees_the_callers_identity() {
    let w = World::start().await;
    let backend = w
        .emu
        .create_app()
        .hosted_at("http://unused.invalid/".parse().unwrap());
    let verifier = IapVerifier::builder()
        .audience(backend.assertion_audience())
        .jwks_url(w.emu.iap_jwks_url())
        .build()
        .unwrap();
    // The gate in front of the router, as IAP in front of a service.
    let router = verified_router(verifier).layer(w.emu.gate_layer(&backend));
    let url = serve(router).await;
    let token = w
        .emu
        .mint_id_token(backend.client_id(), "alice@example.com");
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let who: Value = http
            .get(format!("{url}/whoami"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(who["email"], "alice@example.com");
        assert!(
            who["sub"]
                .as_str()
                .unwrap()
                .starts_with("accounts.google.com:")
        );
    }
    let email = http
        .get(format!("{url}/extract"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(email, "alice@example.com");
    assert_eq!(w.key_fetches(), 1);
}

#[tokio::test]
async fn refused_requests_get_an_empty_401_and_never_reach_the_app() {
    let w = World::start().await;
    let url = serve(verified_router(w.verifier())).await;
    let http = reqwest::Client::new();
    let expired = {
        w.emu.set_clock_offset(-3600);
        let a = w.assertion_via_gate(&w.app, "alice@example.com").await;
        w.emu.set_clock_offset(0);
        a
    };
    let good = w.assertion_via_gate(&w.app, "alice@example.com").await;
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no header", vec![]),
        // IAP's unsigned headers alone are never trusted.
        (
            "user headers alone",
            vec![
                (
                    "x-goog-authenticated-user-email",
                    "accounts.google.com:alice@example.com".into(),
                ),
                (
                    "x-goog-authenticated-user-id",
                    "accounts.google.com:1".into(),
                ),
            ],
        ),
        (
            "garbage",
            vec![("x-goog-iap-jwt-assertion", "garbage".into())],
        ),
        ("expired", vec![("x-goog-iap-jwt-assertion", expired)]),
        (
            "twice",
            vec![
                ("x-goog-iap-jwt-assertion", good.clone()),
                ("x-goog-iap-jwt-assertion", good.clone()),
            ],
        ),
    ];
    for (name, headers) in cases {
        let mut request = http.get(format!("{url}/whoami"));
        for (header, value) in headers {
            request = request.header(header, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{name}");
        assert_eq!(response.text().await.unwrap(), "", "{name}: no detail");
    }
    // The good one alone passes.
    let response = http
        .get(format!("{url}/whoami"))
        .header("x-goog-iap-jwt-assertion", &good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_key_server_that_cannot_be_reached_answers_503() {
    let w = World::start().await;
    let url = serve(verified_router(w.verifier())).await;
    let good = w.assertion_via_gate(&w.app, "alice@example.com").await;
    w.emu.inject(
        iap_emulator::Endpoint::IapJwks,
        iap_emulator::Fault::status(500),
        1,
    );
    let response = reqwest::Client::new()
        .get(format!("{url}/whoami"))
        .header("x-goog-iap-jwt-assertion", &good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn the_extractor_verifies_by_itself_without_the_layer() {
    let w = World::start().await;
    let router = Router::new()
        .route("/extract", get(extract))
        .route("/maybe", get(maybe))
        .layer(Extension(w.verifier()));
    let url = serve(router).await;
    let http = reqwest::Client::new();
    let good = w.assertion_via_gate(&w.app, "alice@example.com").await;
    let call = |path: &str, assertion: Option<&str>| {
        let mut request = http.get(format!("{url}{path}"));
        if let Some(assertion) = assertion {
            request = request.header("x-goog-iap-jwt-assertion", assertion);
        }
        request.send()
    };
    let ok = call("/extract", Some(&good)).await.unwrap();
    assert_eq!(ok.text().await.unwrap(), "alice@example.com");
    assert_eq!(call("/extract", None).await.unwrap().status(), 401);
    assert_eq!(call("/extract", Some("x.y.z")).await.unwrap().status(), 401);
    let nobody = call("/maybe", None).await.unwrap();
    assert_eq!(nobody.text().await.unwrap(), "nobody");
    let somebody = call("/maybe", Some(&good)).await.unwrap();
    assert_eq!(somebody.text().await.unwrap(), "alice@example.com");
    assert_eq!(call("/maybe", Some("x.y.z")).await.unwrap().status(), 401);

    // Neither a layer nor a verifier: a server error, not a pass.
    let bare = serve(Router::new().route("/extract", get(extract))).await;
    let response = http
        .get(format!("{bare}/extract"))
        .header("x-goog-iap-jwt-assertion", &good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
}

mod grpc {
    use super::*;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Channel, Server};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    async fn check(channel: Channel, token: Option<String>) -> Result<i32, tonic::Status> {
        let mut client =
            HealthClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
                if let Some(token) = &token {
                    let value = format!("Bearer {token}").parse().unwrap();
                    req.metadata_mut().insert("authorization", value);
                }
                Ok(req)
            });
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status)
    }

    #[tokio::test]
    async fn a_tonic_server_behind_the_gate_verifies_assertions() {
        let w = World::start().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = w
            .emu
            .create_app()
            .hosted_at(format!("http://{addr}/").parse().unwrap());
        let verifier = IapVerifier::builder()
            .audience(backend.assertion_audience())
            .jwks_url(w.emu.iap_jwks_url())
            .build()
            .unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        // Behind the gate: what IAP does, then what the service does.
        let gated = tokio::spawn(
            Server::builder()
                .layer(w.emu.gate_layer(&backend))
                .layer(IapVerifyLayer::new(verifier.clone()))
                .add_service(health.clone())
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        // The same service reached directly, around IAP.
        let direct_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let direct_addr = direct_listener.local_addr().unwrap();
        let direct = tokio::spawn(
            Server::builder()
                .layer(IapVerifyLayer::new(verifier))
                .add_service(health)
                .serve_with_incoming(TcpIncoming::from(direct_listener)),
        );
        let connect = |addr: std::net::SocketAddr| async move {
            Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap()
        };

        let token = w.emu.mint_id_token(backend.client_id(), "svc@example.com");
        let status = check(connect(addr).await, Some(token.clone()))
            .await
            .unwrap();
        assert_eq!(status, ServingStatus::Serving as i32);

        let error = check(connect(direct_addr).await, Some(token))
            .await
            .unwrap_err();
        assert_eq!(error.code(), tonic::Code::Unauthenticated);
        assert_eq!(w.key_fetches(), 1);
        gated.abort();
        direct.abort();
    }
}
