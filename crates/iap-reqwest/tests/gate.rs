//! IapMiddleware against the emulator's IAP gate, over real loopback HTTP.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use iap_emulator::{App, Emulator, Endpoint, Fault, counter};
use iap_reqwest::IapMiddleware;
use iap_token::Audience;
use iap_token::policy::{NoAuth, Placement};
use reqwest::StatusCode;
use reqwest_middleware::ClientBuilder;

use common::{
    auth_for, client, client_with, current_token, gated_app, metadata_auth, origin,
    revoke_current_token, url,
};

#[tokio::test]
async fn token_is_attached_and_accepted() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;

    let answer = client(&auth).get(url(&app, "/hello")).send().await.unwrap();

    assert_eq!(answer.status(), StatusCode::OK);
    let echo: serde_json::Value = answer.json().await.unwrap();
    let email = emu.metadata_service_account().unwrap();
    assert_eq!(
        echo["headers"]["x-goog-authenticated-user-email"],
        format!("accounts.google.com:{email}")
    );
    assert_eq!(emu.id_tokens_issued(app.client_id()), 1);
}

#[tokio::test]
async fn thousand_requests_fetch_one_token() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let client = client(&auth);

    for _ in 0..1000 {
        let answer = client.get(url(&app, "/")).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }

    assert_eq!(emu.id_tokens_issued(app.client_id()), 1);
    assert_eq!(emu.app_hits(&app), 1000);
}

#[tokio::test]
async fn revoked_token_is_refreshed_once_and_the_request_retried() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let old = revoke_current_token(&emu, &auth, &app).await;

    let answer = client(&auth)
        .post(url(&app, "/upload"))
        .body("twelve bytes")
        .send()
        .await
        .unwrap();

    assert_eq!(answer.status(), StatusCode::OK);
    let echo: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(echo["body_len"], 12, "the retry carries the whole body");
    assert_eq!(emu.gate_401s(&app), 1);
    assert_eq!(
        emu.id_tokens_issued(app.client_id()),
        2,
        "exactly one extra token"
    );
    assert!(!current_token(&auth, &app).await.same_as(&old));
}

#[tokio::test]
async fn burst_of_401s_on_a_revoked_token_refreshes_once() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let client = client(&auth);
    revoke_current_token(&emu, &auth, &app).await;

    let calls = (0..500).map(|_| client.get(url(&app, "/")).send());
    let answers = futures_util::future::join_all(calls).await;

    for answer in answers {
        assert_eq!(answer.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(
        emu.gate_401s(&app),
        500,
        "every request carried the revoked token"
    );
    assert_eq!(
        emu.id_tokens_issued(app.client_id()),
        2,
        "exactly one refresh"
    );
}

#[tokio::test]
async fn apps_own_401_in_proxy_authorization_mode_comes_back_as_is() {
    let (emu, app, auth) = gated_app(Placement::ProxyAuthorization).await;
    let token = current_token(&auth, &app).await;

    let answer = client(&auth)
        .get(url(&app, "/status/401"))
        .bearer_auth("the-apps-own")
        .send()
        .await
        .unwrap();

    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let echo: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(
        echo["headers"]["authorization"], "Bearer the-apps-own",
        "the caller's Authorization is untouched"
    );
    assert_eq!(emu.proxy_authorization_passes(&app), 1);
    assert_eq!(emu.app_hits(&app), 1, "not retried");
    assert_eq!(emu.id_tokens_issued(app.client_id()), 1, "no refresh");
    assert!(
        current_token(&auth, &app).await.same_as(&token),
        "the token was not invalidated"
    );
}

#[tokio::test]
async fn proxy_authorization_middleware_moves_the_token_and_retries_only_iaps_refusals() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let client = client_with(IapMiddleware::new(auth.clone()).proxy_authorization());
    // The middleware shares `auth`'s cache: revoking its token revokes the middleware's.
    revoke_current_token(&emu, &auth, &app).await;

    let answer = client
        .get(url(&app, "/"))
        .bearer_auth("the-apps-own")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let echo: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(echo["headers"]["authorization"], "Bearer the-apps-own");
    assert_eq!(emu.gate_401s(&app), 1, "IAP refused the revoked token once");
    assert_eq!(emu.id_tokens_issued(app.client_id()), 2);

    let answer = client
        .get(url(&app, "/status/401"))
        .bearer_auth("the-apps-own")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        emu.proxy_authorization_passes(&app),
        2,
        "both requests IAP let through carried the token in Proxy-Authorization"
    );
    assert_eq!(
        emu.id_tokens_issued(app.client_id()),
        2,
        "the app's own 401: no refresh, no retry"
    );
}

#[tokio::test]
async fn streaming_body_is_not_retried_but_its_token_is_invalidated() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let client = client(&auth);
    revoke_current_token(&emu, &auth, &app).await;

    let chunks = ["a ", "streamed ", "body"]
        .map(|c| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(c))));
    let body = reqwest::Body::wrap(http_body_util::StreamBody::new(futures_util::stream::iter(
        chunks,
    )));
    let answer = client
        .post(url(&app, "/upload"))
        .body(body)
        .send()
        .await
        .unwrap();

    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "not retried");
    assert_eq!(emu.gate_401s(&app), 1);
    assert_eq!(
        emu.id_tokens_issued(app.client_id()),
        1,
        "no fetch for a retry that cannot happen"
    );
    assert!(
        auth.cache()
            .cached(&Audience::new(app.client_id()))
            .is_none(),
        "the refused token was invalidated"
    );

    let answer = client.get(url(&app, "/")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(emu.id_tokens_issued(app.client_id()), 2);
}

