//! IapLayer against the emulator's IAP gate, over real loopback HTTP.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use iap_emulator::{App, Emulator, counter};
use iap_token::policy::{NoAuth, Placement, RetryPolicy};
use iap_token::source::metadata::MetadataSource;
use iap_token::{Audience, IapAuth};
use iap_tower::{BoxError, IapLayer, IapService};
use tower::{Service, ServiceBuilder, ServiceExt};

type Http<B> = IapService<Client<HttpConnector, B>>;

fn origin(app: &App) -> String {
    app.url().origin().ascii_serialization()
}

/// An `IapAuth` on the emulator's metadata server, scoped to `app`.
fn auth_for(emu: &Emulator, app: &App, placement: Placement) -> IapAuth {
    IapAuth::builder()
        .source(MetadataSource::with_host(&emu.metadata_host()).unwrap())
        .audience(app.client_id())
        .allow_origin(origin(app))
        .placement(placement)
        .build()
        .unwrap()
}

fn client<B>(auth: &IapAuth, http2: bool) -> Http<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let client = Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http();
    ServiceBuilder::new()
        .layer(IapLayer::new(auth.clone()))
        .service(client)
}

fn get(app: &App, path: &str) -> Request<Full<Bytes>> {
    Request::get(app.url().join(path).unwrap().as_str())
        .body(Full::default())
        .unwrap()
}

async fn send<B>(svc: &mut Http<B>, req: Request<B>) -> (StatusCode, serde_json::Value)
where
    Http<B>:
        Service<Request<B>, Response = http::Response<hyper::body::Incoming>, Error = BoxError>,
{
    let response = svc.ready().await.unwrap().call(req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn tokens(emu: &Emulator, app: &App) -> u64 {
    emu.counter(counter::ID_TOKENS, app.client_id())
}

fn gate_401s(emu: &Emulator, app: &App) -> u64 {
    emu.counter(counter::GATE_401, app.client_id())
}

/// The token the layer would attach now.
async fn current_token(auth: &IapAuth, app: &App) -> iap_token::IdToken {
    auth.token_for(&app.url().as_str().parse().unwrap())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn hyper_util_client_through_the_layer_gets_its_token_accepted() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = auth_for(&emu, &app, Placement::Authorization);
    let mut svc = client(&auth, false);

    let (status, echo) = send(&mut svc, get(&app, "/hello")).await;

    assert_eq!(status, StatusCode::OK);
    let email = emu.metadata_service_account().unwrap();
    assert_eq!(
        echo["headers"]["x-goog-authenticated-user-email"],
        format!("accounts.google.com:{email}")
    );
    assert_eq!(tokens(&emu, &app), 1);
    assert_eq!(emu.counter(counter::APP_HITS, app.client_id()), 1);
}

#[tokio::test]
async fn thousand_requests_fetch_one_token() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = auth_for(&emu, &app, Placement::Authorization);
    let mut svc = client(&auth, false);

    for _ in 0..1000 {
        let (status, _) = send(&mut svc, get(&app, "/")).await;
        assert_eq!(status, StatusCode::OK);
    }

    assert_eq!(tokens(&emu, &app), 1);
    assert_eq!(emu.counter(counter::APP_HITS, app.client_id()), 1000);
}

#[tokio::test]
async fn revoked_token_is_refreshed_once_and_the_request_retried() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = auth_for(&emu, &app, Placement::Authorization);
    let mut svc = client(&auth, false);
    let old = current_token(&auth, &app).await;
    emu.revoke(old.as_str());

    let req = Request::post(app.url().join("/upload").unwrap().as_str())
        .body(Full::new(Bytes::from_static(b"twelve bytes")))
        .unwrap();
    let (status, echo) = send(&mut svc, req).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["body_len"], 12, "the retry carries the whole body");
    assert_eq!(gate_401s(&emu, &app), 1);
    assert_eq!(tokens(&emu, &app), 2, "exactly one extra token");
    assert!(!current_token(&auth, &app).await.same_as(&old));
}

#[tokio::test]
async fn burst_of_401s_on_a_revoked_token_refreshes_once() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = auth_for(&emu, &app, Placement::Authorization);
    let svc = client::<Full<Bytes>>(&auth, true);
    emu.revoke(current_token(&auth, &app).await.as_str());

    let calls = (0..500).map(|_| svc.clone().oneshot(get(&app, "/")));
    let responses = futures_util::future::join_all(calls).await;

    for response in responses {
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(
        gate_401s(&emu, &app),
        500,
        "every request carried the revoked token"
    );
    assert_eq!(tokens(&emu, &app), 2, "exactly one refresh");
    assert_eq!(emu.counter(counter::APP_HITS, app.client_id()), 500);
}

