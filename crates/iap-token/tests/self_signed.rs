//! Self-signed service-account JWTs against the emulator's IAP gate: the
//! audience comes from each request's URL through `IapAuth::plan`, the
//! gate accepts them for that URL or host, and no token endpoint is called.

mod common;

use std::time::Duration;

use common::origin_of;
use iap_emulator::{Emulator, Endpoint, ServiceAccount, counter};
use iap_token::source::AudienceKind;
use iap_token::source::self_signed::SelfSignedJwtSource;
use iap_token::source::service_account::ServiceAccountKey;
use iap_token::{Audience, Error, IapAuth, IdToken, TokenSource};

fn source(sa: &ServiceAccount, kind: AudienceKind) -> SelfSignedJwtSource {
    SelfSignedJwtSource::new(ServiceAccountKey::from_json(sa.key_json()).unwrap())
        .with_audience_kind(kind)
}

fn auth(sa: &ServiceAccount, kind: AudienceKind) -> IapAuth {
    IapAuth::builder()
        .source(source(sa, kind))
        .any_origin()
        .build()
        .unwrap()
}

async fn token_for(auth: &IapAuth, url: &str) -> IdToken {
    auth.token_for(&url.parse().unwrap())
        .await
        .unwrap()
        .expect("a token for an in-scope URL")
}

async fn get(url: &str, token: &IdToken) -> reqwest::StatusCode {
    common::get_with_token(url, token).await.status()
}

/// Calls that reached any endpoint able to mint tokens.
fn token_endpoint_calls(emu: &Emulator) -> u64 {
    [
        Endpoint::Token,
        Endpoint::GenerateIdToken,
        Endpoint::GenerateAccessToken,
        Endpoint::Sts,
        Endpoint::MetadataIdentity,
    ]
    .into_iter()
    .map(|e| emu.requests(e))
    .sum()
}

#[tokio::test]
async fn one_host_wildcard_token_serves_every_path_and_passes_the_gate() {
    let emu = Emulator::start().await.unwrap();
    let sa = emu.create_service_account("robot").await.unwrap();
    let app = emu.app();
    let base = origin_of(app.url());
    let auth = auth(&sa, AudienceKind::HostWildcard);

    let a = token_for(&auth, &format!("{base}/api/a?x=1")).await;
    let b = token_for(&auth, &format!("{base}/other/b")).await;

    assert_eq!(
        a.claims().aud.as_deref(),
        Some(format!("{base}/*").as_str())
    );
    assert!(a.same_as(&b), "one cached token for the whole host");
    assert_eq!(get(&format!("{base}/api/a?x=1"), &a).await, 200);
    assert_eq!(get(&format!("{base}/other/b"), &b).await, 200);
    assert_eq!(emu.counter(counter::APP_HITS, app.client_id()), 2);
    assert_eq!(token_endpoint_calls(&emu), 0);
}

#[tokio::test]
async fn an_exact_url_token_passes_the_gate_for_that_url_only() {
    let emu = Emulator::start().await.unwrap();
    let sa = emu.create_service_account("robot").await.unwrap();
    let app = emu.app();
    let base = origin_of(app.url());
    let auth = auth(&sa, AudienceKind::RequestUrl);

    let a = token_for(&auth, &format!("{base}/api/a?page=2")).await;
    let b = token_for(&auth, &format!("{base}/api/b")).await;

    assert_eq!(
        a.claims().aud.as_deref(),
        Some(format!("{base}/api/a").as_str()),
        "no query in aud"
    );
    assert!(!a.same_as(&b));
    assert_eq!(get(&format!("{base}/api/a?page=2"), &a).await, 200);
    assert_eq!(
        get(&format!("{base}/api/b"), &a).await,
        401,
        "a's token names another path"
    );
    assert_eq!(
        emu.counter(&counter::gate_401_by("audience"), app.client_id()),
        1
    );
    assert_eq!(token_endpoint_calls(&emu), 0);
}

#[tokio::test]
async fn a_token_for_one_host_is_rejected_by_another() {
    let emu = Emulator::start().await.unwrap();
    let sa = emu.create_service_account("robot").await.unwrap();
    let (first, second) = (emu.app(), emu.create_app().echo().await.unwrap());
    let auth = auth(&sa, AudienceKind::HostWildcard);

    let token = token_for(&auth, &format!("{}/x", origin_of(first.url()))).await;
    let status = get(&format!("{}/x", origin_of(second.url())), &token).await;

    assert_eq!(status, 401);
    assert_eq!(
        emu.counter(&counter::gate_401_by("audience"), second.client_id()),
        1
    );
    assert_eq!(emu.counter(counter::APP_HITS, second.client_id()), 0);
}

#[tokio::test]
async fn the_claims_and_header_are_those_iap_requires() {
    let emu = Emulator::start().await.unwrap();
    let sa = emu.create_service_account("robot").await.unwrap();
    let source = SelfSignedJwtSource::new(ServiceAccountKey::from_json(sa.key_json()).unwrap())
        .with_lifetime(Duration::from_secs(7200));

    let token = source
        .id_token(&Audience::new("https://app.example.com/*"))
        .await
        .unwrap();

    let claims = token.claims();
    assert_eq!(claims.iss.as_deref(), Some(sa.email()));
    assert_eq!(claims.sub.as_deref(), Some(sa.email()));
    assert_eq!(claims.aud.as_deref(), Some("https://app.example.com/*"));
    let iat = claims.iat.unwrap();
    assert_eq!(claims.exp - iat, 3600, "capped at IAP's one hour");
    let header = jsonwebtoken::decode_header(token.as_str()).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some(sa.private_key_id()));
    assert_eq!(
        source.audience_kind(),
        AudienceKind::HostWildcard,
        "the default"
    );
}

#[tokio::test]
async fn a_public_https_url_becomes_the_audience() {
    let emu = Emulator::start().await.unwrap();
    let sa = emu.create_service_account("robot").await.unwrap();
    let auth = auth(&sa, AudienceKind::HostWildcard);

    let token = token_for(&auth, "https://app.example.com/deep/path?q=1").await;

    assert_eq!(
        token.claims().aud.as_deref(),
        Some("https://app.example.com/*")
    );
}

#[tokio::test]
async fn a_client_id_audience_is_a_configuration_error() {
    let emu = Emulator::start().await.unwrap();
    let sa = emu.create_service_account("robot").await.unwrap();
    let auth = IapAuth::builder()
        .source(source(&sa, AudienceKind::HostWildcard))
        .audience("123-iap.apps.googleusercontent.com")
        .any_origin()
        .build()
        .unwrap();

    let err = auth
        .token_for(&"https://app.example.com/".parse().unwrap())
        .await
        .unwrap_err();

    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.is_configuration());
    assert!(err.to_string().contains("addressed to a URL"), "{err}");
}

#[tokio::test]
async fn debug_holds_no_private_key() {
    let emu = Emulator::start().await.unwrap();
    let sa = emu.create_service_account("robot").await.unwrap();
    let source = source(&sa, AudienceKind::RequestUrl);
    let token = source
        .id_token(&Audience::new("https://app.example.com/a"))
        .await
        .unwrap();

    let text = format!(
        "{source:?} {:?} {token:?}",
        SelfSignedJwtSource::new(source.key().clone())
    );

    let key: serde_json::Value = serde_json::from_str(sa.key_json()).unwrap();
    let pem_line = key["private_key"].as_str().unwrap().lines().nth(1).unwrap();
    assert!(!text.contains(pem_line), "{text}");
    assert!(!text.contains(token.as_str()), "{text}");
    assert!(text.contains(sa.email()), "{text}");
}
