//! IapLayer against the emulator's IAP gate, over real loopback HTTP.

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use http_body_util::combinators::UnsyncBoxBody;
use iap_emulator::Emulator;
use iap_token::Audience;
use iap_token::policy::{NoAuth, Placement, RetryPolicy};
use iap_tower::{BoxError, IapLayer};
use tower::ServiceBuilder;

use common::{
    Http, boxed, burst, client, client_with, current_token, gated_app, get, metadata_auth, origin,
    post, revoke_current_token, send, with_apps_own_authorization,
};

#[tokio::test]
async fn hyper_util_client_through_the_layer_gets_its_token_accepted() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let mut svc = client(&auth, false);

    let (status, echo) = send(&mut svc, get(&app, "/hello")).await;

    assert_eq!(status, StatusCode::OK);
    let email = emu.metadata_service_account().unwrap();
    assert_eq!(
        echo["headers"]["x-goog-authenticated-user-email"],
        format!("accounts.google.com:{email}")
    );
    assert_eq!(emu.id_tokens_issued(app.client_id()), 1);
    assert_eq!(emu.app_hits(&app), 1);
}

#[tokio::test]
async fn thousand_requests_fetch_one_token() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let mut svc = client(&auth, false);

    for _ in 0..1000 {
        let (status, _) = send(&mut svc, get(&app, "/")).await;
        assert_eq!(status, StatusCode::OK);
    }

    assert_eq!(emu.id_tokens_issued(app.client_id()), 1);
    assert_eq!(emu.app_hits(&app), 1000);
}

#[tokio::test]
async fn revoked_token_is_refreshed_once_and_the_request_retried() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let mut svc = client(&auth, false);
    let old = revoke_current_token(&emu, &auth, &app).await;

    let req = post(
        &app,
        "/upload",
        Full::new(Bytes::from_static(b"twelve bytes")),
    );
    let (status, echo) = send(&mut svc, req).await;

    assert_eq!(status, StatusCode::OK);
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
    let svc = client::<Full<Bytes>>(&auth, true);
    revoke_current_token(&emu, &auth, &app).await;

    let statuses = burst(&svc, &app, 500).await;

    for status in statuses {
        assert_eq!(status, StatusCode::OK);
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
    assert_eq!(emu.app_hits(&app), 500);
}

#[tokio::test]
async fn cold_burst_fetches_one_token() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let svc = client::<Full<Bytes>>(&auth, true);

    let statuses = burst(&svc, &app, 200).await;

    for status in statuses {
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(emu.id_tokens_issued(app.client_id()), 1);
}

#[tokio::test]
async fn retry_policy_never_neither_invalidates_nor_retries() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = metadata_auth(&emu)
        .audience(app.client_id())
        .allow_origin(origin(&app))
        .retry_policy(RetryPolicy::Never)
        .build()
        .unwrap();
    let mut svc = client(&auth, false);
    let token = revoke_current_token(&emu, &auth, &app).await;

    let (status, _) = send(&mut svc, get(&app, "/")).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(emu.id_tokens_issued(app.client_id()), 1);
    assert!(current_token(&auth, &app).await.same_as(&token));
}

#[tokio::test]
async fn apps_own_401_in_proxy_authorization_mode_comes_back_as_is() {
    let (emu, app, auth) = gated_app(Placement::ProxyAuthorization).await;
    let mut svc = client(&auth, false);
    let token = current_token(&auth, &app).await;

    let req = with_apps_own_authorization(get(&app, "/status/401"));
    let (status, echo) = send(&mut svc, req).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
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
async fn proxy_authorization_mode_retries_what_iap_refused() {
    let (emu, app, auth) = gated_app(Placement::ProxyAuthorization).await;
    let mut svc = client(&auth, false);
    revoke_current_token(&emu, &auth, &app).await;

    let req = with_apps_own_authorization(get(&app, "/"));
    let (status, echo) = send(&mut svc, req).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["headers"]["authorization"], "Bearer the-apps-own");
    assert_eq!(emu.gate_401s(&app), 1, "IAP refused the revoked token once");
    assert_eq!(emu.id_tokens_issued(app.client_id()), 2);
}

