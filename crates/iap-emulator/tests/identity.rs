//! Google's identity endpoints over real loopback HTTP: metadata server,
//! OAuth token and authorization endpoints, IAM Credentials, STS, keys.

mod common;

use common::{claims, control, get_json, http, post_form, private_key, start_without_app};
use iap_emulator::{Emulator, Grant, OAuthClient, ServiceAccount, counter};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation, jwk::JwkSet};
use reqwest::StatusCode;
use serde_json::{Value, json};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// Verifies `jwt` against the emulator's JWKS, fetched over HTTP.
async fn verify(emu: &Emulator, jwt: &str, aud: &str) -> Value {
    let jwks: JwkSet = get_json(&emu.jwks_url()).await;
    let kid = jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).expect("kid published in the JWKS");
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[aud]);
    v.set_issuer(&["https://accounts.google.com"]);
    jsonwebtoken::decode::<Value>(jwt, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap()
        .claims
}

/// A JWT-bearer assertion signed with the account's key-file key.
fn assertion(sa: &ServiceAccount, extra: Value, now: u64) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(sa.private_key_id().to_owned());
    let mut claims = json!({
        "iss": sa.email(),
        "aud": GOOGLE_TOKEN_URI,
        "iat": now,
        "exp": now + 3600,
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    jsonwebtoken::encode(&header, &claims, &private_key(sa)).unwrap()
}

async fn metadata_get(emu: &Emulator, path: &str, flavor: bool) -> reqwest::Response {
    let mut req = http().get(format!("{}computeMetadata/v1/{path}", emu.url()));
    if flavor {
        req = req.header("Metadata-Flavor", "Google");
    }
    req.send().await.unwrap()
}

/// A grant at the token endpoint by an OAuth client: `grant_type`, its
/// `client_id` and `client_secret`, and `fields` (which may replace the
/// secret, to send a wrong one).
async fn client_grant(
    emu: &Emulator,
    client: &OAuthClient,
    grant_type: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut form = vec![
        ("grant_type", grant_type),
        ("client_id", client.client_id()),
        ("client_secret", client.client_secret()),
    ];
    for &(name, value) in fields {
        match form.iter_mut().find(|(n, _)| *n == name) {
            Some(field) => field.1 = value,
            None => form.push((name, value)),
        }
    }
    post_form(&emu.token_uri(), &form).await
}

const IDENTITY: &str = "instance/service-accounts/default/identity";

// ---- metadata server ------------------------------------------------------

#[tokio::test]
async fn metadata_root_answers_detection_with_flavor_header() {
    let emu = start_without_app().await;
    let resp = http().get(emu.url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["metadata-flavor"], "Google");
}

#[tokio::test]
async fn metadata_full_identity_carries_email_and_compute_engine_claims() {
    let emu = start_without_app().await;
    let resp = metadata_get(
        &emu,
        &format!("{IDENTITY}?audience=aud-1&format=full"),
        true,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["metadata-flavor"], "Google");
    let token = resp.text().await.unwrap();
    let c = verify(&emu, &token, "aud-1").await;
    let email = emu.metadata_service_account().unwrap();
    assert_eq!(c["email"], email.as_str());
    assert_eq!(c["email_verified"], true);
    assert_eq!(c["google"]["compute_engine"]["project_id"], "iap-emulator");
    assert!(c["google"]["compute_engine"].get("license_id").is_none());
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        3600
    );
    assert_eq!(emu.id_tokens_issued_by(Grant::Metadata, "aud-1"), 1);
}

#[tokio::test]
async fn metadata_standard_identity_has_no_email_and_licenses_need_full() {
    let emu = start_without_app().await;
    let std_token = metadata_get(&emu, &format!("{IDENTITY}?audience=a&licenses=TRUE"), true)
        .await
        .text()
        .await
        .unwrap();
    let c = claims(&std_token);
    assert!(c.get("email").is_none());
    assert!(c.get("google").is_none());
    let full = metadata_get(
        &emu,
        &format!("{IDENTITY}?audience=a&format=full&licenses=TRUE"),
        true,
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(claims(&full)["google"]["compute_engine"]["license_id"].is_array());
}

#[tokio::test]
async fn metadata_identity_without_audience_is_400_with_google_text() {
    let emu = start_without_app().await;
    let resp = metadata_get(&emu, IDENTITY, true).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.text().await.unwrap(),
        "non-empty audience parameter required"
    );
}