#[tokio::test]
async fn cold_burst_fetches_one_token() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = auth_for(&emu, &app, Placement::Authorization);
    let svc = client::<Full<Bytes>>(&auth, true);

    let calls = (0..200).map(|_| svc.clone().oneshot(get(&app, "/")));
    let responses = futures_util::future::join_all(calls).await;

    for response in responses {
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(tokens(&emu, &app), 1);
}

#[tokio::test]
async fn retry_policy_never_neither_invalidates_nor_retries() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = IapAuth::builder()
        .source(MetadataSource::with_host(&emu.metadata_host()).unwrap())
        .audience(app.client_id())
        .retry_policy(RetryPolicy::Never)
        .build()
        .unwrap();
    let mut svc = client(&auth, false);
    let token = current_token(&auth, &app).await;
    emu.revoke(token.as_str());

    let (status, _) = send(&mut svc, get(&app, "/")).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(tokens(&emu, &app), 1);
    assert!(current_token(&auth, &app).await.same_as(&token));
}

#[tokio::test]
async fn apps_own_401_in_proxy_authorization_mode_comes_back_as_is() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = auth_for(&emu, &app, Placement::ProxyAuthorization);
    let mut svc = client(&auth, false);
    let token = current_token(&auth, &app).await;

    let mut req = get(&app, "/status/401");
    req.headers_mut().insert(
        header::AUTHORIZATION,
        "Bearer the-apps-own".parse().unwrap(),
    );
    let (status, echo) = send(&mut svc, req).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        echo["headers"]["authorization"], "Bearer the-apps-own",
        "the caller's Authorization is untouched"
    );
    assert_eq!(
        emu.counter(counter::GATE_PROXY_AUTHORIZATION, app.client_id()),
        1
    );
    assert_eq!(
        emu.counter(counter::APP_HITS, app.client_id()),
        1,
        "not retried"
    );
    assert_eq!(tokens(&emu, &app), 1, "no refresh");
    assert!(
        current_token(&auth, &app).await.same_as(&token),
        "the token was not invalidated"
    );
}

#[tokio::test]
async fn proxy_authorization_mode_retries_what_iap_refused() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = auth_for(&emu, &app, Placement::ProxyAuthorization);
    let mut svc = client(&auth, false);
    emu.revoke(current_token(&auth, &app).await.as_str());

    let mut req = get(&app, "/");
    req.headers_mut().insert(
        header::AUTHORIZATION,
        "Bearer the-apps-own".parse().unwrap(),
    );
    let (status, echo) = send(&mut svc, req).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["headers"]["authorization"], "Bearer the-apps-own");
    assert_eq!(
        gate_401s(&emu, &app),
        1,
        "IAP refused the revoked token once"
    );
    assert_eq!(tokens(&emu, &app), 2);
}

#[tokio::test]
async fn proxy_authorization_layer_moves_the_token_and_retries_only_iaps_refusals() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = auth_for(&emu, &app, Placement::Authorization);
    let mut svc = ServiceBuilder::new()
        .layer(IapLayer::new(auth.clone()).proxy_authorization())
        .service(Client::builder(TokioExecutor::new()).build_http());
    // The layer shares `auth`'s cache: revoking its token revokes the layer's.
    emu.revoke(current_token(&auth, &app).await.as_str());

    let mut req = get(&app, "/");
    req.headers_mut().insert(
        header::AUTHORIZATION,
        "Bearer the-apps-own".parse().unwrap(),
    );
    let (status, echo) = send(&mut svc, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["headers"]["authorization"], "Bearer the-apps-own");
    assert_eq!(
        gate_401s(&emu, &app),
        1,
        "IAP refused the revoked token once"
    );
    assert_eq!(tokens(&emu, &app), 2);

    let mut req = get(&app, "/status/401");
    req.headers_mut().insert(
        header::AUTHORIZATION,
        "Bearer the-apps-own".parse().unwrap(),
    );
    let (status, _) = send(&mut svc, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        emu.counter(counter::GATE_PROXY_AUTHORIZATION, app.client_id()),
        2,
        "both requests IAP let through carried the token in Proxy-Authorization"
    );
    assert_eq!(
        tokens(&emu, &app),
        2,
        "the app's own 401: no refresh, no retry"
    );
}