#[tokio::test]
async fn proxy_authorization_layer_moves_the_token_and_retries_only_iaps_refusals() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let mut svc = client_with(IapLayer::new(auth.clone()).proxy_authorization());
    // The layer shares `auth`'s cache: revoking its token revokes the layer's.
    revoke_current_token(&emu, &auth, &app).await;

    let req = with_apps_own_authorization(get(&app, "/"));
    let (status, echo) = send(&mut svc, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["headers"]["authorization"], "Bearer the-apps-own");
    assert_eq!(emu.gate_401s(&app), 1, "IAP refused the revoked token once");
    assert_eq!(emu.id_tokens_issued(app.client_id()), 2);

    let req = with_apps_own_authorization(get(&app, "/status/401"));
    let (status, _) = send(&mut svc, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
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
async fn body_over_the_replay_limit_is_not_retried_but_its_token_is_invalidated() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let mut svc: Http<UnsyncBoxBody<Bytes, BoxError>> =
        client_with(IapLayer::new(auth.clone()).replay_limit(16));
    revoke_current_token(&emu, &auth, &app).await;

    let body = boxed(Full::new(Bytes::from(vec![b'x'; 100])));
    let (status, _) = send(&mut svc, post(&app, "/upload", body)).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED, "not retried");
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

    // The next request fetches a fresh token and passes.
    let small = boxed(Full::new(Bytes::from_static(b"ok")));
    let (status, _) = send(&mut svc, post(&app, "/upload", small)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(emu.id_tokens_issued(app.client_id()), 2);
}

#[tokio::test]
async fn streamed_body_within_the_limit_is_replayed() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let mut svc: Http<UnsyncBoxBody<Bytes, BoxError>> = client(&auth, false);
    revoke_current_token(&emu, &auth, &app).await;

    let chunks = ["streamed ", "in ", "four ", "chunks"]
        .map(|c| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(c))));
    let body = boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
        chunks,
    )));
    let (status, echo) = send(&mut svc, post(&app, "/upload", body)).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["body_len"], 23);
    assert_eq!(emu.gate_401s(&app), 1);
    assert_eq!(emu.id_tokens_issued(app.client_id()), 2);
}

#[tokio::test]
async fn no_token_is_sent_to_an_origin_outside_the_scope() {
    let (emu, _app, auth) = gated_app(Placement::Authorization).await;
    let other = emu.create_app().echo().await.unwrap();
    let mut svc = client(&auth, false);

    let (status, _) = send(&mut svc, get(&other, "/")).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(emu.gate_401s_for(&other, "empty_token"), 1);
    assert_eq!(
        emu.counter_total(iap_emulator::counter::ID_TOKENS),
        0,
        "no token was even fetched"
    );
}

#[tokio::test]
async fn no_auth_extension_sends_the_request_without_a_token() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let mut svc = client(&auth, false);

    let mut req = get(&app, "/");
    req.extensions_mut().insert(NoAuth);
    let (status, _) = send(&mut svc, req).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(emu.gate_401s_for(&app, "empty_token"), 1);
    assert_eq!(emu.id_tokens_issued(app.client_id()), 0);
}

#[tokio::test]
async fn audience_extension_picks_the_token_for_that_request() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let other = emu.create_app().echo().await.unwrap();
    let auth = metadata_auth(&emu)
        .audience(app.client_id())
        .allow_origin(origin(&app))
        .allow_origin(origin(&other))
        .build()
        .unwrap();
    let mut svc = client(&auth, false);

    let mut req = get(&other, "/");
    req.extensions_mut()
        .insert(Audience::new(other.client_id()));
    let (status, _) = send(&mut svc, req).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(emu.id_tokens_issued(other.client_id()), 1);
    assert_eq!(emu.id_tokens_issued(app.client_id()), 0);
}

#[tokio::test]
async fn tonic_unary_call_is_retried_transparently_on_a_revoked_token() {
    use tonic_health::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::pb::health_client::HealthClient;

    let emu = Emulator::start().await.unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let app = emu
        .create_app()
        .serve(tonic::service::Routes::new(health))
        .await
        .unwrap();
    let auth = common::auth_for(&emu, &app, Placement::Authorization);
    let channel = tonic::transport::Endpoint::from_shared(app.url().to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    // A Channel's requests carry only a path (the Channel adds the origin
    // below the layer); `with_origin` gives them the full URL that host
    // scoping needs.
    let origin = app.url().as_str().parse().unwrap();
    let mut client = HealthClient::with_origin(
        ServiceBuilder::new()
            .layer(IapLayer::new(auth.clone()))
            .service(channel),
        origin,
    );

    let answer = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(answer.into_inner().status(), Wire::Serving);
    assert_eq!(emu.id_tokens_issued(app.client_id()), 1);

    revoke_current_token(&emu, &auth, &app).await;
    let answer = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();

    assert_eq!(answer.into_inner().status(), Wire::Serving);
    assert_eq!(emu.gate_401s(&app), 1, "the revoked token was refused once");
    assert_eq!(emu.id_tokens_issued(app.client_id()), 2, "one refresh");
    assert_eq!(emu.app_hits(&app), 2);
}
