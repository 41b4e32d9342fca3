//! The IAP gate over real loopback HTTP: what passes, what IAP answers
//! itself, what the app receives, and the three forms (echo app, reverse
//! proxy, tower layer in front of a tonic gRPC server).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod common;

use common::{claims, get_json, http, metadata_identity, post_form, private_key};
use iap_emulator::counter::{
    APP_HITS, GATE_302, GATE_401, GATE_ACCEPTED, GATE_PROXY_AUTHORIZATION, gate_401_by,
};
use iap_emulator::{App, Emulator, Endpoint, Fault, ServiceAccount};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation, jwk::JwkSet};
use reqwest::StatusCode;
use serde_json::{Value, json};

const IAP_GENERATED: &str = "x-goog-iap-generated-response";

/// An ID token from the emulator's metadata server, as a GCE workload gets it.
async fn metadata_id_token(emu: &Emulator, audience: &str, format: &str) -> String {
    metadata_identity(emu, audience, format)
        .await
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A self-signed service-account JWT (no token endpoint involved).
fn self_signed(sa: &ServiceAccount, iss: &str, aud: &str, iat: u64, exp: u64) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(sa.private_key_id().to_owned());
    let claims = json!({"iss": iss, "sub": iss, "aud": aud, "iat": iat, "exp": exp});
    jsonwebtoken::encode(&header, &claims, &private_key(sa)).unwrap()
}

/// `scheme://host:port` of an app, no trailing slash.
fn origin(app: &App) -> String {
    app.url().origin().ascii_serialization()
}

/// The audience of a self-signed JWT valid on every path of the app: `ORIGIN/*`.
fn host_wildcard(app: &App) -> String {
    format!("{}/*", origin(app))
}

async fn get_with(app: &App, path: &str, token: &str) -> reqwest::Response {
    http()
        .get(app.url().join(path).unwrap())
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn assert_iap_401(response: reqwest::Response, body: &str) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[IAP_GENERATED], "true");
    assert_eq!(response.text().await.unwrap(), body);
}

// ---- what passes, and what the app receives ---------------------------

#[tokio::test]
async fn valid_id_token_reaches_the_app_with_iap_identity_headers() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let token = metadata_id_token(&emu, app.client_id(), "full").await;
    let token_claims = claims(&token);

    let response = get_with(&app, "/hello?x=1", &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(IAP_GENERATED).is_none());
    let echo: Value = response.json().await.unwrap();

    assert_eq!(echo["path"], "/hello");
    assert_eq!(echo["query"], "x=1");
    let email = token_claims["email"].as_str().unwrap();
    let sub = token_claims["sub"].as_str().unwrap();
    let headers = &echo["headers"];
    assert_eq!(
        headers["x-goog-authenticated-user-email"],
        format!("accounts.google.com:{email}")
    );
    assert_eq!(
        headers["x-goog-authenticated-user-id"],
        format!("accounts.google.com:{sub}")
    );
    assert_eq!(emu.counter(APP_HITS, app.client_id()), 1);
    let jti = token_claims["jti"].as_str().unwrap();
    assert_eq!(emu.counter(GATE_ACCEPTED, jti), 1);
}

#[tokio::test]
async fn service_account_id_token_from_the_token_endpoint_is_accepted() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let sa = emu.create_service_account("runner").await.unwrap();
    let now = emu.now();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(sa.private_key_id().to_owned());
    let assertion = jsonwebtoken::encode(
        &header,
        &json!({"iss": sa.email(), "aud": emu.token_uri(), "iat": now, "exp": now + 3600,
                "target_audience": app.client_id()}),
        &private_key(&sa),
    )
    .unwrap();
    let (status, answer) = post_form(
        &emu.token_uri(),
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id_token = answer["id_token"].as_str().unwrap();

    let response = get_with(&app, "/", id_token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-goog-authenticated-user-email"],
        format!("accounts.google.com:{}", sa.email())
    );
}

