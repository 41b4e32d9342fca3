//! IapAuth: plan / apply / verdict / invalidate, against the emulator's IAP gate.

mod common;

use std::sync::Arc;

use common::{get_with_headers, key_source, origin_of};
use http::header::AUTHORIZATION;
use http::{Extensions, HeaderMap, StatusCode, Uri};
use iap_emulator::{App, Emulator, Endpoint};
use iap_token::auth::{IapAuthBuilder, Plan, Planned};
use iap_token::policy::{NoAuth, Placement, RetryPolicy, Verdict};
use iap_token::source::{AudienceKind, BoxFuture, TokenSource};
use iap_token::{Audience, IapAuth, IdToken};

async fn source(emu: &Emulator) -> (Arc<dyn TokenSource>, String) {
    let sa = emu.create_service_account("auth-test").await.unwrap();
    (Arc::new(key_source(&sa)), sa.key_json().to_owned())
}

/// A builder with the emulator's service account as source and `app`'s
/// IAP client ID as the audience.
async fn builder_for(emu: &Emulator, app: &App) -> IapAuthBuilder {
    let (source, _) = source(emu).await;
    IapAuth::builder()
        .source_arc(source)
        .audience(app.client_id())
        .any_origin()
}

fn uri(s: &str) -> Uri {
    s.parse().unwrap()
}

async fn token(plan: Plan) -> Option<IdToken> {
    match plan {
        Plan::Skip => None,
        Plan::Attach(attach) => Some(match attach.cached() {
            Some(t) => t,
            None => attach.fetch().await.unwrap(),
        }),
    }
}

/// Sends a GET to `url` carrying `token` as `auth` places it.
async fn get(auth: &IapAuth, url: &str, token: &IdToken) -> reqwest::Response {
    let mut headers = HeaderMap::new();
    auth.apply(&mut headers, token);
    get_with_headers(url, headers).await
}

#[tokio::test]
async fn the_token_is_attached_and_accepted_by_the_gate() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = builder_for(&emu, &app).await.build().unwrap();
    let url = app.url().join("/hello").unwrap();

    let token = token(auth.plan(&uri(url.as_str()), &Extensions::new()))
        .await
        .unwrap();
    let answer = get(&auth, url.as_str(), &token).await;

    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(emu.counter("app.hits", app.client_id()), 1);
    assert_eq!(token.claims().aud.as_deref(), Some(app.client_id()));
    let mut headers = HeaderMap::new();
    auth.apply(&mut headers, &token);
    assert!(headers["authorization"].is_sensitive());
}

#[tokio::test]
async fn a_revoked_token_is_refused_invalidated_once_and_replaced() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = builder_for(&emu, &app).await.build().unwrap();
    let target = uri(app.url().as_str());
    let first = token(auth.plan(&target, &Extensions::new())).await.unwrap();
    emu.revoke(first.as_str());

    let answer = get(&auth, app.url().as_str(), &first).await;
    let verdict = auth.verdict(answer.status(), answer.headers());

    assert_eq!(verdict, Verdict::Refused);
    assert!(auth.invalidate(&first));
    assert!(
        !auth.invalidate(&first),
        "the second invalidation of one token is a no-op"
    );
    let second = token(auth.plan(&target, &Extensions::new())).await.unwrap();
    assert!(!second.same_as(&first));
    assert_eq!(
        get(&auth, app.url().as_str(), &second).await.status(),
        StatusCode::OK
    );
    assert_eq!(emu.id_tokens_issued(app.client_id()), 2);
}

#[tokio::test]
async fn no_token_for_an_origin_outside_the_allowed_set() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = builder_for(&emu, &app)
        .await
        .allow_origin(origin_of(app.url()))
        .build()
        .unwrap();
    let none = Extensions::new();

    assert!(matches!(
        auth.plan(&uri(app.url().as_str()), &none),
        Plan::Attach(_)
    ));
    for other in [
        "https://evil.example.com/",
        "http://127.0.0.1:1/",
        "/relative/path",
    ] {
        assert!(
            matches!(auth.plan(&uri(other), &none), Plan::Skip),
            "{other}"
        );
    }
    // Not even a per-request audience sends a token out of scope.
    let mut with_audience = Extensions::new();
    with_audience.insert(Audience::new("other-client"));
    assert!(matches!(
        auth.plan(&uri("https://evil.example.com/"), &with_audience),
        Plan::Skip
    ));
    assert_eq!(emu.requests(Endpoint::Token), 0);
}

