//! `iap emulator` end to end: its export lines point clients at a working emulator.

mod common;

use std::collections::HashMap;

use common::{Sandbox, interrupt, stdout_lines, wait_for_line};

#[tokio::test(flavor = "multi_thread")]
async fn export_lines_point_at_a_working_emulator_until_ctrl_c() {
    let sandbox = Sandbox::new();
    let mut child = sandbox
        .command(&["emulator"])
        .spawn()
        .expect("spawn iap emulator");
    let mut out = stdout_lines(child.stdout.take().unwrap());
    let mut vars = HashMap::new();
    while vars.len() < 7 {
        let (k, v) = wait_for_line(&mut out, |l| {
            let (k, v) = l.strip_prefix("export ")?.split_once('=')?;
            Some((k.to_owned(), v.trim_matches('\'').to_owned()))
        })
        .await;
        vars.insert(k, v);
    }
    let metadata = reqwest::get(format!("http://{}/", vars["GCE_METADATA_HOST"]))
        .await
        .unwrap();
    assert_eq!(metadata.headers()["metadata-flavor"], "Google");

    // A client configured from the lines alone reaches the gated app.
    let mut client = Sandbox::new();
    client.set(
        "GOOGLE_APPLICATION_CREDENTIALS",
        vars["GOOGLE_APPLICATION_CREDENTIALS"].clone(),
    );
    let body = client
        .ok(&[
            "curl",
            &vars["IAP_EMULATOR_APP_URL"],
            "--audience",
            &vars["IAP_EMULATOR_AUDIENCE"],
        ])
        .await;
    assert!(body.contains("iap-emulator-runner@"), "{body}");

    interrupt(child.id().unwrap());
    let status = tokio::time::timeout(common::COMMAND_TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert!(
        !std::path::Path::new(&vars["GOOGLE_APPLICATION_CREDENTIALS"]).exists(),
        "key file removed on exit"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn front_puts_iap_in_front_of_a_local_app_and_as_signs_tokenless_requests_in() {
    // The developer's app: answers with the assertion it received.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_url = format!("http://{}/", listener.local_addr().unwrap());
    let router = axum::Router::new().fallback(|headers: http::HeaderMap| async move {
        headers
            .get("x-goog-iap-jwt-assertion")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    });
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let sandbox = Sandbox::new();
    let mut child = sandbox
        .command(&["emulator", "--front", &app_url, "--as", "alice@example.com"])
        .spawn()
        .expect("spawn iap emulator");
    let mut out = stdout_lines(child.stdout.take().unwrap());
    let mut vars = HashMap::new();
    while !vars.contains_key("IAP_EMULATOR_FRONT_ASSERTION_AUDIENCE") {
        let (k, v) = wait_for_line(&mut out, |l| {
            let (k, v) = l.strip_prefix("export ")?.split_once('=')?;
            Some((k.to_owned(), v.trim_matches('\'').to_owned()))
        })
        .await;
        vars.insert(k, v);
    }

    // A browser: no token at all, let through as alice with a signed assertion.
    let assertion = reqwest::get(&vars["IAP_EMULATOR_FRONT_URL"])
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    let verifier = iap_verify::IapVerifier::builder()
        .audience(&vars["IAP_EMULATOR_FRONT_ASSERTION_AUDIENCE"])
        .jwks_url(&vars["IAP_EMULATOR_IAP_JWKS_URL"])
        .build()
        .unwrap();
    let who = verifier.verify(&assertion).await.unwrap();
    assert_eq!(who.email(), Some("alice@example.com"));

    // A bad token is still judged by IAP.
    let refused = reqwest::Client::new()
        .get(&vars["IAP_EMULATOR_FRONT_URL"])
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["x-goog-iap-generated-response"], "true");

    interrupt(child.id().unwrap());
    let status = tokio::time::timeout(common::COMMAND_TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    server.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn as_needs_front() {
    let out = Sandbox::new()
        .run(&["emulator", "--as", "alice@example.com"])
        .await;
    assert_eq!(out.code(), 2, "{out:#?}");
    assert!(out.stderr.contains("--front"), "{out:#?}");
}