#[tokio::test]
async fn iap_assertion_verifies_with_the_published_es256_keys() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    let echo: Value = get_with(&app, "/", &token).await.json().await.unwrap();
    let assertion = echo["headers"]["x-goog-iap-jwt-assertion"]
        .as_str()
        .unwrap();

    let jwks: JwkSet = get_json(&emu.iap_jwks_url()).await;
    let header = jsonwebtoken::decode_header(assertion).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&["https://cloud.google.com/iap"]);
    validation.set_audience(&[app.assertion_audience()]);
    validation.leeway = 30;
    let verified =
        jsonwebtoken::decode::<Value>(assertion, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap()
            .claims;

    assert_eq!(
        app.assertion_audience(),
        format!(
            "/projects/{}/global/backendServices/{}",
            app.project_number(),
            app.backend_service_id()
        )
    );
    assert_eq!(verified["email"], "alice@example.com");
    let sub = claims(&token)["sub"].as_str().unwrap().to_owned();
    assert_eq!(verified["sub"], format!("accounts.google.com:{sub}"));
}

#[tokio::test]
async fn token_for_an_allowlisted_programmatic_client_is_accepted() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let desktop = "987654321-desktop.apps.googleusercontent.com";
    let token = emu.mint_id_token(desktop, "dev@example.com");

    let before = get_with(&app, "/", &token).await;
    assert_iap_401(
        before,
        "Invalid IAP credentials: Invalid bearer token. Invalid JWT audience.",
    )
    .await;

    app.allow_client(desktop);
    assert_eq!(app.allowed_clients(), [desktop]);
    assert_eq!(get_with(&app, "/", &token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn http2_prior_knowledge_requests_are_served() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(app.url().join("/upload").unwrap())
        .bearer_auth(&token)
        .body(vec![7u8; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["version"], "HTTP/2.0");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], 100_000);
}

// ---- rejections --------------------------------------------------------

#[tokio::test]
async fn request_without_credentials_gets_401_empty_token() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let response = http().post(app.url().clone()).send().await.unwrap();
    assert_iap_401(response, "Invalid IAP credentials: empty token").await;
    assert_eq!(emu.counter(GATE_401, app.client_id()), 1);
    assert_eq!(emu.counter(&gate_401_by("empty_token"), app.client_id()), 1);
    assert_eq!(emu.counter(APP_HITS, app.client_id()), 0);
}

/// Sends a chunked POST of `len` bytes (no token) to `app` on `conn`, in
/// 16 KiB chunks, then reads the answer's head: its lowercased text.
async fn refused_chunked_post(conn: &mut tokio::net::TcpStream, app: &App, len: usize) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let host = app.url().authority().to_owned();
    let head =
        format!("POST /upload HTTP/1.1\r\nhost: {host}\r\ntransfer-encoding: chunked\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 16 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        let framed = [format!("{n:x}\r\n").as_bytes(), &chunk[..n], b"\r\n"].concat();
        if conn.write_all(&framed).await.is_err() {
            break; // the gate stopped reading (beyond its bound)
        }
        left -= n;
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "the gate closed the connection without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).to_ascii_lowercase()
}

#[tokio::test]
async fn a_refused_upload_is_read_before_the_answer_up_to_the_bound() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let addr = app.local_addr().unwrap();

    // Within the bound: read to its end, answered, the connection kept.
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let answer = refused_chunked_post(&mut conn, &app, 256 * 1024).await;
    assert!(answer.starts_with("http/1.1 401"), "{answer}");
    assert!(
        answer.contains("x-goog-iap-generated-response: true"),
        "{answer}"
    );
    assert!(!answer.contains("connection: close"), "{answer}");
    // Nothing of the first body is left to be taken for a second request.
    let answer = refused_chunked_post(&mut conn, &app, 10).await;
    assert!(answer.starts_with("http/1.1 401"), "{answer}");
    assert_eq!(emu.gate_401s(&app), 2);

    // Beyond it: answered, and the connection closed.
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let answer = refused_chunked_post(
        &mut conn,
        &app,
        iap_emulator::gate::MAX_DRAINED_BODY + 64 * 1024,
    )
    .await;
    assert!(answer.starts_with("http/1.1 401"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert_eq!(emu.gate_401s(&app), 3, "each refusal counted once");
    assert_eq!(emu.app_hits(&app), 0);
}

#[tokio::test]
async fn browser_without_credentials_is_redirected_to_sign_in_naming_the_client_id() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let response = http()
        .get(app.url().join("/page").unwrap())
        .header("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()[IAP_GENERATED], "true");
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        location.origin().ascii_serialization(),
        "https://accounts.google.com"
    );
    assert_eq!(location.path(), "/o/oauth2/v2/auth");
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], app.client_id());
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["scope"], "openid email");
    assert!(query["redirect_uri"].contains(app.client_id()));
    assert!(!query["state"].is_empty());
    assert_eq!(emu.counter(GATE_302, app.client_id()), 1);
    assert_eq!(emu.counter(GATE_401, app.client_id()), 0);
}