#[tokio::test]
async fn the_origin_map_picks_the_audience() {
    let emu = Emulator::start().await.unwrap();
    let first_app = emu.app();
    let second_app = emu.create_app().echo().await.unwrap();
    let (source, _) = source(&emu).await;
    let auth = IapAuth::builder()
        .source_arc(source)
        .origin_audience(origin_of(first_app.url()), first_app.client_id())
        .origin_audience(origin_of(second_app.url()), second_app.client_id())
        .build()
        .unwrap();

    for app in [&first_app, &second_app] {
        let plan = auth.plan(&uri(app.url().as_str()), &Extensions::new());
        let Plan::Attach(attach) = &plan else {
            panic!("{plan:?}")
        };
        assert_eq!(
            attach.audience().map(Audience::as_str),
            Some(app.client_id())
        );
        let token = token(plan).await.unwrap();
        assert_eq!(
            get(&auth, app.url().as_str(), &token).await.status(),
            StatusCode::OK
        );
    }
    assert!(matches!(
        auth.plan(&uri("https://elsewhere.example.com/"), &Extensions::new()),
        Plan::Skip
    ));
}

#[tokio::test]
async fn without_origins_every_origin_gets_a_token() {
    let emu = Emulator::start().await.unwrap();
    let (source, _) = source(&emu).await;
    let auth = IapAuth::builder()
        .source_arc(source)
        .audience("aud")
        .any_origin()
        .build()
        .unwrap();

    for any in [
        "https://a.example.com/",
        "http://127.0.0.1:9/x",
        "https://b.example.org:8443/",
    ] {
        assert!(
            matches!(auth.plan(&uri(any), &Extensions::new()), Plan::Attach(_)),
            "{any}"
        );
    }
}

#[tokio::test]
async fn per_request_extensions_skip_or_override_the_audience() {
    let emu = Emulator::start().await.unwrap();
    let (source, _) = source(&emu).await;
    // Both handles have one audience and one origin or any: the
    // configuration `plan` decides for in a few steps; the same rules hold.
    let any = IapAuth::builder()
        .source_arc(source.clone())
        .audience("configured")
        .any_origin()
        .build()
        .unwrap();
    let scoped = IapAuth::builder()
        .source_arc(source)
        .audience("configured")
        .allow_origin("https://app.example.com")
        .build()
        .unwrap();
    let target = uri("https://app.example.com/");
    for (issued, auth) in [(1, &any), (2, &scoped)] {
        let mut no_auth = Extensions::new();
        no_auth.insert(NoAuth);
        assert!(matches!(auth.plan(&target, &no_auth), Plan::Skip));
        let mut headers = HeaderMap::new();
        assert!(matches!(
            auth.lookup(&target, &no_auth).attach_header(&mut headers),
            Planned::Skip
        ));
        assert!(headers.is_empty());

        let mut other = Extensions::new();
        other.insert(Audience::new("per-request"));
        let token = token(auth.plan(&target, &other)).await.unwrap();
        assert_eq!(token.claims().aud.as_deref(), Some("per-request"));
        assert_eq!(emu.id_tokens_issued("per-request"), issued);
        assert_eq!(emu.id_tokens_issued("configured"), 0);
    }
    // Out of the scope, extensions or not: no token.
    let elsewhere = uri("https://other.example.com/");
    assert!(matches!(
        scoped.plan(&elsewhere, &Extensions::new()),
        Plan::Skip
    ));
    let mut other = Extensions::new();
    other.insert(Audience::new("per-request"));
    assert!(matches!(scoped.plan(&elsewhere, &other), Plan::Skip));
    // In it, the header value alone once a token is cached.
    let configured = token(scoped.plan(&target, &Extensions::new()))
        .await
        .unwrap();
    let mut headers = HeaderMap::new();
    let attached = scoped
        .lookup(&target, &Extensions::new())
        .attach_header(&mut headers);
    assert!(matches!(attached, Planned::Cached(())));
    assert_eq!(&headers[AUTHORIZATION], configured.header_value());
    assert!(headers[AUTHORIZATION].is_sensitive());
}

