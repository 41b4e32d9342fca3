//! `iap proxy` with WebSockets and TLS, end to end over real sockets: the
//! handshake gets the token (a refused one is refreshed and the handshake
//! sent again), frames flow both ways until either side closes, many
//! sockets at once, one log line per socket; and an https upstream trusted
//! through `--cacert`.

mod common;

use common::{Sandbox, World, start_proxy, stop_proxy};
use futures_util::{SinkExt as _, StreamExt as _};
use iap_emulator::counter::FAULTS;
use iap_emulator::{Emulator, Endpoint, Fault};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(proxy: &str) -> Socket {
    let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async(format!("ws://{proxy}/ws"), tcp)
        .await
        .expect("WebSocket through the proxy");
    assert_eq!(response.status(), 101);
    ws
}

async fn echo(ws: &mut Socket, message: Message) {
    ws.send(message.clone()).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), message);
}

#[tokio::test(flavor = "multi_thread")]
async fn websockets_through_the_proxy_after_a_refused_first_handshake() {
    let w = World::new().await;
    let (child, proxy) = start_proxy(
        &w.sandbox,
        &[
            "proxy",
            "--target",
            w.app.url().as_str(),
            "--listen",
            "127.0.0.1:0",
            "--audience",
            w.audience(),
            "--credentials",
            w.key(),
        ],
    )
    .await;

    // IAP refuses the first handshake: the proxy refreshes and sends it again.
    w.emu.inject(Endpoint::Gate, Fault::status(401), 1);
    let mut ws = connect(&proxy).await;
    assert_eq!(w.emu.counter(FAULTS, Endpoint::Gate.name()), 1);
    assert_eq!(w.tokens_minted(), 2, "the refused token was replaced");
    assert_eq!(w.emu.app_hits(&w.app), 1);

    echo(&mut ws, Message::text("hello")).await;
    echo(&mut ws, Message::binary(vec![1u8, 2, 3])).await;
    let mib: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    echo(&mut ws, Message::binary(mib.clone())).await;
    echo(&mut ws, Message::text("é".repeat(1 << 19))).await;
    // Client closes.
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}

    // 50 at once, half closed by the client, half by the app.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let proxy = proxy.clone();
        tasks.spawn(async move {
            let mut ws = connect(&proxy).await;
            echo(&mut ws, Message::text(format!("socket {i}"))).await;
            echo(&mut ws, Message::binary(vec![i as u8; 4096])).await;
            if i % 2 == 0 {
                ws.close(None).await.unwrap();
                while let Some(Ok(_)) = ws.next().await {}
            } else {
                ws.send(Message::text("close")).await.unwrap();
                match ws.next().await.unwrap().unwrap() {
                    Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
                    other => panic!("expected the app's close, got {other:?}"),
                }
                while let Some(Ok(_)) = ws.next().await {}
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(w.tokens_minted(), 2, "every socket used the cached token");
    assert_eq!(w.emu.app_hits(&w.app), 51);

    let stderr = stop_proxy(child).await;
    let sockets: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" websocket /ws "))
        .collect();
    assert_eq!(sockets.len(), 51, "{stderr}");
    // The first socket carried over 2 MiB each way; each line names its bytes and duration.
    assert!(
        sockets
            .iter()
            .all(|l| l.contains("ms, ") && l.contains(" bytes up, ")),
        "{stderr}"
    );
    let big = sockets
        .iter()
        .filter_map(|l| {
            let up = l.split(" bytes up").next()?.rsplit(' ').next()?;
            up.parse::<u64>().ok()
        })
        .max()
        .unwrap();
    assert!(big > 2 << 20, "{stderr}");
    // The upgrade requests themselves were not logged as failures.
    assert!(!stderr.contains("upstream upgrade failed"), "{stderr}");
}