#[tokio::test]
async fn browser_like_post_or_bad_token_gets_401_not_302() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let post = http()
        .post(app.url().clone())
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_iap_401(post, "Invalid IAP credentials: empty token").await;

    let with_bad_token = http()
        .get(app.url().clone())
        .header("Accept", "text/html")
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_iap_401(
        with_bad_token,
        "Invalid IAP credentials: Unable to parse JWT",
    )
    .await;
    assert_eq!(emu.counter(GATE_302, app.client_id()), 0);
}

#[tokio::test]
async fn unparseable_token_is_rejected() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    for token in ["not-a-jwt", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
        let response = get_with(&app, "/", token).await;
        assert_iap_401(response, "Invalid IAP credentials: Unable to parse JWT").await;
    }
    assert_eq!(emu.counter(&gate_401_by("unparsable"), app.client_id()), 3);
}

#[tokio::test]
async fn tampered_signature_is_rejected() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    // Swap in another valid token's signature.
    let other = emu.mint_id_token(app.client_id(), "bob@example.com");
    let (body, _) = token.rsplit_once('.').unwrap();
    let (_, signature) = other.rsplit_once('.').unwrap();
    let forged = format!("{body}.{signature}");

    let response = get_with(&app, "/", &forged).await;
    assert_iap_401(
        response,
        "Invalid IAP credentials: JWT signature is invalid",
    )
    .await;
}

#[tokio::test]
async fn token_of_an_unknown_issuer_is_rejected() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let sa = emu.create_service_account("issuer").await.unwrap();
    let now = emu.now();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(sa.private_key_id().to_owned());
    let token = jsonwebtoken::encode(
        &header,
        &json!({"iss": "https://issuer.example", "sub": "x", "aud": app.client_id(),
                "email": "x@example.com", "iat": now, "exp": now + 600}),
        &private_key(&sa),
    )
    .unwrap();

    let response = get_with(&app, "/", &token).await;
    assert_iap_401(response, "Invalid IAP credentials: Invalid JWT issuer.").await;
}

#[tokio::test]
async fn token_is_rejected_once_the_emulator_clock_passes_exp() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    assert_eq!(get_with(&app, "/", &token).await.status(), StatusCode::OK);

    let exp = claims(&token)["exp"].as_u64().unwrap();
    emu.advance_clock(Duration::from_secs(exp - emu.now()));
    let response = get_with(&app, "/", &token).await;
    assert_iap_401(response, "OpenID Connect token expired: JWT has expired").await;
    assert_eq!(emu.counter(&gate_401_by("expired"), app.client_id()), 1);
}

#[tokio::test]
async fn revoked_token_is_rejected() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    assert_eq!(get_with(&app, "/", &token).await.status(), StatusCode::OK);

    emu.revoke(&token);
    let response = get_with(&app, "/", &token).await;
    assert_iap_401(response, "Invalid IAP credentials: JWT has been revoked").await;
    assert_eq!(emu.counter(&gate_401_by("revoked"), app.client_id()), 1);
}

#[tokio::test]
async fn token_without_an_email_claim_is_rejected() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    // format=standard: Google leaves the email out.
    let token = metadata_id_token(&emu, app.client_id(), "standard").await;
    assert!(claims(&token).get("email").is_none());

    let response = get_with(&app, "/", &token).await;
    assert_iap_401(
        response,
        "Invalid IAP credentials: JWT 'email' claim isn't a string",
    )
    .await;
}

