//! IAP's signed header as the gate sends it, over real loopback HTTP: the
//! plain `email` claim, the audience shapes, the published keys (both forms,
//! with a cache lifetime), key rotation, and apps signed in as a user.

mod common;

use common::{claims, control, get_json, http, json_answer};
use iap_emulator::counter::GATE_ACCEPTED;
use iap_emulator::{App, Emulator};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use reqwest::Method;
use serde_json::{Value, json};

/// The assertion the echo app received for a request with `token`.
async fn assertion_through(app: &App, token: Option<&str>) -> String {
    let mut request = http().get(app.url().clone());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    json_answer(request).await["headers"]["x-goog-iap-jwt-assertion"]
        .as_str()
        .expect("the app received an assertion")
        .to_owned()
}

fn validation(audience: &str) -> Validation {
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&["https://cloud.google.com/iap"]);
    validation.set_audience(&[audience]);
    validation.leeway = 30;
    validation
}

/// Verifies with the JWK Set at the emulator's `public_key-jwk`.
async fn verify_with_jwks(emu: &Emulator, assertion: &str, audience: &str) -> Value {
    let jwks: JwkSet = get_json(&emu.iap_jwks_url()).await;
    let kid = jsonwebtoken::decode_header(assertion).unwrap().kid.unwrap();
    let key = DecodingKey::from_jwk(jwks.find(&kid).expect("kid published")).unwrap();
    jsonwebtoken::decode::<Value>(assertion, &key, &validation(audience))
        .unwrap()
        .claims
}

#[tokio::test]
async fn email_claim_is_the_plain_address_and_only_sub_and_headers_are_prefixed() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let token = emu.mint_id_token(app.client_id(), "alice@example.com");
    let echo = json_answer(http().get(app.url().clone()).bearer_auth(&token)).await;
    let headers = &echo["headers"];
    let assertion = headers["x-goog-iap-jwt-assertion"].as_str().unwrap();
    let verified = verify_with_jwks(&emu, assertion, app.assertion_audience()).await;
    let sub = claims(&token)["sub"].as_str().unwrap().to_owned();

    assert_eq!(verified["email"], "alice@example.com");
    assert_eq!(verified["sub"], format!("accounts.google.com:{sub}"));
    assert_eq!(verified["azp"], app.assertion_audience());
    assert_eq!(verified["identity_source"], "GOOGLE");
    assert_eq!(
        verified["exp"].as_u64().unwrap(),
        verified["iat"].as_u64().unwrap() + 600
    );
    assert_eq!(
        headers["x-goog-authenticated-user-email"],
        "accounts.google.com:alice@example.com"
    );
    assert_eq!(
        headers["x-goog-authenticated-user-id"],
        format!("accounts.google.com:{sub}")
    );
}

