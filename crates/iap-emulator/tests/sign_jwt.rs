//! Service-account JWTs signed by IAM Credentials `signJwt`, the gate's
//! audience shapes for them (exact URL, `ORIGIN/*`, `ORIGIN/PREFIX/*`), and
//! apps on a Google-managed OAuth client.

mod common;

use common::{claims, http, metadata_access_token, metadata_identity};
use iap_emulator::{App, Emulator, Endpoint, counter};
use reqwest::StatusCode;
use serde_json::{Value, json};

const IAP_GENERATED: &str = "x-goog-iap-generated-response";

/// An access token from the metadata server (its service account).
async fn metadata_bearer(emu: &Emulator) -> String {
    metadata_access_token(emu).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn sign_jwt(
    emu: &Emulator,
    bearer: &str,
    email: &str,
    payload: Value,
    delegates: &[&str],
) -> (StatusCode, Value) {
    let delegates: Vec<String> = delegates
        .iter()
        .map(|d| format!("projects/-/serviceAccounts/{d}"))
        .collect();
    let resp = http()
        .post(emu.iam_credentials_url(email, "signJwt"))
        .bearer_auth(bearer)
        .json(&json!({"payload": payload.to_string(), "delegates": delegates}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

fn sa_claims(emu: &Emulator, email: &str, aud: &str) -> Value {
    let now = emu.now();
    json!({"iss": email, "sub": email, "aud": aud, "iat": now, "exp": now + 3600})
}

fn origin(app: &App) -> String {
    app.url().origin().ascii_serialization()
}

async fn get_with(app: &App, path: &str, token: &str) -> reqwest::Response {
    http()
        .get(app.url().join(path).unwrap())
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sign_jwt_as_the_metadata_account_needs_a_grant_on_itself() {
    let emu = Emulator::start().await.unwrap();
    let me = emu.metadata_service_account().unwrap();
    let bearer = metadata_bearer(&emu).await;
    let aud = format!("{}/*", origin(&emu.app()));

    let (status, err) = sign_jwt(&emu, &bearer, &me, sa_claims(&emu, &me, &aud), &[]).await;
    assert_eq!(status, 403);
    assert_eq!(
        err["error"]["message"],
        "Permission 'iam.serviceAccounts.signJwt' denied on resource (or it may not exist)."
    );
    assert_eq!(
        err["error"]["details"][0]["metadata"]["permission"],
        "iam.serviceAccounts.signJwt"
    );

    emu.allow_impersonation(&me, &me);
    let (status, ok) = sign_jwt(&emu, &bearer, &me, sa_claims(&emu, &me, &aud), &[]).await;
    assert_eq!(status, 200, "{ok}");
    let jwt = ok["signedJwt"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.kid.as_deref(), ok["keyId"].as_str());
    assert_eq!(claims(jwt)["aud"], aud.as_str());
    assert_eq!(emu.counter(counter::SIGNED_JWTS, &me), 1);
    assert_eq!(emu.requests(Endpoint::SignJwt), 2);

    let resp = get_with(&emu.app(), "/any/path", jwt).await;
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-goog-authenticated-user-email"],
        format!("accounts.google.com:{me}")
    );
}

#[tokio::test]
async fn sign_jwt_through_a_delegation_chain_needs_every_link() {
    let emu = Emulator::start().await.unwrap();
    let me = emu.metadata_service_account().unwrap();
    let relay = emu.create_service_account("relay").await.unwrap();
    let target = emu.create_service_account("target").await.unwrap();
    let bearer = metadata_bearer(&emu).await;
    let aud = format!("{}/*", origin(&emu.app()));
    let payload = sa_claims(&emu, target.email(), &aud);

    emu.allow_impersonation(&me, relay.email());
    let (status, _) = sign_jwt(
        &emu,
        &bearer,
        target.email(),
        payload.clone(),
        &[relay.email()],
    )
    .await;
    assert_eq!(status, 403, "relay -> target is missing");
    emu.allow_impersonation(relay.email(), target.email());
    let (status, ok) = sign_jwt(&emu, &bearer, target.email(), payload, &[relay.email()]).await;
    assert_eq!(status, 200);
    // Signed with the Google-managed key, not the key file's.
    assert_ne!(ok["keyId"], target.private_key_id());
    let resp = get_with(&emu.app(), "/", ok["signedJwt"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn sign_jwt_refuses_bad_payloads_and_distant_expiry() {
    let emu = Emulator::start().await.unwrap();
    let me = emu.metadata_service_account().unwrap();
    emu.allow_impersonation(&me, &me);
    let bearer = metadata_bearer(&emu).await;
    let now = emu.now();
    for payload in [
        json!({"iss": me, "exp": now + 12 * 3600 + 60}),
        json!({"iss": me, "exp": now - 10}),
        json!({"iss": me, "exp": "soon"}),
    ] {
        let (status, err) = sign_jwt(&emu, &bearer, &me, payload, &[]).await;
        assert_eq!(status, 400, "{err}");
        assert!(err["error"]["message"].as_str().unwrap().contains("exp"));
    }
    let resp = http()
        .post(emu.iam_credentials_url(&me, "signJwt"))
        .bearer_auth(&bearer)
        .json(&json!({"payload": "[1, 2]"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Twelve hours ahead is still fine (IAP then refuses it as too long).
    let (status, _) = sign_jwt(
        &emu,
        &bearer,
        &me,
        json!({"iss": me, "exp": now + 12 * 3600}),
        &[],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn gate_accepts_each_audience_shape_and_refuses_an_uncovered_path() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let me = emu.metadata_service_account().unwrap();
    emu.allow_impersonation(&me, &me);
    let bearer = metadata_bearer(&emu).await;
    let o = origin(&app);
    let sign = async |aud: String| {
        let (status, ok) = sign_jwt(&emu, &bearer, &me, sa_claims(&emu, &me, &aud), &[]).await;
        assert_eq!(status, 200);
        ok["signedJwt"].as_str().unwrap().to_owned()
    };
    let exact = sign(format!("{o}/api/v1/items")).await;
    let host = sign(format!("{o}/*")).await;
    let prefix = sign(format!("{o}/api/*")).await;
    let deeper = sign(format!("{o}/api/v1/*")).await;

    for (jwt, path, passes) in [
        (&exact, "/api/v1/items", true),
        (&exact, "/api/v1/items/2", false),
        (&host, "/anything", true),
        (&prefix, "/api/v1/items", true),
        (&prefix, "/apis/x", false),
        (&prefix, "/admin", false),
        (&deeper, "/api/v1/items", true),
        (&deeper, "/api/v2/items", false),
    ] {
        let resp = get_with(&app, path, jwt).await;
        let status = resp.status();
        if passes {
            assert_eq!(status, 200, "{path}");
        } else {
            assert_eq!(status, 401, "{path}");
            assert_eq!(resp.headers()[IAP_GENERATED], "true");
            assert_eq!(
                resp.text().await.unwrap(),
                "Invalid IAP credentials: Invalid bearer token. Invalid JWT audience."
            );
        }
    }
    assert_eq!(emu.gate_401s_for(&app, "audience"), 4);
}

#[tokio::test]
async fn managed_client_app_refuses_ordinary_id_tokens_but_not_allowlisted_or_sa_jwts() {
    let emu = Emulator::start().await.unwrap();
    let desktop = emu.create_desktop_client(emu.project_id());
    let app = emu
        .create_app()
        .google_managed_client()
        .allow_client(desktop.client_id())
        .echo()
        .await
        .unwrap();
    assert!(app.is_google_managed_client());

    // A metadata ID token for the app's (Google-managed) client ID.
    let ordinary = metadata_identity(&emu, app.client_id(), "full")
        .await
        .text()
        .await
        .unwrap();
    let resp = get_with(&app, "/", &ordinary).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()[IAP_GENERATED], "true");
    let body = resp.text().await.unwrap();
    assert!(body.contains("Google-managed OAuth client"), "{body}");
    assert_eq!(emu.gate_401s_for(&app, "managed_client"), 1);

    // An allowlisted programmatic client passes.
    let user = emu.create_user(&desktop, "dev@example.com");
    let allowlisted = emu.mint_id_token(desktop.client_id(), user.email());
    assert_eq!(get_with(&app, "/", &allowlisted).await.status(), 200);

    // A service-account JWT passes.
    let me = emu.metadata_service_account().unwrap();
    emu.allow_impersonation(&me, &me);
    let bearer = metadata_bearer(&emu).await;
    let (_, ok) = sign_jwt(
        &emu,
        &bearer,
        &me,
        sa_claims(&emu, &me, &format!("{}/*", origin(&app))),
        &[],
    )
    .await;
    let resp = get_with(&app, "/", ok["signedJwt"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 200);

    // Over HTTP, the mode shows in the listing.
    let apps: Vec<Value> = common::get_json(&format!("{}_emulator/apps", emu.url())).await;
    let listed = apps
        .iter()
        .find(|a| a["client_id"] == app.client_id())
        .unwrap();
    assert_eq!(listed["google_managed_client"], true);
}
