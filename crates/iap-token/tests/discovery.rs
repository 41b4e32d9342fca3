//! Audience discovery from IAP's sign-in redirect, against the emulator's gate.

mod common;

use std::sync::Arc;

use http::{Extensions, HeaderMap, StatusCode};
use iap_emulator::{Emulator, Endpoint};
use iap_token::IapAuth;
use iap_token::auth::Plan;
use iap_token::discovery::{AudienceDiscovery, discover_audience};
use tokio::sync::Barrier;

#[tokio::test]
async fn the_audience_of_a_gated_app_is_its_iap_client_id() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();

    let audience = discover_audience(app.url().join("/some/page?x=1").unwrap().as_str())
        .await
        .unwrap();

    assert_eq!(audience.as_str(), app.client_id());
    assert_eq!(emu.counter("gate.302", app.client_id()), 1);
    assert_eq!(emu.counter("app.hits", app.client_id()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_is_single_flight_and_cached_per_origin() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let discovery = AudienceDiscovery::new();
    let barrier = Arc::new(Barrier::new(200));
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (discovery, barrier) = (discovery.clone(), barrier.clone());
        let url = app.url().join(&format!("/path/{i}")).unwrap();
        callers.spawn(async move {
            barrier.wait().await;
            discovery.discover(&url).await
        });
    }
    for audience in callers.join_all().await {
        assert_eq!(audience.unwrap().as_str(), app.client_id());
    }
    let again = discovery.discover(app.url()).await.unwrap();

    assert_eq!(again.as_str(), app.client_id());
    assert_eq!(
        emu.counter("gate.302", app.client_id()),
        1,
        "one request for the origin"
    );
    let uri: http::Uri = app.url().join("/other").unwrap().as_str().parse().unwrap();
    assert_eq!(
        discovery
            .cached(&uri)
            .map(|a| a.as_str().to_owned())
            .as_deref(),
        Some(app.client_id())
    );
}

#[tokio::test]
async fn a_url_not_behind_iap_is_a_clear_error() {
    let emu = Emulator::start().await.unwrap();

    // The emulator's own root answers 200 to anyone: no IAP in front.
    let err = discover_audience(&emu.url()).await.unwrap_err();

    let message = err.to_string();
    assert!(message.contains("not behind IAP"), "{message}");
    assert!(message.contains("explicitly"), "{message}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_redirect_that_is_not_iaps_is_not_taken_for_an_audience() {
    let emu = Emulator::start().await.unwrap();
    // The consent page redirects (to redirect_uri), without IAP's header.
    let url = format!(
        "{}o/oauth2/v2/auth?client_id=x&redirect_uri=http://127.0.0.1:1/&response_type=code&scope=openid",
        emu.url()
    );

    let err = discover_audience(&url).await.unwrap_err();

    assert!(err.to_string().contains("not IAP's"), "{err}");
}

#[tokio::test]
async fn iap_auth_discovers_the_audience_then_attaches_accepted_tokens() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let sa = emu.create_service_account("discovery-test").await.unwrap();
    let auth = IapAuth::builder()
        .source(common::key_source(&sa))
        .discover_audience()
        .any_origin()
        .build()
        .unwrap();
    let target: http::Uri = app.url().as_str().parse().unwrap();

    let Plan::Attach(attach) = auth.plan(&target, &Extensions::new()) else {
        panic!("skipped")
    };
    assert!(
        attach.cached().is_none() && attach.audience().is_none(),
        "not discovered yet"
    );
    let token = attach.fetch().await.unwrap();
    let mut headers = HeaderMap::new();
    auth.apply(&mut headers, &token);
    let answer = common::get_with_headers(app.url().as_str(), headers).await;

    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(token.claims().aud.as_deref(), Some(app.client_id()));
    // The origin is now resolved: the plan is pre-resolved and cached.
    let Plan::Attach(attach) = auth.plan(&target, &Extensions::new()) else {
        panic!("skipped")
    };
    assert!(attach.cached().unwrap().same_as(&token));
    assert_eq!(emu.counter("gate.302", app.client_id()), 1);
    assert_eq!(emu.requests(Endpoint::Token), 1);
}

#[tokio::test]
async fn discovery_runs_only_for_origins_in_scope() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let other = emu.create_app().echo().await.unwrap();
    let sa = emu.create_service_account("discovery-scope").await.unwrap();
    let auth = IapAuth::builder()
        .source(common::key_source(&sa))
        .discover_audience()
        .allow_origin(app.url().as_str())
        .build()
        .unwrap();
    let elsewhere: http::Uri = other.url().join("/page").unwrap().as_str().parse().unwrap();

    // Another origin, gated too: neither asked for its audience nor given a
    // token minted for it (the origin called never chooses the audience).
    assert!(matches!(
        auth.plan(&elsewhere, &Extensions::new()),
        Plan::Skip
    ));
    assert_eq!(emu.counter("gate.302", other.client_id()), 0);

    let target: http::Uri = app.url().as_str().parse().unwrap();
    let Plan::Attach(attach) = auth.plan(&target, &Extensions::new()) else {
        panic!("the app's own origin is in scope")
    };
    let token = attach.fetch().await.unwrap();
    assert_eq!(token.claims().aud.as_deref(), Some(app.client_id()));
    assert_eq!(emu.counter("gate.302", app.client_id()), 1);
    assert_eq!(emu.counter("gate.302", other.client_id()), 0);
}

/// An origin that answers every request with `head` (a hostile or broken
/// server in front of the app; not IAP).
async fn answering(head: &'static str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(head.as_bytes()).await;
        }
    });
    url
}

#[tokio::test]
async fn a_redirect_elsewhere_than_googles_sign_in_names_no_audience() {
    let url = answering(
        "HTTP/1.1 302 Found\r\nLocation: https://evil.example/o/oauth2/v2/auth?client_id=stolen\r\n\
         X-Goog-IAP-Generated-Response: true\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let err = discover_audience(&url).await.unwrap_err().to_string();
    assert!(err.contains("not to Google's sign-in"), "{err}");
    assert!(err.contains("pass its audience"), "{err}");
    assert!(!err.contains("stolen"), "{err}");
}

#[tokio::test]
async fn an_iap_redirect_without_location_says_so() {
    let url = answering(
        "HTTP/1.1 302 Found\r\nX-Goog-IAP-Generated-Response: true\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let err = discover_audience(&url).await.unwrap_err().to_string();
    assert!(err.contains("no `Location` header"), "{err}");
}