#[tokio::test]
async fn accepted_counter_tells_which_token_got_through() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let first = emu.mint_id_token(app.client_id(), "alice@example.com");
    let second = emu.mint_id_token(app.client_id(), "alice@example.com");
    assert_eq!(get_with(&app, "/", &first).await.status(), StatusCode::OK);
    emu.revoke(&first);
    assert_eq!(
        get_with(&app, "/", &first).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get_with(&app, "/", &second).await.status(), StatusCode::OK);

    let jti = |t: &str| claims(t)["jti"].as_str().unwrap().to_owned();
    assert_eq!(emu.counter(GATE_ACCEPTED, &jti(&first)), 1);
    assert_eq!(emu.counter(GATE_ACCEPTED, &jti(&second)), 1);
    assert_eq!(emu.counter(APP_HITS, app.client_id()), 2);
    assert_eq!(emu.counter(GATE_401, app.client_id()), 1);
}

// ---- self-signed service-account JWTs ----------------------------------

#[tokio::test]
async fn self_signed_jwt_for_the_exact_request_url_is_accepted() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let sa = emu.create_service_account("caller").await.unwrap();
    let now = emu.now();
    // The query is not part of the audience.
    let aud = format!("{}/api/items", origin(&app));
    let jwt = self_signed(&sa, sa.email(), &aud, now, now + 3600);

    let response = get_with(&app, "/api/items?page=2", &jwt).await;
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-goog-authenticated-user-email"],
        format!("accounts.google.com:{}", sa.email())
    );
    assert_eq!(
        echo["headers"]["x-goog-authenticated-user-id"],
        format!("accounts.google.com:{}", sa.unique_id())
    );

    let other_path = get_with(&app, "/api/other", &jwt).await;
    assert_iap_401(
        other_path,
        "Invalid IAP credentials: Invalid bearer token. Invalid JWT audience.",
    )
    .await;
}

#[tokio::test]
async fn self_signed_jwt_for_the_host_wildcard_is_accepted_on_any_path() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let sa = emu.create_service_account("caller").await.unwrap();
    let now = emu.now();
    let jwt = self_signed(&sa, sa.email(), &host_wildcard(&app), now, now + 600);
    for path in ["/", "/a", "/a/b/c"] {
        assert_eq!(get_with(&app, path, &jwt).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn self_signed_jwt_for_another_host_is_rejected() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let other = emu.create_app().echo().await.unwrap();
    let sa = emu.create_service_account("caller").await.unwrap();
    let now = emu.now();
    let port = app.url().port().unwrap();
    for aud in [
        host_wildcard(&other),
        format!("http://localhost:{port}/*"),
        format!("https://127.0.0.1:{port}/*"),
    ] {
        let jwt = self_signed(&sa, sa.email(), &aud, now, now + 600);
        let response = get_with(&app, "/", &jwt).await;
        assert_iap_401(
            response,
            "Invalid IAP credentials: Invalid bearer token. Invalid JWT audience.",
        )
        .await;
    }
}

#[tokio::test]
async fn self_signed_jwt_valid_for_more_than_an_hour_is_rejected() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let sa = emu.create_service_account("caller").await.unwrap();
    let now = emu.now();
    let jwt = self_signed(&sa, sa.email(), &host_wildcard(&app), now, now + 3601);
    let response = get_with(&app, "/", &jwt).await;
    assert_iap_401(
        response,
        "Invalid IAP credentials: JWT lifetime is longer than one hour",
    )
    .await;
}

#[tokio::test]
async fn self_signed_jwt_with_another_accounts_key_is_rejected() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let victim = emu.create_service_account("victim").await.unwrap();
    let attacker = emu.create_service_account("attacker").await.unwrap();
    let now = emu.now();
    // Signed with the attacker's key, claiming to be the victim.
    let jwt = self_signed(
        &attacker,
        victim.email(),
        &host_wildcard(&app),
        now,
        now + 600,
    );
    let response = get_with(&app, "/", &jwt).await;
    assert_iap_401(
        response,
        "Invalid IAP credentials: JWT signature is invalid",
    )
    .await;
}