#[tokio::test]
async fn composes_with_reqwest_retry_and_reqwest_tracing() {
    use reqwest_retry::RetryTransientMiddleware;
    use reqwest_retry::policies::ExponentialBackoff;

    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let backoff = ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(5))
        .build_with_max_retries(3);
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(reqwest_tracing::TracingMiddleware::default())
        .with(RetryTransientMiddleware::new_with_policy(backoff))
        .with(IapMiddleware::new(auth.clone()))
        .build();
    revoke_current_token(&emu, &auth, &app).await;
    // First a transient failure (reqwest-retry's business), then the revoked token (ours).
    emu.inject(Endpoint::Gate, Fault::status(503), 1);

    let answer = client.get(url(&app, "/")).send().await.unwrap();

    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        emu.counter(counter::FAULTS, Endpoint::Gate.name()),
        1,
        "the 503 was retried by reqwest-retry"
    );
    assert_eq!(emu.gate_401s(&app), 1, "the revoked token was refused once");
    assert_eq!(
        emu.id_tokens_issued(app.client_id()),
        2,
        "and replaced once"
    );
}

#[tokio::test]
async fn no_token_is_sent_to_an_origin_outside_the_scope() {
    let (emu, _app, auth) = gated_app(Placement::Authorization).await;
    let other = emu.create_app().echo().await.unwrap();

    let answer = client(&auth).get(url(&other, "/")).send().await.unwrap();

    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(emu.gate_401s_for(&other, "empty_token"), 1);
    assert_eq!(
        emu.counter_total(counter::ID_TOKENS),
        0,
        "no token was even fetched"
    );
}

#[tokio::test]
async fn per_request_extensions_pick_the_audience_or_no_auth() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let other = emu.create_app().echo().await.unwrap();
    let auth = metadata_auth(&emu)
        .audience(app.client_id())
        .allow_origin(origin(&app))
        .allow_origin(origin(&other))
        .build()
        .unwrap();
    let client = client(&auth);

    let answer = client
        .get(url(&other, "/"))
        .with_extension(Audience::new(other.client_id()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(emu.id_tokens_issued(other.client_id()), 1);

    let answer = client
        .get(url(&app, "/"))
        .with_extension(NoAuth)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(emu.gate_401s_for(&app, "empty_token"), 1);
    assert_eq!(emu.id_tokens_issued(app.client_id()), 0);
}

/// An app behind the gate whose every answer is a redirect to `target`.
async fn redirecting_app(emu: &Emulator, target: &reqwest::Url) -> App {
    let location = target.to_string();
    let service = tower::service_fn(move |_req: http::Request<axum::body::Body>| {
        let location = location.clone();
        async move {
            Ok::<_, Infallible>(
                http::Response::builder()
                    .status(http::StatusCode::FOUND)
                    .header(http::header::LOCATION, location)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
        }
    });
    emu.create_app().serve(service).await.unwrap()
}

#[tokio::test]
async fn no_token_is_carried_across_a_cross_origin_redirect() {
    let emu = Emulator::start().await.unwrap();
    let elsewhere = emu.app();
    for placement in [Placement::Authorization, Placement::ProxyAuthorization] {
        let app = redirecting_app(&emu, &url(&elsewhere, "/landing")).await;
        let auth = metadata_auth(&emu)
            .audience(app.client_id())
            // Even a client scoped to both origins must not carry the token over.
            .allow_origin(origin(&app))
            .allow_origin(origin(&elsewhere))
            .placement(placement)
            .build()
            .unwrap();
        let before = emu.gate_401s_for(&elsewhere, "empty_token");

        let answer = client(&auth).get(url(&app, "/")).send().await.unwrap();

        assert_eq!(
            answer.url().origin(),
            elsewhere.url().origin(),
            "{placement:?}: the redirect was followed"
        );
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{placement:?}");
        assert_eq!(
            emu.app_hits(&app),
            1,
            "{placement:?}: the token got through to the first app"
        );
        assert_eq!(
            emu.gate_401s_for(&elsewhere, "empty_token"),
            before + 1,
            "{placement:?}: the redirected request carried no token at all"
        );
    }
}

#[tokio::test]
async fn redirect_policy_stops_at_the_google_sign_in_page() {
    let emu = Emulator::start().await.unwrap();
    let sign_in =
        reqwest::Url::parse("https://accounts.google.com/o/oauth2/v2/auth?client_id=x").unwrap();
    let app = redirecting_app(&emu, &sign_in).await;
    let auth = auth_for(&emu, &app, Placement::Authorization);
    let reqwest = reqwest::Client::builder()
        .redirect(iap_reqwest::redirect_policy())
        .build()
        .unwrap();
    let client = ClientBuilder::new(reqwest)
        .with(IapMiddleware::new(auth))
        .build();

    // Offline: following the redirect would fail to connect.
    let answer = client.get(url(&app, "/")).send().await.unwrap();

    assert_eq!(answer.status(), StatusCode::FOUND);
    assert_eq!(
        answer.headers()[reqwest::header::LOCATION],
        sign_in.as_str()
    );
}

#[tokio::test]
async fn debug_never_shows_the_token() {
    let (_emu, app, auth) = gated_app(Placement::Authorization).await;
    let token = current_token(&auth, &app).await;

    let shown = format!("{:?}", IapMiddleware::new(auth));

    assert!(shown.contains(app.client_id()), "{shown}");
    assert!(!shown.contains(token.as_str()), "{shown}");
}