#[tokio::test]
async fn body_over_the_replay_limit_is_not_retried_but_its_token_is_invalidated() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = auth_for(&emu, &app, Placement::Authorization);
    let client = Client::builder(TokioExecutor::new()).build_http();
    let mut svc: Http<UnsyncBoxBody<Bytes, BoxError>> = ServiceBuilder::new()
        .layer(IapLayer::new(auth.clone()).replay_limit(16))
        .service(client);
    let old = current_token(&auth, &app).await;
    emu.revoke(old.as_str());

    let body = Full::new(Bytes::from(vec![b'x'; 100]))
        .map_err(|e: Infallible| match e {})
        .boxed_unsync();
    let req = Request::post(app.url().join("/upload").unwrap().as_str())
        .body(body)
        .unwrap();
    let (status, _) = send(&mut svc, req).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED, "not retried");
    assert_eq!(gate_401s(&emu, &app), 1);
    assert_eq!(
        tokens(&emu, &app),
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
    let small = Full::new(Bytes::from_static(b"ok"))
        .map_err(|e: Infallible| match e {})
        .boxed_unsync();
    let req = Request::post(app.url().join("/upload").unwrap().as_str())
        .body(small)
        .unwrap();
    let (status, _) = send(&mut svc, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tokens(&emu, &app), 2);
}

#[tokio::test]
async fn streamed_body_within_the_limit_is_replayed() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = auth_for(&emu, &app, Placement::Authorization);
    let client = Client::builder(TokioExecutor::new()).build_http();
    let mut svc: Http<UnsyncBoxBody<Bytes, BoxError>> = ServiceBuilder::new()
        .layer(IapLayer::new(auth.clone()))
        .service(client);
    emu.revoke(current_token(&auth, &app).await.as_str());

    let chunks = ["streamed ", "in ", "four ", "chunks"]
        .map(|c| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(c))));
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks))
        .map_err(|e: Infallible| match e {})
        .boxed_unsync();
    let req = Request::post(app.url().join("/upload").unwrap().as_str())
        .body(body)
        .unwrap();
    let (status, echo) = send(&mut svc, req).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["body_len"], 23);
    assert_eq!(gate_401s(&emu, &app), 1);
    assert_eq!(tokens(&emu, &app), 2);
}

#[tokio::test]
async fn no_token_is_sent_to_an_origin_outside_the_scope() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let other = emu.create_app().echo().await.unwrap();
    let auth = auth_for(&emu, &app, Placement::Authorization);
    let mut svc = client(&auth, false);

    let (status, _) = send(&mut svc, get(&other, "/")).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        emu.counter(&counter::gate_401_by("empty_token"), other.client_id()),
        1
    );
    assert_eq!(
        emu.counter_total(counter::ID_TOKENS),
        0,
        "no token was even fetched"
    );
}

#[tokio::test]
async fn no_auth_extension_sends_the_request_without_a_token() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = auth_for(&emu, &app, Placement::Authorization);
    let mut svc = client(&auth, false);

    let mut req = get(&app, "/");
    req.extensions_mut().insert(NoAuth);
    let (status, _) = send(&mut svc, req).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        emu.counter(&counter::gate_401_by("empty_token"), app.client_id()),
        1
    );
    assert_eq!(tokens(&emu, &app), 0);
}

#[tokio::test]
async fn audience_extension_picks_the_token_for_that_request() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let other = emu.create_app().echo().await.unwrap();
    let auth = IapAuth::builder()
        .source(MetadataSource::with_host(&emu.metadata_host()).unwrap())
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
    assert_eq!(tokens(&emu, &other), 1);
    assert_eq!(tokens(&emu, &app), 0);
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
    let auth = auth_for(&emu, &app, Placement::Authorization);
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
    assert_eq!(tokens(&emu, &app), 1);

    emu.revoke(current_token(&auth, &app).await.as_str());
    let answer = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();

    assert_eq!(answer.into_inner().status(), Wire::Serving);
    assert_eq!(
        gate_401s(&emu, &app),
        1,
        "the revoked token was refused once"
    );
    assert_eq!(tokens(&emu, &app), 2, "one refresh");
    assert_eq!(emu.counter(counter::APP_HITS, app.client_id()), 2);
}