#[tokio::test]
async fn public_url_sets_the_origin_of_self_signed_audiences() {
    let emu = Emulator::start().await.unwrap();
    let app = emu
        .create_app()
        .public_url("https://app.example.com/".parse().unwrap())
        .echo()
        .await
        .unwrap();
    let sa = emu.create_service_account("caller").await.unwrap();
    let now = emu.now();

    let public = self_signed(&sa, sa.email(), "https://app.example.com/*", now, now + 600);
    assert_eq!(get_with(&app, "/x", &public).await.status(), StatusCode::OK);
    let exact = self_signed(&sa, sa.email(), "https://app.example.com/x", now, now + 600);
    assert_eq!(get_with(&app, "/x", &exact).await.status(), StatusCode::OK);

    let local = self_signed(&sa, sa.email(), &host_wildcard(&app), now, now + 600);
    assert_eq!(
        get_with(&app, "/x", &local).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

// ---- Authorization vs Proxy-Authorization ------------------------------

#[tokio::test]
async fn valid_proxy_authorization_passes_authorization_to_the_app_untouched() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    for app_credential in ["Basic YXBwOnNlY3JldA==", "Bearer the-apps-own-token"] {
        let response = http()
            .get(app.url().clone())
            .header("Proxy-Authorization", format!("Bearer {token}"))
            .header("Authorization", app_credential)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let echo: Value = response.json().await.unwrap();
        assert_eq!(echo["headers"]["authorization"], app_credential);
        assert!(echo["headers"].get("proxy-authorization").is_none());
        assert_eq!(
            echo["headers"]["x-goog-authenticated-user-email"],
            "accounts.google.com:alice@example.com"
        );
    }
    assert_eq!(emu.counter(GATE_PROXY_AUTHORIZATION, app.client_id()), 2);
}

#[tokio::test]
async fn invalid_proxy_authorization_falls_back_to_authorization_and_is_stripped() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let stale = emu.mint_id_token(app.client_id(), "old@example.com");
    emu.revoke(&stale);
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");

    let response = http()
        .get(app.url().clone())
        .header("Proxy-Authorization", format!("Bearer {stale}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = response.json().await.unwrap();
    assert!(echo["headers"].get("proxy-authorization").is_none());
    assert_eq!(
        echo["headers"]["x-goog-authenticated-user-email"],
        "accounts.google.com:alice@example.com"
    );
    assert_eq!(emu.counter(GATE_PROXY_AUTHORIZATION, app.client_id()), 0);
}

#[tokio::test]
async fn invalid_proxy_authorization_alone_is_rejected_with_its_reason() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let stale = emu.mint_id_token(app.client_id(), "old@example.com");
    emu.revoke(&stale);

    let response = http()
        .get(app.url().clone())
        .header("Accept", "text/html")
        .header("Proxy-Authorization", format!("Bearer {stale}"))
        .send()
        .await
        .unwrap();
    assert_iap_401(response, "Invalid IAP credentials: JWT has been revoked").await;
}

#[tokio::test]
async fn client_sent_x_goog_headers_never_reach_the_app() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    let response = http()
        .get(app.url().clone())
        .bearer_auth(&token)
        .header(
            "x-goog-authenticated-user-email",
            "accounts.google.com:admin@example.com",
        )
        .header("x-goog-iap-jwt-assertion", "forged")
        .header("X-Goog-Custom", "smuggled")
        .header("x-google-unrelated", "kept")
        .send()
        .await
        .unwrap();
    let echo: Value = response.json().await.unwrap();
    let headers = echo["headers"].as_object().unwrap();
    assert_eq!(
        headers["x-goog-authenticated-user-email"],
        "accounts.google.com:alice@example.com"
    );
    assert_ne!(headers["x-goog-iap-jwt-assertion"], "forged");
    assert!(!headers.contains_key("x-goog-custom"));
    assert_eq!(headers["x-google-unrelated"], "kept");
}

