//! The emulator over https (its own CA, HTTP/2 by ALPN) and its WebSocket
//! echo app behind the gate, over real loopback connections.

use std::sync::Arc;

use futures_util::{SinkExt as _, StreamExt as _};
use iap_emulator::Emulator;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

fn ca_cert(emu: &Emulator) -> reqwest::Certificate {
    reqwest::Certificate::from_pem(emu.ca_pem().expect("a TLS emulator").as_bytes()).unwrap()
}

fn client_trusting(emu: &Emulator) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([ca_cert(emu)])
        .build()
        .unwrap()
}

/// A rustls client configuration trusting the emulator's CA, HTTP/1.1 only
/// (a WebSocket handshake is an HTTP/1.1 upgrade).
fn rustls_config(emu: &Emulator) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(emu.ca_pem().unwrap().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

#[tokio::test]
async fn every_url_is_https_and_apps_answer_over_h2_with_the_emulators_ca() {
    let emu = Emulator::builder().tls().start().await.unwrap();
    assert!(emu.is_tls());
    assert!(emu.url().starts_with("https://127.0.0.1:"));
    assert!(emu.token_uri().starts_with("https://"));
    let app = emu.app();
    assert_eq!(app.url().scheme(), "https");
    assert_eq!(app.ws_url().scheme(), "wss");
    assert_eq!(app.ws_url().path(), "/ws");
    let sa = emu.create_service_account("tls").await.unwrap();
    let key: serde_json::Value = serde_json::from_str(sa.key_json()).unwrap();
    assert_eq!(key["token_uri"], emu.token_uri());

    let client = client_trusting(&emu);
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    let answer = client
        .get(app.url().join("/hello").unwrap())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    let echo: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(echo["version"], "HTTP/2.0");

    // The identity endpoints too.
    let jwks = client.get(emu.jwks_url()).send().await.unwrap();
    assert_eq!(jwks.status(), 200);
    assert_eq!(jwks.version(), reqwest::Version::HTTP_2);
}

#[tokio::test]
async fn the_metadata_server_stays_plain_http_on_a_tls_emulator() {
    let emu = Emulator::builder().tls().start().await.unwrap();
    let answer = reqwest::Client::new()
        .get(format!(
            "http://{}/computeMetadata/v1/instance/service-accounts/default/email",
            emu.metadata_host()
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .ends_with("gserviceaccount.com")
    );
}

#[tokio::test]
async fn another_ca_is_refused_with_a_certificate_error() {
    let emu = Emulator::builder().tls().start().await.unwrap();
    let other = Emulator::builder()
        .tls()
        .without_default_app()
        .start()
        .await
        .unwrap();
    let err = client_trusting(&other)
        .get(emu.app().url().clone())
        .send()
        .await
        .unwrap_err();
    let chain = error_chain(&err);
    assert!(chain.contains("certificate"), "{chain}");
    // Nothing reached the app.
    assert_eq!(emu.app_hits(&emu.app()), 0);
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[tokio::test]
async fn the_websocket_echo_checks_the_handshake_and_echoes_until_closed() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let url = app.ws_url();
    assert_eq!(url.scheme(), "ws");
    let addr = app.local_addr().unwrap();

    // No token: IAP refuses the handshake.
    let stream = TcpStream::connect(addr).await.unwrap();
    let refused = tokio_tungstenite::client_async(url.as_str(), stream).await;
    match refused {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected IAP's 401, got {other:?}"),
    }
    assert_eq!(emu.gate_401s_for(&app, "empty_token"), 1);

    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(emu.app_hits(&app), 1);

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    let big = vec![7u8; 1 << 20];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    // Messages after the handshake are not checked again.
    assert_eq!(emu.app_hits(&app), 1);

    // The app closes first on "close".
    ws.send(Message::text("close")).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Normal);
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!("expected the app's close, got {other:?}"),
    }
}

#[tokio::test]
async fn wss_echo_over_the_emulators_ca() {
    let emu = Emulator::builder().tls().start().await.unwrap();
    let app = emu.app();
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    let tcp = TcpStream::connect(app.local_addr().unwrap()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(rustls_config(&emu))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let mut request = app.ws_url().as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    ws.send(Message::text("over tls")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over tls"));
    ws.close(None).await.unwrap();
    // The app answers the close; the stream then ends.
    while let Some(Ok(_)) = ws.next().await {}
}