#[tokio::test]
async fn placement_and_retry_policy_follow_the_builder() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = builder_for(&emu, &app)
        .await
        .placement(Placement::ProxyAuthorization)
        .build()
        .unwrap();
    assert_eq!(auth.retry_policy(), RetryPolicy::IapGenerated);
    let token = token(auth.plan(&uri(app.url().as_str()), &Extensions::new()))
        .await
        .unwrap();

    let mut headers = HeaderMap::new();
    headers.insert("authorization", "Bearer the-apps-own".parse().unwrap());
    auth.apply(&mut headers, &token);
    assert_eq!(headers["authorization"], "Bearer the-apps-own");
    assert!(headers["proxy-authorization"].is_sensitive());
    let answer = get_with_headers(app.url().as_str(), headers).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(emu.counter("gate.proxy_authorization", app.client_id()), 1);
    // An app's own 401 is not IAP's: not a refused token in this placement.
    assert_eq!(
        auth.verdict(StatusCode::UNAUTHORIZED, &HeaderMap::new()),
        Verdict::Accepted
    );
}

#[tokio::test]
async fn building_without_an_audience_or_with_a_bad_origin_is_a_clear_error() {
    let emu = Emulator::start().await.unwrap();
    let (source, _) = source(&emu).await;
    let err = IapAuth::builder()
        .source_arc(source.clone())
        .any_origin()
        .build()
        .unwrap_err();
    assert!(err.to_string().contains(".audience("), "{err}");
    let source_again = source.clone();
    let err = IapAuth::builder()
        .source_arc(source)
        .audience("a")
        .allow_origin("https://a.example.com/some/path")
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("https://a.example.com/some/path"),
        "{err}"
    );
    let err = IapAuth::builder()
        .audience("a")
        .any_origin()
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("source"), "{err}");
    let err = IapAuth::builder()
        .source_arc(source_again)
        .audience("a")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains(".any_origin()"), "{err}");
}

#[tokio::test]
async fn debug_of_iap_auth_holds_no_secret() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let (source, key_json) = source(&emu).await;
    let auth = IapAuth::builder()
        .source_arc(source)
        .audience(app.client_id())
        .allow_origin(origin_of(app.url()))
        .build()
        .unwrap();
    let token = token(auth.plan(&uri(app.url().as_str()), &Extensions::new()))
        .await
        .unwrap();

    let debug = format!(
        "{auth:?} {:?}",
        auth.plan(&uri(app.url().as_str()), &Extensions::new())
    );
    assert!(debug.contains(app.client_id()), "{debug}");
    assert!(!debug.contains(token.as_str()), "{debug}");
    let key: serde_json::Value = serde_json::from_str(&key_json).unwrap();
    let pem_line = key["private_key"].as_str().unwrap().lines().nth(1).unwrap();
    assert!(!debug.contains(pem_line), "{debug}");
}

#[tokio::test]
async fn for_app_uses_the_key_file_named_by_google_application_credentials_and_scopes_to_the_app() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let sa = emu.create_service_account("adc-test").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.json");
    sa.write_key_file(&key_file).unwrap();
    // SAFETY: the only test of this binary that reads or writes the environment.
    unsafe { std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &key_file) };

    let auth = IapAuth::for_app(app.url().as_str(), app.client_id())
        .await
        .unwrap();
    assert!(
        matches!(
            auth.plan(&uri("https://elsewhere.example.com/"), &Extensions::new()),
            Plan::Skip
        ),
        "another origin gets no token"
    );
    let token = token(auth.plan(&uri(app.url().as_str()), &Extensions::new()))
        .await
        .unwrap();

    assert_eq!(token.claims().email.as_deref(), Some(sa.email()));
    assert_eq!(
        get(&auth, app.url().as_str(), &token).await.status(),
        StatusCode::OK
    );
}