// ---- the app's own answers, faults --------------------------------------

#[tokio::test]
async fn apps_own_401_comes_back_without_the_iap_header() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    let response = get_with(&app, "/status/401", &token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get(IAP_GENERATED).is_none());
    assert_eq!(emu.counter(GATE_401, app.client_id()), 0);
    assert_eq!(emu.counter(APP_HITS, app.client_id()), 1);
}

#[tokio::test]
async fn injected_gate_fault_answers_once_in_place_of_the_app() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    emu.inject(Endpoint::Gate, Fault::status(503), 1);

    let faulted = get_with(&app, "/", &token).await;
    assert_eq!(faulted.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(faulted.headers()[IAP_GENERATED], "true");
    assert_eq!(get_with(&app, "/", &token).await.status(), StatusCode::OK);
    assert_eq!(emu.counter(APP_HITS, app.client_id()), 1);
}

#[tokio::test]
async fn injected_gate_delay_postpones_but_does_not_change_the_answer() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    emu.inject(Endpoint::Gate, Fault::delay(Duration::from_millis(50)), 1);

    assert_eq!(get_with(&app, "/", &token).await.status(), StatusCode::OK);
    assert_eq!(emu.pending_faults(Endpoint::Gate), 0);
    assert_eq!(emu.counter(iap_emulator::counter::FAULTS, "gate"), 1);
    assert_eq!(emu.counter(APP_HITS, app.client_id()), 1);
}

#[tokio::test]
async fn injected_gate_reset_drops_the_connection() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    emu.inject(Endpoint::Gate, Fault::Reset, 1);

    let reset = http()
        .get(app.url().clone())
        .bearer_auth(&token)
        .send()
        .await;
    assert!(reset.is_err(), "expected a transport error, got {reset:?}");
    assert_eq!(get_with(&app, "/", &token).await.status(), StatusCode::OK);
}

// ---- reverse proxy ------------------------------------------------------

#[tokio::test]
async fn reverse_proxy_streams_bodies_both_ways_and_forwards_iap_headers() {
    let emu = Emulator::start().await.unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let upstream_hits = hits.clone();
    // The upstream answers with the request body and the identity it saw.
    let upstream = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let hits = upstream_hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let user = req
                .headers()
                .get("x-goog-authenticated-user-email")
                .cloned();
            let path = req.uri().to_string();
            let mut response = axum::response::Response::new(req.into_body());
            if let Some(user) = user {
                response.headers_mut().insert("x-seen-user", user);
            }
            response
                .headers_mut()
                .insert("x-seen-path", path.parse().unwrap());
            response
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}/base/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, upstream).await });

    let app = emu
        .create_app()
        .proxy_to(upstream_url.parse().unwrap())
        .await
        .unwrap();
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let response = http()
        .post(app.url().join("/items?id=3").unwrap())
        .bearer_auth(&token)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["x-seen-user"],
        "accounts.google.com:alice@example.com"
    );
    assert_eq!(response.headers()["x-seen-path"], "/base/items?id=3");
    assert_eq!(response.bytes().await.unwrap(), body);

    let denied = http().post(app.url().clone()).send().await.unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    server.abort();
}

#[tokio::test]
async fn reverse_proxy_to_nowhere_answers_502() {
    let emu = Emulator::start().await.unwrap();
    // Port 1 (tcpmux) is closed on any machine that runs tests: refused.
    let app = emu
        .create_app()
        .proxy_to("http://127.0.0.1:1/".parse().unwrap())
        .await
        .unwrap();
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    let response = get_with(&app, "/", &token).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}

// ---- the tower layer, with gRPC behind it --------------------------------

