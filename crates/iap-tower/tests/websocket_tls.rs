//! `IapLayer` on real connections: a WebSocket through the layer with a
//! hyper client (`hyper::upgrade::on` on the response), and hyper and
//! tonic clients calling an https app of the emulator with its CA through
//! [`RootCertificates`] (HTTP/2 by ALPN).

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use iap_emulator::counter::FAULTS;
use iap_emulator::{App, Emulator, Endpoint, Fault};
use iap_token::source::metadata::MetadataSource;
use iap_token::{IapAuth, RootCertificates};
use iap_tower::IapLayer;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tower::{Service, ServiceBuilder, ServiceExt as _};

fn auth_for(emu: &Emulator, app: &App) -> IapAuth {
    IapAuth::builder()
        .source(MetadataSource::with_host(&emu.metadata_host()).unwrap())
        .audience(app.client_id())
        .allow_origin(app.url().origin().ascii_serialization())
        .build()
        .unwrap()
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A WebSocket handshake through `client`; the socket after `101`.
async fn open<S>(client: &S, app: &App) -> Socket
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<hyper::body::Incoming>> + Clone,
    S::Error: std::fmt::Debug,
{
    let request = Request::get(app.url().join("/ws").unwrap().as_str())
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, generate_key())
        .body(Full::default())
        .unwrap();
    let response = client.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await
}

async fn echo(ws: &mut Socket, message: Message) {
    ws.send(message.clone()).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), message);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_through_the_layer_with_a_refused_first_handshake() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let client = ServiceBuilder::new()
        .layer(IapLayer::new(auth_for(&emu, &app)))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    emu.inject(Endpoint::Gate, Fault::status(401), 1);
    let mut ws = open(&client, &app).await;
    assert_eq!(emu.counter(FAULTS, Endpoint::Gate.name()), 1);
    // The refused token was fetched again (the metadata server answers
    // with its cached token, as on GCE).
    assert_eq!(
        emu.requests(Endpoint::MetadataIdentity),
        2,
        "refreshed once"
    );
    assert_eq!(emu.app_hits(&app), 1);

    echo(&mut ws, Message::text("hello")).await;
    echo(&mut ws, Message::binary(vec![9u8; 1 << 20])).await;
    ws.close(None).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Close(_))) | None => {}
        other => panic!("expected the close answer, got {other:?}"),
    }

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50u32 {
        let (client, app) = (client.clone(), app.clone());
        tasks.spawn(async move {
            let mut ws = open(&client, &app).await;
            echo(&mut ws, Message::text(format!("socket {i}"))).await;
            if i % 2 == 0 {
                ws.close(None).await.unwrap();
            } else {
                ws.send(Message::text("close")).await.unwrap();
                match ws.next().await.unwrap().unwrap() {
                    Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
                    other => panic!("expected the app's close, got {other:?}"),
                }
            }
            loop {
                match ws.next().await {
                    None | Some(Err(WsError::ConnectionClosed)) => break,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => panic!("socket {i}: {e}"),
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(
        emu.requests(Endpoint::MetadataIdentity),
        2,
        "every socket used the cached token"
    );
    assert_eq!(emu.app_hits(&app), 51);
}

fn https_connector(
    roots: &RootCertificates,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(roots.rustls_client_config().unwrap())
        .https_only()
        .enable_http1()
        .enable_http2()
        .build()
}

#[tokio::test(flavor = "multi_thread")]
async fn hyper_reaches_an_https_app_over_h2_with_the_emulators_ca() {
    let emu = Emulator::builder().tls().start().await.unwrap();
    let app = emu.app();
    let roots = RootCertificates::from_pem(emu.ca_pem().unwrap()).unwrap();
    let client = ServiceBuilder::new()
        .layer(IapLayer::new(auth_for(&emu, &app)))
        .service(Client::builder(TokioExecutor::new()).build(https_connector(&roots)));
    let response = client
        .oneshot(
            Request::get(app.url().join("/hyper").unwrap().as_str())
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["path"], "/hyper");
    assert_eq!(echo["version"], "HTTP/2.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_ca_is_refused_by_hyper_with_a_certificate_error() {
    let emu = Emulator::builder().tls().start().await.unwrap();
    let other = Emulator::builder()
        .tls()
        .without_default_app()
        .start()
        .await
        .unwrap();
    let app = emu.app();
    let roots = RootCertificates::from_pem(other.ca_pem().unwrap()).unwrap();
    let client = Client::builder(TokioExecutor::new()).build(https_connector(&roots));
    let err = client
        .request(
            Request::get(app.url().as_str())
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap_err();
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        chain.push_str(&format!(": {e}"));
        source = e.source();
    }
    assert!(chain.contains("certificate"), "{chain}");
    assert_eq!(emu.app_hits(&app), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn tonic_calls_an_https_app_over_h2_by_alpn() {
    use tonic_health::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::pb::health_client::HealthClient;

    let emu = Emulator::builder().tls().start().await.unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let app = emu
        .create_app()
        .serve(tonic::service::Routes::new(health))
        .await
        .unwrap();
    assert_eq!(app.url().scheme(), "https");
    let roots = RootCertificates::from_pem(emu.ca_pem().unwrap()).unwrap();
    // h2 only: ALPN offers nothing else, as gRPC needs.
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(roots.rustls_client_config().unwrap())
        .https_only()
        .enable_http2()
        .build();
    let channel = tonic::transport::Endpoint::from_shared(app.url().to_string())
        .unwrap()
        .connect_with_connector(connector)
        .await
        .unwrap();
    let origin = app.url().as_str().parse().unwrap();
    let mut client = HealthClient::with_origin(
        ServiceBuilder::new()
            .layer(IapLayer::new(auth_for(&emu, &app)))
            .service(channel),
        origin,
    );
    let answer = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(answer.into_inner().status(), Wire::Serving);
    assert_eq!(emu.app_hits(&app), 1);
}
