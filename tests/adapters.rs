//! One list of behaviour tests, run against both adapters (`IapLayer` over a
//! hyper-util client, `IapMiddleware` in a reqwest-middleware client): the
//! refused-token protocol is `iap_token::exchange`, so both must behave
//! alike. Real HTTP to the emulator; the emulator's counters decide.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use iap::IapAuth;
use iap::token::policy::RetryPolicy;
use iap::token::source::metadata::MetadataSource;
use iap_emulator::{App, Emulator};
use tower::ServiceExt as _;

type Answer<'a> = Pin<Box<dyn Future<Output = StatusCode> + Send + 'a>>;

/// What a test needs of an adapter: send one request with a body.
trait Adapter: Sync {
    fn name(&self) -> &'static str;
    fn send<'a>(&'a self, auth: &'a IapAuth, url: String, body: &'static str) -> Answer<'a>;
}

struct Tower;
struct Reqwest;

impl Adapter for Tower {
    fn name(&self) -> &'static str {
        "tower"
    }
    fn send<'a>(&'a self, auth: &'a IapAuth, url: String, body: &'static str) -> Answer<'a> {
        Box::pin(async move {
            let client = tower::ServiceBuilder::new()
                .layer(iap::IapLayer::new(auth.clone()))
                .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
            let req = http::Request::post(url)
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
            let answer = client.oneshot(req).await.unwrap();
            let status = answer.status();
            answer.into_body().collect().await.unwrap();
            status
        })
    }
}

impl Adapter for Reqwest {
    fn name(&self) -> &'static str {
        "reqwest"
    }
    fn send<'a>(&'a self, auth: &'a IapAuth, url: String, body: &'static str) -> Answer<'a> {
        Box::pin(async move {
            let client = reqwest_middleware::ClientBuilder::new(
                iap::reqwest::client_builder().build().unwrap(),
            )
            .with(iap::IapMiddleware::new(auth.clone()))
            .build();
            let answer = client.post(url).body(body).send().await.unwrap();
            let status = answer.status();
            answer.bytes().await.unwrap();
            status
        })
    }
}

const ADAPTERS: [&dyn Adapter; 2] = [&Tower, &Reqwest];

async fn setup(policy: Option<RetryPolicy>) -> (Emulator, App, IapAuth) {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let mut builder = IapAuth::builder()
        .source(MetadataSource::with_host(&emu.metadata_host()).unwrap())
        .audience(app.client_id())
        .allow_origin(app.url().origin().ascii_serialization());
    if let Some(policy) = policy {
        builder = builder.retry_policy(policy);
    }
    (emu, app, builder.build().unwrap())
}

fn url(app: &App, path: &str) -> String {
    app.url().join(path).unwrap().to_string()
}

async fn current(auth: &IapAuth, app: &App) -> iap::IdToken {
    auth.token_for(&app.url().as_str().parse().unwrap())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn an_apps_own_401_comes_back_as_is_and_costs_no_token() {
    for adapter in ADAPTERS {
        let (emu, app, auth) = setup(None).await;
        let token = current(&auth, &app).await;
        for _ in 0..10 {
            let status = adapter.send(&auth, url(&app, "/status/401"), "x").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", adapter.name());
        }
        assert_eq!(emu.app_hits(&app), 10, "{}: not retried", adapter.name());
        assert_eq!(
            emu.id_tokens_issued(app.client_id()),
            1,
            "{}: no mint",
            adapter.name()
        );
        assert!(
            current(&auth, &app).await.same_as(&token),
            "{}: token kept",
            adapter.name()
        );
    }
}

#[tokio::test]
async fn any_401_retries_when_chosen_explicitly() {
    for adapter in ADAPTERS {
        let (emu, app, auth) = setup(Some(RetryPolicy::AnyUnauthorized)).await;
        current(&auth, &app).await;
        let status = adapter.send(&auth, url(&app, "/status/401"), "x").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", adapter.name());
        assert_eq!(emu.app_hits(&app), 2, "{}: retried once", adapter.name());
    }
}

#[tokio::test]
async fn a_revoked_token_is_replaced_and_the_post_retried_once() {
    for adapter in ADAPTERS {
        let (emu, app, auth) = setup(None).await;
        let token = current(&auth, &app).await;
        emu.revoke(token.as_str());
        let status = adapter.send(&auth, url(&app, "/echo"), "small body").await;
        assert_eq!(status, StatusCode::OK, "{}", adapter.name());
        assert_eq!(
            emu.gate_401s(&app),
            1,
            "{}: IAP refused once",
            adapter.name()
        );
        assert_eq!(
            emu.id_tokens_issued(app.client_id()),
            2,
            "{}: one refresh",
            adapter.name()
        );
        assert_eq!(emu.app_hits(&app), 1, "{}", adapter.name());
    }
}

#[tokio::test]
async fn out_of_scope_requests_go_untouched() {
    for adapter in ADAPTERS {
        let (emu, app, auth) = setup(None).await;
        let other = emu.create_app().echo().await.unwrap();
        let status = adapter.send(&auth, url(&other, "/"), "x").await;
        assert_ne!(
            status,
            StatusCode::OK,
            "{}: no token went to the other origin",
            adapter.name()
        );
        assert_eq!(
            emu.id_tokens_issued(app.client_id()),
            0,
            "{}",
            adapter.name()
        );
    }
}