mod grpc {
    use super::*;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Channel, Server};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    /// A gRPC channel to `url` (HTTP/2 without TLS).
    async fn connect(url: &str) -> Channel {
        Channel::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn check(channel: Channel, token: &str) -> Result<i32, tonic::Status> {
        let value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        let mut client =
            HealthClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
                req.metadata_mut().insert("authorization", value.clone());
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
    async fn tonic_server_behind_the_gate_layer_accepts_valid_and_rejects_revoked_tokens() {
        let emu = Emulator::start().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = emu
            .create_app()
            .hosted_at(format!("http://{addr}/").parse().unwrap());
        let (_reporter, health) = tonic_health::server::health_reporter();
        let server = tokio::spawn(
            Server::builder()
                .layer(emu.gate_layer(&app))
                .add_service(health)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        let channel = connect(&format!("http://{addr}")).await;

        let token = emu.mint_id_token(app.client_id(), "svc@example.com");
        let status = check(channel.clone(), &token).await.unwrap();
        assert_eq!(status, ServingStatus::Serving as i32);

        emu.revoke(&token);
        let error = check(channel, &token).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            error.message(),
            "Invalid IAP credentials: JWT has been revoked"
        );
        assert_eq!(error.metadata().get(IAP_GENERATED).unwrap(), "true");
        assert_eq!(emu.counter(GATE_401, app.client_id()), 1);
        assert_eq!(emu.counter(APP_HITS, app.client_id()), 1);
        server.abort();
    }

    #[tokio::test]
    async fn tonic_routes_served_by_the_emulator_behind_the_gate() {
        let emu = Emulator::start().await.unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let app = emu
            .create_app()
            .serve(tonic::service::Routes::new(health))
            .await
            .unwrap();
        let channel = connect(&origin(&app)).await;
        let token = emu.mint_id_token(app.client_id(), "svc@example.com");
        assert_eq!(
            check(channel.clone(), &token).await.unwrap(),
            ServingStatus::Serving as i32
        );
        let wrong = emu.mint_id_token("someone-else", "svc@example.com");
        let error = check(channel, &wrong).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::Unauthenticated);
    }

    #[tokio::test]
    async fn grpc_goes_through_the_reverse_proxy_over_h2c() {
        let emu = Emulator::start().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = format!("http://{}/", listener.local_addr().unwrap());
        let (_reporter, health) = tonic_health::server::health_reporter();
        let server = tokio::spawn(
            Server::builder()
                .add_service(health)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        let app = emu
            .create_app()
            .proxy_to(upstream.parse().unwrap())
            .await
            .unwrap();
        let channel = connect(&origin(&app)).await;
        let token = emu.mint_id_token(app.client_id(), "svc@example.com");
        assert_eq!(
            check(channel, &token).await.unwrap(),
            ServingStatus::Serving as i32
        );
        server.abort();
    }
}

// ---- the layer in an axum server you run ---------------------------------

#[tokio::test]
async fn gate_layer_protects_an_axum_router_you_serve() {
    let emu = Emulator::start().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url: url::Url = format!("http://{}/", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let app = emu.create_app().hosted_at(url.clone());
    assert_eq!(app.url(), &url);
    assert_eq!(app.local_addr(), None);
    let router = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                headers["x-goog-authenticated-user-email"]
                    .to_str()
                    .unwrap()
                    .to_owned()
            }),
        )
        .layer(emu.gate_layer(&app));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    let ok = get_with(&app, "/", &token).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        ok.text().await.unwrap(),
        "accounts.google.com:alice@example.com"
    );
    let denied = http().get(url).send().await.unwrap();
    assert_iap_401(denied, "Invalid IAP credentials: empty token").await;
    server.abort();
}