/// A sandbox whose metadata server is `emu`'s (plain http, as on GCE) and
/// whose `--cacert` file is `ca` (written in the sandbox).
fn metadata_sandbox(emu: &Emulator, ca: &str) -> (Sandbox, String) {
    let mut sandbox = Sandbox::new();
    sandbox.set("GCE_METADATA_HOST", emu.metadata_host());
    sandbox.set("GCE_METADATA_IP", emu.metadata_host());
    let path = sandbox.path("ca.pem");
    std::fs::write(&path, ca).unwrap();
    (sandbox, path.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_forwards_to_an_https_upstream_trusted_with_cacert() {
    let emu = Emulator::builder().tls().start().await.unwrap();
    let app = emu.app();
    let (sandbox, ca) = metadata_sandbox(&emu, emu.ca_pem().unwrap());
    let (child, proxy) = start_proxy(
        &sandbox,
        &[
            "--cacert",
            &ca,
            "proxy",
            "--target",
            app.url().as_str(),
            "--listen",
            "127.0.0.1:0",
            "--audience",
            app.client_id(),
        ],
    )
    .await;
    let answer = reqwest::Client::new()
        .get(format!("http://{proxy}/over-tls"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let echo: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(echo["path"], "/over-tls");
    assert_eq!(echo["version"], "HTTP/2.0", "h2 by ALPN upstream");
    let headers = &echo["headers"];
    assert_eq!(
        headers["host"].as_str().unwrap_or(""),
        "",
        "h2 carries the authority, not Host"
    );
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], proxy);
    assert_eq!(
        headers["forwarded"],
        format!("for=127.0.0.1;proto=http;host={proxy}")
    );

    // wss upstream: the WebSocket goes over HTTP/1.1 and TLS.
    let mut ws = connect(&proxy).await;
    echo_text(&mut ws).await;
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    stop_proxy(child).await;
}

async fn echo_text(ws: &mut Socket) {
    echo(ws, Message::text("over wss")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_signed_by_another_ca_is_refused_naming_the_certificate_and_host() {
    let emu = Emulator::builder().tls().start().await.unwrap();
    let other = Emulator::builder()
        .tls()
        .without_default_app()
        .start()
        .await
        .unwrap();
    let app = emu.app();
    let (sandbox, ca) = metadata_sandbox(&emu, other.ca_pem().unwrap());
    let out = sandbox
        .run(&[
            "--cacert",
            &ca,
            "curl",
            app.url().as_str(),
            "--audience",
            app.client_id(),
        ])
        .await;
    assert_eq!(out.code(), 1);
    let line = out.error_line();
    assert!(line.contains("certificate"), "{line}");
    assert!(line.contains("127.0.0.1"), "{line}");
    assert_eq!(emu.app_hits(&app), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_trusts_cacert_for_an_https_app() {
    let emu = Emulator::builder().tls().start().await.unwrap();
    let app = emu.app();
    let (sandbox, ca) = metadata_sandbox(&emu, emu.ca_pem().unwrap());
    let body = sandbox
        .ok(&[
            "--cacert",
            &ca,
            "curl",
            app.url().join("/tls").unwrap().as_str(),
            "--audience",
            app.client_id(),
        ])
        .await;
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["path"], "/tls");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoints_over_https_trust_cacert_or_ssl_cert_file() {
    let emu = Emulator::builder().tls().start().await.unwrap();
    let app = emu.app();
    let sa = emu.create_service_account("tls-cli").await.unwrap();
    let (mut sandbox, ca) = metadata_sandbox(&emu, emu.ca_pem().unwrap());
    let key = sandbox.path("key.json");
    sa.write_key_file(&key).unwrap();
    let key = key.to_str().unwrap().to_owned();
    let args = [
        "token",
        "--audience",
        app.client_id(),
        "--credentials",
        &key,
    ];

    // The system's roots alone: the https token endpoint is refused.
    let out = sandbox.run(&args).await;
    assert_eq!(out.code(), 1);
    let line = out.error_line();
    assert!(line.contains("certificate"), "{line}");
    assert!(line.contains("127.0.0.1"), "{line}");
    assert_eq!(emu.id_tokens_issued(app.client_id()), 0);

    let mut with_ca = vec!["--cacert", ca.as_str()];
    with_ca.extend_from_slice(&args);
    let token = sandbox.ok(&with_ca).await;
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
    assert_eq!(emu.id_tokens_issued(app.client_id()), 1);

    // SSL_CERT_FILE, which the platform verifier reads on Linux.
    sandbox.set("SSL_CERT_FILE", ca.clone());
    let token = sandbox.ok(&args).await;
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
    assert_eq!(emu.id_tokens_issued(app.client_id()), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn cacert_reaches_the_nested_endpoints_of_an_impersonated_service_account_file() {
    let emu = Emulator::builder().tls().start().await.unwrap();
    let app = emu.app();
    let (sandbox, ca) = metadata_sandbox(&emu, emu.ca_pem().unwrap());
    let files = emu.write_adc_files(sandbox.path("adc")).await.unwrap();
    let file = files
        .impersonated_from_service_account
        .to_str()
        .unwrap()
        .to_owned();
    let args = [
        "token",
        "--audience",
        app.client_id(),
        "--credentials",
        &file,
    ];

    // The system's roots alone: the source credential's https token
    // endpoint is refused.
    let out = sandbox.run(&args).await;
    assert_eq!(out.code(), 1);
    assert!(
        out.error_line().contains("certificate"),
        "{}",
        out.error_line()
    );
    assert_eq!(emu.id_tokens_issued(app.client_id()), 0);

    // With --cacert, the key's token endpoint and IAM's generateIdToken
    // (both https) are trusted.
    let mut with_ca = vec!["--cacert", ca.as_str()];
    with_ca.extend_from_slice(&args);
    let token = sandbox.ok(&with_ca).await;
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
    assert_eq!(emu.id_tokens_issued(app.client_id()), 1);
}
