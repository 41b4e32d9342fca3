//! `iap token` end to end, and the one-line errors every credentialed
//! command shares.

mod common;

use std::path::{Path, PathBuf};

use common::{Output, Sandbox, World, claims, closed_port};

/// Runs `iap [GLOBAL...] token --audience AUD --credentials FILE`.
async fn token_with_file(
    sandbox: &Sandbox,
    global: &[&str],
    audience: &str,
    file: &Path,
) -> Output {
    let mut args = global.to_vec();
    let file = file.to_str().unwrap();
    args.extend(["token", "--audience", audience, "--credentials", file]);
    sandbox.run(&args).await
}

/// The world's key file with `token_uri` on a port nothing listens on:
/// the file and its JSON.
fn key_with_dead_token_uri(w: &World) -> (PathBuf, serde_json::Value) {
    let mut key: serde_json::Value = serde_json::from_str(w.sa.key_json()).unwrap();
    key["token_uri"] = format!("http://127.0.0.1:{}/token", closed_port()).into();
    let file = w.sandbox.path("dead-key.json");
    std::fs::write(&file, key.to_string()).unwrap();
    (file, key)
}

#[tokio::test(flavor = "multi_thread")]
async fn token_format_prints_the_jwt_alone_for_the_audience() {
    let w = World::new().await;
    let out = w.ok_for_app(&["token"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let c = claims(lines[0]);
    assert_eq!(c["aud"], w.audience());
    assert_eq!(c["email"], w.sa.email());
    assert_eq!(w.tokens_minted(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_format_has_token_claims_and_expiry() {
    let w = World::new().await;
    let out = w.ok_for_app(&["token", "--format", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let token = v["token"].as_str().expect("token");
    assert_eq!(v["claims"], claims(token));
    assert_eq!(v["claims"]["email"], w.sa.email());
    let expires_at = v["expires_at"].as_str().expect("expires_at");
    assert!(
        expires_at.ends_with('Z') && expires_at.len() == 20,
        "{expires_at}"
    );
    let left = v["expires_in"].as_u64().expect("expires_in");
    assert!((3000..=3600).contains(&left), "{left}");
}

#[tokio::test(flavor = "multi_thread")]
async fn header_format_is_an_authorization_line_the_gate_accepts() {
    let w = World::new().await;
    let out = w.ok_for_app(&["token", "--format", "header"]).await;
    let value = out
        .trim()
        .strip_prefix("Authorization: ")
        .expect("header line");
    let resp = reqwest::Client::new()
        .get(w.url("/hdr"))
        .header("authorization", value)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn url_finds_the_audience_from_iaps_redirect() {
    let w = World::new().await;
    let out = w
        .ok_with_key(&["token", "--url", &w.url("/some/page")])
        .await;
    assert_eq!(claims(out.trim())["aud"], w.audience());
}

#[tokio::test(flavor = "multi_thread")]
async fn google_application_credentials_is_used_without_flags() {
    let mut w = World::new().await;
    let key = w.key().to_owned();
    w.sandbox.set("GOOGLE_APPLICATION_CREDENTIALS", key);
    let out = w.sandbox.ok(&["token", "--audience", w.audience()]).await;
    assert_eq!(claims(out.trim())["email"], w.sa.email());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metadata_server_is_used_when_nothing_else_is_there() {
    let mut w = World::new().await;
    let host = w.emu.metadata_host();
    w.sandbox.set("GCE_METADATA_HOST", host.clone());
    w.sandbox.set("GCE_METADATA_IP", host);
    let out = w.sandbox.ok(&["token", "--audience", w.audience()]).await;
    let expected = w.emu.metadata_service_account().expect("metadata account");
    assert_eq!(claims(out.trim())["email"], expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_credentials_say_how_to_get_some() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .run(&["token", "--audience", "x.apps.googleusercontent.com"])
        .await;
    assert_eq!(out.code(), 1, "{out:#?}");
    let line = out.error_line();
    assert!(
        line.starts_with("error: no Google credentials found"),
        "{line}"
    );
    assert!(
        line.contains("GOOGLE_APPLICATION_CREDENTIALS") && line.contains("iap login"),
        "{line}"
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_key_file_is_named_with_the_problem() {
    let sandbox = Sandbox::new();
    let bad = sandbox.path("bad.json");
    std::fs::write(
        &bad,
        r#"{"type": "service_account", "client_email": "a@b.c"}"#,
    )
    .unwrap();
    let out = token_with_file(&sandbox, &[], "aud", &bad).await;
    assert_eq!(out.code(), 1, "{out:#?}");
    let line = out.error_line();
    assert!(
        line.contains(bad.to_str().unwrap()),
        "names the file: {line}"
    );
    assert!(line.contains("private_key"), "names the field: {line}");

    std::fs::write(&bad, "not json at all").unwrap();
    let out = token_with_file(&sandbox, &[], "aud", &bad).await;
    assert_eq!(out.code(), 1, "{out:#?}");
    assert!(out.error_line().contains(bad.to_str().unwrap()), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_credentials_file_is_named() {
    let sandbox = Sandbox::new();
    let missing = sandbox.path("nope.json");
    let out = token_with_file(&sandbox, &[], "aud", &missing).await;
    assert_eq!(out.code(), 1);
    assert!(out.error_line().contains("nope.json"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_token_endpoint_names_it_and_says_what_to_do() {
    let w = World::new().await;
    let (file, key) = key_with_dead_token_uri(&w);
    let dead = key["token_uri"].as_str().unwrap();
    let out = token_with_file(&w.sandbox, &[], w.audience(), &file).await;
    assert_eq!(out.code(), 1, "{out:#?}");
    let line = out.error_line();
    assert!(line.contains(dead), "names the endpoint: {line}");
    assert!(line.contains("reachable"), "says what to do: {line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_never_print_the_private_key() {
    let w = World::new().await;
    let (file, key) = key_with_dead_token_uri(&w);
    let out = token_with_file(&w.sandbox, &["-vvv"], w.audience(), &file).await;
    assert_eq!(out.code(), 1);
    let pem_body = key["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(!out.stderr.contains(&pem_body) && !out.stdout.contains(&pem_body));
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_2() {
    let sandbox = Sandbox::new();
    assert_eq!(sandbox.run(&["token"]).await.code(), 2);
    assert_eq!(
        sandbox
            .run(&["token", "--audience", "a", "--url", "http://x"])
            .await
            .code(),
        2
    );
    assert_eq!(
        sandbox
            .run(&["token", "--audience", "a", "--format", "yaml"])
            .await
            .code(),
        2
    );
    assert_eq!(sandbox.run(&["frobnicate"]).await.code(), 2);
}

async fn impersonate(w: &World, target: &str) -> common::Output {
    let mut sandbox = Sandbox::new();
    sandbox.set("IAP_IAM_ENDPOINT", w.emu.url());
    let args = [
        "token",
        "--audience",
        w.audience(),
        "--credentials",
        w.key(),
        "--impersonate-service-account",
        target,
    ];
    sandbox.run(&args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn impersonation_mints_tokens_for_the_target_account() {
    let w = World::new().await;
    let target = w.emu.create_service_account("target").await.unwrap();
    w.emu.allow_impersonation(w.sa.email(), target.email());
    let out = impersonate(&w, target.email()).await;
    assert!(out.status.success(), "{out:#?}");
    let c = claims(out.stdout.trim());
    assert_eq!(c["email"], target.email());
    assert_eq!(c["aud"], w.audience());
}

#[tokio::test(flavor = "multi_thread")]
async fn impersonation_without_the_role_names_the_role_and_the_caller() {
    let w = World::new().await;
    let target = w.emu.create_service_account("target").await.unwrap();
    let out = impersonate(&w, target.email()).await;
    assert_eq!(out.code(), 1, "{out:#?}");
    let line = out.error_line();
    assert!(
        line.contains("roles/iam.serviceAccountOpenIdTokenCreator"),
        "{line}"
    );
    assert!(
        line.contains(target.email()) && line.contains(w.sa.email()),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn self_signed_tokens_name_the_host_as_audience() {
    let w = World::new().await;
    let out = w
        .ok_with_key(&["token", "--url", &w.url("/a/b?c=d"), "--self-signed"])
        .await;
    let c = claims(out.trim());
    let origin = w.app.url().origin().ascii_serialization();
    assert_eq!(c["aud"], format!("{origin}/*"));
    assert_eq!(c["iss"], w.sa.email());
    assert_eq!(w.emu.requests(iap_emulator::Endpoint::Token), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn self_signed_with_user_credentials_needs_the_service_account_to_sign_as() {
    let w = World::new().await;
    let client = w.emu.create_desktop_client(w.emu.project_id());
    let user = w.emu.create_user(&client, "u@example.com");
    let file = w.sandbox.path("user.json");
    std::fs::write(&file, user.authorized_user_json()).unwrap();
    let out = w
        .sandbox
        .run(&[
            "token",
            "--url",
            &w.url("/"),
            "--self-signed",
            "--credentials",
            file.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.code(), 2, "{out:#?}");
    assert!(
        out.error_line().contains(
            "needs the service account to sign as: add --impersonate-service-account EMAIL"
        ),
        "{out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_audience_for_user_credentials_is_one_line_from_the_token_endpoint() {
    let w = World::new().await;
    let client = w.emu.create_desktop_client(w.emu.project_id());
    let user = w.emu.create_user(&client, "u@example.com");
    let file = w.sandbox.path("user.json");
    std::fs::write(&file, user.authorized_user_json()).unwrap();
    let wrong = "999999999999-other.apps.googleusercontent.com";
    let out = w
        .sandbox
        .run(&[
            "token",
            "--audience",
            wrong,
            "--credentials",
            file.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.code(), 1, "{out:#?}");
    let line = out.error_line();
    assert!(
        line.contains("/token answered 400") && line.contains("invalid_audience"),
        "{line}"
    );
    assert!(
        !line.contains(user.refresh_token()) && !line.contains(client.client_secret()),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_already_expired_token_is_refused_naming_clock_skew() {
    use base64::Engine as _;
    let sandbox = Sandbox::new();
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let jwt = format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"RS256"}"#),
        b64(r#"{"aud":"aud-x","email":"a@b.c","exp":1000000000}"#)
    );
    let file = sandbox.path("old.jwt");
    std::fs::write(&file, &jwt).unwrap();
    let out = sandbox
        .run(&[
            "token",
            "--audience",
            "aud-x",
            "--token-file",
            file.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.code(), 1, "{out:#?}");
    assert!(out.stderr.contains("clock skew"), "{}", out.stderr);
    assert!(!out.stdout.contains(&jwt), "{}", out.stdout);
    assert!(!out.stderr.contains(&jwt), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_endpoint_that_never_answers_fails_at_timeout() {
    let w = World::new().await;
    w.emu.inject(
        iap_emulator::Endpoint::Token,
        iap_emulator::Fault::delay(std::time::Duration::from_secs(3600)),
        10,
    );
    let out = w
        .run_with_key(&["token", "--audience", w.audience(), "--timeout", "1"])
        .await;
    assert_eq!(out.code(), 1, "{out:#?}");
    assert!(out.stderr.contains("--timeout 1 s"), "{}", out.stderr);
    assert!(out.stderr.contains(&w.emu.token_uri()), "{}", out.stderr);
}