/// The emulator's service account, as a source that wants URL audiences
/// (what a self-signed service-account JWT source reports).
#[derive(Debug)]
struct UrlAudiences(Arc<dyn TokenSource>, AudienceKind);

impl TokenSource for UrlAudiences {
    fn id_token<'a>(&'a self, audience: &'a Audience) -> BoxFuture<'a, iap_token::Result<IdToken>> {
        self.0.id_token(audience)
    }

    fn audience_kind(&self) -> AudienceKind {
        self.1
    }
}

#[tokio::test]
async fn sources_minting_for_urls_get_the_audience_from_the_request_url() {
    let emu = Emulator::start().await.unwrap();
    let (source, _) = source(&emu).await;
    let exact = IapAuth::builder()
        .source(UrlAudiences(source.clone(), AudienceKind::RequestUrl))
        .any_origin()
        .build()
        .unwrap();
    let host = IapAuth::builder()
        .source(UrlAudiences(source.clone(), AudienceKind::HostWildcard))
        .any_origin()
        .build()
        .unwrap();
    let target = uri("https://app.example.com:8443/api/items?page=2");

    let for_url = token(exact.plan(&target, &Extensions::new()))
        .await
        .unwrap();
    assert_eq!(
        for_url.claims().aud.as_deref(),
        Some("https://app.example.com:8443/api/items")
    );
    let for_host = token(host.plan(&target, &Extensions::new())).await.unwrap();
    assert_eq!(
        for_host.claims().aud.as_deref(),
        Some("https://app.example.com:8443/*")
    );
    assert_eq!(emu.id_tokens_issued("https://app.example.com:8443/*"), 1);

    // No URL, no audience: the fetch says why.
    let Plan::Attach(attach) = exact.plan(&uri("/relative"), &Extensions::new()) else {
        panic!("no scope configured: every request is attached")
    };
    let err = attach.fetch().await.unwrap_err();
    assert!(err.to_string().contains("/relative"), "{err}");
    // Discovery finds client IDs, which such a source cannot use.
    let err = IapAuth::builder()
        .source(UrlAudiences(source, AudienceKind::RequestUrl))
        .discover_audience()
        .any_origin()
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("discover_audience"), "{err}");
}

#[tokio::test]
async fn a_host_wildcard_audience_is_reused_only_for_its_own_scheme_host_and_port() {
    let emu = Emulator::start().await.unwrap();
    let (source, _) = source(&emu).await;
    let auth = IapAuth::builder()
        .source(UrlAudiences(source, AudienceKind::HostWildcard))
        .any_origin()
        .build()
        .unwrap();
    let audience_of = |url: &str| match auth.plan(&uri(url), &Extensions::new()) {
        Plan::Attach(attach) => attach.audience().map(|a| a.as_str().to_owned()),
        Plan::Skip => None,
    };
    let many_hosts: Vec<String> = (0..100)
        .map(|i| format!("https://h{i}.example.com"))
        .collect();

    // The second round finds the hosts seen in the first.
    for _ in 0..2 {
        for (url, audience) in [
            (
                "https://app.example.com:8443/a",
                "https://app.example.com:8443/*",
            ),
            ("https://app.example.com/a?b=c", "https://app.example.com/*"),
            ("http://app.example.com/a", "http://app.example.com/*"),
            (
                "https://other.example.com:8443/",
                "https://other.example.com:8443/*",
            ),
        ] {
            assert_eq!(audience_of(url).as_deref(), Some(audience), "{url}");
        }
        for host in &many_hosts {
            assert_eq!(audience_of(&format!("{host}/x")), Some(format!("{host}/*")));
        }
    }
    let first = token(auth.plan(&uri("https://app.example.com/x"), &Extensions::new()))
        .await
        .unwrap();
    let Plan::Attach(again) = auth.plan(&uri("https://app.example.com/y/z"), &Extensions::new())
    else {
        panic!("no scope configured: every request is attached")
    };
    assert!(again.cached().unwrap().same_as(&first));
    assert_eq!(emu.id_tokens_issued("https://app.example.com/*"), 1);
}