#[tokio::test]
async fn metadata_without_flavor_header_is_403() {
    let emu = start_without_app().await;
    let resp = metadata_get(&emu, &format!("{IDENTITY}?audience=a"), false).await;
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("Metadata-Flavor"));
    assert_eq!(emu.id_tokens_issued("a"), 0);
}

#[tokio::test]
async fn metadata_accepts_post_like_google_auth_sends() {
    let emu = start_without_app().await;
    let resp = http()
        .post(format!(
            "{}computeMetadata/v1/{IDENTITY}?audience=p&format=full",
            emu.url()
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(claims(&resp.text().await.unwrap())["aud"], "p");
}

#[tokio::test]
async fn metadata_identity_is_cached_until_five_minutes_before_expiry() {
    let emu = start_without_app().await;
    let url = format!("{IDENTITY}?audience=c&format=full");
    let first = metadata_get(&emu, &url, true).await.text().await.unwrap();
    let second = metadata_get(&emu, &url, true).await.text().await.unwrap();
    assert_eq!(first, second, "GCE answers from its cache");
    assert_eq!(emu.id_tokens_issued("c"), 1);
    // Near expiry (clock moved to 4 minutes before it) GCE mints anew.
    emu.advance_clock(std::time::Duration::from_secs(3600 - 240));
    let third = metadata_get(&emu, &url, true).await.text().await.unwrap();
    assert_ne!(first, third);
    assert_eq!(emu.id_tokens_issued("c"), 2);
}

#[tokio::test]
async fn metadata_token_returns_an_access_token_json() {
    let emu = start_without_app().await;
    let resp = metadata_get(&emu, "instance/service-accounts/default/token", true).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body["access_token"].as_str().unwrap().starts_with("ya29."));
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(emu.counter(counter::ACCESS_TOKENS, "metadata"), 1);
}

#[tokio::test]
async fn metadata_without_service_account_is_404() {
    let emu = Emulator::builder()
        .without_default_app()
        .without_metadata_service_account()
        .start()
        .await
        .unwrap();
    let resp = metadata_get(&emu, &format!("{IDENTITY}?audience=a"), true).await;
    assert_eq!(resp.status(), 404);
    let resp = metadata_get(&emu, "instance/service-accounts/default/token", true).await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn metadata_serves_email_project_and_recursive_account_info() {
    let emu = start_without_app().await;
    let email = emu.metadata_service_account().unwrap();
    let got = metadata_get(&emu, "instance/service-accounts/default/email", true)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(got, email);
    let got = metadata_get(&emu, "project/project-id", true)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(got, "iap-emulator");
    let info: Value = metadata_get(
        &emu,
        "instance/service-accounts/default/?recursive=true",
        true,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(info["email"], email.as_str());
}

// ---- token endpoint: JWT bearer -------------------------------------------

#[tokio::test]
async fn jwt_bearer_with_target_audience_returns_only_an_id_token() {
    let emu = start_without_app().await;
    let sa = emu.create_service_account("runner").await.unwrap();
    let a = assertion(&sa, json!({"target_audience": "https://app"}), emu.now());
    let (status, body) = post_form(
        &emu.token_uri(),
        &[("grant_type", JWT_BEARER), ("assertion", &a)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id_token"]);
    let c = verify(&emu, body["id_token"].as_str().unwrap(), "https://app").await;
    assert_eq!(c["email"], sa.email());
    assert_eq!(c["azp"], sa.email());
    assert_eq!(c["sub"], sa.unique_id());
    assert_eq!(c["email_verified"], true);
    assert_eq!(emu.id_tokens_issued_by(Grant::JwtBearer, "https://app"), 1);
}

#[tokio::test]
async fn key_file_points_at_the_emulator_with_googles_fields() {
    let emu = start_without_app().await;
    let sa = emu.create_service_account("keyfile").await.unwrap();
    let key: Value = serde_json::from_str(sa.key_json()).unwrap();
    assert_eq!(key["type"], "service_account");
    assert_eq!(key["token_uri"], emu.token_uri());
    assert_eq!(key["universe_domain"], "googleapis.com");
    assert_eq!(
        key["client_email"],
        "keyfile@iap-emulator.iam.gserviceaccount.com"
    );
    assert_eq!(key["private_key_id"], sa.private_key_id());
    assert!(
        key["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
}

#[tokio::test]
async fn jwt_bearer_accepts_its_own_url_as_audience_and_rejects_others() {
    let emu = start_without_app().await;
    let sa = emu.create_service_account("aud").await.unwrap();
    let own = assertion(
        &sa,
        json!({"target_audience": "x", "aud": emu.token_uri()}),
        emu.now(),
    );
    let (status, _) = post_form(
        &emu.token_uri(),
        &[("grant_type", JWT_BEARER), ("assertion", &own)],
    )
    .await;
    assert_eq!(status, 200);
    let other = assertion(
        &sa,
        json!({"target_audience": "x", "aud": "https://elsewhere/token"}),
        emu.now(),
    );
    let (status, body) = post_form(
        &emu.token_uri(),
        &[("grant_type", JWT_BEARER), ("assertion", &other)],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("audience")
    );
}

#[tokio::test]
async fn jwt_bearer_with_scope_returns_an_access_token() {
    let emu = start_without_app().await;
    let sa = emu.create_service_account("scoped").await.unwrap();
    let a = assertion(
        &sa,
        json!({"scope": "https://www.googleapis.com/auth/cloud-platform"}),
        emu.now(),
    );
    let (status, body) = post_form(
        &emu.token_uri(),
        &[("grant_type", JWT_BEARER), ("assertion", &a)],
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["access_token"].as_str().unwrap().starts_with("ya29."));
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body.get("id_token").is_none());
}

#[tokio::test]
async fn jwt_bearer_signed_by_another_key_is_an_invalid_signature() {
    let emu = start_without_app().await;
    let sa = emu.create_service_account("victim").await.unwrap();
    let other = emu.create_service_account("attacker").await.unwrap();
    // Claims of `sa`, kid of `sa`, signed with `other`'s key.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(sa.private_key_id().to_owned());
    let now = emu.now();
    let forged = jsonwebtoken::encode(
        &header,
        &json!({"iss": sa.email(), "aud": GOOGLE_TOKEN_URI, "iat": now, "exp": now + 60, "target_audience": "x"}),
        &private_key(&other),
    )
    .unwrap();
    let (status, body) = post_form(
        &emu.token_uri(),
        &[("grant_type", JWT_BEARER), ("assertion", &forged)],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    );
}

#[tokio::test]
async fn jwt_bearer_outside_the_one_hour_window_is_rejected_with_googles_text() {
    let emu = start_without_app().await;
    let sa = emu.create_service_account("window").await.unwrap();
    let now = emu.now();
    let too_long = assertion(&sa, json!({"target_audience": "x", "exp": now + 7200}), now);
    let expired = assertion(
        &sa,
        json!({"target_audience": "x", "iat": now - 7200, "exp": now - 3600}),
        now,
    );
    for a in [too_long, expired] {
        let (status, body) = post_form(
            &emu.token_uri(),
            &[("grant_type", JWT_BEARER), ("assertion", &a)],
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(
            body["error_description"],
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."
        );
    }
}

#[tokio::test]
async fn jwt_bearer_for_an_unknown_account_is_account_not_found() {
    let emu = start_without_app().await;
    let sa = emu.create_service_account("real").await.unwrap();
    let a = assertion(
        &sa,
        json!({"iss": "ghost@iap-emulator.iam.gserviceaccount.com", "target_audience": "x"}),
        emu.now(),
    );
    let (status, body) = post_form(
        &emu.token_uri(),
        &[("grant_type", JWT_BEARER), ("assertion", &a)],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error_description"],
        "Invalid grant: account not found"
    );
}

#[tokio::test]
async fn token_endpoint_accepts_json_bodies() {
    let emu = start_without_app().await;
    let sa = emu.create_service_account("json").await.unwrap();
    let a = assertion(&sa, json!({"target_audience": "j"}), emu.now());
    let resp = http()
        .post(emu.token_uri())
        .json(&json!({"grant_type": JWT_BEARER, "assertion": a}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(claims(body["id_token"].as_str().unwrap())["aud"], "j");
}

#[tokio::test]
async fn jwt_bearer_without_audience_or_scope_is_invalid_scope() {
    let emu = start_without_app().await;
    let sa = emu.create_service_account("noscope").await.unwrap();
    let a = assertion(&sa, json!({}), emu.now());
    let (status, body) = post_form(
        &emu.token_uri(),
        &[("grant_type", JWT_BEARER), ("assertion", &a)],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_scope");
}

#[tokio::test]
async fn unknown_grant_type_is_unsupported_grant_type() {
    let emu = start_without_app().await;
    let (status, body) = post_form(&emu.token_uri(), &[("grant_type", "password")]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn every_minted_token_has_a_unique_jti() {
    let emu = start_without_app().await;
    let sa = emu.create_service_account("twins").await.unwrap();
    let a = assertion(&sa, json!({"target_audience": "t"}), emu.now());
    let mut jtis = std::collections::HashSet::new();
    for _ in 0..5 {
        let (_, body) = post_form(
            &emu.token_uri(),
            &[("grant_type", JWT_BEARER), ("assertion", &a)],
        )
        .await;
        jtis.insert(claims(body["id_token"].as_str().unwrap())["jti"].to_string());
    }
    assert_eq!(jtis.len(), 5);
}

// ---- token endpoint: refresh token ----------------------------------------

#[tokio::test]
async fn refresh_with_audience_returns_an_id_token_for_that_audience() {
    let emu = Emulator::start().await.unwrap();
    let client = emu.create_desktop_client(emu.project_id());
    let user = emu.create_user(&client, "alice@example.com");
    let iap = emu.app().client_id().to_owned();
    let (status, body) = client_grant(
        &emu,
        &client,
        "refresh_token",
        &[("refresh_token", user.refresh_token()), ("audience", &iap)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].as_str().is_some());
    assert_eq!(body["token_type"], "Bearer");
    let c = verify(&emu, body["id_token"].as_str().unwrap(), &iap).await;
    assert_eq!(c["email"], "alice@example.com");
    assert_eq!(c["azp"], client.client_id());
    assert_eq!(c["sub"], user.sub());
    assert_eq!(emu.id_tokens_issued_by(Grant::RefreshToken, &iap), 1);
}

#[tokio::test]
async fn refresh_without_audience_gives_the_client_as_audience() {
    let emu = start_without_app().await;
    let client = emu.create_desktop_client("proj-a");
    let user = emu.create_user(&client, "bob@example.com");
    let (status, body) = client_grant(
        &emu,
        &client,
        "refresh_token",
        &[("refresh_token", user.refresh_token())],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        claims(body["id_token"].as_str().unwrap())["aud"],
        client.client_id()
    );
}

#[tokio::test]
async fn refresh_with_audience_of_another_project_is_invalid_audience() {
    let emu = Emulator::start().await.unwrap();
    let client = emu.create_desktop_client("some-other-project");
    let user = emu.create_user(&client, "carol@example.com");
    let (status, body) = client_grant(
        &emu,
        &client,
        "refresh_token",
        &[
            ("refresh_token", user.refresh_token()),
            ("audience", emu.app().client_id()),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_audience", "error_description": "The audience client and the client need to be in the same project."})
    );
}

#[tokio::test]
async fn refresh_with_wrong_secret_or_revoked_token_fails_like_google() {
    let emu = start_without_app().await;
    let client = emu.create_desktop_client("p");
    let user = emu.create_user(&client, "dan@example.com");
    let (status, body) = client_grant(
        &emu,
        &client,
        "refresh_token",
        &[
            ("client_secret", "wrong"),
            ("refresh_token", user.refresh_token()),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    emu.revoke(user.refresh_token());
    let (status, body) = client_grant(
        &emu,
        &client,
        "refresh_token",
        &[("refresh_token", user.refresh_token())],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
    );
}

// ---- authorization code ---------------------------------------------------

async fn authorize(emu: &Emulator, query: &[(&str, &str)]) -> reqwest::Response {
    http()
        .get(emu.authorize_url())
        .query(query)
        .send()
        .await
        .unwrap()
}

fn location_params(resp: &reqwest::Response) -> std::collections::HashMap<String, String> {
    let loc = resp.headers()["location"].to_str().unwrap();
    url::Url::parse(loc)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn desktop_login_with_pkce_s256_gets_tokens_for_the_iap_audience() {
    let emu = Emulator::start().await.unwrap();
    let client = emu.create_desktop_client(emu.project_id());
    let _user = emu.create_user(&client, "erin@example.com");
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let redirect = "http://127.0.0.1:51234/";
    let resp = authorize(
        &emu,
        &[
            ("client_id", client.client_id()),
            ("response_type", "code"),
            ("scope", "openid email"),
            ("redirect_uri", redirect),
            ("state", "xyz"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("access_type", "offline"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 302);
    let loc = resp.headers()["location"].to_str().unwrap();
    assert!(loc.starts_with(redirect), "{loc}");
    let q = location_params(&resp);
    assert_eq!(q["state"], "xyz");
    let iap = emu.app().client_id().to_owned();
    let exchange = [
        ("code", q["code"].as_str()),
        ("redirect_uri", redirect),
        ("code_verifier", verifier),
        ("audience", iap.as_str()),
    ];
    let (status, body) = client_grant(&emu, &client, "authorization_code", &exchange).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["refresh_token"].as_str().is_some());
    let c = verify(&emu, body["id_token"].as_str().unwrap(), &iap).await;
    assert_eq!(c["email"], "erin@example.com");
    assert_eq!(emu.id_tokens_issued_by(Grant::AuthorizationCode, &iap), 1);
    // A code works once.
    let (status, body) = client_grant(&emu, &client, "authorization_code", &exchange).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn code_exchange_checks_verifier_and_redirect_uri() {
    let emu = start_without_app().await;
    let client = emu.create_desktop_client("p");
    let login = |challenge: &'static str| {
        let emu = &emu;
        let client = client.clone();
        async move {
            let resp = authorize(
                emu,
                &[
                    ("client_id", client.client_id()),
                    ("response_type", "code"),
                    ("scope", "openid email"),
                    ("redirect_uri", "http://localhost:4000"),
                    ("code_challenge", challenge),
                    ("code_challenge_method", "S256"),
                ],
            )
            .await;
            location_params(&resp)["code"].clone()
        }
    };
    let code = login("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM").await;
    let (status, body) = client_grant(
        &emu,
        &client,
        "authorization_code",
        &[
            ("code", &code),
            ("redirect_uri", "http://localhost:4000"),
            ("code_verifier", "not-the-verifier"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error_description"], "Invalid code verifier.");
    let code = login("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM").await;
    let (status, body) = client_grant(
        &emu,
        &client,
        "authorization_code",
        &[
            ("code", &code),
            ("redirect_uri", "http://localhost:4001"),
            (
                "code_verifier",
                "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            ),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "redirect_uri_mismatch");
}

#[tokio::test]
async fn authorize_refuses_unknown_clients_and_non_loopback_redirects() {
    let emu = start_without_app().await;
    let resp = authorize(
        &emu,
        &[
            ("client_id", "nope.apps.googleusercontent.com"),
            ("response_type", "code"),
            ("scope", "openid"),
            ("redirect_uri", "http://127.0.0.1:1/"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 401);
    let client = emu.create_desktop_client("p");
    let resp = authorize(
        &emu,
        &[
            ("client_id", client.client_id()),
            ("response_type", "code"),
            ("scope", "openid"),
            ("redirect_uri", "http://evil.example.com/"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("redirect_uri_mismatch"));
}

#[tokio::test]
async fn authorize_signs_in_the_login_hint_user() {
    let emu = start_without_app().await;
    let client = emu.create_desktop_client("p");
    let resp = authorize(
        &emu,
        &[
            ("client_id", client.client_id()),
            ("response_type", "code"),
            ("scope", "openid email"),
            ("redirect_uri", "http://127.0.0.1:9/"),
            ("login_hint", "frank@example.com"),
        ],
    )
    .await;
    let code = location_params(&resp)["code"].clone();
    let (_, body) = client_grant(
        &emu,
        &client,
        "authorization_code",
        &[("code", &code), ("redirect_uri", "http://127.0.0.1:9/")],
    )
    .await;
    assert_eq!(
        claims(body["id_token"].as_str().unwrap())["email"],
        "frank@example.com"
    );
}

// ---- IAM Credentials -------------------------------------------------------

/// An access token for `sa` from the JWT-bearer grant.
async fn access_token(emu: &Emulator, sa: &ServiceAccount) -> String {
    let a = assertion(
        sa,
        json!({"scope": "https://www.googleapis.com/auth/cloud-platform"}),
        emu.now(),
    );
    let (_, body) = post_form(
        &emu.token_uri(),
        &[("grant_type", JWT_BEARER), ("assertion", &a)],
    )
    .await;
    body["access_token"].as_str().unwrap().to_owned()
}

async fn iam(
    emu: &Emulator,
    target: &str,
    method: &str,
    bearer: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut req = http()
        .post(emu.iam_credentials_url(target, method))
        .json(&body);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn generate_id_token_needs_token_creator_permission() {
    let emu = start_without_app().await;
    let caller = emu.create_service_account("caller").await.unwrap();
    let target = emu.create_service_account("target").await.unwrap();
    let bearer = access_token(&emu, &caller).await;
    let body = json!({"audience": "aud-x", "includeEmail": true});
    let (status, err) = iam(
        &emu,
        target.email(),
        "generateIdToken",
        Some(&bearer),
        body.clone(),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(err["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(
        err["error"]["message"],
        "Permission 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist)."
    );
    emu.allow_impersonation(caller.email(), target.email());
    let (status, ok) = iam(&emu, target.email(), "generateIdToken", Some(&bearer), body).await;
    assert_eq!(status, 200);
    let c = verify(&emu, ok["token"].as_str().unwrap(), "aud-x").await;
    assert_eq!(c["email"], target.email());
    assert_eq!(c["sub"], target.unique_id());
    assert_eq!(c["azp"], target.unique_id());
    assert_eq!(emu.id_tokens_issued_by(Grant::GenerateIdToken, "aud-x"), 1);
}

#[tokio::test]
async fn generate_id_token_takes_string_booleans_and_email_azp() {
    let emu = start_without_app().await;
    let caller = emu.create_service_account("c2").await.unwrap();
    let target = emu.create_service_account("t2").await.unwrap();
    emu.allow_impersonation(caller.email(), target.email());
    let bearer = access_token(&emu, &caller).await;
    let (_, ok) = iam(
        &emu,
        target.email(),
        "generateIdToken",
        Some(&bearer),
        json!({"audience": "a", "includeEmail": "true", "useEmailAzp": "true"}),
    )
    .await;
    let c = claims(ok["token"].as_str().unwrap());
    assert_eq!(c["email"], target.email());
    assert_eq!(c["azp"], target.email());
    let (_, ok) = iam(
        &emu,
        target.email(),
        "generateIdToken",
        Some(&bearer),
        json!({"audience": "a"}),
    )
    .await;
    assert!(claims(ok["token"].as_str().unwrap()).get("email").is_none());
}

#[tokio::test]
async fn iam_without_a_valid_bearer_is_401_unauthenticated() {
    let emu = start_without_app().await;
    let target = emu.create_service_account("t3").await.unwrap();
    for bearer in [None, Some("ya29.forged")] {
        let (status, err) = iam(
            &emu,
            target.email(),
            "generateIdToken",
            bearer,
            json!({"audience": "a"}),
        )
        .await;
        assert_eq!(status, 401);
        assert_eq!(err["error"]["status"], "UNAUTHENTICATED");
    }
}

#[tokio::test]
async fn delegation_chain_needs_a_grant_for_every_link() {
    let emu = start_without_app().await;
    let caller = emu.create_service_account("c4").await.unwrap();
    let d1 = emu.create_service_account("d1").await.unwrap();
    let target = emu.create_service_account("t4").await.unwrap();
    let bearer = access_token(&emu, &caller).await;
    let body = json!({
        "audience": "a",
        "includeEmail": true,
        "delegates": [format!("projects/-/serviceAccounts/{}", d1.email())],
    });
    emu.allow_impersonation(caller.email(), d1.email());
    let (status, _) = iam(
        &emu,
        target.email(),
        "generateIdToken",
        Some(&bearer),
        body.clone(),
    )
    .await;
    assert_eq!(status, 403, "d1 -> target is missing");
    emu.allow_impersonation(d1.email(), target.email());
    let (status, _) = iam(&emu, target.email(), "generateIdToken", Some(&bearer), body).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn generate_access_token_chains_into_generate_id_token() {
    let emu = start_without_app().await;
    let caller = emu.create_service_account("c5").await.unwrap();
    let target = emu.create_service_account("t5").await.unwrap();
    emu.allow_impersonation(caller.email(), target.email());
    emu.allow_impersonation(target.email(), target.email());
    let bearer = access_token(&emu, &caller).await;
    let (status, body) = iam(
        &emu,
        target.email(),
        "generateAccessToken",
        Some(&bearer),
        json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"], "lifetime": "600s"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["expireTime"].as_str().unwrap().ends_with('Z'));
    let target_token = body["accessToken"].as_str().unwrap();
    let (status, body) = iam(
        &emu,
        target.email(),
        "generateIdToken",
        Some(target_token),
        json!({"audience": "z", "includeEmail": true}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        claims(body["token"].as_str().unwrap())["email"],
        target.email()
    );
}

#[tokio::test]
async fn generate_for_an_unknown_account_is_404() {
    let emu = start_without_app().await;
    let caller = emu.create_service_account("c6").await.unwrap();
    let bearer = access_token(&emu, &caller).await;
    let (status, err) = iam(
        &emu,
        "ghost@x.iam.gserviceaccount.com",
        "generateIdToken",
        Some(&bearer),
        json!({"audience": "a"}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["status"], "NOT_FOUND");
}

// ---- STS and the OIDC issuer ---------------------------------------------

#[tokio::test]
async fn sts_exchanges_a_subject_token_for_a_federated_access_token() {
    let emu = start_without_app().await;
    let pool = emu.create_workload_pool("ci-pool", "github");
    let target = emu.create_service_account("deployer").await.unwrap();
    emu.allow_impersonation(&pool.principal("repo:acme/app"), target.email());
    let subject = emu.mint_subject_token(&pool, "repo:acme/app");
    let (status, body) = post_form(
        &emu.sts_url(),
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ("audience", &pool.audience()),
            ("scope", "https://www.googleapis.com/auth/cloud-platform"),
            ("subject_token", &subject),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["token_type"], "Bearer");
    let federated = body["access_token"].as_str().unwrap();
    let (status, body) = iam(
        &emu,
        target.email(),
        "generateIdToken",
        Some(federated),
        json!({"audience": "wif", "includeEmail": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(emu.counter(counter::ACCESS_TOKENS, "sts"), 1);
}

#[tokio::test]
async fn sts_rejects_unknown_pools_and_foreign_subject_tokens() {
    let emu = start_without_app().await;
    let pool = emu.create_workload_pool("p1", "x");
    let other = emu.create_workload_pool("p2", "y");
    let for_other = emu.mint_subject_token(&other, "s");
    let exchange = |audience: String, token: String| {
        let url = emu.sts_url();
        async move {
            post_form(
                &url,
                &[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    (
                        "requested_token_type",
                        "urn:ietf:params:oauth:token-type:access_token",
                    ),
                    ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                    ("audience", &audience),
                    ("subject_token", &token),
                ],
            )
            .await
        }
    };
    let (status, body) = exchange(pool.audience(), for_other.clone()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    let (status, body) = exchange("//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/none/providers/none".into(), for_other).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_target");
}

#[tokio::test]
async fn oidc_issuer_publishes_discovery_and_keys_that_verify_subject_tokens() {
    let emu = start_without_app().await;
    let pool = emu.create_workload_pool("p", "x");
    let token = emu.mint_subject_token(&pool, "me");
    let disc: Value = get_json(&format!(
        "{}/.well-known/openid-configuration",
        emu.oidc_issuer()
    ))
    .await;
    assert_eq!(disc["issuer"], emu.oidc_issuer());
    let jwks: JwkSet = get_json(disc["jwks_uri"].as_str().unwrap()).await;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[emu.oidc_issuer()]);
    v.validate_aud = false;
    let data =
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(&jwks.keys[0]).unwrap(), &v)
            .unwrap();
    assert_eq!(data.claims["sub"], "me");
}

// ---- keys -------------------------------------------------------------------

#[tokio::test]
async fn rotation_keeps_the_previous_key_published_and_retires_older_ones() {
    let emu = start_without_app().await;
    let before = emu.mint_id_token("r", "x@example.com");
    let first_kid = emu.signing_key_ids()[0].clone();
    emu.rotate_signing_key().await.unwrap();
    let after = emu.mint_id_token("r", "x@example.com");
    let after_kid = jsonwebtoken::decode_header(&after).unwrap().kid.unwrap();
    assert_ne!(after_kid, first_kid);
    verify(&emu, &before, "r").await;
    verify(&emu, &after, "r").await;
    emu.rotate_signing_key().await.unwrap();
    let jwks: JwkSet = get_json(&emu.jwks_url()).await;
    assert!(jwks.find(&first_kid).is_none());
    assert!(jwks.find(&after_kid).is_some());
}

#[tokio::test]
async fn v1_certs_map_every_published_kid_to_an_x509_pem() {
    let emu = start_without_app().await;
    emu.rotate_signing_key().await.unwrap();
    let map: serde_json::Map<String, Value> = get_json(&emu.certs_v1_url()).await;
    let mut kids: Vec<&String> = map.keys().collect();
    kids.sort();
    let mut expected = emu.signing_key_ids();
    expected.sort();
    assert_eq!(kids, expected.iter().collect::<Vec<_>>());
    for pem in map.values() {
        assert!(
            pem.as_str()
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----\n")
        );
    }
}

#[tokio::test]
async fn service_account_public_keys_are_published_by_email() {
    let emu = start_without_app().await;
    let sa = emu.create_service_account("pub").await.unwrap();
    let url = format!("{}robot/v1/metadata/x509/{}", emu.url(), sa.email());
    let certs: serde_json::Map<String, Value> = get_json(&url).await;
    assert!(
        certs[sa.private_key_id()]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let url = format!("{}service_accounts/v1/jwk/{}", emu.url(), sa.email());
    let jwks: JwkSet = get_json(&url).await;
    assert!(jwks.find(sa.private_key_id()).is_some());
    let missing = format!("{}service_accounts/v1/jwk/ghost@x", emu.url());
    assert_eq!(http().get(missing).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn metadata_refuses_forwarded_requests() {
    let emu = start_without_app().await;
    let resp = http()
        .get(format!(
            "{}computeMetadata/v1/{IDENTITY}?audience=a",
            emu.url()
        ))
        .header("Metadata-Flavor", "Google")
        .header("X-Forwarded-For", "10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn rotation_over_http_lists_the_new_key_first() {
    let emu = start_without_app().await;
    let old = emu.signing_key_ids();
    let (status, v) = control(&emu, reqwest::Method::POST, "rotate-keys", json!({})).await;
    assert_eq!(status, 200);
    let kids: Vec<String> = serde_json::from_value(v["kids"].clone()).unwrap();
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[1], old[0]);
    assert_eq!(kids, emu.signing_key_ids());
}