#[tokio::test]
async fn app_engine_and_cloud_run_apps_get_their_audience_shape() {
    let emu = Emulator::start().await.unwrap();
    let gae = emu.create_app().app_engine().echo().await.unwrap();
    let run = emu
        .create_app()
        .cloud_run("europe-west1", "hello")
        .echo()
        .await
        .unwrap();
    let number = emu.project_number();
    assert_eq!(
        gae.assertion_audience(),
        format!("/projects/{number}/apps/{}", emu.project_id())
    );
    assert_eq!(
        run.assertion_audience(),
        format!("/projects/{number}/locations/europe-west1/services/hello")
    );
    for app in [&gae, &run] {
        let token = emu.mint_id_token(app.client_id(), "bob@example.com");
        let assertion = assertion_through(app, Some(&token)).await;
        let verified = verify_with_jwks(&emu, &assertion, app.assertion_audience()).await;
        assert_eq!(verified["aud"], app.assertion_audience());
    }

    // The same over HTTP.
    let (status, made) = control(
        &emu,
        Method::POST,
        "apps",
        json!({"audience_shape": "cloud_run", "region": "us-central1", "service": "api"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        made["assertion_audience"],
        format!("/projects/{number}/locations/us-central1/services/api")
    );
    let (status, refused) = control(
        &emu,
        Method::POST,
        "apps",
        json!({"audience_shape": "cloud_run"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(refused["error"].as_str().unwrap().contains("region"));
}

#[tokio::test]
async fn keys_are_published_as_jwks_and_pem_with_a_cache_lifetime() {
    let emu = Emulator::start().await.unwrap();
    for url in [emu.iap_jwks_url(), emu.iap_public_key_url()] {
        let response = http().get(&url).send().await.unwrap();
        assert_eq!(
            response.headers()["cache-control"],
            "public, max-age=3600",
            "{url}"
        );
    }
    emu.set_assertion_keys_max_age(std::time::Duration::from_secs(5));
    let response = http().get(emu.iap_jwks_url()).send().await.unwrap();
    assert_eq!(response.headers()["cache-control"], "public, max-age=5");

    let app = emu.app();
    let assertion = emu.mint_assertion(&app, "carol@example.com");
    let pems: Value = get_json(&emu.iap_public_key_url()).await;
    let kid = jsonwebtoken::decode_header(&assertion)
        .unwrap()
        .kid
        .unwrap();
    let pem = pems[&kid].as_str().expect("kid in the PEM map");
    let key = DecodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let verified =
        jsonwebtoken::decode::<Value>(&assertion, &key, &validation(app.assertion_audience()))
            .unwrap()
            .claims;
    assert_eq!(verified["email"], "carol@example.com");
}

#[tokio::test]
async fn rotation_signs_with_a_new_key_and_keeps_the_previous_one_published() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let before = emu.mint_assertion(&app, "dave@example.com");
    let first = emu.assertion_key_ids();
    assert_eq!(first.len(), 1);

    emu.rotate_assertion_key().unwrap();
    let after = emu.mint_assertion(&app, "dave@example.com");
    let kid = |jwt: &str| jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
    assert_ne!(kid(&after), kid(&before));
    assert_eq!(emu.assertion_key_ids(), vec![kid(&after), first[0].clone()]);
    // Both verify against the published set.
    verify_with_jwks(&emu, &before, app.assertion_audience()).await;
    verify_with_jwks(&emu, &after, app.assertion_audience()).await;

    // Over HTTP; the oldest key is retired.
    let (status, rotated) = control(&emu, Method::POST, "rotate-assertion-keys", json!({})).await;
    assert_eq!(status, 200);
    let kids: Vec<String> = serde_json::from_value(rotated["kids"].clone()).unwrap();
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[1], kid(&after));
    let jwks: JwkSet = get_json(&emu.iap_jwks_url()).await;
    assert!(jwks.find(&first[0]).is_none());
}

#[tokio::test]
async fn an_app_signed_in_as_a_user_lets_tokenless_requests_through_as_that_user() {
    let emu = Emulator::start().await.unwrap();
    let app = emu
        .create_app()
        .signed_in_as("alice@example.com")
        .echo()
        .await
        .unwrap();
    let assertion = assertion_through(&app, None).await;
    let verified = verify_with_jwks(&emu, &assertion, app.assertion_audience()).await;
    assert_eq!(verified["email"], "alice@example.com");
    assert_eq!(emu.counter(GATE_ACCEPTED, "signed-in:alice@example.com"), 1);

    // A request with a token is still judged by it.
    let token = emu.mint_id_token(app.client_id(), "bob@example.com");
    let assertion = assertion_through(&app, Some(&token)).await;
    assert_eq!(claims(&assertion)["email"], "bob@example.com");
    let bad = http()
        .get(app.url().clone())
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
}

#[tokio::test]
async fn assertions_are_minted_over_http_for_an_app_or_from_raw_claims() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let (status, minted) = control(
        &emu,
        Method::POST,
        "assertions",
        json!({"email": "erin@example.com", "app": app.client_id()}),
    )
    .await;
    assert_eq!(status, 200);
    let assertion = minted["assertion"].as_str().unwrap();
    let verified = verify_with_jwks(&emu, assertion, app.assertion_audience()).await;
    assert_eq!(verified["email"], "erin@example.com");

    let (status, raw) = control(
        &emu,
        Method::POST,
        "assertions",
        json!({"claims": {"iss": "someone-else", "exp": 1}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        claims(raw["assertion"].as_str().unwrap())["iss"],
        "someone-else"
    );

    let (status, _) = control(&emu, Method::POST, "assertions", json!({})).await;
    assert_eq!(status, 400);
}