#[tokio::test]
async fn every_app_has_its_own_origin_and_client_id() {
    let emu = Emulator::start().await.unwrap();
    let first = emu.app();
    let second = emu.create_app().echo().await.unwrap();
    assert_ne!(origin(&first), origin(&second));
    assert_ne!(first.client_id(), second.client_id());
    assert!(second.client_id().ends_with(".apps.googleusercontent.com"));
    assert!(
        second
            .client_id()
            .starts_with(&format!("{}-", second.project_number()))
    );
    assert_eq!(emu.apps().len(), 2);

    // A token for one app is no good at the other.
    let token = emu.mint_id_token(first.client_id(), "alice@example.com");
    assert_eq!(
        get_with(&second, "/", &token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(emu.counter(GATE_401, second.client_id()), 1);
    assert_eq!(emu.counter(GATE_401, first.client_id()), 0);
}

#[tokio::test]
async fn apps_are_listed_and_allowlisted_over_http() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let apps: Value = get_json(&format!("{}_emulator/apps", emu.url())).await;
    assert_eq!(apps[0]["client_id"], app.client_id());
    assert_eq!(apps[0]["url"], app.url().as_str());
    assert_eq!(apps[0]["assertion_audience"], app.assertion_audience());
    assert_eq!(apps[0]["default"], true);

    let desktop = "55-desktop.apps.googleusercontent.com";
    let allowed = http()
        .post(format!("{}_emulator/apps/allow", emu.url()))
        .json(&json!({"app": app.client_id(), "client_id": desktop}))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(app.allowed_clients(), [desktop]);
    let token = emu.mint_id_token(desktop, "dev@example.com");
    assert_eq!(get_with(&app, "/", &token).await.status(), StatusCode::OK);

    let unknown = http()
        .post(format!("{}_emulator/apps/allow", emu.url()))
        .json(&json!({"app": "nope", "client_id": desktop}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

// ---- the tower contract, without a network ------------------------------

mod tower_contract {
    use super::*;
    use std::convert::Infallible;
    use std::future::{Ready, ready};
    use std::sync::atomic::AtomicBool;
    use std::task::{Context, Poll, Waker};

    use http_body_util::{BodyExt as _, Either};
    use tower_layer::Layer as _;
    use tower_service::Service;

    /// An inner service that is ready only when told, and counts its calls.
    #[derive(Clone, Default)]
    struct Inner {
        open: Arc<AtomicBool>,
        calls: Arc<AtomicUsize>,
    }

    impl Service<http::Request<String>> for Inner {
        type Response = http::Response<String>;
        type Error = Infallible;
        type Future = Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.open.load(Ordering::SeqCst) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }

        fn call(&mut self, req: http::Request<String>) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let user = req.headers()["x-goog-authenticated-user-email"]
                .to_str()
                .unwrap()
                .to_owned();
            ready(Ok(http::Response::new(user)))
        }
    }

    fn request(token: Option<&str>) -> http::Request<String> {
        let mut req = http::Request::builder().uri("/");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        req.body(String::new()).unwrap()
    }

    #[tokio::test]
    async fn gate_service_is_ready_only_when_its_inner_service_is() {
        let emu = Emulator::start().await.unwrap();
        let inner = Inner::default();
        let mut gate = emu.gate_layer(&emu.app()).layer(inner.clone());
        let mut cx = Context::from_waker(Waker::noop());

        assert!(gate.poll_ready(&mut cx).is_pending());
        inner.open.store(true, Ordering::SeqCst);
        assert!(matches!(gate.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    }

    #[tokio::test]
    async fn gate_service_answers_itself_without_calling_the_inner_service() {
        let emu = Emulator::start().await.unwrap();
        let app = emu.app();
        let inner = Inner::default();
        inner.open.store(true, Ordering::SeqCst);
        let mut gate = emu.gate_layer(&app).layer(inner.clone());

        let mut cx = Context::from_waker(Waker::noop());
        assert!(gate.poll_ready(&mut cx).is_ready());
        let denied = gate.call(request(None)).await.unwrap();
        assert_eq!(denied.status(), 401);
        assert_eq!(denied.headers()[IAP_GENERATED], "true");
        let Either::Right(body) = denied.into_body() else {
            panic!("the gate's own answer is the Right side");
        };
        let text = body.collect().await.unwrap().to_bytes();
        assert_eq!(&text[..], b"Invalid IAP credentials: empty token");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 0);

        let token = emu.mint_id_token(app.client_id(), "alice@example.com");
        assert!(gate.poll_ready(&mut cx).is_ready());
        let passed = gate.call(request(Some(&token))).await.unwrap();
        assert_eq!(passed.status(), 200);
        let Either::Left(body) = passed.into_body() else {
            panic!("the app's answer is the Left side");
        };
        assert_eq!(body, "accounts.google.com:alice@example.com");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    }
}
